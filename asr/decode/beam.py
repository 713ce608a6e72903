"""CTC prefix beam search with optional word n-gram shallow fusion and a lexicon.

A pure function of ``(log_probs, lengths, options)``. Scores are natural logs.
A hypothesis' total score is::

    log P_ctc(prefix) + lm_weight * log P_lm(words) + word_bonus * len(words)

Words are delimited by the space token for character vocabularies and by the
SentencePiece word-start marker "▁" for subword vocabularies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

NEG_INF = -math.inf
SP_SPACE = "\u2581"


@dataclass(frozen=True)
class BeamOptions:
    beam_size: int = 8  # hypotheses kept after each frame
    token_topk: int = 0  # extend each frame only with its k most likely tokens; 0 = all
    token_min_logp: float = -12.0  # ...and only with tokens at least this likely
    lm_weight: float = 0.5  # alpha: weight of the word LM log-probability
    word_bonus: float = 1.0  # beta: added per emitted word (only used with an LM or lexicon)
    nbest: int = 1  # hypotheses returned per utterance
    blank: int = 0  # blank token id


@dataclass
class Hypothesis:
    tokens: list[int]  # token ids of the hypothesis
    score: float  # total score (CTC + alpha * LM + beta * words)
    ctc_score: float = 0.0  # log P_ctc(prefix)
    lm_score: float = 0.0  # log P_lm(words), unweighted
    words: list[str] = field(default_factory=list)


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def _adder(nxt: dict):
    """add(prefix, pb, pnb): log-add probabilities into the next frame's beam table."""

    def add(prefix, pb, pnb):
        cur = nxt.get(prefix)
        if cur is None:
            nxt[prefix] = [pb, pnb]
        else:
            cur[0] = _logaddexp(cur[0], pb)
            cur[1] = _logaddexp(cur[1], pnb)

    return add


class _WordTracker:
    """Incremental word bookkeeping for one prefix: LM state, LM score, partial word."""

    __slots__ = ("lm_state", "lm_score", "n_words", "partial", "words", "valid")

    def __init__(self, lm_state, lm_score, n_words, partial, words, valid=True):
        self.lm_state = lm_state
        self.lm_score = lm_score
        self.n_words = n_words
        self.partial = partial
        self.words = words
        self.valid = valid


class _Vocab:
    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.space_id = tokens.index(" ") if " " in tokens else -1
        self.subword = self.space_id < 0

    def split(self, token_id: int) -> tuple[bool, str]:
        """(starts a new word, characters it adds to the current word)."""
        piece = self.tokens[token_id]
        if not self.subword:
            return (token_id == self.space_id, "" if token_id == self.space_id else piece)
        if piece.startswith(SP_SPACE):
            return True, piece[len(SP_SPACE) :]
        return False, piece


def prefix_beam_search(
    log_probs: torch.Tensor | np.ndarray,
    length: int | None = None,
    options: BeamOptions = BeamOptions(),
    tokens: list[str] | None = None,
    lm=None,
    lexicon: set[str] | None = None,
) -> list[Hypothesis]:
    """Decode one utterance.

    Args:
        log_probs: (T, V) log-probabilities.
        length: valid frames (default T).
        options: beam settings.
        tokens: token strings (needed with an LM or lexicon to find words).
        lm: an object with ``begin()``, ``score(state, word)``, ``final(state)`` (e.g. NGramLM).
        lexicon: allowed words; prefixes that cannot become a word are pruned.

    Returns:
        up to ``options.nbest`` hypotheses, best first.
    """
    lp = log_probs.detach().float().cpu().numpy() if isinstance(log_probs, torch.Tensor) else log_probs
    T = lp.shape[0] if length is None else int(length)
    blank = options.blank
    use_words = lm is not None or lexicon is not None
    vocab = _Vocab(tokens) if use_words else None
    if use_words and tokens is None:
        raise ValueError("tokens are required for LM fusion or a lexicon")
    lex_prefixes: set[str] | None = None
    if lexicon is not None:
        lex_prefixes = {w[:i] for w in lexicon for i in range(len(w) + 1)}

    alpha, beta = options.lm_weight, options.word_bonus
    # beams: prefix -> [p_blank, p_nonblank]; trackers: prefix -> _WordTracker
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, NEG_INF]}
    trackers: dict[tuple[int, ...], _WordTracker] = {}
    if use_words:
        trackers[()] = _WordTracker(lm.begin() if lm else None, 0.0, 0, "", ())

    def extend_tracker(prefix: tuple[int, ...], tok: int) -> _WordTracker:
        parent = trackers[prefix]
        new_word, chars = vocab.split(tok)
        lm_state, lm_score, n_words, partial, words = (
            parent.lm_state, parent.lm_score, parent.n_words, parent.partial, parent.words)
        valid = parent.valid
        if new_word and partial:
            if lexicon is not None and partial not in lexicon:
                valid = False
            if lm is not None:
                s, lm_state = lm.score(lm_state, partial)
                lm_score += s
            n_words += 1
            words = words + (partial,)
            partial = ""
        partial += chars
        if lex_prefixes is not None and partial not in lex_prefixes:
            valid = False
        return _WordTracker(lm_state, lm_score, n_words, partial, words, valid)

    def total(prefix: tuple[int, ...], pb: float, pnb: float) -> float:
        s = _logaddexp(pb, pnb)
        if use_words:
            tr = trackers[prefix]
            if not tr.valid:
                return NEG_INF
            s += alpha * tr.lm_score + beta * tr.n_words
        return s

    V = lp.shape[1]
    k = options.token_topk if 0 < options.token_topk < V else V
    for t in range(T):
        frame = lp[t]
        if k < V:
            cand = np.argpartition(-frame, k - 1)[:k]
        else:
            cand = np.arange(V)
        cand = [int(c) for c in cand if frame[c] >= options.token_min_logp or c == blank]
        if not cand:
            cand = [int(frame.argmax())]
        p_blank = float(frame[blank])
        nxt: dict[tuple[int, ...], list[float]] = {}

        add = _adder(nxt)
        for prefix, (pb, pnb) in beams.items():
            p_tot = _logaddexp(pb, pnb)
            # blank: prefix unchanged
            add(prefix, p_tot + p_blank, NEG_INF)
            last = prefix[-1] if prefix else None
            for c in cand:
                if c == blank:
                    continue
                pc = float(frame[c])
                if c == last:
                    # repeat without blank merges into the same prefix...
                    add(prefix, NEG_INF, pnb + pc)
                    # ...a repeat after a blank starts a new token
                    new = prefix + (c,)
                    if use_words and new not in trackers:
                        trackers[new] = extend_tracker(prefix, c)
                    add(new, NEG_INF, pb + pc)
                else:
                    new = prefix + (c,)
                    if use_words and new not in trackers:
                        trackers[new] = extend_tracker(prefix, c)
                    add(new, NEG_INF, p_tot + pc)
        ranked = sorted(nxt.items(), key=lambda kv: total(kv[0], *kv[1]), reverse=True)
        beams = dict(ranked[: options.beam_size])

    hyps = []
    for prefix, (pb, pnb) in beams.items():
        ctc = _logaddexp(pb, pnb)
        if not use_words:
            hyps.append(Hypothesis(list(prefix), ctc, ctc))
            continue
        tr = trackers[prefix]
        words, lm_score, n_words, state = list(tr.words), tr.lm_score, tr.n_words, tr.lm_state
        valid = tr.valid
        if tr.partial:
            if lexicon is not None and tr.partial not in lexicon:
                valid = False
            if lm is not None:
                s, state = lm.score(state, tr.partial)
                lm_score += s
            words.append(tr.partial)
            n_words += 1
        if lm is not None:
            lm_score += lm.final(state)
        if not valid:
            continue
        score = ctc + alpha * lm_score + beta * n_words
        hyps.append(Hypothesis(list(prefix), score, ctc, lm_score, words))
    if not hyps:  # the lexicon rejected every hypothesis: fall back to the best CTC prefix
        prefix, (pb, pnb) = max(beams.items(), key=lambda kv: _logaddexp(*kv[1]))
        hyps = [Hypothesis(list(prefix), _logaddexp(pb, pnb), _logaddexp(pb, pnb))]
    hyps.sort(key=lambda h: h.score, reverse=True)
    return hyps[: max(1, options.nbest)]


def beam_search(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    options: BeamOptions = BeamOptions(),
    tokens: list[str] | None = None,
    lm=None,
    lexicon: set[str] | None = None,
) -> list[list[Hypothesis]]:
    """Batch wrapper: (B, T, V) log-probs and (B,) lengths -> n-best lists per utterance."""
    lp = log_probs.detach().float().cpu().numpy()
    return [
        prefix_beam_search(lp[b], int(lengths[b]), options, tokens, lm, lexicon)
        for b in range(lp.shape[0])
    ]

"""Pure-Python CTC prefix beam search: the readable reference for the C++ search.

Same algorithm, operation for operation, as ``_ctcdecode.cpp``, so the two return the
same n-best lists with the same scores (tests/test_decode.py checks it). Used when the
C++ extension is not built, with a KenLM-binary LM, and for testing.

A hypothesis' score is::

    log P_ctc(prefix) + lm_weight * ln P_lm(completed words) + word_bonus * (completed words)

Per frame, each prefix is extended by blank and by the candidate tokens: those among the
``token_topk`` most likely (all when 0) that reach ``token_min_logp``, plus always the
frame's most likely token. With a lexicon, extensions whose partial word is not a prefix
of a lexicon word (or whose completed word is not in it) are never created.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NEG_INF = -math.inf
APPEND, SEPARATOR, WORD_START, BLANK = 0, 1, 2, 3
SP_SPACE = "\u2581"


def logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def token_kinds(tokens: list[str], blank: int = 0) -> tuple[list[int], list[str]]:
    """How each token changes the current word, and the characters it adds.

    Character vocabularies (those with a " " token): " " ends a word, others append.
    SentencePiece vocabularies: a piece starting with "▁" starts a new word.

    Args:
        tokens: token strings, index = token id.
        blank: blank id.

    Returns:
        (kinds, chars): per token, one of APPEND/SEPARATOR/WORD_START/BLANK and its characters.
    """
    subword = " " not in tokens
    kinds, chars = [], []
    for i, t in enumerate(tokens):
        if i == blank:
            kinds.append(BLANK)
            chars.append("")
        elif not subword:
            kinds.append(SEPARATOR if t == " " else APPEND)
            chars.append("" if t == " " else t)
        elif t.startswith(SP_SPACE):
            kinds.append(WORD_START)
            chars.append(t[len(SP_SPACE) :])
        else:
            kinds.append(APPEND)
            chars.append(t)
    return kinds, chars


def words_of(ids: list[int], tokens: list[str]) -> list[str]:
    """The words spelled by token ids (character or SentencePiece vocabulary)."""
    return "".join(tokens[i] for i in ids).replace(SP_SPACE, " ").split()


def candidate_tokens(frame: np.ndarray, topk: int, min_logp: float, blank: int) -> list[int]:
    """Non-blank tokens to extend with at one frame, in increasing id order."""
    V = frame.shape[0]
    best = int(frame.argmax())
    if 0 < topk < V:
        top = sorted(int(c) for c in np.argsort(-frame, kind="stable")[:topk])
    else:
        top = range(V)
    return [c for c in top if c != blank and (frame[c] >= min_logp or c == best)]


@dataclass(frozen=True)
class _Words:
    lm_state: object = None
    lm_score: float = 0.0  # ln P_lm of the completed words
    n_words: int = 0  # completed words
    n_oov: int = 0  # words (the partial one included) outside the LM vocabulary
    partial: str = ""  # the current word's characters


def reference_search(
    log_probs: np.ndarray,
    length: int,
    options,
    tokens: list[str] | None = None,
    lm=None,
    lexicon: set[str] | None = None,
) -> list[tuple[list[int], float, float, float]]:
    """Decode one utterance in pure Python.

    Args:
        log_probs: (T, V) log-probabilities.
        length: valid frames.
        options: ``BeamOptions``.
        tokens: token strings (needed with an LM or a lexicon).
        lm: ``begin()``, ``score(state, word)``, ``final(state)`` (NGramLM or KenLMModel).
        lexicon: allowed words.

    Returns:
        up to ``options.nbest`` tuples (token ids, score, ctc score, ln P_lm), best first.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    V = lp.shape[1]
    blank = options.blank
    use_words = lm is not None or lexicon is not None
    if use_words and tokens is None:
        raise ValueError("tokens are required for LM fusion or a lexicon")
    kinds, chars = token_kinds(tokens, blank) if tokens is not None else ([0] * V, [""] * V)
    # the word list that spellings are checked against: the lexicon, else the LM's vocabulary
    if lexicon is not None:
        vocab = {w for w in lexicon if w}
    elif lm is not None and hasattr(lm, "words"):
        vocab = set(lm.words()) - {""}
    else:
        vocab = None
    prefixes = None if vocab is None else {w[:i] for w in vocab for i in range(len(w) + 1)}
    oov_mode = lm is not None and lexicon is None and vocab is not None
    alpha, beta, gamma = options.lm_weight, options.word_bonus, options.oov_penalty

    def word_term(w: _Words) -> float:
        return alpha * w.lm_score + beta * w.n_words + gamma * w.n_oov

    def complete(w: _Words) -> _Words | None:
        if not w.partial:
            return w
        known = vocab is not None and w.partial in vocab
        if lexicon is not None and not known:
            return None
        n_oov = w.n_oov + (1 if oov_mode and not known and w.partial in prefixes else 0)
        state, score = w.lm_state, w.lm_score
        if lm is not None:
            s, state = lm.score(state, w.partial if known or vocab is None else "<unk>")
            score += s
        return _Words(state, score, w.n_words + 1, n_oov, "")

    def add_chars(w: _Words, piece: str) -> _Words | None:
        partial = w.partial + piece
        n_oov = w.n_oov
        if prefixes is not None and partial not in prefixes:
            if lexicon is not None:
                return None
            if oov_mode and w.partial in prefixes:
                n_oov += 1
        return _Words(w.lm_state, w.lm_score, w.n_words, n_oov, partial)

    words: dict[tuple[int, ...], _Words] = {(): _Words(lm.begin() if lm else None)}

    def extend(prefix: tuple[int, ...], c: int) -> _Words | None:
        w = words[prefix]
        if kinds[c] in (SEPARATOR, WORD_START):
            w = complete(w)
        if w is not None and kinds[c] != SEPARATOR and chars[c]:
            w = add_chars(w, chars[c])
        return w

    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}
    for t in range(int(length)):
        frame = lp[t]
        cand = candidate_tokens(frame, options.token_topk, options.token_min_logp, blank)
        p_blank = float(frame[blank])
        # kept prefixes first (beam order), then new ones in (beam, token) order
        nxt: dict[tuple[int, ...], list[float]] = {
            prefix: [logaddexp(pb, pnb) + p_blank, NEG_INF] for prefix, (pb, pnb) in beams.items()
        }
        for prefix, (pb, pnb) in beams.items():
            p_tot = logaddexp(pb, pnb)
            last = prefix[-1] if prefix else None
            for c in cand:
                pc = float(frame[c])
                if c == last:
                    nxt[prefix][1] = logaddexp(nxt[prefix][1], pnb + pc)  # a repeat without blank merges
                    val = pb + pc  # after a blank it is a new token
                else:
                    val = p_tot + pc
                new = prefix + (c,)
                if new in nxt:
                    nxt[new][1] = logaddexp(nxt[new][1], val)
                    continue
                if val == NEG_INF:
                    continue
                w = extend(prefix, c) if use_words else None
                if use_words and w is None:
                    continue
                if use_words:
                    words[new] = w
                nxt[new] = [NEG_INF, val]

        def total(item) -> float:
            prefix, (pb, pnb) = item
            s = logaddexp(pb, pnb)
            return s + word_term(words[prefix]) if use_words else s

        ranked = sorted(nxt.items(), key=total, reverse=True)[: max(1, options.beam_size)]
        if options.beam_threshold > 0:
            floor = total(ranked[0]) - options.beam_threshold
            ranked = ranked[:1] + [kv for kv in ranked[1:] if total(kv) >= floor]
        beams = {prefix: (pb, pnb) for prefix, (pb, pnb) in ranked}

    hyps = []
    for prefix, (pb, pnb) in beams.items():
        ctc = logaddexp(pb, pnb)
        if not use_words:
            hyps.append((list(prefix), ctc, ctc, 0.0))
            continue
        w = complete(words[prefix])
        if w is None:
            continue
        if lm is not None:
            w = _Words(w.lm_state, w.lm_score + lm.final(w.lm_state), w.n_words, w.n_oov)
        hyps.append((list(prefix), ctc + word_term(w), ctc, w.lm_score))
    if not hyps:  # the lexicon rejected every final word: the best CTC prefix instead
        prefix, (pb, pnb) = max(beams.items(), key=lambda kv: logaddexp(*kv[1]))
        ctc = logaddexp(pb, pnb)
        hyps = [(list(prefix), ctc, ctc, 0.0)]
    hyps.sort(key=lambda h: h[1], reverse=True)
    return hyps[: max(1, options.nbest)]

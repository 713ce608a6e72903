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

A lexicon is either a set of spelled words (character and SentencePiece vocabularies: a
word's tokens spell it) or a pronunciation lexicon, a mapping ``word -> [token ids, ...]``
(phone vocabularies: a word may have several pronunciations and a pronunciation several
words). With the latter, a hypothesis is a token prefix plus the word chosen at each word
end: completing a pronunciation of k words (homophones: to/two/too) makes k hypotheses,
kept apart by their LM history. A prefix element is then ``token + V * variant`` (variant =
the word's rank among the pronunciation's words, in the lexicon's order), which is ``token``
when there is no choice, so spelled vocabularies see plain token prefixes. Without an LM the k
would tie and fill the beam with copies of one prefix: the lexicon's first word stands for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from asr.config import lookahead_mode
from asr.lexicon import pronunciation_pairs
from asr.wordpieces import piece_role, pieces_to_words

NEG_INF = -math.inf
APPEND, SEPARATOR, WORD_START, BLANK = 0, 1, 2, 3


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

    As asr.wordpieces.piece_role: the " " token (character and phone vocabularies) ends a word,
    a SentencePiece piece starting with "▁" starts a new word, other tokens append.

    Args:
        tokens: token strings, index = token id.
        blank: blank id.

    Returns:
        (kinds, chars): per token, one of APPEND/SEPARATOR/WORD_START/BLANK and its characters.
    """
    kinds, chars = [], []
    role_kind = {"append": APPEND, "separator": SEPARATOR, "start": WORD_START}
    for i, t in enumerate(tokens):
        role, text = piece_role(t) if i != blank else ("blank", "")
        kinds.append(role_kind.get(role, BLANK))
        chars.append(text)
    return kinds, chars


def words_of(ids: list[int], tokens: list[str]) -> list[str]:
    """The words spelled by token ids (character or SentencePiece vocabulary)."""
    return pieces_to_words(tokens[i] for i in ids)


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
    partial: str | tuple[int, ...] = ""  # the current word's characters (token ids: pronunciations)
    done: tuple[str, ...] = ()  # the completed words (pronunciation lexicon only)


def _lookahead(lm, words: Mapping[tuple[int, ...], list[str]] | set[str]) -> dict:
    """Partial word (a spelling prefix, or a pronunciation prefix) -> the best unigram ln P of
    the words it can still become: the LM look-ahead (``BeamOptions.lm_lookahead``)."""
    best: dict = {}
    items = words.items() if isinstance(words, Mapping) else ((w, (w,)) for w in words)
    for key, ws in items:
        score = max(lm.unigram(w) for w in ws)
        for i in range(1, len(key) + 1):
            if best.get(key[:i], NEG_INF) < score:
                best[key[:i]] = score
    return best


class _ContextLookahead:
    """The context LM look-ahead (``lm_lookahead="context"``), as the C++ search computes it.

    For a partial word after LM state ``s``: the best, over the back-off chain s, s[1:], ..., (),
    of (the back-offs summed so far + the best ln P(w | state) over the lexicon words w below the
    partial word that the chain's state lists), and at the empty state the unigram look-ahead.
    An upper bound of the best ln P(w | s) of the words the partial word can become.
    """

    def __init__(self, lm, keys_of: dict[str, list], unigram: dict):
        self.lm, self.keys_of, self.unigram = lm, keys_of, unigram
        self.tables: dict[tuple, dict] = {}

    def _table(self, state: tuple) -> dict:
        table = self.tables.get(state)
        if table is None:
            table = {}
            for word, p in self.lm.successors(state):
                for key in self.keys_of.get(word, ()):
                    for i in range(1, len(key) + 1):
                        if table.get(key[:i], NEG_INF) < p:
                            table[key[:i]] = p
            self.tables[state] = table
        return table

    def __call__(self, state: tuple, key) -> float:
        best, acc = NEG_INF, 0.0
        state = tuple(state)
        while state:
            v = self._table(state).get(key)
            if v is not None:
                best = max(best, acc + v)
            acc += self.lm.backoff(state)
            state = state[1:]
        return max(best, acc + self.unigram[key])


def reference_search(
    log_probs: np.ndarray,
    length: int,
    options,
    tokens: list[str] | None = None,
    lm=None,
    lexicon: set[str] | Mapping[str, list] | None = None,
) -> list[tuple[list[int], float, float, float, list[str] | None]]:
    """Decode one utterance in pure Python.

    Args:
        log_probs: (T, V) log-probabilities.
        length: valid frames.
        options: ``BeamOptions``.
        tokens: token strings (needed with an LM or a lexicon).
        lm: ``begin()``, ``score(state, word)``, ``final(state)`` (NGramLM or KenLMModel).
        lexicon: allowed words (a set of spellings, or word -> token-id pronunciations).

    Returns:
        up to ``options.nbest`` tuples (token ids, score, ctc score, ln P_lm, words), best
        first; words are the lexicon words with a pronunciation lexicon, else None.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    V = lp.shape[1]
    blank = options.blank
    use_words = lm is not None or lexicon is not None
    if use_words and tokens is None:
        raise ValueError("tokens are required for LM fusion or a lexicon")
    kinds, chars = token_kinds(tokens, blank) if tokens is not None else ([0] * V, [""] * V)
    pron = isinstance(lexicon, Mapping)
    homophones: dict[tuple[int, ...], list[str]] = {}  # pronunciation -> its words, lexicon order
    if pron:
        for w, ids in pronunciation_pairs(lexicon):
            homophones.setdefault(ids, []).append(w)
    # the word list that spellings are checked against: the lexicon, else the LM's vocabulary
    if pron:
        vocab = set(homophones)
    elif lexicon is not None:
        vocab = {w for w in lexicon if w}
    elif lm is not None and hasattr(lm, "words"):
        vocab = set(lm.words()) - {""}
    else:
        vocab = None
    prefixes = None if vocab is None else {w[:i] for w in vocab for i in range(len(w) + 1)}
    oov_mode = lm is not None and lexicon is None and vocab is not None
    alpha, beta, gamma = options.lm_weight, options.word_bonus, options.oov_penalty
    mode = lookahead_mode(options.lm_lookahead) if lm is not None and lexicon is not None else "off"
    lookahead = _lookahead(lm, homophones if pron else vocab) if mode != "off" else None
    context = None
    if mode == "context" and hasattr(lm, "successors"):  # (a KenLM binary: the unigram look-ahead)
        keys_of: dict[str, list] = {}
        for key, ws in (homophones.items() if pron else ((w, (w,)) for w in vocab)):
            for w in ws:
                keys_of.setdefault(lm.lm_word(w), []).append(key)
        context = _ContextLookahead(lm, keys_of, lookahead)

    def word_term(w: _Words) -> float:
        s = alpha * w.lm_score + beta * w.n_words + gamma * w.n_oov
        if lookahead is not None and w.partial:
            s += alpha * (context(w.lm_state, w.partial) if context is not None else lookahead[w.partial])
        return s

    def complete(w: _Words, variant: int = 0) -> _Words | None:
        if not w.partial:
            return w
        known = vocab is not None and w.partial in vocab
        if lexicon is not None and not known:
            return None
        n_oov = w.n_oov + (1 if oov_mode and not known and w.partial in prefixes else 0)
        word = homophones[w.partial][variant] if pron else w.partial
        state, score = w.lm_state, w.lm_score
        if lm is not None:
            s, state = lm.score(state, word if known or vocab is None else "<unk>")
            score += s
        done = w.done + (word,) if pron else ()
        return _Words(state, score, w.n_words + 1, n_oov, () if pron else "", done)

    def n_completions(w: _Words) -> int:
        """Words the partial word can complete as (pronunciation lexicon), else 1."""
        if not pron or not w.partial:
            return 1
        n = len(homophones.get(w.partial, ()))
        return min(n, 1) if lm is None else n  # without an LM, the first homophone stands for all

    def add_chars(w: _Words, piece: str) -> _Words | None:
        partial = w.partial + piece
        n_oov = w.n_oov
        if prefixes is not None and partial not in prefixes:
            if lexicon is not None:
                return None
            if oov_mode and w.partial in prefixes:
                n_oov += 1
        return _Words(w.lm_state, w.lm_score, w.n_words, n_oov, partial, w.done)

    root = _Words(lm.begin() if lm else None, partial=() if pron else "")
    words: dict[tuple[int, ...], _Words] = {(): root}

    def extend(prefix: tuple[int, ...], c: int, variant: int) -> _Words | None:
        w = words[prefix]
        if kinds[c] in (SEPARATOR, WORD_START):
            w = complete(w, variant)
        if w is not None and kinds[c] != SEPARATOR and chars[c]:
            w = add_chars(w, (c,) if pron else chars[c])
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
            last = prefix[-1] % V if prefix else None
            for c in cand:
                pc = float(frame[c])
                if c == last:
                    nxt[prefix][1] = logaddexp(nxt[prefix][1], pnb + pc)  # a repeat without blank merges
                    val = pb + pc  # after a blank it is a new token
                else:
                    val = p_tot + pc
                n_var = n_completions(words[prefix]) if pron and kinds[c] != APPEND else 1
                for v in range(n_var):  # one new prefix per word completed (homophones)
                    new = prefix + (c + V * v,)
                    if new in nxt:
                        nxt[new][1] = logaddexp(nxt[new][1], val)
                        continue
                    if val == NEG_INF:
                        continue
                    w = extend(prefix, c, v) if use_words else None
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
        ids = [e % V for e in prefix]
        if not use_words:
            hyps.append((ids, ctc, ctc, 0.0, None))
            continue
        for v in range(n_completions(words[prefix])):  # a final homophone: one hypothesis per word
            w = complete(words[prefix], v)
            if w is None:
                continue
            if lm is not None:
                w = _Words(w.lm_state, w.lm_score + lm.final(w.lm_state), w.n_words, w.n_oov, w.partial, w.done)
            hyps.append((ids, ctc + word_term(w), ctc, w.lm_score, list(w.done) if pron else None))
    if not hyps:  # the lexicon rejected every final word: the best CTC prefix instead
        prefix, (pb, pnb) = max(beams.items(), key=lambda kv: logaddexp(*kv[1]))
        ctc = logaddexp(pb, pnb)
        hyps = [([e % V for e in prefix], ctc, ctc, 0.0, list(words[prefix].done) if pron else None)]
    hyps.sort(key=lambda h: h[1], reverse=True)
    return hyps[: max(1, options.nbest)]

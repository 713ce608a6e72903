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


@dataclass
class _Node:
    lm_state: object
    lm_score: float
    n_words: int
    partial: str


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
    prefixes = None if lexicon is None else {w[:i] for w in lexicon if w for i in range(len(w) + 1)}
    words = None if lexicon is None else {w for w in lexicon if w}
    lm_vocab = None
    if lm is not None and hasattr(lm, "ngrams"):
        lm_vocab = {w[0] for w in lm.ngrams[1]} - {"<s>", "</s>"}
    alpha, beta = options.lm_weight, options.word_bonus

    def lm_word(w: str) -> str:
        return w if lm_vocab is None or w in lm_vocab else "<unk>"

    def complete(node: _Node) -> _Node | None:
        if not node.partial:
            return node
        if words is not None and node.partial not in words:
            return None
        state, score = node.lm_state, node.lm_score
        if lm is not None:
            s, state = lm.score(state, lm_word(node.partial))
            score += s
        return _Node(state, score, node.n_words + 1, "")

    nodes: dict[tuple[int, ...], _Node | None] = {(): _Node(lm.begin() if lm else None, 0.0, 0, "")}

    def extend(prefix: tuple[int, ...], c: int) -> tuple[int, ...] | None:
        new = prefix + (c,)
        if new not in nodes:
            node = nodes[prefix]
            if use_words:
                if kinds[c] in (SEPARATOR, WORD_START):
                    node = complete(node)
                if node is not None and kinds[c] != SEPARATOR and chars[c]:
                    node = _Node(node.lm_state, node.lm_score, node.n_words, node.partial + chars[c])
                    if prefixes is not None and node.partial not in prefixes:
                        node = None
            nodes[new] = node
        return new if nodes[new] is not None else None

    def total(prefix: tuple[int, ...], pb: float, pnb: float) -> float:
        s = logaddexp(pb, pnb)
        if use_words:
            n = nodes[prefix]
            s += alpha * n.lm_score + beta * n.n_words
        return s

    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, NEG_INF]}
    for t in range(int(length)):
        frame = lp[t]
        cand = candidate_tokens(frame, options.token_topk, options.token_min_logp, blank)
        p_blank = float(frame[blank])
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(prefix, pb, pnb, nxt=nxt):
            cur = nxt.get(prefix)
            if cur is None:
                nxt[prefix] = [pb, pnb]
            else:
                cur[0] = logaddexp(cur[0], pb)
                cur[1] = logaddexp(cur[1], pnb)

        for prefix, (pb, pnb) in beams.items():
            p_tot = logaddexp(pb, pnb)
            add(prefix, p_tot + p_blank, NEG_INF)
            last = prefix[-1] if prefix else None
            for c in cand:
                pc = float(frame[c])
                if c == last:
                    add(prefix, NEG_INF, pnb + pc)  # a repeat without blank merges
                    new = extend(prefix, c)  # a repeat after a blank is a new token
                    if new is not None:
                        add(new, NEG_INF, pb + pc)
                else:
                    new = extend(prefix, c)
                    if new is not None:
                        add(new, NEG_INF, p_tot + pc)
        ranked = sorted(nxt.items(), key=lambda kv: total(kv[0], *kv[1]), reverse=True)
        ranked = ranked[: max(1, options.beam_size)]
        if options.beam_threshold > 0:
            floor = total(ranked[0][0], *ranked[0][1]) - options.beam_threshold
            ranked = ranked[:1] + [kv for kv in ranked[1:] if total(kv[0], *kv[1]) >= floor]
        beams = dict(ranked)

    hyps = []
    for prefix, (pb, pnb) in beams.items():
        ctc = logaddexp(pb, pnb)
        if not use_words:
            hyps.append((list(prefix), ctc, ctc, 0.0))
            continue
        node = complete(nodes[prefix])
        if node is None:
            continue
        lm_score = node.lm_score + (lm.final(node.lm_state) if lm is not None else 0.0)
        hyps.append((list(prefix), ctc + (alpha * lm_score + beta * node.n_words), ctc, lm_score))
    if not hyps:  # the lexicon rejected every final word: the best CTC prefix instead
        prefix, (pb, pnb) = max(beams.items(), key=lambda kv: logaddexp(*kv[1]))
        ctc = logaddexp(pb, pnb)
        hyps = [(list(prefix), ctc, ctc, 0.0)]
    hyps.sort(key=lambda h: h[1], reverse=True)
    return hyps[: max(1, options.nbest)]

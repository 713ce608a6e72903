"""Perplexity of back-off n-gram models and their static linear interpolation (SRILM ``-mix-lm``).

The mixed model lists every n-gram of any component, with P(w | h) = sum_i l_i P_i(w | h)
(each P_i by its own back-off; 0 for a word outside model i's vocabulary), and back-off
weights recomputed so every context normalises. Weights can be tuned on dev text by EM on
the components' per-word probabilities (SRILM ``compute-best-mix``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from asr.decode.lm import LMError
from asr.lm_corpus import read_sentences
from asr.lm_count import id_bits, unique_rows
from asr.lm_table import NGramTables, log10_probs, sentence_queries


def perplexity(model: NGramTables, sentences: list[list[str]]) -> dict[str, float]:
    """Perplexity over words and ``</s>`` (OOV words scored as ``<unk>``, as kenlm does).

    Returns:
        ``ppl``, ``ppl_no_oov`` (OOV words left out, as SRILM reports), ``oov_rate``, ``words``,
        ``sentences``, ``log10_prob``.
    """
    queries, nwords, noov = sentence_queries(model, sentences)
    lp = log10_probs(model, queries)
    oov = _oov_mask(model, sentences, queries)
    n = len(lp)
    kept = lp[~oov]
    return {"ppl": float(10 ** (-lp.sum() / n)) if n else float("nan"),
            "ppl_no_oov": float(10 ** (-kept.sum() / len(kept))) if len(kept) else float("nan"),
            "oov_rate": noov / nwords if nwords else 0.0, "words": nwords, "sentences": len(sentences),
            "log10_prob": float(lp.sum())}


def _oov_mask(model: NGramTables, sentences, queries) -> np.ndarray:
    """Which queries (in ``log10_probs`` order) predict a word outside the model's unigrams."""
    vocab = set(model.rows[0][:, 0].tolist())
    flags: dict[int, list[bool]] = {}
    n_max = model.order
    for words in sentences:
        ids = [model.word_id.get(w, -1) for w in words]
        seq = [i < 0 or i not in vocab for i in ids] + [False]
        for t, bad in enumerate(seq, 1):
            flags.setdefault(min(t + 1, n_max), []).append(bad)
    return np.concatenate([np.array(flags[k], dtype=bool) for k in sorted(queries)])


def read_text(path: str | Path, normalize: bool = True) -> list[list[str]]:
    return list(read_sentences([path], normalize))


def component_probs(models: list[NGramTables], sentences: list[list[str]]) -> np.ndarray:
    """(models, tokens) probabilities of each word and ``</s>``; 0 where a word is outside a
    model's vocabulary but inside another's (its mass belongs to that other model)."""
    union = set()
    for m in models:
        union |= {m.vocab[i] for i in m.rows[0][:, 0].tolist()}
    out = []
    for m in models:
        own = {m.vocab[i] for i in m.rows[0][:, 0].tolist()}
        queries, _, _ = sentence_queries(m, sentences)
        p = 10.0 ** log10_probs(m, queries)
        missing = []
        for words in sentences:
            missing.extend([w in union and w not in own for w in words] + [False])
        flags = _reorder(missing, sentences, m.order)
        p[flags] = 0.0
        out.append(p)
    return np.stack(out)


def _reorder(values: list[bool], sentences, order: int) -> np.ndarray:
    """Token-order flags -> the (history length, then token) order of ``log10_probs``."""
    by_k: dict[int, list[bool]] = {}
    i = 0
    for words in sentences:
        for t in range(1, len(words) + 2):
            by_k.setdefault(min(t + 1, order), []).append(values[i])
            i += 1
    return np.concatenate([np.array(by_k[k], dtype=bool) for k in sorted(by_k)])


def tune_weights(probs: np.ndarray, iters: int = 200, tol: float = 1e-7) -> np.ndarray:
    """EM weights of a linear mixture maximising the likelihood of the tokens.

    Args:
        probs: (models, tokens) component probabilities.

    Returns:
        (models,) weights summing to 1.
    """
    k = probs.shape[0]
    w = np.full(k, 1.0 / k)
    for _ in range(iters):
        mix = np.maximum(w @ probs, 1e-300)
        new = (w[:, None] * probs / mix).mean(axis=1)
        new /= new.sum()
        if np.abs(new - w).max() < tol:
            return new
        w = new
    return w


def mix(models: list[NGramTables], weights: Iterable[float]) -> NGramTables:
    """Static linear interpolation of back-off models into one back-off model."""
    weights = np.asarray(list(weights), dtype=np.float64)
    if len(weights) != len(models) or np.any(weights < 0) or not np.isclose(weights.sum(), 1.0, atol=1e-6):
        raise LMError(f"--weights: give {len(models)} non-negative weights that sum to 1, got {weights.tolist()}")
    vocab = sorted({w for m in models for w in (m.vocab[i] for i in m.rows[0][:, 0].tolist())})
    wid = {w: i for i, w in enumerate(vocab)}
    order = max(m.order for m in models)
    bits = id_bits(len(vocab))
    to_union = [np.array([wid.get(w, -1) for w in m.vocab], dtype=np.int32) for m in models]
    rows = []
    for n in range(1, order + 1):
        parts = [to_union[i][m.rows[n - 1]] for i, m in enumerate(models) if n <= m.order]
        r = np.concatenate(parts)
        rows.append(unique_rows(r, np.zeros(len(r), dtype=np.int64), bits)[0])
    out = NGramTables(vocab, rows, [None] * order, [np.zeros(len(r)) for r in rows])
    to_model = [np.array([m.word_id.get(w, -1) for w in vocab], dtype=np.int32) for m in models]
    for n in range(1, order + 1):
        total = np.zeros(len(rows[n - 1]))
        for i, m in enumerate(models):
            q = to_model[i][rows[n - 1]]
            p = 10.0 ** m.log10_prob(q)
            p[q[:, -1] < 0] = 0.0  # a word model i does not know: its mass is elsewhere
            total += weights[i] * p
        with np.errstate(divide="ignore"):
            out.prob[n - 1] = np.maximum(np.log10(total), -99.0)
    bos = wid.get("<s>")
    out.prob[0][rows[0][:, 0] == bos] = -99.0
    out.recompute_bows()
    return out

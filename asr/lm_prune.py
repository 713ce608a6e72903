"""Entropy-based pruning of a back-off n-gram model (Stolcke 1998, as SRILM ``ngram -prune``).

For each n-gram (h, w) of order >= 2, removing it makes P(w | h) a back-off estimate
bow'(h) P(w | h') and raises bow(h) to normalise the context again. The change in the model's
entropy (relative to itself, weighted by the history probability P(h) from the model's own
chain of probabilities) is

    dH = -P(h) [ P(w|h) (ln P(w|h') + ln bow'(h) - ln P(w|h)) + S(h) (ln bow'(h) - ln bow(h)) ]

with S(h) = 1 - sum of the listed P(.|h). The n-gram goes when exp(dH) - 1, the relative
perplexity increase, is below the threshold (SRILM's test), unless a kept higher-order n-gram
starts with it. The n-grams of one context are judged against the unpruned model, highest
order first; back-off weights are recomputed at the end.
"""

from __future__ import annotations

import logging

import numpy as np

from asr.lm_table import NGramTables, context_groups

log = logging.getLogger("asr.lm_prune")


def history_probs(model: NGramTables) -> list[np.ndarray]:
    """P(w1 .. wn) for every n-gram of orders 1..N-1 by the chain rule (P(<s>) = 1)."""
    bos = model.word_id.get("<s>")
    p1 = 10.0 ** model.prob[0]
    p1[model.rows[0][:, 0] == bos] = 1.0
    out = [p1]
    for n in range(2, model.order):
        prefix = model.find(np.ascontiguousarray(model.rows[n - 1][:, :-1]))
        out.append(out[-1][prefix] * 10.0 ** model.prob[n - 1])
    return out


def prune_entropy(model: NGramTables, threshold: float, progress: bool = False) -> NGramTables:
    """Remove the n-grams whose removal raises perplexity by less than ``threshold`` (relative).

    Args:
        model: a prefix-closed model (``estimate_tables`` or ``read_arpa`` output).
        threshold: e.g. 1e-8 .. 1e-7 for a book LM (SRILM ``-prune``).
        progress: log each order's figures.

    Returns:
        a new model with recomputed back-off weights.
    """
    hist = history_probs(model)
    keep: list[np.ndarray] = [np.ones(len(r), dtype=bool) for r in model.rows]
    for n in range(model.order, 1, -1):
        rows = model.rows[n - 1]
        if not len(rows):
            continue
        p = 10.0 ** model.prob[n - 1]
        p_low = 10.0 ** model.log10_prob(np.ascontiguousarray(rows[:, 1:]))
        starts, group = context_groups(rows)
        ctx = model.find(np.ascontiguousarray(rows[starts, :-1]))
        p_hist = hist[n - 2][ctx][group]
        num = np.maximum(1.0 - np.add.reduceat(p, starts), 1e-12)[group]
        den = np.maximum(1.0 - np.add.reduceat(p_low, starts), 1e-12)[group]
        bow = num / den
        bow_new = (num + p) / (den + p_low)
        with np.errstate(divide="ignore", invalid="ignore"):
            dh = -p_hist * (p * (np.log(p_low) + np.log(bow_new) - np.log(p))
                            + num * (np.log(bow_new) - np.log(bow)))
        prunable = np.expm1(dh) < threshold
        if n < model.order:  # a kept higher-order n-gram starts with it
            higher = model.rows[n][keep[n]]
            idx = model.find(np.ascontiguousarray(higher[:, :-1]))
            prunable[idx[idx >= 0]] = False
        keep[n - 1] = ~prunable
        if progress:
            log.info("prune %d-grams: %d of %d kept", n, int(keep[n - 1].sum()), len(rows))
    out = NGramTables(model.vocab, [r[k] for r, k in zip(model.rows, keep)],
                      [p[k] for p, k in zip(model.prob, keep)], [b[k] for b, k in zip(model.bow, keep)])
    out.recompute_bows()
    return out

"""Estimate a word n-gram LM with interpolated modified Kneser-Ney and write it as ARPA.

The estimate follows KenLM's ``lmplz`` (Heafield et al., 2013):

1. counts: sentences are padded ``<s> ... </s>``; the highest order uses raw counts, lower
   orders use adjusted counts a(x) = the number of distinct words seen left of x (raw counts
   for n-grams that start with ``<s>``, which have no left context);
2. discounts per order from counts of counts t_k: Y = t1 / (t1 + 2 t2),
   D_k = k - (k + 1) Y t_{k+1} / t_k for k = 1, 2, 3+ (fixed 0.5, 1, 1.5 when the counts are
   too few for that formula, like ``lmplz --discount_fallback``);
3. p(w | c) = (a(c w) - D(a(c w))) / sum_x a(c x) + gamma(c) p(w | c minus its first word),
   gamma(c) = (D_1 N_1(c) + D_2 N_2(c) + D_3 N_3+(c)) / sum_x a(c x), and unigrams interpolate
   with the uniform distribution over the vocabulary (with ``<unk>``, without ``<s>``);
4. in the ARPA file an n-gram's probability is that interpolated p and a context's back-off
   is gamma, so back-off scoring reproduces the interpolated model exactly.

No PyPI package does this (KenLM's pip wheel has no ``lmplz``; nltk does not write ARPA), so it
is written here and tested against kenlm's scores on the files it writes (tests/test_lm.py).

``build_lm`` streams the text (``asr.lm_corpus``), counts in numpy (``asr.lm_count``) and
estimates on numpy tables (``estimate_tables``), so 50 M words fit in a few GB; count cut-offs
move a pruned n-gram's whole count into its context's back-off mass (the model stays
normalised), and ``asr.lm_prune`` then applies entropy pruning. ``estimate`` is the same
estimate in Python dicts of tuples: the readable reference the tests compare against.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from asr.decode.lm import LMError
from asr.lm_corpus import BOS, UNK, WordIds, id_chunks, read_sentences, read_vocab
from asr.lm_count import NGramCounter, adjusted_counts, id_bits, relabel
from asr.lm_table import NGramTables, context_groups

log = logging.getLogger("asr.lm_build")
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


def discounts(counts_of_counts: dict[int, int], order: int) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts (D1, D2, D3+) from counts of counts t_1..t_4."""
    t = [counts_of_counts.get(k, 0) for k in range(5)]
    if min(t[1:5]) > 0:
        y = t[1] / (t[1] + 2 * t[2])
        d = tuple(k - (k + 1) * y * t[k + 1] / t[k] for k in (1, 2, 3))
        if all(0 < d[k - 1] < k for k in (1, 2, 3)):
            return d
    log.warning("order %d: too few n-grams for modified Kneser-Ney discounts (counts of counts %s); "
                "using %s", order, t[1:5], FALLBACK_DISCOUNTS)
    return FALLBACK_DISCOUNTS


def estimate(sentences: Iterable[str], order: int = 3) -> dict[int, dict[tuple[str, ...], tuple[float, float]]]:
    """Interpolated modified Kneser-Ney n-gram model.

    Args:
        sentences: whitespace-separated words, one sentence each.
        order: n of the n-gram (>= 1).

    Returns:
        ``{n: {words: (log10 prob, log10 back-off)}}``, ready for ``asr.decode.lm.arpa_text``.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    # raw counts of the highest order (shorter n-grams at the sentence start included via <s>)
    raw: list[dict[tuple[str, ...], int]] = [defaultdict(int) for _ in range(order + 1)]
    for sentence in sentences:
        words = ["<s>"] + sentence.split() + ["</s>"]
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                gram = tuple(words[i : i + n])
                # An n-gram below the top order only counts raw when it starts the sentence.
                if n == order or gram[0] == "<s>":
                    raw[n][gram] += 1
    # adjusted counts: a(x) = distinct left extensions of x among the (n+1)-grams
    counts: list[dict[tuple[str, ...], int]] = [{} for _ in range(order + 1)]
    counts[order] = dict(raw[order])
    for n in range(order - 1, 0, -1):
        adj: dict[tuple[str, ...], int] = defaultdict(int)
        for gram in counts[n + 1]:
            adj[gram[1:]] += 1
        for gram, c in raw[n].items():  # n-grams starting with <s>
            adj[gram] = c
        counts[n] = dict(adj)

    vocab = sorted({g[0] for g in counts[1]} - {"<s>"} | {"<unk>"})
    probs: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]
    gammas: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]
    for n in range(1, order + 1):
        grams = {g: c for g, c in counts[n].items() if g[-1] != "<s>"}
        coc: dict[int, int] = defaultdict(int)
        for c in grams.values():
            if c <= 4:
                coc[c] += 1
        d = discounts(coc, n)
        # per context: total count and how many continuations have count 1, 2, 3+
        total: dict[tuple[str, ...], int] = defaultdict(int)
        nk: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0, 0])
        for g, c in grams.items():
            total[g[:-1]] += c
            if c > 0:
                nk[g[:-1]][min(c, 3) - 1] += 1
        for ctx, tot in total.items():
            gammas[n - 1][ctx] = sum(d[k] * nk[ctx][k] for k in range(3)) / tot if tot else 1.0
        for g, c in grams.items():
            tot = total[g[:-1]]
            u = (c - (d[min(c, 3) - 1] if c > 0 else 0.0)) / tot if tot else 0.0
            lower = 1.0 / len(vocab) if n == 1 else probs[n - 1][g[1:]]
            probs[n][g] = u + gammas[n - 1][g[:-1]] * lower
        if n == 1:
            probs[1][("<unk>",)] = gammas[0][()] / len(vocab)

    out: dict[int, dict[tuple[str, ...], tuple[float, float]]] = {}
    for n in range(1, order + 1):
        table: dict[tuple[str, ...], tuple[float, float]] = {}
        grams = sorted(set(probs[n]) | ({("<s>",)} if n == 1 else set()))
        for g in grams:
            p = -99.0 if g == ("<s>",) else math.log10(probs[n][g])
            gamma = gammas[n].get(g) if n < order else None
            table[g] = (p, math.log10(gamma) if gamma else 0.0)
        out[n] = table
    return out


def parse_cutoffs(text: str | None, order: int) -> list[int]:
    """``"0,1,1"`` -> a count cut-off per order (the last one repeats; unigrams must be 0).

    An n-gram whose count is at most its order's cut-off is dropped (KenLM ``--prune 0 1 1``).
    """
    if not text:
        return [0] * order
    try:
        values = [int(v) for v in text.replace(" ", ",").split(",") if v]
    except ValueError:
        raise LMError(f"--cutoffs {text!r}: give integers separated by commas, e.g. 0,1,1") from None
    if not values or values[0] != 0 or any(v < 0 for v in values):
        raise LMError(f"--cutoffs {text!r}: the unigram cut-off must be 0 and none negative (e.g. 0,1,1)")
    return (values + [values[-1]] * order)[:order]


def estimate_tables(counts: list[tuple[np.ndarray, np.ndarray]], vocab: list[str],
                    cutoffs: list[int] | None = None) -> NGramTables:
    """Interpolated modified Kneser-Ney on numpy tables (same model as ``estimate``).

    Args:
        counts: ``asr.lm_count.adjusted_counts`` output, word ids indexing ``vocab``.
        vocab: id -> word; must contain ``<s>``, ``</s>`` and ``<unk>``.
        cutoffs: per order, drop n-grams with count <= cut-off (kept anyway when a kept
            higher-order n-gram starts or ends with them); their mass goes to the back-off.

    Returns:
        the model (prefix-closed tables).
    """
    order = len(counts)
    cutoffs = cutoffs or [0] * order
    wid = {w: i for i, w in enumerate(vocab)}
    bos, unk = wid[BOS], wid[UNK]
    rows1, c1 = counts[0]
    c1 = c1.copy()
    c1[rows1[:, 0] == bos] = 0  # <s> is never predicted
    if not np.any(rows1[:, 0] == unk):
        at = int(np.searchsorted(rows1[:, 0], unk))
        rows1, c1 = np.insert(rows1, at, [unk], axis=0), np.insert(c1, at, 0)
    counts = [(rows1, c1)] + list(counts[1:])
    full = NGramTables(vocab, [r for r, _ in counts], [], [])
    keep: list[np.ndarray] = [None] * order
    for n in range(order, 0, -1):
        rows, c = counts[n - 1]
        k = c > cutoffs[n - 1] if n > 1 else np.ones(len(c), dtype=bool)
        if n < order and any(cutoffs):
            higher = counts[n][0][keep[n]]
            for part in (higher[:, :-1], higher[:, 1:]):
                idx = full.find(np.ascontiguousarray(part))
                k[idx[idx >= 0]] = True
        keep[n - 1] = k
    model = NGramTables(vocab, [counts[n][0][keep[n]] for n in range(order)],
                        [None] * order, [np.zeros(int(keep[n].sum())) for n in range(order)])
    for n in range(1, order + 1):
        rows, c = counts[n - 1]
        c = c.astype(np.int64)
        kept = keep[n - 1]
        t = np.bincount(c[(c > 0) & (c <= 4)], minlength=5)
        d = np.array((0.0,) + discounts({k: int(t[k]) for k in range(1, 5)}, n))
        dc = d[np.minimum(c, 3)]
        starts, group = context_groups(rows)
        total = np.add.reduceat(c, starts).astype(np.float64)
        gamma = np.add.reduceat(np.where(kept, dc, c), starts) / total
        u = (c[kept] - dc[kept]) / total[group[kept]]
        if n == 1:
            lower = 1.0 / (len(rows) - 1)  # uniform over the vocabulary with <unk>, without <s>
        else:
            idx = model.find(np.ascontiguousarray(rows[kept][:, 1:]))
            lower = 10.0 ** model.prob[n - 2][idx]
        with np.errstate(divide="ignore"):
            prob = np.log10(u + gamma[group[kept]] * lower)
        if n == 1:
            prob[model.rows[0][:, 0] == bos] = -99.0
        model.prob[n - 1] = prob
        if n > 1:
            ctx = model.find(np.ascontiguousarray(rows[starts, :-1]))
            ok = ctx >= 0
            model.bow[n - 2][ctx[ok]] = np.log10(gamma[ok])
    return model


def count_text(paths: Iterable[str | Path], order: int, normalize: bool = True,
               vocab_words: list[str] | None = None, max_vocab: int = 0, progress: bool = False,
               chunk_words: int = 4_000_000) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """Stream the text and count: KN counts per order and the vocabulary (sorted, specials included).

    Words outside ``vocab_words`` or outside the ``max_vocab`` most frequent become ``<unk>``.
    """
    from tqdm import tqdm

    ids = WordIds(vocab_words)
    counter = NGramCounter(order, id_bits(len(ids)))
    bar = tqdm(unit="word", unit_scale=True, desc="count", disable=None if progress else True)
    try:
        for chunk in id_chunks(read_sentences(paths, normalize), ids, chunk_words, bar):
            counter.bits = id_bits(len(ids))  # ids only grow: packing with more bits keeps the order
            counter.add(chunk)
    finally:
        bar.close()
    raw = counter.raw_counts()
    words = ids.words()
    freq = np.zeros(len(words))
    for rows, c in raw:  # every token is the last word of exactly one counted n-gram
        freq += np.bincount(rows[:, -1], weights=c, minlength=len(words))
    specials = {BOS, "</s>", UNK}
    used = [i for i in np.flatnonzero(freq).tolist() if words[i] not in specials]
    if max_vocab and len(used) > max_vocab:
        used.sort(key=lambda i: (-freq[i], words[i]))
        used = used[:max_vocab]
    vocab = sorted([words[i] for i in used] + list(specials))
    rank = {w: r for r, w in enumerate(vocab)}
    new_id = np.full(len(words), rank[UNK], dtype=np.int32)
    for i in used + [0, 1, 2]:
        new_id[i] = rank[words[i]]
    out_bits = id_bits(len(vocab))
    return adjusted_counts(relabel(raw, new_id, out_bits), out_bits), vocab


def build_lm(text_path: str | Path | Iterable[str | Path], out_path: str | Path, order: int = 3,
             normalize: bool = True, lexicon_path: str | Path | None = None,
             vocab_path: str | Path | None = None, max_vocab: int = 0, cutoffs: str | None = None,
             prune: float = 0.0, progress: bool = False) -> dict[int, int]:
    """Read text files or manifests, estimate the model, prune it and write ARPA (atomically).

    Args:
        text_path: one path or several: text (plain, .gz, .xz; a sentence per line) or JSONL.
        out_path: the ARPA file to write (written as ``out_path.tmp``, then renamed).
        order: n-gram order.
        normalize: normalise text (and the vocabulary) as the tokenizers do: lower case.
        lexicon_path: also write the model's words here, one per line (a decoding lexicon).
        vocab_path: closed vocabulary, a word per line; other words become ``<unk>``.
        max_vocab: keep only the N most frequent words (0: all).
        cutoffs: count cut-offs per order, e.g. ``"0,1,1"``.
        prune: entropy-pruning threshold (0: none).
        progress: tqdm bars on stderr.

    Returns:
        the number of n-grams per order.
    """
    from asr.lm_prune import prune_entropy

    if order < 2:
        raise LMError(f"--order must be 2 or more (KenLM and the decoders need at least bigrams), got {order}")
    if prune < 0:
        raise LMError(f"--prune must be >= 0, got {prune}")
    paths = [text_path] if isinstance(text_path, (str, Path)) else list(text_path)
    cuts = parse_cutoffs(cutoffs, order)
    vocab_words = read_vocab(vocab_path, normalize) if vocab_path else None
    t0, c0 = time.time(), time.process_time()

    def done(what: str) -> None:
        log.info("%s: %.1f s (%.1f s CPU) since the start", what, time.time() - t0, time.process_time() - c0)

    counts, vocab = count_text(paths, order, normalize, vocab_words, max_vocab, progress)
    done(f"counted {len(vocab) - 3} words, n-grams per order {[len(r) for r, _ in counts]}")
    model = estimate_tables(counts, vocab, cuts)
    del counts
    done(f"estimated (cut-offs {cuts}): {model.counts()}")
    if prune > 0:
        model = prune_entropy(model, prune, progress)
        done(f"pruned at {prune:g}: {model.counts()}")
    model.write_arpa(out_path, progress)
    done(f"wrote {out_path}")
    if lexicon_path:
        words = [vocab[i] for i in model.rows[0][:, 0].tolist() if vocab[i] not in ("<s>", "</s>", "<unk>")]
        lex = Path(lexicon_path)
        tmp = lex.with_name(lex.name + ".tmp")
        tmp.write_text("".join(w + "\n" for w in words), encoding="utf-8")
        tmp.replace(lex)
    return model.counts()

"""N-gram counting in numpy: n-grams as rows of int32 word ids, sorted runs merged by count.

An order-n table is an ``(m, n)`` int32 array of distinct n-grams in lexicographic order of
their ids, with an ``(m,)`` int32 count array. Each chunk of text is counted with one sort
(rows packed into uint64 keys when ``n * bits <= 64``, else ``np.lexsort``), and the sorted
runs are merged when the pending runs outgrow the merged table, so memory follows the number
of distinct n-grams, not the length of the corpus.
"""

from __future__ import annotations

import numpy as np

BOS_ID, EOS_ID = 0, 1


def id_bits(vocab_size: int) -> int:
    """Bits needed for one word id."""
    return max(1, int(vocab_size - 1).bit_length())


def pack(rows: np.ndarray, bits: int) -> np.ndarray:
    """(m, n) int32 rows -> (m,) uint64 keys in the same lexicographic order (n * bits <= 64)."""
    key = np.zeros(len(rows), dtype=np.uint64)
    for j in range(rows.shape[1]):
        key = (key << np.uint64(bits)) | rows[:, j].astype(np.uint64)
    return key


def unique_rows(rows: np.ndarray, counts: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort rows lexicographically and sum the counts of equal rows.

    Args:
        rows: (m, n) int32 n-grams (any order, repeats allowed).
        counts: (m,) integer counts.
        bits: bits per word id (for packing).

    Returns:
        (k, n) sorted distinct rows and their (k,) summed counts.
    """
    m, n = rows.shape
    if m == 0:
        return rows, counts
    if n * bits <= 64:
        key = pack(rows, bits)
        perm = np.argsort(key, kind="stable")  # timsort: linear on concatenated sorted runs
        key = key[perm]
        new = np.empty(m, dtype=bool)
        new[0] = True
        np.not_equal(key[1:], key[:-1], out=new[1:])
        del key
    else:
        perm = np.lexsort(rows.T[::-1])
    rows, counts = rows[perm], counts[perm]
    if n * bits > 64:
        new = np.empty(m, dtype=bool)
        new[0] = True
        new[1:] = np.any(rows[1:] != rows[:-1], axis=1)
    starts = np.flatnonzero(new)
    return rows[starts], np.add.reduceat(counts, starts)


def windows(tokens: np.ndarray, n: int) -> np.ndarray:
    """Every n-gram of ``<s> .. </s>`` sentences in ``tokens`` that does not cross a sentence end.

    Returns:
        (m, n) int32 rows (copy), in text order.
    """
    if len(tokens) < n:
        return np.empty((0, n), dtype=np.int32)
    view = np.lib.stride_tricks.sliding_window_view(tokens, n)
    valid = np.ones(len(view), dtype=bool)
    for j in range(n - 1):  # only the last word of an n-gram may be </s>
        valid &= tokens[j : j + len(view)] != EOS_ID
    return view[valid]


class NGramCounter:
    """Raw counts of the top order, and of lower-order n-grams that start with ``<s>``.

    Those are the counts modified Kneser-Ney uses raw (``lmplz``); the other lower-order
    counts are derived from the top order (``adjusted_counts``).
    """

    def __init__(self, order: int, vocab_bits: int):
        self.order = order
        self.bits = vocab_bits
        # int32 counts: no n-gram occurs 2^31 times in any corpus a machine can count this way
        self.merged = [(np.empty((0, n), np.int32), np.empty(0, np.int32)) for n in range(1, order + 1)]
        self.pending: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(order)]

    def add(self, tokens: np.ndarray) -> None:
        """Count one chunk of ``<s> w .. </s>`` token ids."""
        starts = np.flatnonzero(tokens == BOS_ID)
        for n in range(1, self.order + 1):
            if n == self.order:
                rows = windows(tokens, n)
            else:  # n-grams starting with <s>: the first n tokens of each sentence, if it has them
                s = starts[starts + n <= len(tokens)]
                rows = tokens[s[:, None] + np.arange(n)]
                ok = np.ones(len(rows), dtype=bool)
                for j in range(n - 1):
                    ok &= rows[:, j] != EOS_ID
                rows = rows[ok]
            run = unique_rows(rows, np.ones(len(rows), dtype=np.int32), self.bits)
            self.pending[n - 1].append(run)
            if sum(len(r[0]) for r in self.pending[n - 1]) >= max(len(self.merged[n - 1][0]), 1 << 20):
                self._merge(n)

    def _merge(self, n: int) -> None:
        runs = [self.merged[n - 1]] + self.pending[n - 1]
        self.pending[n - 1] = []
        rows = np.concatenate([r for r, _ in runs])
        counts = np.concatenate([c for _, c in runs])
        del runs
        self.merged[n - 1] = unique_rows(rows, counts, self.bits)

    def raw_counts(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per order 1..N: (sorted rows, counts); below N only the n-grams that start with ``<s>``."""
        for n in range(1, self.order + 1):
            if self.pending[n - 1]:
                self._merge(n)
        return list(self.merged)


def relabel(raw: list[tuple[np.ndarray, np.ndarray]], new_id: np.ndarray,
            bits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The same counts with word ids mapped through ``new_id`` (rows sorted again)."""
    return [unique_rows(new_id[rows].astype(np.int32), counts, bits) for rows, counts in raw]


def adjusted_counts(raw: list[tuple[np.ndarray, np.ndarray]], bits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Kneser-Ney counts per order: raw for the top order and for n-grams starting with ``<s>``,
    else the number of distinct words seen to the left (distinct (n+1)-grams with that suffix).

    Args:
        raw: ``NGramCounter.raw_counts()``.
        bits: bits per word id.

    Returns:
        per order 1..N, (sorted rows, counts); every n-gram of the text is listed at its order.
    """
    order = len(raw)
    out = [None] * order
    out[-1] = raw[-1]
    for n in range(order - 1, 0, -1):
        higher = out[n][0]
        suffix = np.ascontiguousarray(higher[:, 1:])
        left = unique_rows(suffix, np.ones(len(suffix), dtype=np.int32), bits)
        bos_rows, bos_counts = raw[n - 1]
        out[n - 1] = unique_rows(np.concatenate([left[0], bos_rows]),
                                 np.concatenate([left[1], bos_counts]), bits)
    return out

"""A back-off n-gram model as numpy tables: lookup, back-off scoring, ARPA read and write.

Order n is an ``(m, n)`` int32 array of word ids in lexicographic order, with log10
probabilities and log10 back-off weights. The tables are prefix-closed (every n-gram's first
n - 1 words are an (n-1)-gram), so an n-gram is found by one ``searchsorted`` per word on keys
``index of its prefix * |V| + last word``, which fit in uint64 at any order. Used to build,
prune, mix and score book-sized models (millions of n-grams) without Python dicts.
"""

from __future__ import annotations

import math
import os
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr.decode.arpa import file_lines, read_ngrams
from asr.errors import LMError

LN10 = math.log(10.0)


@dataclass
class NGramTables:
    """vocab: id -> word; rows/prob/bow: per order 1..N (list index n - 1)."""

    vocab: list[str]
    rows: list[np.ndarray]
    prob: list[np.ndarray]
    bow: list[np.ndarray]
    _keys: list[np.ndarray] | None = field(default=None, repr=False)
    _word_id: dict[str, int] | None = field(default=None, repr=False)

    @property
    def order(self) -> int:
        return len(self.rows)

    def counts(self) -> dict[int, int]:
        return {n + 1: len(r) for n, r in enumerate(self.rows)}

    @property
    def word_id(self) -> dict[str, int]:
        if self._word_id is None:
            self._word_id = {w: i for i, w in enumerate(self.vocab)}
        return self._word_id

    def keys(self) -> list[np.ndarray]:
        """Per order, sorted uint64 keys: word id (order 1), prefix index * |V| + last word."""
        if self._keys is None:
            v = np.uint64(len(self.vocab))
            keys = [self.rows[0][:, 0].astype(np.uint64)]
            self._keys = keys
            for n in range(2, self.order + 1):
                rows = self.rows[n - 1]
                prefix = self.find(rows[:, :-1], upto=n - 1)
                if len(rows) and prefix.min() < 0:
                    bad = rows[int(np.argmin(prefix))]
                    self._keys = None
                    raise LMError(f"{n}-gram {' '.join(self.vocab[i] for i in bad)!r} has no "
                                  f"{n - 1}-gram for its first {n - 1} words (not a prefix-closed model)")
                keys.append(prefix.astype(np.uint64) * v + rows[:, -1].astype(np.uint64))
                if len(keys[-1]) > 1 and not np.all(keys[-1][1:] > keys[-1][:-1]):
                    self._keys = None
                    raise LMError(f"{n}-grams are not sorted or not distinct")
        return self._keys

    def invalidate(self) -> None:
        self._keys = None

    def find(self, q: np.ndarray, upto: int | None = None) -> np.ndarray:
        """Row index of each n-gram of ``q`` ((m, k) word ids) in the order-k table, or -1."""
        m, k = q.shape
        keys = self._keys if upto is not None else self.keys()
        idx = np.full(m, -1, dtype=np.int64)
        if m == 0 or k == 0:
            return idx
        ok = q[:, 0] >= 0
        v = np.uint64(len(self.vocab))
        for j in range(k):
            table = keys[j]
            if len(table) == 0:
                return np.full(m, -1, dtype=np.int64)
            if j == 0:
                want = np.where(ok, q[:, 0], 0).astype(np.uint64)
            else:
                ok &= q[:, j] >= 0
                want = np.where(ok, idx, 0).astype(np.uint64) * v + np.where(ok, q[:, j], 0).astype(np.uint64)
            pos = np.minimum(np.searchsorted(table, want), len(table) - 1)
            ok &= table[pos] == want
            idx = np.where(ok, pos, -1)
        return idx

    def recompute_bows(self) -> None:
        """Back-off weights that normalise each context again (after pruning or mixing):
        bow(h) = (1 - sum P(w|h)) / (1 - sum P(w|h minus its first word)) over the w listed after h."""
        for n in range(1, self.order):
            higher = self.rows[n]
            bow = np.zeros(len(self.rows[n - 1]))
            if len(higher):
                starts, _ = context_groups(higher)
                num = 1.0 - np.add.reduceat(10.0 ** self.prob[n], starts)
                den = 1.0 - np.add.reduceat(10.0 ** self.log10_prob(np.ascontiguousarray(higher[:, 1:])), starts)
                ctx = self.find(np.ascontiguousarray(higher[starts, :-1]))
                ok = ctx >= 0
                bow[ctx[ok]] = np.log10(np.maximum(num[ok], 1e-12) / np.maximum(den[ok], 1e-12))
            self.bow[n - 1] = bow

    def log10_prob(self, q: np.ndarray) -> np.ndarray:
        """log10 P(last word | the words before it) by back-off, for each row of ``q`` ((m, k) ids).

        Words must be vocabulary ids; an id outside the unigrams scores as ``<unk>``.
        """
        m, k = q.shape
        k_eff = min(k, self.order)
        q = q[:, k - k_eff :]
        res = np.full(m, np.nan)
        acc = np.zeros(m)
        unk = self.word_id.get("<unk>")
        unk_idx = self.find(np.array([[unk]], dtype=np.int32))[0] if unk is not None else -1
        unk_p = self.prob[0][unk_idx] if unk_idx >= 0 else -100.0
        for j in range(k_eff):
            need = np.flatnonzero(np.isnan(res))
            if len(need) == 0:
                break
            sub = q[need, j:]
            idx = self.find(sub)
            hit = idx >= 0
            res[need[hit]] = acc[need[hit]] + self.prob[sub.shape[1] - 1][idx[hit]]
            miss = need[~hit]
            if sub.shape[1] > 1 and len(miss):
                ctx = q[miss, j:-1]
                cidx = self.find(ctx)
                has = cidx >= 0
                acc[miss[has]] += self.bow[ctx.shape[1] - 1][cidx[has]]
        left = np.isnan(res)
        res[left] = acc[left] + unk_p
        return res

    def write_arpa(self, path: str | Path, progress: bool = False) -> None:
        """Write ARPA text atomically (``path.tmp`` then rename): no half-written file under ``path``."""
        from tqdm import tqdm

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        voc = self.vocab
        total = sum(len(r) for r in self.rows)
        bar = tqdm(total=total, unit="ngram", desc="write ARPA", disable=None if progress else True,
                   unit_scale=True)
        try:
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.write("\n\\data\\\n")
                f.write("".join(f"ngram {n + 1}={len(r)}\n" for n, r in enumerate(self.rows)))
                for n in range(self.order):
                    f.write(f"\n\\{n + 1}-grams:\n")
                    top = n + 1 == self.order
                    for s in range(0, len(self.rows[n]), 200_000):
                        rows = self.rows[n][s : s + 200_000].tolist()
                        ps = self.prob[n][s : s + 200_000].tolist()
                        if top:
                            f.write("".join(f"{p:.7g}\t{' '.join([voc[i] for i in r])}\n"
                                            for p, r in zip(ps, rows)))
                        else:
                            bs = self.bow[n][s : s + 200_000].tolist()
                            f.write("".join(f"{p:.7g}\t{' '.join([voc[i] for i in r])}\t{b:.7g}\n"
                                            for p, r, b in zip(ps, rows, bs)))
                        bar.update(len(rows))
                f.write("\n\\end\\\n")
            os.replace(tmp, path)
        finally:
            bar.close()
            if tmp.exists():
                tmp.unlink()


def context_groups(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start of each context's run, context number of each row) for sorted (m, n) rows."""
    m, n = rows.shape
    new = np.zeros(m, dtype=bool)
    if m:
        new[0] = True
        if n > 1:
            new[1:] = np.any(rows[1:, :-1] != rows[:-1, :-1], axis=1)
    return np.flatnonzero(new), np.cumsum(new) - 1


def _sort_order(rows: np.ndarray, vocab_size: int) -> np.ndarray:
    from asr.lm_count import id_bits, pack

    bits = id_bits(vocab_size)
    if rows.shape[1] * bits <= 64:
        return np.argsort(pack(rows, bits), kind="stable")
    return np.lexsort(rows.T[::-1])


def from_dicts(model: dict[int, dict[tuple[str, ...], tuple[float, float]]]) -> NGramTables:
    """Tables from ``{n: {words: (log10 p, log10 bow)}}`` (``parse_arpa`` / ``estimate`` output)."""
    vocab = sorted({w for grams in model.values() for g in grams for w in g})
    index = {w: i for i, w in enumerate(vocab)}
    rows, prob, bow = [], [], []
    for n in range(1, max(model) + 1):
        grams = model.get(n, {})
        r = np.array([[index[w] for w in g] for g in grams], dtype=np.int32).reshape(len(grams), n)
        pb = np.array(list(grams.values()), dtype=np.float64).reshape(len(grams), 2)
        perm = _sort_order(r, len(vocab))
        rows.append(r[perm])
        prob.append(pb[perm, 0])
        bow.append(pb[perm, 1])
    return NGramTables(vocab, rows, prob, bow)


def read_arpa(path: str | Path) -> NGramTables:
    """Read an ARPA file (plain, gzip or xz) into tables, with ``asr.decode.arpa``'s checks.

    Raises:
        LMError: naming the file and line: not ARPA, a bad line, a section whose length differs
            from the header, a truncated file, a word missing from the unigrams, a model that is
            not prefix-closed.
    """
    vocab: dict[str, int] = {}
    header: dict[int, int] = {}
    # per order: word ids (flat), log10 probs, log10 back-offs, in C buffers (4 or 8 bytes each)
    cols: dict[int, tuple[array, array, array]] = defaultdict(lambda: (array("i"), array("d"), array("d")))
    for n, words, p, b in read_ngrams(file_lines(path), str(path), header):
        if n == 1:
            vocab.setdefault(words[0], len(vocab))
        ids, probs, bows = cols[n]
        ids.extend([vocab[w] for w in words])
        probs.append(p)
        bows.append(b)
    tables = NGramTables(list(vocab), [], [], [])
    for k in range(1, max(header) + 1):
        ids, probs, bows = cols.pop(k, None) or cols[k]
        r = np.frombuffer(ids, dtype=np.int32).reshape(-1, k)
        perm = _sort_order(r, len(vocab))
        tables.rows.append(r[perm])
        tables.prob.append(np.frombuffer(probs, dtype=np.float64)[perm])
        tables.bow.append(np.frombuffer(bows, dtype=np.float64)[perm])
    try:
        tables.keys()
    except LMError as e:
        raise LMError(f"{path}: {e}") from None
    return tables


def sentence_queries(tables: NGramTables, sentences, unk_words: set | None = None):
    """Per history length, the (m, k) queries of every word and ``</s>`` of ``sentences``.

    Returns:
        (queries by k, number of words, number of OOV words (scored as ``<unk>``)).
    """
    wid = tables.word_id
    unigram = set(tables.rows[0][:, 0].tolist())
    unk = wid.get("<unk>", -1)
    if "<s>" not in wid or "</s>" not in wid:
        raise LMError("the model has no <s> or </s> unigram; it cannot score sentences")
    bos, eos = wid["<s>"], wid["</s>"]
    n_max = tables.order
    by_k: dict[int, list[np.ndarray]] = {}
    nwords = noov = 0
    for words in sentences:
        ids = [wid.get(w, -1) for w in words]
        ids = [i if i in unigram else -1 for i in ids]
        noov += sum(1 for i in ids if i < 0)
        nwords += len(ids)
        seq = np.array([bos] + [i if i >= 0 else unk for i in ids] + [eos], dtype=np.int32)
        for t in range(1, len(seq)):
            k = min(t + 1, n_max)
            by_k.setdefault(k, []).append(seq[t + 1 - k : t + 1])
    return {k: np.stack(v) for k, v in by_k.items()}, nwords, noov


def log10_probs(tables: NGramTables, queries: dict[int, np.ndarray]) -> np.ndarray:
    """log10 probabilities of all queries (concatenated in increasing k)."""
    return np.concatenate([tables.log10_prob(queries[k]) for k in sorted(queries)])

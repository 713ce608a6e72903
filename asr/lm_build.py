"""Estimate a word n-gram LM with interpolated modified Kneser-Ney and write it as ARPA.

The estimate follows KenLM's ``lmplz`` (Heafield et al., 2013), without pruning:

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
Counting runs in Python dicts: fine for transcripts and book-sized text (millions of words).
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from asr.decode.lm import LMError, arpa_text
from asr.text import normalize_text

log = logging.getLogger("asr.lm_build")
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


def read_sentences(path: str | Path, normalize: bool = True) -> list[str]:
    """Sentences from a text file (one per line) or a JSONL manifest (its ``text`` fields).

    Args:
        path: ``.txt`` (or any text) file, or ``.jsonl``/``.json`` manifest.
        normalize: apply ``normalize_text`` (lower case, no punctuation) like the tokenizers do.

    Returns:
        non-empty sentences.
    """
    path = Path(path)
    if not path.is_file():
        raise LMError(f"LM training text {path} does not exist")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if path.suffix in (".jsonl", ".json"):
                try:
                    line = json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise LMError(f"{path}:{n}: not a manifest line with a \"text\" field") from None
            text = normalize_text(line) if normalize else " ".join(line.split())
            if text:
                out.append(text)
    if not out:
        raise LMError(f"{path}: no sentences to train an LM on")
    return out


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


def build_lm(text_path: str | Path, out_path: str | Path, order: int = 3, normalize: bool = True,
             lexicon_path: str | Path | None = None) -> dict[int, int]:
    """Read text or a manifest, estimate the model and write ARPA (and optionally the word list).

    Args:
        text_path: text file (a sentence per line) or JSONL manifest.
        out_path: the ARPA file to write.
        order: n-gram order.
        normalize: normalise text as the tokenizers do.
        lexicon_path: also write the vocabulary here, one word per line (a lexicon for decoding).

    Returns:
        the number of n-grams per order.
    """
    if order < 2:
        raise LMError(f"--order must be 2 or more (KenLM and the decoders need at least bigrams), got {order}")
    sentences = read_sentences(text_path, normalize)
    model = estimate(sentences, order)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(arpa_text(model), encoding="utf-8")
    if lexicon_path:
        words = sorted(g[0] for g in model[1] if g[0] not in ("<s>", "</s>", "<unk>"))
        Path(lexicon_path).write_text("".join(w + "\n" for w in words), encoding="utf-8")
    return {n: len(t) for n, t in model.items()}

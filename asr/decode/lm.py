"""Word n-gram language models read from ARPA files, scored with back-off.

Scores are natural-log probabilities (ARPA stores log10; we convert on read), so
they add directly to CTC log-probabilities in shallow fusion.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

LN10 = math.log(10.0)


class LMError(ValueError):
    """An ARPA file that cannot be read."""


class NGramLM:
    """Back-off n-gram LM.

    State is the tuple of the last (order - 1) words. ``score(state, word)`` returns
    (ln P(word | state), new_state); ``final(state)`` scores the end of sentence.

    >>> lm = NGramLM({1: {("<s>",): (-99.0, -0.3), ("a",): (-0.5, 0.0), ("</s>",): (-0.5, 0.0)}})
    >>> round(lm.score(lm.begin(), "a")[0] / LN10, 3)
    -0.5
    """

    def __init__(self, ngrams: dict[int, dict[tuple[str, ...], tuple[float, float]]]):
        # ngrams[n][words] = (log10 prob, log10 backoff)
        self.ngrams = ngrams
        self.order = max(ngrams)
        self.unk_log10 = ngrams[1].get(("<unk>",), (-100.0, 0.0))[0]
        self.vocab = {w[0] for w in ngrams[1]}
        self._cache: dict[tuple[tuple[str, ...], str], tuple[float, tuple[str, ...]]] = {}

    @classmethod
    def from_arpa(cls, path: str | Path) -> NGramLM:
        path = Path(path)
        if not path.is_file():
            raise LMError(f"language model {path} does not exist")
        opener = gzip.open if path.suffix == ".gz" else open
        ngrams: dict[int, dict] = {}
        order = 0
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    line = line.strip()
                    if not line or line.startswith("ngram ") or line == "\\data\\":
                        continue
                    if line.startswith("\\") and line.endswith("-grams:"):
                        order = int(line[1:].split("-")[0])
                        ngrams[order] = {}
                        continue
                    if line == "\\end\\":
                        break
                    if order == 0:
                        continue
                    parts = line.split()
                    if len(parts) < order + 1:
                        raise LMError(f"{path}:{n}: expected {order} words after the probability")
                    prob = float(parts[0])
                    words = tuple(parts[1 : 1 + order])
                    bo = float(parts[1 + order]) if len(parts) > order + 1 else 0.0
                    ngrams[order][words] = (prob, bo)
        except (UnicodeDecodeError, ValueError) as e:
            if isinstance(e, LMError):
                raise
            raise LMError(f"{path}: not an ARPA file ({e})") from None
        if 1 not in ngrams:
            raise LMError(f"{path}: no \\1-grams: section; is this an ARPA file?")
        return cls(ngrams)

    def begin(self) -> tuple[str, ...]:
        return ("<s>",)

    def _log10(self, context: tuple[str, ...], word: str) -> float:
        # Standard back-off: P(w|ctx) = P*(w|ctx) if seen, else bo(ctx) + P(w|ctx[1:]).
        total = 0.0
        ctx = context[-(self.order - 1) :] if self.order > 1 else ()
        while True:
            entry = self.ngrams.get(len(ctx) + 1, {}).get(ctx + (word,))
            if entry is not None:
                return total + entry[0]
            if not ctx:
                return total + self.unk_log10
            bo = self.ngrams.get(len(ctx), {}).get(ctx)
            total += bo[1] if bo else 0.0
            ctx = ctx[1:]

    def _next_state(self, context: tuple[str, ...], word: str) -> tuple[str, ...]:
        if self.order == 1:
            return ()
        state = (context + (word,))[-(self.order - 1) :]
        # Trim to the longest context that exists as an n-gram (KenLM's state minimisation).
        while state and state not in self.ngrams.get(len(state), {}):
            state = state[1:]
        return state

    def score(self, state: tuple[str, ...], word: str) -> tuple[float, tuple[str, ...]]:
        key = (state, word)
        hit = self._cache.get(key)
        if hit is None:
            hit = (self._log10(state, word) * LN10, self._next_state(state, word))
            if len(self._cache) < 2_000_000:
                self._cache[key] = hit
        return hit

    def final(self, state: tuple[str, ...]) -> float:
        return self.score(state, "</s>")[0]

    def sentence_logprob(self, words: list[str], eos: bool = True) -> float:
        """ln P(sentence) from <s>, including </s> when ``eos``."""
        state, total = self.begin(), 0.0
        for w in words:
            lp, state = self.score(state, w)
            total += lp
        if eos:
            total += self.final(state)
        return total


def load_lm(path: str | Path) -> NGramLM:
    return NGramLM.from_arpa(path)

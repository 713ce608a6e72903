"""Word n-gram language models: ARPA files (ours) and KenLM binaries (through kenlm).

Scores are natural-log probabilities (ARPA stores log10; we convert), so they add
directly to CTC log-probabilities in shallow fusion. ``NGramLM`` answers the same
as KenLM on the same ARPA file: back-off scoring, out-of-vocabulary words scored as
``<unk>`` (log10 -100 when the file has none), and states trimmed to the longest
context the model knows.

Two representations of one model: the C++ one (``NGramLM.native``, used by the fast
beam search; parsed in C++ straight from the file) and plain Python dicts
(``NGramLM.ngrams``, used by the reference search and ``score``), each built on
first use.
"""

from __future__ import annotations

import math
from pathlib import Path

from asr.decode.arpa import compression, file_lines, open_arpa, read_ngrams
from asr.errors import LMError

LN10 = math.log(10.0)
SPECIAL = ("<s>", "</s>", "<unk>")


def _native_module():
    try:
        from asr.decode import _ctcdecode
    except ImportError:
        return None
    return _ctcdecode


def parse_arpa(text: str, source: str = "<text>") -> dict[int, dict[tuple[str, ...], tuple[float, float]]]:
    """Parse ARPA text into ``{order: {words: (log10 prob, log10 backoff)}}`` (``asr.decode.arpa``'s checks).

    Args:
        text: the whole ARPA file.
        source: file name for error messages.

    Returns:
        n-gram tables by order.
    """
    return _tables(text.splitlines(), source)


def _tables(lines, source: str) -> dict[int, dict[tuple[str, ...], tuple[float, float]]]:
    header: dict[int, int] = {}
    tables: dict[int, dict] = {}
    for order, words, prob, bo in read_ngrams(lines, source, header):
        tables.setdefault(order, {})[words] = (prob, bo)
    return {n: tables.get(n, {}) for n in range(1, max(header) + 1)}


def arpa_text(ngrams: dict[int, dict[tuple[str, ...], tuple[float, float]]]) -> str:
    """Write n-gram tables (as returned by ``parse_arpa``) as ARPA text."""
    order = max(ngrams)
    lines = ["", "\\data\\"]
    lines += [f"ngram {n}={len(ngrams[n])}" for n in range(1, order + 1)]
    for n in range(1, order + 1):
        lines += ["", f"\\{n}-grams:"]
        for words, (p, bo) in ngrams[n].items():
            text = f"{p:.7g}\t{' '.join(words)}"
            if n < order:
                text += f"\t{bo:.7g}"
            lines.append(text)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


class NGramLM:
    """Back-off n-gram LM.

    State is the tuple of the last (up to order - 1) words, trimmed to the longest one the
    model lists. ``score(state, word)`` returns (ln P(word | state), new_state);
    ``final(state)`` scores the end of the sentence.

    >>> lm = NGramLM({1: {("<s>",): (-99.0, -0.3), ("a",): (-0.5, 0.0), ("</s>",): (-0.5, 0.0)}})
    >>> round(lm.score(lm.begin(), "a")[0] / LN10, 3)
    -0.5
    """

    def __init__(self, ngrams: dict | None = None, path: str | Path | None = None):
        if ngrams is None and path is None:
            raise ValueError("give the n-gram tables or the ARPA file")
        self.path = Path(path) if path else None
        self._ngrams = ngrams
        self._native = None
        self._cache: dict[tuple[tuple[str, ...], str], tuple[float, tuple[str, ...]]] = {}
        self._successors: dict | None = None

    @classmethod
    def from_arpa(cls, path: str | Path) -> NGramLM:
        """Read an ARPA file (plain, gzip or xz); errors name the file and line.

        With the C++ extension, a plain file is parsed in C++ straight from the disk (no copy in
        Python) and the Python tables (``ngrams``) are only built if something asks for them.
        """
        path = Path(path)
        if not path.is_file():
            raise LMError(f"language model {path} does not exist")
        lm = cls(path=path)
        if _native_module() is not None:
            lm.native  # noqa: B018  (parse now so a bad file fails here, with its name)
        else:
            lm.ngrams  # noqa: B018
        return lm

    @property
    def ngrams(self) -> dict[int, dict[tuple[str, ...], tuple[float, float]]]:
        """Python tables ``{order: {words: (log10 prob, log10 back-off)}}`` (parsed on first use)."""
        if self._ngrams is None:
            self._ngrams = _tables(file_lines(self.path), str(self.path))
        return self._ngrams

    @property
    def native(self):
        """The C++ model (a capsule for ``asr.decode._ctcdecode``), or None without the extension."""
        if self._native is None:
            mod = _native_module()
            if mod is None:
                return None
            data = arpa_text(self._ngrams).encode() if self.path is None else None
            if data is None and compression(self.path):
                with open_arpa(self.path) as f:
                    data = f.read()
            try:
                self._native = mod.lm_from_file(str(self.path)) if data is None else mod.lm_from_arpa(data)
            except ValueError as e:
                raise LMError(f"{self.path or 'ARPA text'}: {e}") from None
            except OSError as e:
                raise LMError(f"{self.path}: cannot read it ({e.strerror})") from None
        return self._native

    def words(self) -> list[str]:
        """The vocabulary in file order, without ``<s>``, ``</s>`` and ``<unk>``."""
        if self._ngrams is None and self.native is not None:
            words = _native_module().lm_words(self.native)
        else:
            words = [w[0] for w in self.ngrams[1]]
        return [w for w in words if w not in SPECIAL]

    def info(self) -> dict:
        """Order, n-grams per order and (C++ model) bytes held: ``{"order", "counts", "bytes"}``."""
        if self._native is not None or (self._ngrams is None and self.native is not None):
            order, counts, nbytes = _native_module().lm_info(self.native)
            return {"order": order, "counts": counts, "bytes": nbytes}
        return {"order": self.order, "counts": [len(self.ngrams[n]) for n in sorted(self.ngrams)], "bytes": 0}

    @property
    def order(self) -> int:
        return max(self.ngrams)

    @property
    def vocab(self) -> set[str]:
        return {w[0] for w in self.ngrams[1]}

    @property
    def unk_log10(self) -> float:
        return self.ngrams[1].get(("<unk>",), (-100.0, 0.0))[0]

    def begin(self) -> tuple[str, ...]:
        return ("<s>",) if ("<s>",) in self.ngrams[1] else ()

    def _log10(self, context: tuple[str, ...], word: str) -> float:
        # Back-off: P(w|ctx) = P*(w|ctx) if listed, else bo(ctx) + P(w|ctx[1:]).
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

    def lm_word(self, word: str) -> str:
        """The word the model scores: ``word`` if it is in the vocabulary, else ``<unk>``."""
        if word in ("<s>", "</s>") or (word,) not in self.ngrams[1]:
            return "<unk>"
        return word

    def score(self, state: tuple[str, ...], word: str) -> tuple[float, tuple[str, ...]]:
        """(ln P(word | state), next state); out-of-vocabulary words are scored as ``<unk>``."""
        key = (state, word)
        hit = self._cache.get(key)
        if hit is None:
            w = word if word == "</s>" else self.lm_word(word)
            hit = (self._log10(state, w) * LN10, self._next_state(state, w))
            if len(self._cache) < 2_000_000:
                self._cache[key] = hit
        return hit

    def final(self, state: tuple[str, ...]) -> float:
        return self.score(state, "</s>")[0]

    def unigram(self, word: str) -> float:
        """ln P(word) without context (out-of-vocabulary words as ``<unk>``): the LM look-ahead."""
        return self.score((), word)[0]

    def successors(self, state: tuple[str, ...]) -> list[tuple[str, float]]:
        """The words the model lists after ``state``, with their ln P(word | state) (back-off
        excluded): the context LM look-ahead. Empty for the empty state and unlisted ones."""
        if self._successors is None:
            index: dict[tuple[str, ...], list[tuple[str, float]]] = {}
            for n in range(2, self.order + 1):
                for words, (p, _) in self.ngrams[n].items():
                    index.setdefault(words[:-1], []).append((words[-1], p * LN10))
            self._successors = index
        return self._successors.get(tuple(state), []) if state else []

    def backoff(self, state: tuple[str, ...]) -> float:
        """ln back-off weight of ``state`` (0 when the model does not list it)."""
        entry = self.ngrams.get(len(state), {}).get(tuple(state)) if state else None
        return entry[1] * LN10 if entry else 0.0

    def sentence_logprob(self, words: list[str], bos: bool = True, eos: bool = True) -> float:
        """ln P(sentence), from ``<s>`` when ``bos``, including ``</s>`` when ``eos``."""
        if self._ngrams is None and self.native is not None:  # the C++ model: no Python tables
            return _native_module().lm_sentence(self.native, list(words), bos, eos) * LN10
        state, total = (self.begin() if bos else ()), 0.0
        for w in words:
            lp, state = self.score(state, w)
            total += lp
        if eos:
            total += self.final(state)
        return total


class KenLMModel:
    """A KenLM model (ARPA or binary) through the ``kenlm`` package, with NGramLM's interface.

    The C++ beam search cannot call into KenLM, so decoding with this model uses the Python
    reference search (or the flashlight backend, which reads KenLM files itself).
    """

    native = None

    def __init__(self, path: str | Path):
        try:
            import kenlm
        except ImportError:
            raise LMError(f"{path} is a KenLM binary; reading it needs `pip install kenlm`") from None
        self.path = Path(path)
        self._kenlm = kenlm
        try:
            self.model = kenlm.Model(str(path))
        except (OSError, RuntimeError) as e:
            raise LMError(f"{path}: kenlm cannot read it ({e})") from None
        self.order = self.model.order
        self._cache: dict = {}

    def begin(self):
        state = self._kenlm.State()
        self.model.BeginSentenceWrite(state)
        return state

    def score(self, state, word: str):
        out = self._kenlm.State()
        return self.model.BaseScore(state, word, out) * LN10, out

    def final(self, state) -> float:
        return self.score(state, "</s>")[0]

    def unigram(self, word: str) -> float:
        """ln P(word) without context: the LM look-ahead."""
        state = self._kenlm.State()
        self.model.NullContextWrite(state)
        return self.score(state, word)[0]

    def sentence_logprob(self, words: list[str], bos: bool = True, eos: bool = True) -> float:
        return self.model.score(" ".join(words), bos=bos, eos=eos) * LN10


def load_lm(path: str | Path) -> NGramLM | KenLMModel:
    """Load an ARPA file (plain, gzip or xz) or a KenLM binary (needs the kenlm package).

    Args:
        path: the model file.

    Returns:
        ``NGramLM`` for ARPA text, ``KenLMModel`` for KenLM binaries.
    """
    path = Path(path)
    if not path.is_file():
        raise LMError(f"language model {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:2] != b"\x1f\x8b" and b"\\data\\" not in head and head.startswith(b"mmap lm"):
        return KenLMModel(path)
    return NGramLM.from_arpa(path)

"""LM training text: streamed sentences from plain, ``.gz``, ``.xz`` or JSONL files, and word ids.

Text is normalised like the tokenizers' (``asr.text.normalize_text``: lower case, letters,
digits and apostrophes), so LM words are the words the decoder emits: the upper-case
LibriSpeech book text and the 200 k-word vocabulary both become lower case. Nothing holds the
corpus as Python strings: ``id_chunks`` turns it into int32 arrays a few million words at a time.
"""

from __future__ import annotations

import json
import lzma
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from asr.decode.arpa import open_compressed
from asr.decode.lm import LMError
from asr.text import normalize_text

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
# ASCII fast path of normalize_text (lowercase=True, keep_chars="'"): identical result on ASCII.
_ASCII_TABLE = str.maketrans({chr(c): " " for c in range(128)
                              if not (chr(c).isalnum() or chr(c) == "'")})


def normalize_words(line: str) -> list[str]:
    """``normalize_text(line).split()``, fast for ASCII lines (the books are ASCII)."""
    if line.isascii():
        return line.lower().translate(_ASCII_TABLE).split()
    return normalize_text(line).split()


def _is_manifest(path: Path) -> bool:
    name = path.name.lower()
    for ext in (".gz", ".xz"):
        name = name.removesuffix(ext)
    return name.endswith((".jsonl", ".json"))


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for every line of a plain, gzip or xz text file.

    Raises:
        LMError: missing file, corrupt or truncated compression, a line that is not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise LMError(f"LM training text {path} does not exist")
    n = 0
    try:
        with open_compressed(path) as f:
            for n, raw in enumerate(f, 1):
                try:
                    yield n, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise LMError(f"{path}:{n}: not UTF-8 text ({e.reason} at byte {e.start}); "
                                  "convert the file to UTF-8 (iconv) or remove the line") from None
    except (EOFError, OSError, lzma.LZMAError, zlib.error) as e:
        raise LMError(f"{path}: corrupt or truncated compressed file after line {n} ({e}); "
                      "check it with `xz -t` / `gzip -t` or download it again") from None


def read_sentences(paths: Iterable[str | Path], normalize: bool = True) -> Iterator[list[str]]:
    """The words of every non-empty sentence of text files (a sentence per line) or JSONL manifests.

    Args:
        paths: text files (plain, ``.gz``, ``.xz``) or manifests (``.jsonl``, their ``text`` field).
        normalize: apply the tokenizers' normaliser (default); else split on whitespace only.

    Raises:
        LMError: a bad file or line (named), or no sentence in all the files.
    """
    paths = list(paths)
    found = False
    for path in paths:
        path = Path(path)
        manifest = _is_manifest(path)
        for n, line in read_lines(path):
            if manifest:
                if not line.strip():
                    continue
                try:
                    line = json.loads(line)["text"]
                    if not isinstance(line, str):
                        raise TypeError
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise LMError(f"{path}:{n}: not a manifest line with a \"text\" field") from None
            words = normalize_words(line) if normalize else line.split()
            if words:
                found = True
                yield words
    if not found:
        raise LMError(f"{', '.join(str(p) for p in paths)}: no sentences to train an LM on (empty corpus)")


def read_vocab(path: str | Path, normalize: bool = True) -> list[str]:
    """Words of a vocabulary file (the first field of each line), normalised like the text.

    Raises:
        LMError: missing file, a word listed twice (after normalisation), an empty list.
    """
    seen: dict[str, int] = {}
    for n, line in read_lines(path):
        fields = line.split()
        if not fields:
            continue
        words = normalize_words(fields[0]) if normalize else fields[:1]
        if len(words) != 1:
            raise LMError(f"{path}:{n}: {fields[0]!r} is not one word after normalisation")
        word = words[0]
        if word in seen:
            raise LMError(f"{path}:{n}: {word!r} is listed twice (also on line {seen[word]}); "
                          "remove the duplicate")
        seen[word] = n
    if not seen:
        raise LMError(f"{path}: empty vocabulary file")
    return list(seen)


class WordIds:
    """Word -> int32 id. Ids 0, 1, 2 are ``<s>``, ``</s>``, ``<unk>``.

    A closed vocabulary (``words`` given) maps every other word to ``<unk>``; an open one
    grows with the text.
    """

    def __init__(self, words: Iterable[str] | None = None):
        self.closed = words is not None
        self.index: dict[str, int] = {BOS: 0, EOS: 1, UNK: 2}
        for w in words or ():
            self.index.setdefault(w, len(self.index))

    def __len__(self) -> int:
        return len(self.index)

    def words(self) -> list[str]:
        out = [""] * len(self.index)
        for w, i in self.index.items():
            out[i] = w
        return out

    def ids(self, words: list[str]) -> list[int]:
        index = self.index
        if self.closed:
            get = index.get
            return [get(w, 2) for w in words]
        out = []
        for w in words:
            i = index.get(w)
            if i is None:
                i = index[w] = len(index)
            out.append(i)
        return out


def id_chunks(sentences: Iterable[list[str]], vocab: WordIds, chunk_words: int = 4_000_000,
              progress=None) -> Iterator[np.ndarray]:
    """Sentences as int32 arrays ``<s> w1 .. wk </s> <s> ...`` of about ``chunk_words`` tokens.

    Sentences never straddle two chunks. ``progress`` (a tqdm bar) is advanced by words.
    """
    buf: list[int] = []
    nwords = 0
    for words in sentences:
        nwords += len(words)
        buf.append(0)
        buf.extend(vocab.ids(words))
        buf.append(1)
        if len(buf) >= chunk_words:
            if progress is not None:
                progress.update(nwords)
            nwords = 0
            yield np.array(buf, dtype=np.int32)
            buf = []
    if buf:
        if progress is not None:
            progress.update(nwords)
        yield np.array(buf, dtype=np.int32)

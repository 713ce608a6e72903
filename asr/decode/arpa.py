"""ARPA back-off n-gram files: the one Python reader (plain, gzip or xz), streamed.

``read_ngrams`` feeds the decoder's dict tables (``asr.decode.lm``) and ``asr.lm_table``. It checks
what the C++ reader of ``_ctcdecode.cpp`` checks, in the same one-line ``FILE: line N: what`` errors:
the ``\\data\\`` header, sections in order and announced, each section's count, higher-order words
among the unigrams, the closing ``\\end\\`` (without it: a truncated file).
"""

from __future__ import annotations

import gzip
import lzma
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from asr.errors import LMError

GZIP, XZ = b"\x1f\x8b", b"\xfd7zXZ\x00"


def compression(path: Path) -> str | None:
    """``"gzip"``, ``"xz"`` or None (plain text), from the file's magic bytes."""
    with open(path, "rb") as f:
        magic = f.read(6)
    return "gzip" if magic[:2] == GZIP else "xz" if magic == XZ else None


def open_compressed(path: Path) -> BinaryIO:
    """The file open for reading bytes, decompressing gzip or xz (recognised by their magic bytes)."""
    kind = compression(path)
    return (gzip.open if kind == "gzip" else lzma.open if kind == "xz" else open)(path, "rb")


@contextmanager
def open_arpa(path: str | Path) -> Iterator[BinaryIO]:
    """The file (decompressed when gzip or xz) open for reading bytes; errors name it."""
    path = Path(path)
    if not path.is_file():
        raise LMError(f"language model {path} does not exist")
    kind = compression(path)
    try:
        with open_compressed(path) as f:
            yield f
    except (EOFError, OSError, lzma.LZMAError, zlib.error) as e:
        raise LMError(f"{path}: corrupt {kind or 'text'} file ({e}); download or build it again") from None


def file_lines(path: str | Path) -> Iterator[str]:
    """The lines of a plain, gzip or xz file, streamed (the file is never held whole)."""
    with open_arpa(path) as f:
        for n, raw in enumerate(f, 1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise LMError(f"{path}: line {n}: not UTF-8 text ({e.reason}); is this an ARPA file?") from None


def read_ngrams(lines: Iterable[str], source: str, header: dict[int, int] | None = None
                ) -> Iterator[tuple[int, tuple[str, ...], float, float]]:
    """(order, words, log10 prob, log10 back-off (0.0 when absent)) for each n-gram, in file order.

    Args:
        lines: the file's lines (``file_lines(path)`` or ``text.splitlines()``).
        source: the file name, for error messages.
        header: filled with the ``\\data\\`` counts ``{order: n-grams}`` (the model's order is
            its largest key, even when that section is empty).

    Raises:
        LMError: ``source: line N: what``; nothing is yielded after the first bad line.
    """
    header = {} if header is None else header
    unigrams: set[str] = set()
    section = section_line = in_section = n = 0
    seen_data = ended = False

    def fail(what: str, line: int | None = None) -> LMError:
        return LMError(f"{source}: line {n if line is None else line}: {what}")

    def close_section() -> None:
        if section and in_section != header[section]:
            raise fail(f"the \\data\\ header announces {header[section]} {section}-grams but the "
                       f"\\{section}-grams: section holds {in_section}" + ("" if ended else " (truncated file?)"),
                       section_line)

    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line[0] == "\\":
            if line == "\\data\\":
                seen_data = True
            elif line == "\\end\\":
                ended = True
                close_section()
                break
            elif line.endswith("-grams:") and line[1:-7].isdigit():
                close_section()
                if int(line[1:-7]) != section + 1:
                    raise fail("n-gram sections must come in order 1, 2, ...")
                section, section_line, in_section = section + 1, n, 0
                if section not in header:
                    raise fail(f"section {line} is not announced in the \\data\\ header")
            else:
                raise fail(f"unknown section {line[:60]}")
            continue
        if section == 0:  # the \data\ header; anything before \data\ is a comment
            if line.startswith("ngram "):
                k, _, c = line[6:].partition("=")
                if not (k.strip().isdigit() and c.strip().isdigit() and 0 < int(k) <= 64):
                    raise fail(f"bad header line {line!r}")
                header[int(k)] = int(c)
            elif seen_data:
                raise fail(f"expected 'ngram N=count' in the \\data\\ header, got {line[:60]!r}; "
                           "is this an ARPA file?")
            continue
        parts = line.split()
        if len(parts) not in (section + 1, section + 2):
            raise fail(f"expected a probability, {section} words and maybe a back-off")
        try:
            p = float(parts[0])
            b = float(parts[section + 1]) if len(parts) == section + 2 else 0.0
        except ValueError:
            raise fail(f"bad number in {line[:80]!r}") from None
        words = tuple(parts[1 : section + 1])
        if section == 1:
            unigrams.add(words[0])
        elif not unigrams.issuperset(words):
            raise fail(f"word {next(w for w in words if w not in unigrams)!r} is not among the unigrams")
        in_section += 1
        yield section, words, p, b
    if not seen_data or section == 0:
        raise LMError(f"{source}: no \\data\\ header or \\1-grams: section; is this an ARPA file?")
    if not ended:
        close_section()  # a section cut short names its count first
    if section != max(header):
        raise LMError(f"{source}: the \\data\\ header announces {max(header)}-grams but the file has "
                      f"sections up to {section} (truncated file?)")
    if not ended:
        raise fail("the file ends without \\end\\ (truncated file?)")

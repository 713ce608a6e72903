"""Pronunciation lexicons: the one reader and writer of lexicon files.

A lexicon file is UTF-8 text in Kaldi's ``lexicon.txt`` style: one pronunciation per line,
``WORD P1 P2 ...``; a word may have several lines (variants); a line starting with ``#`` is
a comment. A one-field line (just a word) is a word-list entry: valid for models whose units
spell words (characters, SentencePiece: spelling = pronunciation), not for phone models.

In memory a lexicon is ``dict[word, list[tuple[phone, ...]]]`` (an empty list: a spelled
word with no pronunciation given). The beam search takes, for a phone model, the token ids
of each pronunciation (:func:`lexicon_token_ids`), and for a spelling model the set of words.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "lexicon.txt")
>>> write_lexicon({"two": [("T", "UW")], "to": [("T", "UW"), ("T", "AH")]}, path)
>>> read_lexicon(path, units={"T", "UW", "AH"})
{'to': [('T', 'UW'), ('T', 'AH')], 'two': [('T', 'UW')]}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path

from asr.errors import LexiconError  # re-exported: asr.lexicon.LexiconError

Lexicon = dict[str, list[tuple[str, ...]]]
_VARIANT = re.compile(r"^(.+)\(\d+\)$")  # CMUdict's "word(2)" marks a variant
_STRESS = re.compile(r"^([A-Z]+)[0-2]$")  # ARPAbet stress digit: "AH0" -> "AH"



def read_lexicon(path: str | Path, units: Collection[str] | None = None,
                 normalize: Callable[[str], str] | None = None) -> Lexicon:
    """Read a lexicon file.

    Args:
        path: the file (``WORD P1 P2 ...`` lines; ``#`` comments; several lines per word allowed).
        units: the phone symbols of a phone model: then every line needs at least one phone and
            every phone must be one of them (a stress digit is dropped when only the bare phone
            is a unit: ``AH0`` -> ``AH``). None: a spelling model's word list; extra fields are kept
            as given and one-field lines are fine.
        normalize: applied to each word (e.g. the tokenizer's ``normalize``); default: as written.

    Returns:
        word -> its distinct pronunciations in file order (an empty list for a one-field line).

    Raises:
        LexiconError: missing or undecodable file, a line without phonemes (phone model), an
            unknown phoneme symbol, a word that normalises to nothing or to several words.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise LexiconError(f"lexicon file {path} does not exist") from None
    except IsADirectoryError:
        raise LexiconError(f"lexicon {path} is a folder; give a file of `word phone ...` lines") from None
    except UnicodeDecodeError as e:
        line = text_line_of(path, e.start)
        raise LexiconError(f"{path}:{line}: not UTF-8 text ({e.reason}); save the lexicon as UTF-8") from None
    lex: Lexicon = {}
    unit_set = set(units) if units is not None else None
    for n, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        word = fields[0]
        m = _VARIANT.match(word)
        if m:
            word = m.group(1)
        if normalize is not None:
            word = normalize(word)
            if not word or " " in word:
                raise LexiconError(f"{path}:{n}: word {fields[0]!r} normalises to {word!r}, not one word; "
                                   "fix or remove the line")
        phones = tuple(fields[1:])
        if unit_set is not None:
            if not phones:
                raise LexiconError(f"{path}:{n}: word {word!r} has no phonemes; a phone model's lexicon "
                                   "needs `word P1 P2 ...` lines")
            phones = tuple(_unit(p, unit_set, path, n, word) for p in phones)
        prons = lex.setdefault(word, [])
        if phones and phones not in prons:
            prons.append(phones)
    if not lex:
        raise LexiconError(f"{path}: the lexicon has no words")
    return lex


def _unit(p: str, units: set[str], path: Path, line: int, word: str) -> str:
    if p in units:
        return p
    m = _STRESS.match(p)
    if m and m.group(1) in units:
        return m.group(1)
    raise LexiconError(f"{path}:{line}: word {word!r}: unknown phoneme {p!r} (the model's phonemes: "
                       f"{' '.join(sorted(units))})")


def text_line_of(path: Path, offset: int) -> int:
    """1-based line of a byte offset of a file."""
    with open(path, "rb") as f:
        return f.read(offset).count(b"\n") + 1


def write_lexicon(lex: Mapping[str, Iterable[Iterable[str]]], path: str | Path) -> None:
    """Write ``word -> pronunciations`` as a lexicon file (sorted words, one line per
    pronunciation, a one-field line for a word without any), atomically (tmp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for word in sorted(lex):
            prons = [tuple(p) for p in lex[word]]
            if not prons:
                f.write(word + "\n")
            for p in prons:
                f.write(" ".join((word, *p)) + "\n")
    tmp.replace(path)


def merge_lexicons(*lexicons: Mapping[str, Iterable[Iterable[str]]]) -> Lexicon:
    """Union of lexicons: every word, with its pronunciations in order of first appearance."""
    out: Lexicon = {}
    for lex in lexicons:
        for word, prons in lex.items():
            have = out.setdefault(word, [])
            for p in prons:
                p = tuple(p)
                if p not in have:
                    have.append(p)
    return out


def lexicon_token_ids(lex: Mapping[str, Iterable[Iterable[str]]], token_strings: list[str],
                      source: str = "the lexicon") -> dict[str, list[tuple[int, ...]]]:
    """Pronunciations as token ids of a phone vocabulary (the beam search's lexicon).

    Raises:
        LexiconError: a word without pronunciation, or a phone that is not a token; names the word.
    """
    index = {t: i for i, t in enumerate(token_strings)}
    out: dict[str, list[tuple[int, ...]]] = {}
    for word, prons in lex.items():
        ids = []
        for p in prons:
            try:
                ids.append(tuple(index[u] for u in p))
            except KeyError as e:
                raise LexiconError(f"{source}: word {word!r}: unknown phoneme {e.args[0]!r}") from None
        if not ids:
            raise LexiconError(f"{source}: word {word!r} has no pronunciation; a phone model needs one")
        out[word] = ids
    return out


def pronunciation_pairs(lex: Mapping[str, Iterable[Iterable[int]]]) -> list[tuple[str, tuple[int, ...]]]:
    """The distinct non-empty (word, token ids) pairs of a pronunciation lexicon, sorted: the
    order in which the decoders number homophones (the same in C++ and Python)."""
    return sorted({(w, tuple(int(i) for i in p)) for w, prons in lex.items() for p in prons if len(p)})


def decoding_lexicon(tokenizer, path: str | Path = "", model: str = "the model"):
    """The beam search's lexicon for a model's tokenizer.

    Character/SentencePiece models: the words of ``path`` (None without a file). Phone models
    (``tokenizer.kind == "phone"``): the tokenizer's own lexicon (the checkpoint's) plus the
    pronunciations in ``path``, as token ids.

    Raises:
        LexiconError: a bad lexicon file (names file:line), or a phone model without any lexicon.
    """
    if getattr(tokenizer, "kind", "") != "phone":
        return set(read_lexicon(path)) if path else None
    strings = tokenizer.token_strings()
    units = set(strings[1:]) - {" "}
    lex = merge_lexicons(getattr(tokenizer, "lexicon", None) or {},
                         read_lexicon(path, units, tokenizer.normalize) if path else {})
    if not lex:
        raise LexiconError(f"{model}: this phone model has no lexicon to turn phones into words; give one "
                           "with --lexicon FILE (lines `word P1 P2 ...`), or decode with --method greedy "
                           "to get phones")
    return lexicon_token_ids(lex, strings, source=str(path or model))

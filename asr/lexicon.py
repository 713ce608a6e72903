"""Pronunciation lexicons: the one reader and writer of lexicon files.

A lexicon file is UTF-8 text in CMUdict's and Kaldi's ``lexicon.txt`` style: one pronunciation
per line, ``WORD P1 P2 ...``; a word may have several lines (variants; CMUdict marks them
``WORD(2)``); ``#`` starts a comment (a whole line or the rest of one) and ``;;;`` lines are
comments too. A one-field line (just a word) is a word-list entry: valid for models whose units
spell words (characters, SentencePiece: spelling = pronunciation), not for phone models.
ARPAbet stress digits (``AH0``) are kept, or stripped on request or when the model's units
lack them.

In memory a lexicon is ``dict[word, list[tuple[phone, ...]]]`` (an empty list: a spelled
word with no pronunciation given). The beam search takes, for a phone model, the token ids
of each pronunciation (:func:`lexicon_token_ids`), and for a spelling model the set of words.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "lexicon.txt")
>>> write_lexicon({"two": [("T", "UW")], "to": [("T", "UW"), ("T", "AH")]}, path)
>>> read_lexicon(path, units={"T", "UW", "AH"})
{'to': [('T', 'UW'), ('T', 'AH')], 'two': [('T', 'UW')]}
>>> parse_lexicon([";;; CMUdict", "READ  R EH1 D", "READ(2) R IY1 D  # variant"], strip_stress=True)
{'READ': [('R', 'EH', 'D'), ('R', 'IY', 'D')]}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path

from asr.errors import LexiconError  # re-exported: asr.lexicon.LexiconError

Lexicon = dict[str, list[tuple[str, ...]]]
_VARIANT = re.compile(r"^(.+)\(\d+\)$")  # CMUdict's "word(2)" marks a variant
_STRESS = re.compile(r"^([A-Z]+)[0-2]$")  # ARPAbet stress digit: "AH0" -> "AH"


def strip_stress(phone: str) -> str:
    """``AH0`` -> ``AH``; a phone without an ARPAbet stress digit is returned as is."""
    m = _STRESS.match(phone)
    return m.group(1) if m else phone


def parse_lexicon(lines: Iterable[str], source: str = "<lexicon>", units: Collection[str] | None = None,
                  normalize: Callable[[str], str] | None = None, strip_stress: bool = False,
                  only_normal: bool = False) -> Lexicon:
    """Lexicon lines (see the module docstring) -> word -> pronunciations.

    Args:
        lines: the file's lines.
        source: the file name, for errors (``source:line: ...``).
        units: the phone symbols of a phone model: then every line needs at least one phone and
            every phone must be one of them (a stressed ``AH0`` whose bare ``AH`` is a unit is
            read as ``AH``). None: a spelling model's word list; extra fields are kept as given
            and one-field lines are fine.
        normalize: applied to each word (e.g. the tokenizer's ``normalize``); default: as written.
        strip_stress: drop ARPAbet stress digits from every phone (``AH0`` -> ``AH``).
        only_normal: skip the words ``normalize`` changes beyond letter case (CMUdict's "a.m.",
            "able-bodied": not words of a normalised transcript) instead of failing on a word that
            normalises to nothing or to several words.

    Returns:
        word -> its distinct pronunciations in file order (an empty list for a one-field line).

    Raises:
        LexiconError: a line without phonemes (phone model), an unknown phoneme symbol, a word that
            normalises to nothing or to several words, or no words at all; names ``source:line``.
    """
    lex: Lexicon = {}
    unit_set = set(units) if units is not None else None
    for n, raw in enumerate(lines, 1):
        fields = raw.split("#", 1)[0].split()
        if not fields or fields[0].startswith(";;;"):
            continue
        word = fields[0]
        m = _VARIANT.match(word)
        if m:
            word = m.group(1)
        if normalize is not None:
            norm = normalize(word)
            if only_normal and norm.lower() != word.lower():
                continue
            if not norm or " " in norm:
                raise LexiconError(f"{source}:{n}: word {fields[0]!r} normalises to {norm!r}, not one word; "
                                   "fix or remove the line")
            word = norm
        phones = tuple(fields[1:])
        if strip_stress:
            phones = tuple(_STRESS.sub(r"\1", p) for p in phones)
        if unit_set is not None:
            if not phones:
                raise LexiconError(f"{source}:{n}: word {word!r} has no phonemes; a phone model's lexicon "
                                   "needs `word P1 P2 ...` lines")
            phones = tuple(_unit(p, unit_set, source, n, word) for p in phones)
        prons = lex.setdefault(word, [])
        if phones and phones not in prons:
            prons.append(phones)
    if not lex:
        raise LexiconError(f"{source}: the lexicon has no words")
    return lex


def read_lexicon(path: str | Path, units: Collection[str] | None = None,
                 normalize: Callable[[str], str] | None = None, strip_stress: bool = False,
                 only_normal: bool = False) -> Lexicon:
    """Read a lexicon file: :func:`parse_lexicon` of its lines (the same arguments).

    Raises:
        LexiconError: missing, unreadable or undecodable file (names the line), and every error
            of :func:`parse_lexicon`.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise LexiconError(f"lexicon file {path} does not exist") from None
    except IsADirectoryError:
        raise LexiconError(f"lexicon {path} is a folder; give a file of `word phone ...` lines") from None
    except PermissionError:
        raise LexiconError(f"lexicon file {path} cannot be read (permission denied)") from None
    except UnicodeDecodeError as e:
        line = text_line_of(path, e.start)
        raise LexiconError(f"{path}:{line}: not UTF-8 text ({e.reason}); save the lexicon as UTF-8") from None
    return parse_lexicon(text.splitlines(), str(path), units, normalize, strip_stress, only_normal)


def _unit(p: str, units: set[str], source: str, line: int, word: str) -> str:
    if p in units:
        return p
    bare = strip_stress(p)
    if bare in units:
        return bare
    if any(p + d in units for d in "012"):
        raise LexiconError(f"{source}:{line}: word {word!r}: phoneme {p!r} has no stress digit, and this "
                           "model's vowels carry stress (0/1/2); give a lexicon with stress, or train "
                           "without stress (tokenizer.phone_stress=false)")
    raise LexiconError(f"{source}:{line}: word {word!r}: unknown phoneme {p!r} (the model's phonemes: "
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
    """The distinct non-empty (word, token ids) pairs of a pronunciation lexicon, words in the
    mapping's order, each word's pronunciations in order: the order in which the decoders (C++
    and Python alike) number the words of a pronunciation (homophones). The mapping's order is its
    preference among homophones: without an LM the search keeps only the first (a phone
    tokenizer's lexicon lists its training words most frequent first)."""
    seen: set[tuple[str, tuple[int, ...]]] = set()
    out = []
    for w, prons in lex.items():
        for p in prons:
            pair = (w, tuple(int(i) for i in p))
            if pair[1] and pair not in seen:
                seen.add(pair)
                out.append(pair)
    return out


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

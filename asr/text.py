"""Text normalisation and tokenizers (characters, SentencePiece) behind one interface.

Every tokenizer reserves id 0 for the CTC blank and serialises to a plain dict
(strings, lists and bytes only) so it can live inside a checkpoint that is loaded
with ``weights_only=True``.
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

from asr.errors import TokenizerError

# re-exported: asr.text.normalize_text and asr.text.BLANK are the names the package uses
from asr.normalize import _SPACES, BLANK, normalize_text  # noqa: E402,F401


class CharTokenizer:
    """Characters, with id 0 = blank; the space is the word separator ``|``-free plain ' '."""

    kind = "char"

    def __init__(self, chars: Iterable[str], lowercase: bool = True, keep_chars: str = "'",
                 strip_accents: bool = False):
        chars = sorted(set(chars) - {BLANK})
        self.vocab = [BLANK] + chars
        self.index = {c: i for i, c in enumerate(self.vocab)}
        self.lowercase = lowercase
        self.keep_chars = keep_chars
        self.strip_accents = strip_accents

    @classmethod
    def train(cls, texts: Iterable[str], lowercase: bool = True, keep_chars: str = "'",
              strip_accents: bool = False) -> CharTokenizer:
        """Vocabulary = the characters of the normalised ``texts``, plus the space."""
        chars: set[str] = set()
        for t in texts:
            chars.update(normalize_text(t, lowercase, keep_chars, strip_accents))
        chars.add(" ")
        return cls(chars, lowercase, keep_chars, strip_accents)

    def __len__(self) -> int:
        return len(self.vocab)

    def normalize(self, text: str) -> str:
        return normalize_text(text, self.lowercase, self.keep_chars, self.strip_accents)

    def unknown_chars(self, text: str) -> set[str]:
        return {c for c in self.normalize(text) if c not in self.index}

    def encode(self, text: str) -> list[int]:
        norm = self.normalize(text)
        try:
            return [self.index[c] for c in norm]
        except KeyError:
            bad = "".join(sorted(self.unknown_chars(text)))
            raise TokenizerError(f"characters not in the vocabulary: {bad!r}") from None

    def decode(self, ids: Iterable[int]) -> str:
        return _SPACES.sub(" ", "".join(self.vocab[i] for i in ids if i != 0)).strip()

    def token_strings(self) -> list[str]:
        return list(self.vocab)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "vocab": list(self.vocab),
            "lowercase": self.lowercase,
            "keep_chars": self.keep_chars,
            "strip_accents": self.strip_accents,
        }

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        return cls(d["vocab"][1:], d["lowercase"], d["keep_chars"], d.get("strip_accents", False))


class SentencePieceTokenizer:
    """SentencePiece (BPE or unigram). Id 0 is the CTC blank; SentencePiece id i maps to i+1."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, lowercase: bool = True, keep_chars: str = "'",
                 strip_accents: bool = False):
        import sentencepiece as spm

        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self.lowercase = lowercase
        self.keep_chars = keep_chars
        self.strip_accents = strip_accents
        self.vocab = [BLANK] + [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_type: str = "unigram",
        lowercase: bool = True,
        keep_chars: str = "'",
        strip_accents: bool = False,
    ) -> SentencePieceTokenizer:
        """Train SentencePiece on the normalised ``texts`` (``model_type`` "bpe" or "unigram")."""
        import sentencepiece as spm

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "text.txt"
            with open(path, "w") as f:
                for t in texts:
                    n = normalize_text(t, lowercase, keep_chars, strip_accents)
                    if n:
                        f.write(n + "\n")
            prefix = str(Path(tmp) / "sp")
            spm.SentencePieceTrainer.train(
                input=str(path),
                model_prefix=prefix,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=1.0,
                unk_id=0,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                hard_vocab_limit=False,
                minloglevel=2,
            )
            proto = Path(prefix + ".model").read_bytes()
        return cls(proto, lowercase, keep_chars, strip_accents)

    def __len__(self) -> int:
        return len(self.vocab)

    def normalize(self, text: str) -> str:
        return normalize_text(text, self.lowercase, self.keep_chars, self.strip_accents)

    def unknown_chars(self, text: str) -> set[str]:
        norm = self.normalize(text)
        bad = set()
        for ch in set(norm) - {" "}:
            if self.sp.piece_to_id(ch) == self.sp.unk_id() and ch not in "".join(self.vocab[1:]):
                bad.add(ch)
        return bad

    def encode(self, text: str) -> list[int]:
        ids = self.sp.encode(self.normalize(text))
        if self.sp.unk_id() in ids:
            bad = "".join(sorted(self.unknown_chars(text))) or "?"
            raise TokenizerError(f"characters not in the vocabulary: {bad!r}")
        return [i + 1 for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([i - 1 for i in ids if i != 0]).strip()

    def token_strings(self) -> list[str]:
        return list(self.vocab)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "model_proto": self.model_proto,
            "lowercase": self.lowercase,
            "keep_chars": self.keep_chars,
            "strip_accents": self.strip_accents,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SentencePieceTokenizer:
        return cls(d["model_proto"], d["lowercase"], d["keep_chars"], d.get("strip_accents", False))


Tokenizer = CharTokenizer | SentencePieceTokenizer


def tokenizer_from_dict(d: dict) -> Tokenizer:
    """Rebuild a tokenizer from ``Tokenizer.to_dict()`` (as stored in checkpoints)."""
    if d.get("kind") == "char":
        return CharTokenizer.from_dict(d)
    if d.get("kind") == "sentencepiece":
        return SentencePieceTokenizer.from_dict(d)
    if d.get("kind") == "phone":
        from asr.phones import PhoneTokenizer  # asr.phones imports this module

        return PhoneTokenizer.from_dict(d)
    raise ValueError(f"unknown tokenizer kind {d.get('kind')!r}")


def save_tokenizer(tok: Tokenizer, path: str | Path) -> None:
    """Write a tokenizer as JSON (a SentencePiece model travels base64-encoded inside it)."""
    d = dict(tok.to_dict())
    if isinstance(d.get("model_proto"), (bytes, bytearray)):
        d["model_proto"] = base64.b64encode(d["model_proto"]).decode("ascii")
    d["format"] = "asr-tokenizer-1"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(d, ensure_ascii=False, indent=1) + "\n")
    tmp.replace(path)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer written by ``save_tokenizer`` (or ``asr tokenizer train``).

    Raises:
        TokenizerError: the file is missing or is not a tokenizer file.
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerError(f"tokenizer file {path} does not exist; write one with "
                             f"`asr tokenizer train ... -o {path}`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: not a tokenizer file ({e})") from None
    if not isinstance(d, dict) or d.get("format") != "asr-tokenizer-1":
        raise TokenizerError(f"{path}: not a tokenizer file written by `asr tokenizer train`")
    if isinstance(d.get("model_proto"), str):
        d["model_proto"] = base64.b64decode(d["model_proto"])
    try:
        return tokenizer_from_dict(d)
    except (KeyError, ValueError, RuntimeError) as e:
        raise TokenizerError(f"{path}: broken tokenizer file ({e})") from None


def train_tokenizer(texts: list[str], cfg) -> Tokenizer:
    """Train the tokenizer named by a ``TokenizerConfig`` on raw transcripts.

    When the config names a tokenizer file (``tokenizer.path``, written by
    ``asr tokenizer train``), that tokenizer is loaded instead and ``texts`` are unused.
    """
    if getattr(cfg, "path", ""):
        try:
            return load_tokenizer(cfg.path)
        except TokenizerError as e:  # name the setting: the user may not know where the path came from
            raise TokenizerError(f"tokenizer.path: {e}; or set tokenizer.path= to train one "
                                 f"from the training text") from None
    strip = getattr(cfg, "strip_accents", False)
    if cfg.kind == "char":
        return CharTokenizer.train(texts, cfg.lowercase, cfg.keep_chars, strip)
    if cfg.kind == "sentencepiece":
        return SentencePieceTokenizer.train(
            texts, cfg.vocab_size, cfg.sp_model_type, cfg.lowercase, cfg.keep_chars, strip
        )
    if cfg.kind == "phone":
        from asr.phones import PhoneTokenizer  # asr.phones imports this module

        return PhoneTokenizer.train(texts, getattr(cfg, "lexicon", ""), getattr(cfg, "phone_stress", False),
                                    cfg.lowercase, cfg.keep_chars, strip)
    raise ValueError(f"tokenizer.kind must be 'char', 'sentencepiece' or 'phone', got {cfg.kind!r}")

"""Decoding options passed per call, and the LM and lexicon files they name, cached by file identity.

``DecodingOptions`` is a frozen dataclass: the decode config's fields (``asr.config.DecodeConfig``:
method, beam size, LM path, lexicon path, alpha = ``lm_weight``, beta = ``word_bonus``, nbest,
threads = ``num_workers``...) plus ``timestamps``. A model holds default options and every call
may pass its own (``model.transcribe(audio, options)``), as whisper's ``DecodingOptions``.

``DecoderResources`` loads the LM and lexicon a set of options names and keeps them keyed by
the file's resolved path, size and modification time: a file changed on disk between two calls
is read again, never served from a stale cache.

>>> o = DecodingOptions(method="beam", beam_size=4, nbest=2)
>>> o.uses_beam, o.beam_options().nbest
(True, 2)
>>> DecodingOptions(nbest=5, beam_size=4)
Traceback (most recent call last):
...
asr.errors.ConfigError: decode.nbest=5 must not exceed decode.beam_size=4: the beam keeps only beam_size hypotheses
>>> combine_nbest([[("one", -1.0), ("on", -3.0)], [("two", -1.0), ("to", -2.0)]], 3)
[('one two', -2.0), ('one to', -3.0), ('on two', -4.0)]
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from asr.config import DecodeConfig
from asr.decode import BeamOptions
from asr.errors import ConfigError

METHODS = ("greedy", "beam")


@dataclass(frozen=True)
class DecodingOptions(DecodeConfig):
    """How to decode: every ``DecodeConfig`` field (same names and defaults) plus ``timestamps``.

    Frozen: derive a changed copy with ``dataclasses.replace`` or ``model.with_decoding(...)``.

    Raises:
        ConfigError: an unknown method, a beam size or nbest below 1, nbest above beam_size.
    """

    timestamps: bool = False  # fill Transcript.words with start/end times (CTC forced alignment)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"decode.method must be one of {', '.join(METHODS)}; got {self.method!r}")
        for name in ("beam_size", "nbest"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"decode.{name} must be an integer >= 1; got {getattr(self, name)!r}")
        if self.nbest > self.beam_size:
            raise ConfigError(f"decode.nbest={self.nbest} must not exceed decode.beam_size={self.beam_size}: "
                              f"the beam keeps only beam_size hypotheses")

    @classmethod
    def from_config(cls, config: DecodeConfig, **overrides) -> DecodingOptions:
        """The options of a model's decode config, with ``overrides`` (field names) applied."""
        return cls(**{**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)}, **overrides})

    @property
    def uses_beam(self) -> bool:
        """Decoding runs the beam search (method beam, or greedy asked with an LM)."""
        return self.method != "greedy" or bool(self.lm_path)

    def beam_options(self) -> BeamOptions:
        """The beam search's settings: every field both dataclasses have (beam_size, lm_weight...)."""
        names = {f.name for f in dataclasses.fields(BeamOptions)} & {f.name for f in dataclasses.fields(self)}
        return BeamOptions(**{k: getattr(self, k) for k in names})


def file_stamp(path: str | Path) -> tuple[str, int, int] | None:
    """(resolved path, size, modification time in ns) of a file; None when it does not exist."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    return str(p.resolve()), st.st_size, st.st_mtime_ns


class DecoderResources:
    """The LMs and lexicons one model's decoding has loaded, keyed by file identity; thread-safe.

    A key is (kind, resolved path, size, mtime): a changed file gets a new key, so it is read
    again, and the entry of its previous version is dropped. At most ``max_items`` entries
    are kept (least recently used dropped first); a missing file is left to the loader to report.

    Args:
        load_lm: path -> LM object (``asr.decode.lm.load_lm``).
        load_lexicon: path ("" for none) -> the beam search's lexicon (or None).
    """

    def __init__(self, load_lm, load_lexicon, max_items: int = 4):
        self._load = {"lm": load_lm, "lexicon": load_lexicon}
        self._items: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self.max_items = max_items
        self.loads = 0  # files read so far (tests and logs)

    def get(self, kind: str, path: str) -> object:
        """The loaded ``kind`` ("lm" or "lexicon") of ``path``, read now if new or changed."""
        stamp = file_stamp(path) if path else ("", 0, 0)
        key = (kind, path) if stamp is None else (kind, *stamp)
        with self._lock:
            if stamp is not None and key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            obj = self._load[kind](path)  # raises LMError/LexiconError naming the file
            self.loads += 1
            if stamp is None:  # not a file the cache can check: never cached
                return obj
            for old in [k for k in self._items if k[:2] == key[:2]]:  # an older version of the file
                del self._items[old]
            self._items[key] = obj
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
            return obj

    def for_options(self, options: DecodingOptions, needs_lexicon: bool) -> tuple[object, object]:
        """(LM or None, lexicon or None) for ``options``; a phone model always needs its lexicon."""
        lm = self.get("lm", options.lm_path) if options.lm_path else None
        lexicon = self.get("lexicon", options.lexicon) if options.lexicon or needs_lexicon else None
        return lm, lexicon


def combine_nbest(lists: list[list[tuple[str, float]]], n: int) -> list[tuple[str, float]]:
    """The ``n`` best (text, score) of a recording from its segments' n-best lists.

    Segments are decoded independently, so a recording's hypothesis is one choice per segment
    and its score the sum; keeping the ``n`` best after each segment is exact. Texts are joined
    with a space (empty ones skipped); the same text twice keeps its better score.
    """
    out: list[tuple[str, float]] = [("", 0.0)]
    for alts in lists:
        if not alts:
            continue
        pairs = sorted(((" ".join(t for t in (a, b) if t), sa + sb) for a, sa in out for b, sb in alts),
                       key=lambda x: -x[1])
        out, seen = [], set()
        for text, score in pairs:
            if text not in seen:
                seen.add(text)
                out.append((text, score))
            if len(out) == n:
                break
    return out

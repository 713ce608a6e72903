"""Transcript normalisation shared by the tokenizers, the LM builder and the lexicons, and the
CTC blank's name; no imports from the rest of the package (everything may import it)."""

from __future__ import annotations

import re
import unicodedata

BLANK = "<blank>"
_SPACES = re.compile(r"\s+")


def normalize_text(text: str, lowercase: bool = True, keep_chars: str = "'",
                   strip_accents: bool = False) -> str:
    """Unicode-normalise, case-fold, drop punctuation not in ``keep_chars``, squeeze spaces.

    Args:
        text: raw transcript.
        lowercase: fold to lower case.
        keep_chars: punctuation to keep (letters, digits and spaces are always kept).
        strip_accents: drop combining marks (``café`` -> ``cafe``).

    Returns:
        the normalised text: single spaces, no leading or trailing space.

    >>> normalize_text("Hello,  World! It's   OK.")
    "hello world it's ok"
    >>> normalize_text("Café — naïve", strip_accents=True)
    'cafe naive'
    """
    text = unicodedata.normalize("NFKC", text)
    if strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    if lowercase:
        text = text.lower()
    out = []
    for ch in text:
        if ch.isalnum() or ch in keep_chars:
            out.append(ch)
        else:
            out.append(" ")
    return _SPACES.sub(" ", "".join(out)).strip()

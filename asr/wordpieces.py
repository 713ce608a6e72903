"""How token strings make words: the one word-piece splitter (decoders, word timestamps, the
pyctcdecode backend). No imports from the rest of the package.

Character and phone vocabularies have a word-separator token ``" "``; SentencePiece vocabularies
mark the first piece of each word with ``"▁"`` (U+2581). A token is therefore one of: a
separator (ends the current word, belongs to none), a word start (``"▁ing"``: begins a new word
with ``"ing"``), or a continuation (appended to the current word).

>>> pieces_to_words(["▁the", "▁c", "at", "▁s", "at"])
['the', 'cat', 'sat']
>>> pieces_to_words(list("the cat"))
['the', 'cat']
>>> piece_role("▁ing"), piece_role(" "), piece_role("x")
(('start', 'ing'), ('separator', ''), ('append', 'x'))
"""

from __future__ import annotations

from collections.abc import Iterable

WORD_START = "\u2581"  # SentencePiece's word-start marker
SEPARATOR = " "  # the word-separator token of character and phone vocabularies


def piece_role(piece: str) -> tuple[str, str]:
    """What a token does to the current word, and the characters it adds.

    Returns:
        ("separator", "") for the separator token; ("start", rest) for a piece starting with the
        word-start marker; ("append", piece) otherwise.
    """
    if piece == SEPARATOR:
        return "separator", ""
    if piece.startswith(WORD_START):
        return "start", piece[len(WORD_START):]
    return "append", piece


def word_groups(pieces: Iterable[str]) -> list[list[int]]:
    """The positions of the pieces of each word, in order (separators belong to no word).

    >>> word_groups(["▁a", "b", "▁c"]), word_groups(["a", " ", " ", "b", "c"])
    ([[0, 1], [2]], [[0], [3, 4]])
    """
    groups: list[list[int]] = []
    cur: list[int] = []
    for i, piece in enumerate(pieces):
        role, _ = piece_role(piece)
        if role != "append" and cur:
            groups.append(cur)
            cur = []
        if role != "separator":
            cur.append(i)
    if cur:
        groups.append(cur)
    return groups


def pieces_to_words(pieces: Iterable[str]) -> list[str]:
    """The words a sequence of token strings spells (empty words dropped)."""
    pieces = list(pieces)
    words = ("".join(piece_role(pieces[i])[1] for i in g) for g in word_groups(pieces))
    return [w for w in words if w]

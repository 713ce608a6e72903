"""Word and character error rates: strings in, additive error counts out (via jiwer).

>>> c = word_errors("the cat sat", "the bat sat down")
>>> (c.sub, c.dele, c.ins, c.ref)
(1, 0, 1, 3)
>>> round(c.rate, 3)
0.667
"""

from __future__ import annotations

from dataclasses import dataclass

import jiwer


@dataclass
class ErrorCounts:
    sub: int = 0  # substitutions
    dele: int = 0  # deletions
    ins: int = 0  # insertions
    ref: int = 0  # reference length (words or characters)

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def rate(self) -> float:
        """Errors / reference length; 0 for an empty reference with no errors."""
        if self.ref == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.ref

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(self.sub + other.sub, self.dele + other.dele, self.ins + other.ins, self.ref + other.ref)

    def to_dict(self) -> dict:
        return {"sub": self.sub, "del": self.dele, "ins": self.ins, "ref": self.ref,
                "errors": self.errors, "rate": self.rate}


def _counts(out) -> ErrorCounts:
    return ErrorCounts(out.substitutions, out.deletions, out.insertions,
                       out.hits + out.substitutions + out.deletions)


def word_errors(ref: str, hyp: str) -> ErrorCounts:
    """Word-level edit operations between a reference and a hypothesis (whitespace-split)."""
    ref_w, hyp_w = ref.split(), hyp.split()
    if not ref_w:
        return ErrorCounts(0, 0, len(hyp_w), 0)
    if not hyp_w:
        return ErrorCounts(0, len(ref_w), 0, len(ref_w))
    return _counts(jiwer.process_words(" ".join(ref_w), " ".join(hyp_w)))


def char_errors(ref: str, hyp: str) -> ErrorCounts:
    """Character-level edit operations; runs of spaces count as one space."""
    ref_c, hyp_c = " ".join(ref.split()), " ".join(hyp.split())
    if not ref_c:
        return ErrorCounts(0, 0, len(hyp_c), 0)
    if not hyp_c:
        return ErrorCounts(0, len(ref_c), 0, len(ref_c))
    return _counts(jiwer.process_characters(ref_c, hyp_c))


def word_alignment(ref: str, hyp: str) -> list[tuple[str, str, str]]:
    """Aligned word pairs as (op, ref_word, hyp_word); op in equal/substitute/delete/insert."""
    ref_w, hyp_w = ref.split(), hyp.split()
    if not ref_w or not hyp_w:
        return [("delete", w, "") for w in ref_w] + [("insert", "", w) for w in hyp_w]
    out = jiwer.process_words(" ".join(ref_w), " ".join(hyp_w))
    pairs = []
    for chunk in out.alignments[0]:
        r = ref_w[chunk.ref_start_idx : chunk.ref_end_idx]
        h = hyp_w[chunk.hyp_start_idx : chunk.hyp_end_idx]
        if chunk.type in ("equal", "substitute"):
            pairs.extend((chunk.type, a, b) for a, b in zip(r, h))
        elif chunk.type == "delete":
            pairs.extend(("delete", a, "") for a in r)
        else:
            pairs.extend(("insert", "", b) for b in h)
    return pairs

"""WER/CER on hand-made pairs, additivity, and properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from asr.metrics import ErrorCounts, char_errors, word_alignment, word_errors


def test_word_errors_hand_made():
    c = word_errors("the cat sat on the mat", "the cat sit on mat")
    assert (c.sub, c.dele, c.ins, c.ref) == (1, 1, 0, 6)
    assert abs(c.rate - 2 / 6) < 1e-12
    c = word_errors("one two", "one two three four")
    assert (c.sub, c.dele, c.ins, c.ref) == (0, 0, 2, 2)
    assert c.rate == 1.0


def test_char_errors_hand_made():
    c = char_errors("abc", "abd")
    assert (c.sub, c.dele, c.ins, c.ref) == (1, 0, 0, 3)
    c = char_errors("a  b", "ab")  # runs of spaces count as one: "a b" -> "ab" deletes the space
    assert (c.sub, c.dele, c.ins, c.ref) == (0, 1, 0, 3)


def test_empty_sides():
    assert word_errors("", "").rate == 0.0
    assert word_errors("", "hello").ins == 1
    c = word_errors("hello world", "")
    assert (c.dele, c.ref, c.rate) == (2, 2, 1.0)


def test_counts_add_up_across_utterances():
    total = word_errors("a b c", "a x c") + word_errors("d e", "d e f")
    assert (total.sub, total.dele, total.ins, total.ref) == (1, 0, 1, 5)
    assert abs(total.rate - 2 / 5) < 1e-12  # corpus WER, not the mean of utterance WERs


def test_alignment_pairs():
    pairs = word_alignment("the cat sat", "the bat sat down")
    assert pairs == [("equal", "the", "the"), ("substitute", "cat", "bat"),
                     ("equal", "sat", "sat"), ("insert", "", "down")]


words = st.lists(st.sampled_from(["a", "b", "c", "dd"]), max_size=8).map(" ".join)


@given(words, words)
def test_properties(ref, hyp):
    c = word_errors(ref, hyp)
    assert c.ref == len(ref.split())
    assert word_errors(ref, ref).errors == 0
    # edit distance is at least the length difference and at most the longer length
    assert abs(len(ref.split()) - len(hyp.split())) <= c.errors <= max(len(ref.split()), len(hyp.split()))
    assert isinstance(c + ErrorCounts(), ErrorCounts)
    pairs = word_alignment(ref, hyp)
    assert [r for _, r, _ in pairs if r] == ref.split()
    assert [h for _, _, h in pairs if h] == hyp.split()

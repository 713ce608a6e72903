"""asr.wordpieces: the one word-piece splitter, and every user of it agreeing on the words."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.align import word_timestamps
from asr.decode.reference import APPEND, BLANK, SEPARATOR, WORD_START, token_kinds, words_of
from asr.wordpieces import pieces_to_words, word_groups

SP_VOCAB = ["<blank>", "\u2581", "\u2581a", "\u2581bc", "d", "ef", "\u2581g"]
CHAR_VOCAB = ["<blank>", " ", "a", "b", "c"]


def test_hand_worked_splits():
    assert pieces_to_words(["\u2581he", "llo", "\u2581", "wor", "ld"]) == ["hello", "world"]
    assert pieces_to_words(["a", " ", " ", "b", "c", " "]) == ["a", "bc"]
    assert word_groups(["\u2581", "\u2581a"]) == [[0], [1]] and pieces_to_words(["\u2581", "\u2581a"]) == ["a"]
    assert token_kinds(SP_VOCAB)[0] == [BLANK, WORD_START, WORD_START, WORD_START, APPEND, APPEND, WORD_START]
    assert token_kinds(CHAR_VOCAB) == ([BLANK, SEPARATOR, APPEND, APPEND, APPEND], ["", "", "a", "b", "c"])


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([SP_VOCAB, CHAR_VOCAB]), st.lists(st.integers(1, 6), min_size=1, max_size=12))
def test_decoder_words_and_timestamp_words_agree(vocab, ids):
    """The beam search's words (words_of) and the word timestamps (align) split alike."""
    ids = [i % (len(vocab) - 1) + 1 for i in ids]
    path = [0]
    for i in ids:  # a blank after every token: any sequence (repeats too) is the best path
        path += [i, 0]
    lp = torch.full((len(path), len(vocab)), -12.0)
    for t, k in enumerate(path):
        lp[t, k] = -1e-4
    expect = pieces_to_words(vocab[i] for i in ids)
    assert words_of(ids, vocab) == expect
    assert [w.word for w in word_timestamps(lp, ids, vocab, frame_shift=0.01)] == expect

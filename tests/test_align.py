"""Word timestamps: hand-made posteriors with known answers, and real digit recordings."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import WORDS, fsdd_file

from asr.align import align_tokens, word_timestamps


def peaky(path: list[int], vocab: int) -> torch.Tensor:
    """(T, V) log-probs whose best path is ``path`` (one-hot-ish frames)."""
    lp = torch.full((len(path), vocab), -12.0)
    for t, k in enumerate(path):
        lp[t, k] = -1e-4
    return lp


def test_token_spans_follow_the_peaks():
    # blank=0, tokens 1 2 2 (a repeat needs a blank between)
    lp = peaky([0, 1, 1, 0, 2, 0, 2, 0], 3)
    assert [(s, e) for s, e, _ in align_tokens(lp, [1, 2, 2])] == [(1, 2), (4, 4), (6, 6)]
    assert all(p > 0.99 for _, _, p in align_tokens(lp, [1, 2, 2]))


def test_words_from_a_char_vocabulary_in_seconds():
    vocab = ["<b>", "a", "b", " "]
    lp = peaky([0, 1, 1, 0, 3, 0, 2, 0, 0, 0], 4)  # "aa" -> a, then space, then b
    words = word_timestamps(lp, [1, 3, 2], vocab, frame_shift=0.03, offset=10.0)
    assert [w.word for w in words] == ["a", "b"]
    assert words[0].start == pytest.approx(10.03) and words[0].end == pytest.approx(10.09)
    assert words[1].start == pytest.approx(10.18) and words[1].end == pytest.approx(10.21)


def test_words_from_sentencepiece_pieces():
    vocab = ["<b>", "\u2581he", "llo", "\u2581wor", "ld"]
    lp = peaky([1, 0, 2, 0, 0, 3, 4, 0], 5)
    words = word_timestamps(lp, [1, 2, 3, 4], vocab, frame_shift=0.04)
    assert [(w.word, round(w.start, 2), round(w.end, 2)) for w in words] == [
        ("hello", 0.0, 0.12), ("world", 0.2, 0.28)]


def test_too_few_frames_still_gives_every_word_in_order():
    vocab = ["<b>", "a", "b", " "]
    lp = peaky([1, 2], 4)  # 2 frames cannot hold "a a b" (needs 4)
    words = word_timestamps(lp, [1, 3, 1, 3, 2], vocab, frame_shift=0.1)
    assert [w.word for w in words] == ["a", "a", "b"]
    assert all(w.start < w.end for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))


def test_times_land_on_the_spoken_digits(tiny_digits_model):
    """Real audio: each aligned word lies on the recording of its digit (known positions)."""
    import asr

    model = asr.load_model(tiny_digits_model)
    digits, gap = [3, 8, 1, 6], 0.4
    parts, spans, pos = [np.zeros(800, np.float32)], [], 800
    for i, d in enumerate(digits):
        wav, sr = sf.read(fsdd_file(d, "jackson", 10 + i), dtype="float32")
        spans.append((pos / sr, (pos + wav.size) / sr))
        parts += [wav, np.zeros(int(gap * sr), np.float32)]
        pos += wav.size + int(gap * sr)
    audio = np.concatenate(parts)
    duration = audio.size / 8000
    words = model.align(audio, " ".join(WORDS[d] for d in digits), sample_rate=8000)
    assert [w["word"] for w in words] == [WORDS[d] for d in digits]
    for w, (a, b) in zip(words, spans):
        assert 0 <= w["start"] < w["end"] <= duration + 0.05
        mid = (w["start"] + w["end"]) / 2
        assert a - 0.1 <= mid <= b + 0.1, f"{w} is not on its digit ({a:.2f}-{b:.2f} s)"
        assert 0 < w["confidence"] <= 1
    # and the decoder's own words carry times too, in order, within the audio
    t = model.transcribe(audio, sample_rate=8000, timestamps=True)
    assert [w["word"] for w in t.words] == t.text.split()
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in zip(t.words, t.words[1:]))
    assert t.words[-1]["end"] <= duration + 0.05

"""Audio reading: formats, rates, channels, segments by offset, and broken files made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import MINI_LIBRISPEECH, fsdd_file, shared_data

from asr.audio import AudioError, audio_info, load_audio, resample

OPUS = (*MINI_LIBRISPEECH, "1088", "134315", "1088-134315-0000.opus")


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    wav, sr = sf.read(fsdd_file(3, "theo", 7), dtype="float32")
    return wav, sr


@pytest.mark.parametrize("fmt,sr,channels", [("WAV", 8000, 1), ("FLAC", 22050, 2), ("OGG", 44100, 1),
                                             ("WAV", 16000, 2)])
def test_any_rate_and_channel_count_becomes_mono_16k(tmp_path, speech, fmt, sr, channels):
    wav8k, _ = speech
    src = resample(wav8k, 8000, sr)
    data = np.stack([src, 0.5 * src], 1) if channels == 2 else src
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, data, sr, format=fmt)
    out = load_audio(path, 16000)
    assert out.dtype == np.float32 and out.ndim == 1
    assert out.size == pytest.approx(src.size * 16000 / sr, abs=2)
    # Same content as the original at 16 kHz (downmix of (x, x/2) is 0.75 x).
    ref = resample(wav8k, 8000, 16000) * (0.75 if channels == 2 else 1.0)
    n = min(ref.size, out.size)
    err = np.sqrt(np.mean((out[:n] - ref[:n]) ** 2)) / np.sqrt(np.mean(ref**2))
    assert err < (0.12 if fmt == "OGG" else 0.01)  # Vorbis is lossy; the others are 16-bit PCM


def test_resample_length_and_tone_frequency():
    t = np.arange(8000) / 8000
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    up = resample(tone, 8000, 16000)
    assert up.size == 16000
    spec = np.abs(np.fft.rfft(up))
    assert np.argmax(spec) == 440  # 1 s at 16 kHz: bin k is k Hz


def test_segment_by_offset_equals_slice_of_the_whole_file(tmp_path, speech):
    wav, sr = speech
    path = tmp_path / "x.flac"
    sf.write(path, wav, sr)
    full = load_audio(path, sr)
    seg = load_audio(path, sr, offset=0.1, duration=0.2)
    assert np.array_equal(seg, full[800:2400])


def test_segment_reads_only_its_frames(tmp_path, speech, monkeypatch):
    wav, sr = speech
    path = tmp_path / "long.wav"
    sf.write(path, np.tile(wav, int(np.ceil(10 * sr / wav.size))), sr)  # >= 10 s
    requested = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *a, **k):
        requested.append(frames)
        return real_read(self, frames, *a, **k)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    seg = load_audio(path, sr, offset=5.0, duration=0.5)
    assert requested == [4000] and seg.size == 4000


def test_opus_segment_is_sample_exact():
    opus = shared_data(*OPUS)
    full = load_audio(opus)
    seg = load_audio(opus, offset=5.0, duration=2.0)
    assert np.array_equal(seg, full[80000:112000])
    dur, sr, ch = audio_info(opus)
    assert (sr, ch) == (16000, 1) and dur == pytest.approx(full.size / 16000)


def test_bytes_input(speech, tmp_path):
    wav, sr = speech
    path = tmp_path / "x.flac"
    sf.write(path, wav, sr)
    assert np.array_equal(load_audio(path.read_bytes(), sr), load_audio(path, sr))


def test_broken_files_raise_audio_error_naming_the_file(tmp_path, speech):
    wav, sr = speech
    cases = {}
    cases["missing"] = (tmp_path / "missing.wav", "does not exist")
    (tmp_path / "empty.wav").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.wav", r"file is empty \(0 bytes\)")
    (tmp_path / "corrupt.flac").write_bytes(b"fLaC" + bytes(range(256)) * 8)
    cases["corrupt"] = (tmp_path / "corrupt.flac", "cannot decode")
    sf.write(tmp_path / "zero.wav", np.zeros(0, dtype=np.float32), sr)
    cases["zero"] = (tmp_path / "zero.wav", "0 samples")
    bad = wav.copy()
    bad[100] = np.nan
    sf.write(tmp_path / "nan.wav", bad, sr, subtype="FLOAT")
    cases["nan"] = (tmp_path / "nan.wav", "NaN")
    for name, (path, why) in cases.items():
        with pytest.raises(AudioError, match=why) as e:
            load_audio(path)
        assert path.name in str(e.value), name
    with pytest.raises(AudioError, match="0 samples"):  # offset past the end
        load_audio(tmp_path / "nan.wav", offset=100.0)


def test_one_list_of_audio_extensions(tmp_path, monkeypatch):
    """`asr transcribe FOLDER`, the folder importer and the noise bank all take a file as audio
    by asr.audio.AUDIO_EXTENSIONS: changing that one list changes what each of them finds."""
    import shutil

    import asr.audio
    from asr.audio import is_audio_file
    from asr.cli import _expand_inputs
    from asr.degraded_sets import NoiseBank
    from asr.importers import import_folder

    assert all(is_audio_file(f"x.{e}") for e in ("flac", "FLAC", "wav", "ogg", "opus", "mp3", "aiff", "caf"))
    assert not any(is_audio_file(f"x{e}") for e in (".txt", ".json", ".pt", ""))
    for name in ("one.flac", "two.xyz"):  # real FLAC bytes in both; libsndfile reads the header
        shutil.copy(fsdd_file(1), tmp_path / name)
        (tmp_path / name).with_suffix(".txt").write_text("one")
    found = (_expand_inputs([str(tmp_path)]), [u.id for u in import_folder(tmp_path, 1, False).utts],
             [Path(f).name for f in NoiseBank(tmp_path).files])
    assert found == ([str(tmp_path / "one.flac")], ["one"], ["one.flac"])
    monkeypatch.setattr(asr.audio, "AUDIO_EXTENSIONS", frozenset({"xyz"}))
    found = (_expand_inputs([str(tmp_path)]), [u.id for u in import_folder(tmp_path, 1, False).utts],
             [Path(f).name for f in NoiseBank(tmp_path).files])
    assert found == ([str(tmp_path / "two.xyz")], ["two"], ["two.xyz"])

"""asr transcribe and the Python API: segmentation of long audio, formats, folders, stdin, failures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, WORDS, fsdd_file

from asr.audio import AudioError
from asr.transcribe import SegmentOptions, iter_segments


def run_asr(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr", *map(str, args)], cwd=ROOT, input=stdin,
                          capture_output=True, timeout=300)


def speech_with_pauses(n: int = 12, sr: int = 8000, gap: float = 0.6, seed: int = 0):
    """Real digits (speaker jackson) separated by silences; returns (audio, digits, pause centres)."""
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 10, n).tolist()
    parts, pauses, pos = [], [], 0
    for i, d in enumerate(digits):
        wav, _ = sf.read(fsdd_file(d, "jackson", 10 + i % 40), dtype="float32")
        parts += [wav, np.zeros(int(gap * sr), np.float32)]
        pos += wav.size
        pauses.append((pos + gap * sr / 2) / sr)
        pos += int(gap * sr)
    return np.concatenate(parts), digits, pauses


def test_segments_cover_the_audio_and_cut_in_pauses():
    audio, _, pauses = speech_with_pauses(12)
    opts = SegmentOptions(max_seconds=3.0, search_seconds=1.5)
    segs = list(iter_segments(audio, 8000, opts, source_rate=8000))
    assert len(segs) >= 3
    assert sum(s.size for _, s in segs) == audio.size  # nothing lost or repeated
    pos = 0.0
    for off, s in segs:
        assert off == pytest.approx(pos)
        assert s.size <= 3.0 * 8000
        pos += s.size / 8000
    for off, _ in segs[1:]:  # every cut lies in a pause, not inside a digit
        assert min(abs(off - p) for p in pauses) < 0.3


def test_segments_of_a_stereo_file_at_another_rate(tmp_path):
    audio, _, _ = speech_with_pauses(4)
    p = tmp_path / "stereo.flac"
    sf.write(p, np.stack([audio, audio], 1), 8000)
    segs = list(iter_segments(p, 16000, SegmentOptions(max_seconds=2.0, search_seconds=1.0)))
    assert sum(s.size for _, s in segs) == pytest.approx(audio.size * 2, abs=4 * len(segs))
    with pytest.raises(AudioError, match="missing.wav"):
        list(iter_segments(tmp_path / "missing.wav", 16000))
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav"):
        list(iter_segments(tmp_path / "empty.wav", 16000))


def test_long_recording_is_cut_and_stitched(tiny_digits_model, tmp_path):
    """40 s of real speech in 6 s pieces gives the same words as the digits, with ordered times."""
    import asr

    model = asr.load_model(tiny_digits_model)
    audio, digits, _ = speech_with_pauses(40, gap=0.3, seed=1)
    p = tmp_path / "long.wav"
    sf.write(p, np.stack([audio, 0.5 * audio], 1), 8000)  # stereo, 8 kHz: downmixed, resampled
    model.segment_opts = SegmentOptions(max_seconds=6.0, search_seconds=2.0)
    t = model.transcribe(p, timestamps=True)
    assert len(t.segments) >= 5
    ref = [WORDS[d] for d in digits]
    from asr.metrics import word_errors

    assert word_errors(" ".join(ref), t.text).rate <= 0.1, t.text
    assert [w["word"] for w in t.words] == t.text.split()
    starts = [w["start"] for w in t.words]
    assert starts == sorted(starts) and t.words[-1]["end"] <= t.duration + 0.05
    assert t.duration == pytest.approx(audio.size / 8000, abs=0.01)
    # the same audio as an array through the Python API
    t2 = model.transcribe(audio, sample_rate=8000)
    assert t2.text == t.text or word_errors(t.text, t2.text).rate <= 0.05


def test_cli_folder_formats_and_a_broken_file(tiny_digits_model, tmp_path):
    audio, digits, _ = speech_with_pauses(3, seed=2)
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    sf.write(d / "a.wav", audio, 8000)
    sf.write(d / "sub" / "b.flac", audio, 8000)
    (d / "broken.wav").write_bytes(b"RIFF not really a wav file")
    (d / "notes.txt").write_text("not audio")
    expect = " ".join(WORDS[x] for x in digits)

    r = run_asr("transcribe", "--model", tiny_digits_model, d, "-q")
    assert r.returncode == 1  # one input failed
    err = r.stderr.decode()
    assert "broken.wav" in err and "Traceback" not in err and "notes.txt" not in err
    out = dict(line.split("\t") for line in r.stdout.decode().splitlines())
    assert set(out) == {str(d / "a.wav"), str(d / "sub" / "b.flac")}
    assert all(v == expect for v in out.values())

    r = run_asr("transcribe", "-m", tiny_digits_model, "-f", "json", d / "a.wav")
    assert r.returncode == 0, r.stderr.decode()
    obj = json.loads(r.stdout)
    assert obj["text"] == expect and [w["word"] for w in obj["words"]] == expect.split()
    assert all(0 <= w["start"] < w["end"] <= obj["duration"] + 0.05 for w in obj["words"])

    outdir = tmp_path / "subs"
    r = run_asr("transcribe", "-m", tiny_digits_model, "-f", "vtt", "-o", outdir, d / "a.wav", d / "sub")
    assert r.returncode == 0, r.stderr.decode()
    vtt = (outdir / "a.vtt").read_text()
    assert vtt.startswith("WEBVTT") and " --> " in vtt and all(w in vtt for w in expect.split())
    assert (outdir / "b.vtt").is_file()

    # standard input, srt
    r = run_asr("transcribe", "-m", tiny_digits_model, "-f", "srt", "-", stdin=(d / "a.wav").read_bytes())
    assert r.returncode == 0, r.stderr.decode()
    srt = r.stdout.decode()
    assert srt.startswith("1\n00:00:") and "," in srt.splitlines()[1]
    assert " ".join(line for line in srt.splitlines() if line and line[0].isalpha()) == expect


def test_python_api_matches_the_cli(tiny_digits_model, tmp_path):
    import asr

    audio, digits, _ = speech_with_pauses(2, seed=3)
    p = tmp_path / "x.wav"
    sf.write(p, audio, 8000)
    model = asr.load_model(tiny_digits_model)
    assert model.transcribe(p).text == model.transcribe(audio, sample_rate=8000).text
    assert model.transcribe(str(p)).text == " ".join(WORDS[x] for x in digits)
    with pytest.raises(AudioError, match="nope.wav"):
        model.transcribe(tmp_path / "nope.wav")


def test_readme_example_runs(tiny_digits_model, tmp_path):
    """The README's Python example, with its model and audio paths swapped for test ones."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```python\nimport asr")
    code = readme[start + len("```python\n"): readme.index("```", start + 10)]
    audio, digits, _ = speech_with_pauses(2, seed=4)
    sf.write(tmp_path / "digits.wav", audio, 8000)
    code = code.replace("exp/digits/model.pt", str(tiny_digits_model)).replace(
        "recipes/digits/fsdd/3_jackson_0.flac", str(tmp_path / "digits.wav"))
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)  # noqa: S102 - our own README
    assert ns["result"].text == " ".join(WORDS[x] for x in digits)


def test_missing_model_is_one_line_error(tmp_path):
    r = run_asr("transcribe", tmp_path / "none.pt", tmp_path / "a.wav")
    assert r.returncode == 2
    assert r.stderr.decode().count("\n") == 1 and "none.pt" in r.stderr.decode()


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_need_an_output_dir_for_several_inputs(tiny_digits_model, tmp_path, fmt):
    r = run_asr("transcribe", "-m", tiny_digits_model, "-f", fmt, tmp_path / "a.wav", tmp_path / "b.wav")
    assert r.returncode == 2 and "--output-dir" in r.stderr.decode()

"""asr transcribe and the Python API: segmentation of long audio, formats, folders, stdin, failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, fsdd_file

from asr.audio import AudioError
from asr.transcribe import SegmentOptions, iter_segments


def run_asr(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr", *map(str, args)], cwd=ROOT, input=stdin,
                          capture_output=True, timeout=300)


def speech_with_pauses(clips: list[np.ndarray], sr: int = 8000, gap: float = 0.6):
    """Clips separated by silences; returns (audio, centres of the pauses in seconds)."""
    lead = int(0.1 * sr)
    parts, pauses, pos = [np.zeros(lead, np.float32)], [], lead
    for wav in clips:
        parts += [wav, np.zeros(int(gap * sr), np.float32)]
        pos += wav.size
        pauses.append((pos + gap * sr / 2) / sr)
        pos += int(gap * sr)
    return np.concatenate(parts), pauses


def digit_clips(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [sf.read(fsdd_file(int(d), "jackson", 10 + i % 40), dtype="float32")[0]
            for i, d in enumerate(rng.integers(0, 10, n))]


def known_utterances(model_path, n: int, start: int = 0) -> tuple[list[np.ndarray], str]:
    """The first ``n`` utterances the tiny model was trained on (8 kHz) and their joined text.

    The tiny model has heard only these few recordings, so only on them is it reliable
    enough to check transcripts word for word.
    """
    manifest = Path(model_path).parent.parent / "train.jsonl"
    lines = [json.loads(x) for x in manifest.read_text().splitlines()][start: start + n]
    return [sf.read(x["audio"], dtype="float32")[0] for x in lines], " ".join(x["text"] for x in lines)


def test_segments_cover_the_audio_and_cut_in_pauses():
    audio, pauses = speech_with_pauses(digit_clips(12))
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
    audio, _ = speech_with_pauses(digit_clips(4))
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
    """A 40 s stereo file read as a stream in pieces of at most 2.5 s: the transcript is the
    pieces' transcripts in order, word times fall inside their pieces, in order."""
    import asr

    model = asr.load_model(tiny_digits_model, amp="off")  # batched == alone exactly, also with native bf16
    clips, _ = known_utterances(tiny_digits_model, 20)
    audio, _ = speech_with_pauses(clips, gap=0.3)
    p = tmp_path / "long.flac"
    sf.write(p, np.stack([1.2 * audio, 0.3 * audio], 1), 8000)  # stereo, 8 kHz: downmixed, resampled
    opts = SegmentOptions(max_seconds=2.5, search_seconds=1.2, batch_seconds=10)
    model.segment_opts = opts
    t = model.transcribe(p, timestamps=True)
    pieces = list(iter_segments(0.75 * audio, model.sample_rate, opts, source_rate=8000))
    assert len(t.segments) == len(pieces) >= 12
    assert [s["start"] for s in t.segments] == [round(o, 3) for o, _ in pieces]
    alone = [model.transcribe_batch([w])[0].text for _, w in pieces]
    assert t.text == " ".join(x for x in alone if x)
    assert t.duration == pytest.approx(audio.size / 8000, abs=0.01)
    assert [w["word"] for w in t.words] == t.text.split()
    starts = [w["start"] for w in t.words]
    assert starts == sorted(starts) and t.words[-1]["end"] <= t.duration + 0.05
    for seg in t.segments:  # each piece's words lie inside the piece
        inside = [w for w in t.words if seg["start"] - 1e-6 <= w["start"] < seg["end"]]
        assert " ".join(w["word"] for w in inside) == seg["text"]
        assert all(w["end"] <= seg["end"] + 0.05 for w in inside)


def test_cli_folder_formats_and_a_broken_file(tiny_digits_model, tmp_path, capsys):
    from asr.cli import main

    clips, expect = known_utterances(tiny_digits_model, 1, start=0)
    audio = clips[0]
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    sf.write(d / "a.wav", audio, 8000)
    sf.write(d / "sub" / "b.flac", audio, 8000)
    (d / "broken.wav").write_bytes(b"RIFF not really a wav file")
    (d / "notes.txt").write_text("not audio")

    assert main(["transcribe", "--model", str(tiny_digits_model), str(d), "-q"]) == 1  # one input failed
    cap = capsys.readouterr()
    assert "broken.wav" in cap.err and "Traceback" not in cap.err and "notes.txt" not in cap.err
    out = dict(line.split("\t") for line in cap.out.splitlines())
    assert set(out) == {str(d / "a.wav"), str(d / "sub" / "b.flac")}
    assert all(v == expect for v in out.values())

    assert main(["transcribe", "-m", str(tiny_digits_model), "-f", "json", str(d / "a.wav")]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["text"] == expect and [w["word"] for w in obj["words"]] == expect.split()
    assert all(0 <= w["start"] < w["end"] <= obj["duration"] + 0.05 for w in obj["words"])

    outdir = tmp_path / "subs"
    assert main(["transcribe", "-m", str(tiny_digits_model), "-f", "vtt", "-o", str(outdir),
                 str(d / "a.wav"), str(d / "sub")]) == 0
    vtt = (outdir / "a.vtt").read_text()
    assert vtt.startswith("WEBVTT") and " --> " in vtt and all(w in vtt for w in expect.split())
    assert (outdir / "b.vtt").is_file()

    # standard input (a real process with a pipe), srt
    r = run_asr("transcribe", "-m", tiny_digits_model, "-f", "srt", "-", stdin=(d / "a.wav").read_bytes())
    assert r.returncode == 0, r.stderr.decode()
    srt = r.stdout.decode()
    assert srt.startswith("1\n00:00:") and "," in srt.splitlines()[1]
    assert " ".join(line for line in srt.splitlines() if line and line[0].isalpha()) == expect


def test_python_api_matches_the_cli(tiny_digits_model, tmp_path):
    import asr

    clips, expect = known_utterances(tiny_digits_model, 1, start=1)
    p = tmp_path / "x.wav"
    sf.write(p, clips[0], 8000)
    model = asr.load_model(tiny_digits_model)
    assert model.transcribe(p).text == model.transcribe(clips[0], sample_rate=8000).text
    assert model.transcribe(str(p)).text == expect
    assert model.transcribe(p.read_bytes()).text == expect
    with pytest.raises(AudioError, match="nope.wav"):
        model.transcribe(tmp_path / "nope.wav")


def test_readme_example_runs(tiny_digits_model, tmp_path):
    """The README's Python example, with its model and audio paths swapped for test ones."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```python\nimport asr")
    code = readme[start + len("```python\n"): readme.index("```", start + 10)]
    clips, expect = known_utterances(tiny_digits_model, 1, start=2)
    sf.write(tmp_path / "digits.wav", clips[0], 8000)
    code = code.replace("exp/digits/model.pt", str(tiny_digits_model)).replace(
        "recipes/digits/fsdd/3_jackson_0.flac", str(tmp_path / "digits.wav"))
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)  # noqa: S102 - our own README
    assert ns["result"].text == expect


def test_missing_model_is_one_line_error(tmp_path):
    r = run_asr("transcribe", tmp_path / "none.pt", tmp_path / "a.wav")
    assert r.returncode == 1
    assert r.stderr.decode().count("\n") == 1 and "none.pt" in r.stderr.decode()


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_need_an_output_dir_for_several_inputs(tiny_digits_model, tmp_path, fmt, capsys):
    from asr.cli import main

    rc = main(["transcribe", "-m", str(tiny_digits_model), "-f", fmt, str(tmp_path / "a.wav"), str(tmp_path / "b.wav")])
    assert rc == 2 and "--output-dir" in capsys.readouterr().err

"""The inference API (issue 17 item 3): decoding options per call, with_decoding returning a new
model, no stale LM/lexicon cache, load_model(device=...) for exported models, the n-best list
reaching the user, and `asr evaluate` skipping an utterance that makes the model or decoder fail."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_phonedecode import UNIGRAM, phone_model
from test_transcribe import known_utterances

import asr
from asr.decoding import DecodingOptions
from asr.errors import ConfigError

WAV = np.zeros(16000, dtype=np.float32)  # the stand-in phone model ignores the audio: "two a" / "to a"
LEX = {"two": [("T", "UW")], "to": [("T", "UW")], "a": [("AH",)]}


def rewrite(path: Path, text: str) -> None:
    """Write ``text`` and move the modification time on, as a later edit would."""
    old = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(old + 2_000_000_000, old + 2_000_000_000))


def test_options_are_frozen_per_call_and_with_decoding_returns_a_new_model(tmp_path):
    model = phone_model(LEX, tmp_path)  # method greedy: a phone model's greedy output is phones
    beam = DecodingOptions(method="beam", word_bonus=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        beam.method = "greedy"
    assert model.transcribe(WAV).text == "T UW | AH"
    assert model.transcribe(WAV, beam).text in ("two a", "to a")  # words: the lexicon beam search
    assert model.transcribe(WAV).text == "T UW | AH" and model.options.method == "greedy"  # per call only
    derived = model.with_decoding(method="beam")
    assert derived is not model and derived.options.method == "beam" and model.options.method == "greedy"
    assert derived.transcribe(WAV).text in ("two a", "to a") and model.transcribe(WAV).text == "T UW | AH"
    assert derived.resources is model.resources  # the loaded LMs and lexicons are shared
    assert derived.with_decoding(beam).options == beam
    # impossible options are refused where they are made
    with pytest.raises(ConfigError, match="decode.method"):
        DecodingOptions(method="viterbi")
    with pytest.raises(ConfigError, match="nbest=9 must not exceed decode.beam_size=8"):
        model.with_decoding(nbest=9)
    # the options mirror the config's decode section: same fields and defaults, plus timestamps
    cfg = {f.name: f.default for f in dataclasses.fields(asr.config.DecodeConfig)}
    opts = {f.name: f.default for f in dataclasses.fields(DecodingOptions)}
    assert opts == dict(cfg, timestamps=False)


def test_a_changed_lm_or_lexicon_file_is_read_again(tmp_path):
    model = phone_model({"two": [("T", "UW")], "a": [("AH",)]}, tmp_path)
    lm, extra = tmp_path / "lm.arpa", tmp_path / "more.txt"
    rewrite(lm, UNIGRAM)  # "two" more likely than "to"
    rewrite(extra, "to T UW\n")  # adds the homophone "to" to the checkpoint's lexicon
    opts = DecodingOptions(method="beam", lm_path=str(lm), lexicon=str(extra), lm_weight=1.0, word_bonus=0.0)
    assert model.transcribe(WAV, opts).text == "two a"
    loads = model.resources.loads
    assert model.transcribe(WAV, opts).text == "two a" and model.resources.loads == loads  # unchanged: cached
    rewrite(lm, UNIGRAM.replace("-0.5 two", "-3.0 two"))  # same size, same path: now "to" wins
    assert model.transcribe(WAV, opts).text == "to a"
    rewrite(extra, "a AH\n")  # "to" gone from the lexicon again
    assert model.transcribe(WAV, opts).text == "two a"
    # a model derived before the edit sees the edit too
    derived = model.with_decoding(opts)
    rewrite(extra, "to T UW\n")
    assert derived.transcribe(WAV).text == "to a"


def test_nbest_reaches_the_python_api(tiny_digits_model, tmp_path):
    clips, expect = known_utterances(tiny_digits_model, 1, start=3)
    model = asr.load_model(tiny_digits_model, amp="off")
    greedy = model.transcribe(clips[0], sample_rate=8000)
    assert greedy.text == expect and greedy.alternatives == [(expect, pytest.approx(greedy.score))]
    assert greedy.score < 0  # the greedy path's log-probability
    t = model.transcribe(clips[0], DecodingOptions(method="beam", nbest=4), sample_rate=8000)
    texts, scores = [a for a, _ in t.alternatives], [s for _, s in t.alternatives]
    assert 2 <= len(texts) <= 4 and len(set(texts)) == len(texts)  # distinct texts
    assert t.alternatives[0] == (t.text, pytest.approx(t.score))
    assert scores == sorted(scores, reverse=True)
    # a long recording is decoded in segments: its n-best combines theirs
    model.segment_opts = dataclasses.replace(model.segment_opts, max_seconds=0.6, search_seconds=0.2)
    long = model.transcribe(np.concatenate([clips[0]] * 3), DecodingOptions(method="beam", nbest=3),
                            sample_rate=8000)
    assert len(long.segments) > 1 and len(long.alternatives) == 3
    assert long.alternatives[0] == (long.text, pytest.approx(long.score, abs=1e-3))


def test_nbest_from_the_command_line(tiny_digits_model, tmp_path, capsys):
    from asr.cli import main

    clips, expect = known_utterances(tiny_digits_model, 1, start=4)
    sf.write(tmp_path / "a.wav", clips[0], 8000)
    assert main(["transcribe", "-m", str(tiny_digits_model), "--nbest", "3", str(tmp_path / "a.wav")]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == [str(i) for i in range(1, len(rows) + 1)] and len(rows) >= 2
    assert float(rows[0][1]) >= float(rows[1][1])
    assert main(["transcribe", "-m", str(tiny_digits_model), "--nbest", "3", "-f", "json",
                 str(tmp_path / "a.wav")]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["text"] == rows[0][2] == obj["alternatives"][0]["text"]
    assert [a["text"] for a in obj["alternatives"]] == [r[2] for r in rows]
    # greedy finds one hypothesis: asking for more is a usage error
    assert main(["transcribe", "-m", str(tiny_digits_model), "--nbest", "3", "--method", "greedy",
                 str(tmp_path / "a.wav")]) == 2
    assert "--nbest" in capsys.readouterr().err
    # evaluate: the report's JSON holds each utterance's alternatives
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": str(tmp_path / "a.wav"), "duration": clips[0].size / 8000,
                                    "text": expect}) + "\n")
    assert main(["evaluate", "-m", str(tiny_digits_model), "--manifest", str(manifest), "--nbest", "3",
                 "--out", str(tmp_path / "rep")]) == 0
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    alts = rep["utterances"][0]["alternatives"]
    assert [a[0] for a in alts] == [r[2] for r in rows] and rep["meta"]["decode"]["nbest"] == 3


def test_cli_device_errors_are_one_line(tiny_digits_model, tmp_path, capsys):
    """(load_model's device per kind of model: tests/test_export.py, on the files it exports)"""
    from asr.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    sf.write(tmp_path / "a.wav", WAV, 16000)
    assert main(["transcribe", "-m", str(tiny_digits_model), "--device", "cuda", str(tmp_path / "a.wav")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("asr: error:") and "0 CUDA devices" in err


class FailingNet:
    """A network that runs out of memory on more than ``budget`` samples in one call (B * S), as a
    real one does on a too-long input; ``calls`` counts the calls."""

    def __init__(self, net, budget: int):
        self.net, self.budget, self.calls = net, budget, 0

    def __call__(self, wavs, lens):
        self.calls += 1
        if wavs.numel() > self.budget:
            raise RuntimeError(f"out of memory: {wavs.shape[0]} x {wavs.shape[1]} samples")
        return self.net(wavs, lens)


@pytest.mark.parametrize("method,where", [("greedy", "model"), ("beam", "model"), ("beam", "decoder")])
def test_evaluate_skips_and_reports_what_fails(tiny_digits_model, tmp_path, monkeypatch, method, where, capsys):
    import asr.transcribe
    from asr.cli import main

    lines = [json.loads(x) for x in (Path(tiny_digits_model).parent.parent / "train.jsonl").read_text().splitlines()]
    good = lines[:3]
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40))
    long_wav = np.concatenate([sf.read(x["audio"], dtype="float32")[0] for x in lines[3:9]])
    sf.write(tmp_path / "long.wav", long_wav, 8000)
    rows = good + [
        {"id": "corrupt", "audio": str(tmp_path / "corrupt.wav"), "duration": 1.0, "text": "one"},
        {"id": "corrupt-long", "audio": str(tmp_path / "corrupt.wav"), "duration": 99.0, "text": "one"},
        {"id": "too-long", "audio": str(tmp_path / "long.wav"), "duration": long_wav.size / 8000,
         "text": " ".join(x["text"] for x in lines[3:9])},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    real_load = asr.transcribe.load_model
    # the good utterances (under 3 s) pass alone; the long one's segments (3 s), batched, do not
    assert all(x["duration"] < 3.0 for x in good)
    budget_s = 4.0

    def load(*a, **k):
        m = real_load(*a, **k)
        m.segment_opts = dataclasses.replace(m.segment_opts, max_seconds=3.0, search_seconds=0.5)
        if where == "model":
            m.net = FailingNet(m.net, int(budget_s * m.sample_rate))
        return m

    monkeypatch.setattr(asr.transcribe, "load_model", load)
    if where == "decoder":  # the beam search fails on a batch of more than budget_s of frames
        real_search = asr.transcribe.beam_search

        def search(lp, lens, *a, **k):
            if lp.shape[0] * lp.shape[1] * 0.03 > budget_s:
                raise ValueError(f"decoder failed on {lp.shape[0]} x {lp.shape[1]} frames")
            return real_search(lp, lens, *a, **k)

        monkeypatch.setattr(asr.transcribe, "beam_search", search)
    out = tmp_path / "rep"
    rc = main(["evaluate", "-m", str(tiny_digits_model), "--manifest", str(manifest), "--method", method,
               "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 0 and "Traceback" not in cap.err, cap.err
    assert "3 utterances" in cap.out and "3 failed" in cap.out
    rep = json.loads((out / "report.json").read_text())
    assert [u["id"] for u in rep["utterances"]] == [x["id"] for x in good]
    failed = {f["id"]: f["reason"] for f in rep["failed"]}
    assert set(failed) == {"corrupt", "corrupt-long", "too-long"}
    assert "corrupt.wav" in failed["corrupt"] and "corrupt.wav" in failed["corrupt-long"]
    assert ("out of memory" if where == "model" else "decoder failed") in failed["too-long"]
    assert "asr: skipped too-long: " in cap.err  # and listed at the end
    assert "too-long" in (out / "report.html").read_text()

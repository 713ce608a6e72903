"""The `asr` command end to end, as a user runs it (subprocesses, real audio)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, WORDS, make_digit_utterance

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def asr(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr", *map(str, args)], capture_output=True,
                          input=stdin, env=ENV, cwd=ROOT, timeout=300)


def test_transcribe_prints_the_spoken_digits(tiny_digits_model, tmp_path):
    wav = tmp_path / "three_digits.wav"
    digits = [4, 0, 7]
    make_digit_utterance(wav, digits, "jackson", index=12, sr_out=16000)
    r = asr("transcribe", tiny_digits_model, wav)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode().strip()
    ref = " ".join(WORDS[d] for d in digits)
    from asr.metrics import word_errors

    assert word_errors(ref, out).errors <= 1, (ref, out)


def test_transcribe_missing_and_unreadable_files(tiny_digits_model, tmp_path):
    missing = tmp_path / "nope.wav"
    r = asr("transcribe", tiny_digits_model, missing)
    assert r.returncode != 0
    err = r.stderr.decode().strip().splitlines()
    assert any(str(missing) in line for line in err), err
    assert "Traceback" not in r.stderr.decode()

    junk = tmp_path / "junk.wav"
    junk.write_text("this is not audio\n")
    r = asr("transcribe", tiny_digits_model, junk)
    assert r.returncode != 0
    assert str(junk) in r.stderr.decode() and "Traceback" not in r.stderr.decode()


def test_unknown_config_key_is_an_error_listing_valid_keys(tmp_path):
    r = asr("train", "-c", ROOT / "conf" / "digits.yaml", "train.lrr=1e-3", f"run_dir={tmp_path}")
    assert r.returncode != 0
    msg = r.stderr.decode()
    assert "lrr" in msg and "lr" in msg and "valid keys" in msg and "Traceback" not in msg


def test_evaluate_writes_report(tiny_digits_model, tmp_path):
    from conftest import write_digits_manifest

    m = write_digits_manifest(tmp_path, 4, "test", index_range=range(0, 5), seed=3)
    out = tmp_path / "eval"
    r = asr("evaluate", "--model", tiny_digits_model, "--manifest", m, "--out", out)
    assert r.returncode == 0, r.stderr.decode()
    assert "WER" in r.stdout.decode()
    rep = json.loads((out / "report.json").read_text())
    assert rep["summary"]["utterances"] == 4
    assert 0.0 <= rep["summary"]["wer"] <= 1.0
    assert all(u["ref"] for u in rep["utterances"])


def test_bad_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x00" * 100)
    wav = tmp_path / "a.wav"
    make_digit_utterance(wav, [1], "jackson", 0)
    r = asr("transcribe", bad, wav)
    assert r.returncode != 0
    assert str(bad) in r.stderr.decode() and "Traceback" not in r.stderr.decode()


def test_python_m_asr_help():
    r = asr("--help")
    assert r.returncode == 0 and b"transcribe" in r.stdout
    assert Path(ROOT / "asr" / "__main__.py").is_file()


def test_decode_tune_lm_writes_weights_that_evaluate_then_uses(tiny_digits_model, digits_manifest, tmp_path, capsys):
    import shutil

    from asr.cli import main

    model = tmp_path / "model.pt"  # a copy: the tuned weights are written beside the model
    shutil.copy(tiny_digits_model, model)
    dev = digits_manifest(6, name="dev", index_range=range(0, 5))
    arpa = tmp_path / "lm.arpa"
    assert main(["lm", "build", str(digits_manifest(40, name="lmtext")), "-o", str(arpa), "--order", "2"]) == 0
    rc = main(["decode", "--tune-lm", "-m", str(model), "--manifest", str(dev), "--lm", str(arpa),
               "--beam-size", "4", "--alphas", "0", "0.5", "--betas", "0", "1"])
    assert rc == 0
    tuned = json.loads((tmp_path / "model.lm.json").read_text())
    assert tuned["utterances"] == 6 and tuned["lm_path"] == str(arpa.resolve())
    assert len(tuned["grid"]) >= 4  # the 2x2 grid, then the hill-climb's neighbours
    assert tuned["dev_wer"] == min(g["wer"] for g in tuned["grid"])
    out = capsys.readouterr().out
    assert f"--lm-weight {tuned['lm_weight']} --word-bonus {tuned['word_bonus']}" in out
    rc = main(["evaluate", "-m", str(model), "--manifest", str(dev), "--method", "beam", "--beam-size", "4",
               "--lm", str(arpa), "--out", str(tmp_path / "ev")])
    assert rc == 0
    meta = json.loads((tmp_path / "ev" / "report.json").read_text())["meta"]["decode"]
    assert meta["lm_weight"] == tuned["lm_weight"] and meta["word_bonus"] == tuned["word_bonus"]

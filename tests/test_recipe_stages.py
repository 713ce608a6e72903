"""recipes/mini_librispeech/run.sh stage 1 (the book LM's cache), stages 2-3 (train, then channel
fine-tuning) and 5 (degraded dev sets) with a stand-in for Python that records each `asr` command and writes the model files: which folders, configs
and overrides each stage uses, a finished fine-tuning kept, stale fine-tuning checkpoints refused, which
decodings stage 5 runs and which clean report its table compares with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

RUN = ROOT / "recipes" / "mini_librispeech" / "run.sh"
FAKE_PY = """#!/usr/bin/env bash
# stand-in for `python -m asr ...`: log the command, write model.pt into run_dir for `train`
# run.sh's questions: a config's selection sets (answered by the real Python), the model's units
[ "$1" != -c ] || { case "$2" in *load_config*) exec "$REAL_PY" "$@";; esac; echo "${FAKE_UNITS:-phone}"; exit 0; }
case "$1" in *.py) echo "tool $*" >> "$ASR_LOG"; exit 0;; esac  # tools/robustness_table.py
shift 2  # -m asr
echo "$*" >> "$ASR_LOG"
if [ "$1" = train ]; then
  for a in "$@"; do case "$a" in run_dir=*) d=${a#run_dir=}; mkdir -p "$d"; echo model > "$d/model.pt";; esac; done
fi
if [ "$1" = lm ] || [ "$1" = data ]; then  # lm build/mix, data split: write every -o output
  while [ $# -gt 0 ]; do
    if [ "$1" = -o ]; then shift; while [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; do echo x > "$1"; shift; done
    else shift; fi
  done
fi
"""


def run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    py = tmp_path / "fakepy"
    py.write_text(FAKE_PY)
    py.chmod(0o755)
    log = tmp_path / "asr.log"
    log.write_text("")
    env = {**os.environ, "PY": str(py), "ASR_LOG": str(log), "REAL_PY": sys.executable}
    p = subprocess.run(["bash", str(RUN), "--exp", str(tmp_path / "exp"), *args], env=env, capture_output=True,
                       text=True, timeout=60)
    return p, log.read_text().splitlines()


def test_stage_2_trains_base_and_stage_3_fine_tunes_it_into_exp(tmp_path):
    exp = tmp_path / "exp"
    two = ("--conf", "conf/mini_librispeech_cpu.yaml")  # the clean-audio config: stage 3 fine-tunes it
    p, calls = run(tmp_path, *two, "--stage", "2", "--stop-stage", "3", "model.hidden_size=256", "train.epochs=3")
    assert p.returncode == 0, p.stderr
    train = [c for c in calls if c.startswith("train ")]
    assert len(train) == 2
    assert "-c conf/mini_librispeech_cpu.yaml" in train[0] and f"run_dir={exp}/base" in train[0]
    assert "model.hidden_size=256" in train[0] and "train.epochs=3" in train[0]
    ft = train[1]
    assert "-c conf/mini_librispeech_cpu_robust_ft.yaml" in ft and f"run_dir={exp} " in ft
    assert f"train.init_from={exp}/base/model.pt" in ft
    assert f"{exp}/data/degraded/mp3_24/manifest.jsonl" in ft and f"{exp}/data/degraded/phone/manifest.jsonl" in ft
    assert "model.hidden_size=256" in ft and "train.epochs=3" not in ft  # the model's shape, not the schedule
    degrade = calls.index(next(c for c in calls if c.startswith("data degrade")))
    assert degrade < calls.index(ft)  # the selection sets exist before the fine-tuning reads them
    assert (exp / "model.pt").is_file() and (exp / "base" / "model.pt").is_file()

    # again: the fine-tuned model is newer than the base, so nothing is trained
    p, calls = run(tmp_path, *two, "--stage", "3", "--stop-stage", "3")
    assert p.returncode == 0 and "kept" in p.stdout and not [c for c in calls if c.startswith("train ")]

    # a new base with the old fine-tuning's checkpoints still there: refused, saying what to do
    (exp / "checkpoints").mkdir()
    (exp / "checkpoints" / "last.pt").write_text("old")
    for i, f in enumerate([exp / "model.pt", exp / "checkpoints" / "last.pt", exp / "base" / "model.pt"]):
        os.utime(f, (1_000_000 + i, 1_000_000 + i))
    p, calls = run(tmp_path, *two, "--stage", "3", "--stop-stage", "3")
    assert p.returncode == 2 and "move" in p.stderr and "checkpoints" in p.stderr
    assert not [c for c in calls if c.startswith("train ")]


def test_the_default_trains_one_stage_and_finetune_conf_none_trains_into_exp_alone(tmp_path):
    exp = tmp_path / "exp"
    p, calls = run(tmp_path, "--stage", "2", "--stop-stage", "3")  # the default: the curriculum config, one stage
    train = [c for c in calls if c.startswith("train ")]
    assert p.returncode == 0 and len(train) == 1, p.stderr
    assert "-c conf/mini_librispeech_cpu_curriculum.yaml" in train[0] and f"run_dir={exp} " in train[0]
    assert "init_from" not in train[0] and not (exp / "base").exists()
    # a folder of the two-stage recipe (base/, stage 3's checkpoints): not resumed as if it were this run's
    old = tmp_path / "old"
    (old / "base").mkdir(parents=True)
    (old / "checkpoints").mkdir()
    (old / "checkpoints" / "last.pt").write_text("stage 3")
    p, calls = run(tmp_path, "--stage", "2", "--stop-stage", "3", "--exp", str(old))
    assert p.returncode == 2 and "two-stage" in p.stderr and "--exp" in p.stderr
    assert not [c for c in calls if c.startswith("train ")]
    p, calls = run(tmp_path, "--conf", "conf/mini_librispeech_cpu.yaml", "--stage", "2", "--stop-stage", "3",
                   "--finetune-conf", "none")
    assert p.returncode == 0, p.stderr
    train = [c for c in calls if c.startswith("train ")]
    assert len(train) == 1 and f"run_dir={exp} " in train[0] and not (exp / "base").exists()
    # another config than the CPU one is not fine-tuned by default either
    p, calls = run(tmp_path, "--stage", "2", "--stop-stage", "3", "--conf", "conf/mini_librispeech_gpu.yaml")
    train = [c for c in calls if c.startswith("train ")]
    assert p.returncode == 0 and len(train) == 1 and "init_from" not in train[0]


def test_a_config_selecting_on_degraded_copies_reads_them_from_this_runs_data(tmp_path):
    """The curriculum config names its own run folder's copies; run.sh builds them under --exp and points
    train.select_on there, keeping the config's list of sets."""
    exp = tmp_path / "exp"
    p, calls = run(tmp_path, "--stage", "2", "--stop-stage", "2", "--conf", "conf/mini_librispeech_cpu_curriculum.yaml")
    assert p.returncode == 0, p.stderr
    train = [c for c in calls if c.startswith("train ")]
    assert len(train) == 1 and f"run_dir={exp} " in train[0]
    sets = ", ".join(f"{exp}/data/degraded/{k}/manifest.jsonl" for k in ("mp3_24", "phone", "noise_10"))
    assert f"train.select_on=[dev, {sets}]" in train[0]
    degrade = calls.index(next(c for c in calls if c.startswith("data degrade")))
    assert degrade < calls.index(train[0])
    # a select_on given on the command line is the user's: passed as given, not rewritten
    mine = f"train.select_on=[dev, {exp}/data/degraded/phone/manifest.jsonl]"
    p, calls = run(tmp_path, "--stage", "2", "--stop-stage", "2", "--finetune-conf", "none", mine)
    train = [c for c in calls if c.startswith("train ")]
    assert p.returncode == 0 and train[-1].count("train.select_on=") == 1 and mine in train[-1]


def test_stage_5_decodes_each_set_and_compares_beam_lm_with_the_book_lm_row(tmp_path, monkeypatch):
    exp = tmp_path / "exp"
    for f in ("model.pt", "data/dev.jsonl", "lm/book-3gram.arpa", "lm/book-words.txt", "lm/book-phones.txt"):
        (exp / f).parent.mkdir(parents=True, exist_ok=True)
        (exp / f).write_text("x\n")
    os.utime(exp / "lm" / "book-words.txt", (1_000_000, 1_000_000))  # the phone lexicon is up to date
    args = ("--stage", "5", "--stop-stage", "5", "--robust-kinds", "mp3:24 phone", "--robust-modes", "greedy beam-lm")
    p, calls = run(tmp_path, *args)
    assert p.returncode == 0, p.stderr
    evals = [c for c in calls if c.startswith("evaluate ")]
    # clean dev once (beam-lm: stage 4 did not run, so stage 5 decodes it), then each set in each mode
    assert len(evals) == 5
    clean = evals[0]
    assert f"--manifest {exp}/data/dev.jsonl" in clean and f"--out {exp}/eval-dev-beam-booklm-lex" in clean
    assert f"--lexicon {exp}/lm/book-phones.txt" in clean and "--beam-size 1024" in clean
    assert f"--manifest {exp}/data/degraded/mp3_24/manifest.jsonl --method greedy" in evals[1]
    assert f"--out {exp}/eval-dev-phone-beam-lm" in evals[4]
    (tool,) = [c for c in calls if c.startswith("tool ")]
    assert "--modes greedy beam-lm --clean beam-lm=eval-dev-beam-booklm-lex" in tool

    # stage 4's book-LM row newer than the model: clean dev is not decoded again; a character model's
    # clean row is the open-vocabulary one
    (exp / "eval-dev-beam-booklm").mkdir()
    (exp / "eval-dev-beam-booklm" / "report.json").write_text("{}")
    monkeypatch.setenv("FAKE_UNITS", "char")
    p, calls = run(tmp_path, *args)
    assert p.returncode == 0, p.stderr
    evals = [c for c in calls if c.startswith("evaluate ")]
    assert len(evals) == 4 and all("data/dev.jsonl" not in c for c in evals)
    assert all("--lexicon" not in c for c in evals)
    (tool,) = [c for c in calls if c.startswith("tool ")]
    assert "--clean beam-lm=eval-dev-beam-booklm " in tool + " "


def test_stage_1_rebuilds_the_book_lm_when_its_threshold_or_source_changes(tmp_path):
    exp = tmp_path / "exp"
    (exp / "data").mkdir(parents=True)
    (exp / "data" / "train.jsonl").write_text("x\n")
    text, vocab, arpa = tmp_path / "books.txt", tmp_path / "vocab.txt", tmp_path / "other.arpa"
    text.write_text("the cat\n")
    vocab.write_text("THE\nCAT\n")
    arpa.write_text("\\data\\\nNGRAM 1=1\n")
    stage1 = ("--stage", "1", "--stop-stage", "1", "--vocab", str(vocab))

    def book_builds(*args: str) -> list[str]:
        p, calls = run(tmp_path, *stage1, *args)
        assert p.returncode == 0, p.stderr
        return [c for c in calls if c.startswith("lm build") and "book-3gram.arpa" in c]

    (build,) = book_builds("--lm-text", str(text))
    assert f"lm build {text} -o {exp}/lm/book-3gram.arpa" in build and "--prune 1e-7" in build
    assert book_builds("--lm-text", str(text)) == []  # cached
    (build,) = book_builds("--lm-prune", "1e-8", "--lm-text", str(text))  # another threshold: rebuilt
    assert "--prune 1e-8" in build
    assert book_builds("--lm-prune", "1e-8", "--lm-text", str(text)) == []
    # an ARPA given with --lm-arpa replaces the built LM even though the built one is newer, and back
    os.utime(arpa, (1_000_000, 1_000_000))
    assert book_builds("--lm-arpa", str(arpa)) == []
    assert (exp / "lm" / "book-3gram.arpa").read_text() == arpa.read_text().lower()
    (build,) = book_builds("--lm-prune", "1e-8", "--lm-text", str(text))
    assert "--prune 1e-8" in build

"""recipes/mini_librispeech/run.sh stages 2-3 (train, then channel fine-tuning) with a stand-in for Python
that records each `asr` command and writes the model files: which folders, configs and overrides each stage
uses, a finished fine-tuning kept, stale fine-tuning checkpoints refused."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import ROOT

RUN = ROOT / "recipes" / "mini_librispeech" / "run.sh"
FAKE_PY = """#!/usr/bin/env bash
# stand-in for `python -m asr ...`: log the command, write model.pt into run_dir for `train`
shift 2  # -m asr
echo "$*" >> "$ASR_LOG"
if [ "$1" = train ]; then
  for a in "$@"; do case "$a" in run_dir=*) d=${a#run_dir=}; mkdir -p "$d"; echo model > "$d/model.pt";; esac; done
fi
"""


def run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    py = tmp_path / "fakepy"
    py.write_text(FAKE_PY)
    py.chmod(0o755)
    log = tmp_path / "asr.log"
    log.write_text("")
    env = {**os.environ, "PY": str(py), "ASR_LOG": str(log)}
    p = subprocess.run(["bash", str(RUN), "--exp", str(tmp_path / "exp"), *args], env=env, capture_output=True,
                       text=True, timeout=60)
    return p, log.read_text().splitlines()


def test_stage_2_trains_base_and_stage_3_fine_tunes_it_into_exp(tmp_path):
    exp = tmp_path / "exp"
    p, calls = run(tmp_path, "--stage", "2", "--stop-stage", "3", "model.hidden_size=256", "train.epochs=3")
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
    p, calls = run(tmp_path, "--stage", "3", "--stop-stage", "3")
    assert p.returncode == 0 and "kept" in p.stdout and not [c for c in calls if c.startswith("train ")]

    # a new base with the old fine-tuning's checkpoints still there: refused, saying what to do
    (exp / "checkpoints").mkdir()
    (exp / "checkpoints" / "last.pt").write_text("old")
    for i, f in enumerate([exp / "model.pt", exp / "checkpoints" / "last.pt", exp / "base" / "model.pt"]):
        os.utime(f, (1_000_000 + i, 1_000_000 + i))
    p, calls = run(tmp_path, "--stage", "3", "--stop-stage", "3")
    assert p.returncode == 2 and "move" in p.stderr and "checkpoints" in p.stderr
    assert not [c for c in calls if c.startswith("train ")]


def test_finetune_conf_none_trains_into_exp_alone(tmp_path):
    exp = tmp_path / "exp"
    p, calls = run(tmp_path, "--stage", "2", "--stop-stage", "3", "--finetune-conf", "none")
    assert p.returncode == 0, p.stderr
    train = [c for c in calls if c.startswith("train ")]
    assert len(train) == 1 and f"run_dir={exp} " in train[0] and not (exp / "base").exists()
    # another config than the CPU one is not fine-tuned by default either
    p, calls = run(tmp_path, "--stage", "2", "--stop-stage", "3", "--conf", "conf/mini_librispeech_gpu.yaml")
    train = [c for c in calls if c.startswith("train ")]
    assert p.returncode == 0 and len(train) == 1 and "init_from" not in train[0]

"""DDP: two CPU processes (gloo, launched by torchrun) give the same training as one process
with the same global batch (accum_steps=2): same per-step losses and weights within tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import ROOT
from test_train import BASE, write_manifest

from asr.checkpoint import read_checkpoint

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _records(run_dir) if "loss" in r}


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    # short and long utterances, so the ranks' micro-batches hold different numbers of them
    m = write_manifest(tmp_path, "train", [[1], [2], [3, 4, 5], [6], [7, 8, 9], [0], [1, 2, 3], [4],
                                           [5], [6, 7, 8]])
    # dropout, SpecAugment and speed perturbation stay on: their seeds follow the micro-batch's
    # place in the global batch, so the two layouts draw the same masks
    common = [*BASE, f"data.train_manifest={m}", "data.dev_manifest=", "data.max_batch_seconds=3",
              "model.dropout=0.2", "augment.speed_perturb=[0.9,1.1]", "train.epochs=1",
              "train.warmup_steps=2", "--max-steps", "3", "-c", str(ROOT / "conf" / "digits.yaml")]
    single = subprocess.run(
        [sys.executable, "-m", "asr", "train", "--run-dir", str(tmp_path / "one"),
         "train.accum_steps=2", *common], env=ENV, cwd=ROOT, capture_output=True, timeout=120)
    assert single.returncode == 0, single.stderr.decode()[-3000:]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "asr", "train", "--run-dir", str(tmp_path / "two"), *common],
        env=ENV, cwd=ROOT, capture_output=True, timeout=120)
    assert ddp.returncode == 0, ddp.stderr.decode()[-3000:]
    assert "DDP world 2" in (tmp_path / "two" / "train.log").read_text()

    # a rank-local mean would weight the utterances of unequal micro-batches differently
    assert len({r["utts"] for r in _records(tmp_path / "one")}) > 1
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3]
    for step in one:
        assert abs(one[step] - two[step]) <= 1e-4 * abs(one[step]), (step, one[step], two[step])
    a = read_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    b = read_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert a["state"]["train_state"]["step"] == b["state"]["train_state"]["step"] == 3
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=2e-5, rtol=1e-4)

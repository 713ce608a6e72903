"""The training loop on tiny real data: it learns, it resumes exactly after SIGKILL, it is exact
about loss scaling, it filters what CTC cannot fit, it stops early."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, WORDS, make_digit_utterance

from asr.checkpoint import read_checkpoint
from asr.config import load_config, to_dict
from asr.errors import TrainingError
from asr.optim import LRSchedule
from asr.train import Trainer, TrainState, train

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
BASE = [  # a tiny model on 8 kHz FSDD digits (features as in conf/digits.yaml)
    "model.num_layers=1", "model.hidden_size=32", "model.subsampling=stack2", "train.threads=1",
    "train.log_every=1000", "train.keep_last=1", "train.keep_best=1", "data.max_batch_seconds=8",
    "train.amp=off",  # exact comparisons (resume, accumulation, DDP) also on CPUs with native bf16
]


def write_manifest(root: Path, name: str, items: list[list[int]], index0: int = 10) -> Path:
    """Real FSDD recordings (speaker jackson) of the given digit strings."""
    (root / name).mkdir(parents=True, exist_ok=True)
    lines = []
    for i, digits in enumerate(items):
        p = root / name / f"{name}-{i:02d}.wav"
        dur = make_digit_utterance(p, digits, "jackson", index0 + i, gap=0.05)
        lines.append({"id": f"{name}-{i:02d}", "audio": str(p), "duration": dur,
                      "text": " ".join(WORDS[d] for d in digits)})
    m = root / f"{name}.jsonl"
    m.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return m


def config(run_dir: Path, train_m: Path, *extra: str, dev_m: Path | None = None):
    over = [*BASE, f"run_dir={run_dir}", f"data.train_manifest={train_m}", *extra]
    over.append(f"data.dev_manifest={dev_m or ''}")
    return load_config(ROOT / "conf" / "digits.yaml", over)


def test_overfits_a_handful_of_utterances(tmp_path):
    """The loss falls steeply and greedy decoding of the training utterances becomes right."""
    m = write_manifest(tmp_path, "train", [[1, 2], [3], [4, 5], [6, 7], [8, 9], [0]])
    cfg = config(tmp_path / "run", m, "model.hidden_size=64", "model.dropout=0", "train.epochs=50",
                 "augment.specaugment=false", "train.lr=5e-3", "train.warmup_steps=5",
                 "train.scheduler=constant", "data.max_batch_seconds=20", dev_m=m)
    out = train(cfg, resume=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["train_loss"] < 0.1 * history[0]["train_loss"], history
    assert history[-1]["dev_wer"] == 0.0, history[-1]
    assert read_checkpoint(out)["config"] == to_dict(cfg)  # the resolved config, in the checkpoint
    assert load_config(tmp_path / "run" / "config.yaml") == cfg  # ... and in the run folder
    log_text = (tmp_path / "run" / "train.log").read_text()
    assert "parameters" in log_text and "dev WER" in log_text
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, len(steps) + 1))
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_utterances_ctc_cannot_fit_are_filtered_with_a_count(tmp_path):
    m = write_manifest(tmp_path, "train", [[1, 2], [3, 4], [5, 6]])
    lines = m.read_text().splitlines()
    d = json.loads(lines[0])
    d.update(id="too-short", duration=0.4, text="seven " * 8)  # 40 chars into ~17 output frames
    m.write_text("\n".join([*lines, json.dumps(d)]) + "\n")
    t = Trainer(config(tmp_path / "run", m, "train.epochs=1"), resume=False)
    assert len(t.train_loader.dataset) == 3
    warnings = [x for x in (tmp_path / "run" / "train.log").read_text().splitlines() if "WARNING" in x]
    assert any("skipped 1 utterances" in x and "too-short" in x for x in warnings), warnings


def test_accumulated_update_equals_one_big_batch(tmp_path):
    """Two micro-batches of 1 and 3 utterances give the same update as one batch of all 4."""
    m = write_manifest(tmp_path, "train", [[1], [2, 3], [4, 5, 6], [7, 8]])
    extra = ("model.dropout=0", "augment.specaugment=false", "train.grad_clip=0", "train.epochs=1")
    t1 = Trainer(config(tmp_path / "a", m, "train.accum_steps=2", *extra), resume=False)
    t2 = Trainer(config(tmp_path / "b", m, *extra), resume=False)
    ds = t1.train_loader.dataset
    from asr.data import collate

    small, big = collate([ds[0]]), collate([ds[1], ds[2], ds[3]])
    out1 = t1.train_step([small, big])
    out2 = t2.train_step([collate([ds[i] for i in range(4)])])
    assert out1["utts"] == out2["utts"] == 4
    assert out1["loss"] == pytest.approx(out2["loss"], rel=1e-5)
    for p1, p2 in zip(t1.model.parameters(), t2.model.parameters()):
        torch.testing.assert_close(p1, p2, atol=1e-6, rtol=1e-5)


def test_early_stopping_with_patience(tmp_path):
    m = write_manifest(tmp_path, "train", [[1, 2], [3, 4]])
    cfg = config(tmp_path / "run", m, "train.epochs=6", "train.patience=2", "train.lr=1e-9", dev_m=m)
    train(cfg, resume=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 3  # epoch 1 sets the best WER; epochs 2 and 3 do not improve it


def test_lr_schedules():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)

    def lrs(*over: str, total: int = 100) -> list[float]:
        cfg = load_config(None, ["train.lr=1.0", "train.warmup_steps=10", *over])
        sched = LRSchedule(opt, cfg, total, TrainState())
        return [sched.step(s) for s in range(total)]

    cos = lrs("train.scheduler=cosine", "train.min_lr_ratio=0.1")
    assert cos[0] == pytest.approx(0.1) and cos[9] == pytest.approx(1.0)
    assert cos[54] == pytest.approx(0.55, abs=0.02) and cos[-1] == pytest.approx(0.1, abs=1e-3)
    noam = lrs("train.scheduler=noam")
    assert noam[9] == pytest.approx(1.0) and noam[39] == pytest.approx(0.5)
    state = TrainState()
    cfg = load_config(None, ["train.scheduler=plateau", "train.warmup_steps=0"])
    sched = LRSchedule(opt, cfg, 10, state)
    sched.epoch_end(improved=True)
    sched.epoch_end(improved=False)
    assert sched.step(5) == pytest.approx(cfg.train.lr / 2)
    assert math.isclose(state.plateau_scale, 0.5)


def _losses(run_dir: Path) -> dict[int, float]:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r}


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    """Dropout, SpecAugment, speed perturbation, Adam, cosine LR, dev evaluation (every 3
    updates and at epoch ends) and the waveform cache all in play: the resumed run repeats the
    reference step for step."""
    m = write_manifest(tmp_path, "train", [[1, 2], [3, 4, 5], [6], [7, 8], [9, 0, 1], [2, 3],
                                           [4], [5, 6, 7]])
    dev = write_manifest(tmp_path, "dev", [[8, 9]], index0=30)
    args = [*BASE, f"data.train_manifest={m}", f"data.dev_manifest={dev}", "model.dropout=0.3",
            "augment.speed_perturb=[0.9,1.0,1.1]", "train.epochs=4", "train.warmup_steps=3",
            "train.eval_every=3", "data.cache=ram"]  # the resumed run starts with an empty cache

    def run(run_dir: Path) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "asr", "train", "-c", str(ROOT / "conf" / "digits.yaml"),
               "--run-dir", str(run_dir), "--save-every", "2", *args]
        return subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    ref = run(tmp_path / "ref")
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err.decode()[-2000:]

    victim = run(tmp_path / "killed")
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "model.pt").exists(), "the run finished before it was killed"
    st = read_checkpoint(last)["state"]["train_state"]
    assert st["batch_in_epoch"] > 0 and 0 < st["step"] < max(_losses(tmp_path / "ref"))

    again = run(tmp_path / "killed")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err.decode()[-2000:]
    assert "resumed from" in (tmp_path / "killed" / "train.log").read_text()

    dev_steps = [json.loads(x)["step"] for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
                 if "dev_wer" in x]
    assert {3, 6, 9} <= set(dev_steps)  # train.eval_every=3, besides the epoch ends
    expected, got = _losses(tmp_path / "ref"), _losses(tmp_path / "killed")
    assert sorted(got) == sorted(expected)
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-6), step
    a = read_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_training_runs_and_resumes_the_scaler(tmp_path, amp):
    m = write_manifest(tmp_path, "train", [[1, 2], [3, 4], [5, 6], [7]])
    cfg = config(tmp_path / "run", m, "train.device=cuda", f"train.amp={amp}", "train.epochs=2")
    t = Trainer(cfg, resume=False)
    assert t.amp == (torch.bfloat16 if amp == "bf16" else torch.float16)
    assert t.scaler.is_enabled() == (amp == "fp16")
    t.fit()
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in records if "loss" in r)
    state = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["state"]
    assert (state["scaler"] is not None) == (amp == "fp16")


def test_valid_subset_each_epoch_and_the_full_dev_set_at_the_end(tmp_path):
    m = write_manifest(tmp_path, "train", [[1, 2], [3, 4], [5, 6], [7, 8], [9, 0]])
    dev = write_manifest(tmp_path, "dev", [[5], [6, 7], [8], [9, 0]], index0=30)
    cfg = config(tmp_path / "run", m, "train.epochs=2", "train.valid_subset=2", dev_m=dev)
    train(cfg, resume=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["dev_utts"] for h in history] == [2, 2]
    assert history[-1]["dev_full_utts"] == 4 and history[-1]["dev_full_wer"] >= 0.0
    assert "full dev set: loss" in (tmp_path / "run" / "train.log").read_text()
    # which dev utterances are scored does not touch training: the full dev set every epoch trains the same
    # weights (no random draw depends on the dev set's size), so a recipe can switch to a subset for speed
    train(config(tmp_path / "full", m, "train.epochs=2", dev_m=dev), resume=False)
    a, b = (read_checkpoint(tmp_path / r / "checkpoints" / "last.pt")["model"] for r in ("run", "full"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["dev_utts"] for h in json.loads((tmp_path / "full" / "history.json").read_text())] == [4, 4]


def test_fine_tuning_starts_from_the_given_model(tmp_path):
    """train.init_from: a trained model's weights, units and CMVN with a fresh optimizer: the first
    fine-tuning epoch starts where that run ended, far below a fresh start; a model of another shape
    is refused, naming the file, and so are one whose features were computed otherwise (the weights
    would load and silently see other features) and one whose units are not the config's."""
    m = write_manifest(tmp_path, "train", [[1, 2], [3], [4, 5], [6, 7], [8, 9], [0]])
    common = ("model.hidden_size=64", "model.dropout=0", "augment.specaugment=false", "train.lr=5e-3",
              "train.warmup_steps=5", "train.scheduler=constant", "data.max_batch_seconds=20")
    base = train(config(tmp_path / "base", m, *common, "train.epochs=25"), resume=False)
    tuned = train(config(tmp_path / "ft", m, *common, "train.epochs=2", f"train.init_from={base}"), resume=False)
    h0 = json.loads((tmp_path / "base" / "history.json").read_text())
    h1 = json.loads((tmp_path / "ft" / "history.json").read_text())
    assert h0[-1]["train_loss"] < 0.3 * h0[0]["train_loss"], h0
    assert h1[0]["train_loss"] < 2 * h0[-1]["train_loss"] < 0.6 * h0[0]["train_loss"], (h0, h1)
    a, b = read_checkpoint(base), read_checkpoint(tuned)
    assert a["tokenizer"] == b["tokenizer"]
    assert all(torch.equal(a["frontend"][k], b["frontend"][k]) for k in a["frontend"])  # CMVN kept
    assert "fine-tuning: weights, units and CMVN from" in (tmp_path / "ft" / "train.log").read_text()
    with pytest.raises(TrainingError, match=r"train.init_from=.*base.*does not fit this config"):
        Trainer(config(tmp_path / "bad", m, "model.hidden_size=48", f"train.init_from={base}"), resume=False)
    with pytest.raises(TrainingError, match=r"its features were made with feature.band_norm=none, this config has "
                       r"feature.band_norm=mean; .*give feature.band_norm=none"):
        Trainer(config(tmp_path / "bad3", m, *common, "feature.band_norm=mean", f"train.init_from={base}"),
                resume=False)
    with pytest.raises(TrainingError, match=r"outputs char units but this config has tokenizer.kind=phone"):
        Trainer(config(tmp_path / "bad2", m, *common, "tokenizer.kind=phone", f"train.init_from={base}"),
                resume=False)

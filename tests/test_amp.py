"""Mixed precision on the CPU: the choice follows the CPU's native bf16 support, and bf16
training (emulated on CPUs without it) reaches the loss of fp32 training on real digits."""

from __future__ import annotations

import json

import pytest
import torch
from test_train import config, write_manifest

import asr.runtime
from asr.runtime import TrainingError, inference_amp, resolve_amp
from asr.train import train

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_picks_bf16_only_on_cpus_with_native_bf16(monkeypatch, native):
    monkeypatch.setattr(asr.runtime, "cpu_bf16_support", lambda: (native, "test CPU"))
    dtype, why = resolve_amp("auto", CPU)
    assert dtype == (torch.bfloat16 if native else None) and "test CPU" in why
    assert inference_amp("auto", CPU)[0] == dtype
    assert resolve_amp("bf16", CPU)[0] == torch.bfloat16  # forced, emulated where not native
    assert resolve_amp("off", CPU)[0] is None and inference_amp("off", CPU)[0] is None
    with pytest.raises(TrainingError, match="fp16 needs a CUDA device"):
        resolve_amp("fp16", CPU)


def test_cpu_flags_decide_native_bf16():
    flags = open("/proc/cpuinfo").read() if asr.runtime.os.path.exists("/proc/cpuinfo") else ""
    native, why = asr.runtime.cpu_bf16_support()
    if flags:
        assert native == ("amx_bf16" in flags), why  # AVX512-BF16 alone: measured slower, so no


def test_bf16_training_reaches_the_fp32_loss(tmp_path):
    """Same seed, data and steps: the per-epoch training loss under bf16 autocast (the LSTMs in
    bf16, CTC in fp32) stays within a few percent of fp32's, and both fall."""
    m = write_manifest(tmp_path, "train", [[1, 2], [3], [4, 5], [6, 7], [8, 9], [0]])
    hist = {}
    for amp in ("off", "bf16"):
        cfg = config(tmp_path / amp, m, f"train.amp={amp}", "model.hidden_size=48", "model.dropout=0",
                     "train.epochs=8", "augment.specaugment=false", "train.lr=5e-3", "train.warmup_steps=3",
                     "train.scheduler=constant", "data.max_batch_seconds=20")
        train(cfg, resume=False)
        hist[amp] = [h["train_loss"] for h in json.loads((tmp_path / amp / "history.json").read_text())]
        log = (tmp_path / amp / "train.log").read_text()
        assert ("precision: bfloat16 autocast" in log) == (amp == "bf16"), log
    fp32, bf16 = hist["off"], hist["bf16"]
    print("fp32", [round(x, 3) for x in fp32], "\nbf16", [round(x, 3) for x in bf16])
    assert fp32[-1] < 0.5 * fp32[0] and bf16[-1] < 0.5 * bf16[0]
    assert bf16[0] == pytest.approx(fp32[0], rel=0.01)  # the first epoch: same model, same batches
    assert bf16[-1] == pytest.approx(fp32[-1], rel=0.1, abs=0.05)

"""Export: TorchScript, ONNX and int8 models transcribe real audio like the checkpoint they came from."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import asr
from asr.export import ExportError, export_model, load_exported
from asr.metrics import ErrorCounts, word_errors


def utterances(model_path: Path, n: int) -> list[dict]:
    manifest = Path(model_path).parent.parent / "train.jsonl"  # written by the tiny_digits_model fixture
    return [json.loads(x) for x in manifest.read_text().splitlines()][:n]


def transcripts(model, utts: list[dict]) -> list[str]:
    return [model.transcribe(u["audio"]).text for u in utts]


def wer(utts: list[dict], hyps: list[str]) -> float:
    total = ErrorCounts()
    for u, h in zip(utts, hyps):
        total += word_errors(u["text"], h)
    return total.rate


def check_device(path: Path, monkeypatch, match: str | None) -> None:
    """``load_model(path, device=...)``: "cpu" runs there; "cuda" on a machine without CUDA is a
    DeviceError naming the device; on a (pretended) GPU machine, a model that cannot run there
    (``match``: int8, ONNX without onnxruntime's CUDA provider) is a DeviceError saying why,
    and "auto" falls back to the CPU."""
    from asr.errors import DeviceError

    assert asr.load_model(path, device="cpu").device.type == "cpu"
    if torch.cuda.is_available():
        return  # a GPU machine: the device run of tools or a manual check covers it
    with pytest.raises(DeviceError, match="cuda: this machine has 0 CUDA devices"):
        asr.load_model(path, device="cuda")
    if match:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        with pytest.raises(DeviceError, match=match):
            asr.load_model(path, device="cuda")
        assert asr.load_model(path, device="auto").device.type == "cpu"


def test_torchscript_gives_the_same_transcripts(tiny_digits_model, tmp_path, monkeypatch):
    r = export_model(tiny_digits_model, tmp_path / "m.ts", "torchscript")
    assert r["max_abs_diff"] < 1e-4
    ref, ts = asr.load_model(tiny_digits_model, amp="off"), asr.load_model(tmp_path / "m.ts")
    assert ts.kind == "torchscript" and ts.tokenizer.token_strings() == ref.tokenizer.token_strings()
    utts = utterances(tiny_digits_model, 12)
    assert transcripts(ts, utts) == transcripts(ref, utts)
    # lengths stay dynamic: a batch of different lengths, unlike the 1.0 s / 0.7 s used for tracing
    wavs = [torch.randn(n).numpy() * 0.1 for n in (40000, 23456, 9000)]
    (a, al), (b, bl) = ref.log_probs(wavs), ts.log_probs(wavs)
    assert torch.equal(al, bl) and (a - b).abs().max() < 1e-4
    check_device(tmp_path / "m.ts", monkeypatch, None)


def test_int8_is_close_to_float(tiny_digits_model, tmp_path, monkeypatch):
    """Dynamic int8 (TorchScript, and a checkpoint quantised at load time): measured WER change
    on 30 real utterances stays within 5 points absolute (on the digits model of
    tools/bench_infer.py the change is reported there)."""
    export_model(tiny_digits_model, tmp_path / "m8.ts", "torchscript", quantize="int8")
    utts = utterances(tiny_digits_model, 30)
    fp32 = transcripts(asr.load_model(tiny_digits_model), utts)
    int8_ts = transcripts(asr.load_model(tmp_path / "m8.ts"), utts)
    q = asr.load_model(tiny_digits_model, quantize="int8")
    assert q.kind == "int8"
    int8_eager = transcripts(q, utts)
    w32, w8 = wer(utts, fp32), wer(utts, int8_ts)
    print(f"fp32 WER {100 * w32:.2f}%, int8 TorchScript WER {100 * w8:.2f}%, "
          f"{sum(a != b for a, b in zip(fp32, int8_ts))}/30 transcripts differ")
    assert w8 - w32 <= 0.05
    assert int8_eager == int8_ts  # the same quantisation either way
    check_device(tmp_path / "m8.ts", monkeypatch, "int8 model runs on the CPU")


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None,
                    reason="ONNX export needs onnx, onnxscript and onnxruntime (pip install '.[export]')")
def test_onnx_gives_the_same_transcripts(tiny_digits_model, tmp_path, monkeypatch):
    r = export_model(tiny_digits_model, tmp_path / "m.onnx", "onnx")
    assert r["max_abs_diff"] < 1e-4
    ref, onnx_model = asr.load_model(tiny_digits_model, amp="off"), asr.load_model(tmp_path / "m.onnx")
    assert onnx_model.kind == "onnx"
    utts = utterances(tiny_digits_model, 12)
    assert transcripts(onnx_model, utts) == transcripts(ref, utts)
    wavs = [torch.randn(n).numpy() * 0.1 for n in (80000, 16000)]
    (a, al), (b, bl) = ref.log_probs(wavs), onnx_model.log_probs(wavs)
    assert torch.equal(al, bl) and (a - b).abs().max() < 1e-4
    import onnxruntime

    cuda_provider = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    check_device(tmp_path / "m.onnx", monkeypatch, None if cuda_provider else "no CUDA provider.*onnxruntime-gpu")


def test_bad_exports_and_files_give_clear_errors(tiny_digits_model, tmp_path, capsys):
    from asr.cli import main

    with pytest.raises(ExportError, match="int8.*TorchScript"):
        export_model(tiny_digits_model, tmp_path / "x.onnx", "onnx", quantize="int8")
    plain = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(plain, str(tmp_path / "plain.ts"))
    with pytest.raises(ExportError, match="plain.ts.*not written by `asr export`"):
        load_exported(tmp_path / "plain.ts")
    assert main(["transcribe", "-m", str(tmp_path / "plain.ts"), str(tmp_path / "a.wav")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plain.ts" in err
    assert main(["export", str(tmp_path / "missing.pt")]) == 1
    assert "missing.pt" in capsys.readouterr().err

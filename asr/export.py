"""Export for fast CPU inference: TorchScript, ONNX, and dynamic int8 quantisation.

TorchScript holds the whole network a checkpoint holds, waveform to log-probs:
``(wavs (B, S) float32, wav_lens (B,) int64) -> (log_probs (B, T, V), out_lens (B,))``,
frontend (log-mel + CMVN) included, so an exported file cannot disagree with the
checkpoint about features. The config and tokenizer travel inside the file
(TorchScript extra file ``asr.json``; ONNX metadata key ``asr``), so
``asr.load_model("model.ts")`` and ``asr transcribe --model model.onnx`` work like
they do with a checkpoint; decoding (greedy or beam + LM) stays in Python.

- TorchScript is produced by tracing on CPU (the model has no data-dependent control
  flow once on the CPU; lengths stay dynamic and padding is handled exactly).
- ONNX holds the acoustic model only (features -> log-probs), exported with the
  ``torch.export``-based exporter (``dynamo=True``): the older TorchScript-based
  exporter cannot convert the frontend's STFT, and ``torch.export`` specialises the
  waveform length inside it. The log-mel frontend runs in PyTorch, rebuilt from the
  config and the CMVN statistics kept in the metadata.
- int8: ``torch.ao.quantization.quantize_dynamic`` turns every ``nn.LSTM``, ``nn.GRU``
  and ``nn.Linear`` into a dynamically quantised module (int8 weights, activations
  quantised per batch); available for TorchScript export and, at load time, for
  checkpoints (``load_model(path, quantize="int8")``). onnxruntime's own quantiser
  fixed the ONNX graph's frame dimension in our tests, so ONNX export is float32 only.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asr.config import Config, from_dict, to_dict
from asr.errors import DeviceError, ExportError
from asr.text import Tokenizer, tokenizer_from_dict

log = logging.getLogger("asr.export")
FORMATS = ("torchscript", "onnx")
META_KEY = "asr"  # TorchScript extra file / ONNX metadata key holding config and tokenizer


def quantize_dynamic_int8(net: nn.Module) -> nn.Module:
    """Dynamic int8 quantisation of the recurrent and linear layers (CPU inference only).

    Args:
        net: a float model in eval mode on the CPU (e.g. the ``ASRModel`` of a checkpoint).

    Returns:
        a quantised copy; the frontend and convolutions stay float32.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices point at torchao
        return torch.ao.quantization.quantize_dynamic(
            net.cpu().eval(), {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8)


def _meta(config: Config, tokenizer, kind: str) -> str:
    tok = dict(tokenizer.to_dict())
    if isinstance(tok.get("model_proto"), bytes):
        tok["model_proto"] = base64.b64encode(tok["model_proto"]).decode("ascii")
    return json.dumps({"format_version": 1, "kind": kind, "config": to_dict(config), "tokenizer": tok})


def _from_meta(text: str, path: Path):
    try:
        d = json.loads(text)
        tok = d["tokenizer"]
        if isinstance(tok.get("model_proto"), str):
            tok["model_proto"] = base64.b64decode(tok["model_proto"])
        return from_dict(Config, d["config"]), tokenizer_from_dict(tok), d.get("kind", "")
    except (ValueError, KeyError, TypeError) as e:
        raise ExportError(f"{path}: the exported model's metadata is missing or invalid ({e}); "
                          f"export it again with `asr export`") from None


def example_input(sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two utterances of different lengths (1.0 s and 0.7 s of noise): (2, S) and (2,)."""
    g = torch.Generator().manual_seed(0)
    n = sample_rate
    wavs = 0.1 * torch.randn(2, n, generator=g)
    return wavs, torch.tensor([n, int(0.7 * n)])


def export_model(model_path: str | Path, out: str | Path, fmt: str = "torchscript",
                 quantize: str = "") -> dict:
    """Export a checkpoint for CPU inference.

    Args:
        model_path: a checkpoint written by ``asr train``.
        out: the file to write (``.ts``/``.pt`` for TorchScript, ``.onnx`` for ONNX).
        fmt: "torchscript" or "onnx".
        quantize: "" (float32) or "int8" (dynamic quantisation).

    Returns:
        {"path", "format", "quantize", "seconds", "max_abs_diff"}: the largest difference
        between the exported and the original model's log-probs on the example input.
    """
    from asr.checkpoint import load_checkpoint

    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if quantize not in ("", "int8"):
        raise ExportError(f"quantize must be int8 or empty, got {quantize!r}")
    if quantize and fmt == "onnx":
        raise ExportError("int8 quantisation is available for TorchScript export (--format torchscript); "
                          "ONNX export is float32")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config, tokenizer, net, _ = load_checkpoint(model_path, "cpu")
    kind = fmt + ("-int8" if quantize else "")
    ex = example_input(config.feature.sample_rate)
    t0 = time.time()
    with torch.no_grad():
        ref, _ = net(*ex)
    if fmt == "torchscript":
        src = quantize_dynamic_int8(net) if quantize else net
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # trace deprecation and bool-conversion notices
            traced = torch.jit.trace(src, ex, check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={META_KEY: _meta(config, tokenizer, kind)})
    else:  # torch.export (under the ONNX exporter) fails on dynamic shapes under no_grad
        _export_onnx(net, ex, out, _meta(config, tokenizer, kind))
    seconds = time.time() - t0
    with torch.no_grad():
        got, _ = load_exported(out)[0](*ex)
    diff = float((got - ref).abs().max())
    log.info("exported %s to %s in %.1f s (max |log-prob difference| %.2e)", kind, out, seconds, diff)
    return {"path": str(out), "format": fmt, "quantize": quantize, "seconds": seconds, "max_abs_diff": diff}


def _export_onnx(net: nn.Module, ex, out: Path, meta: str) -> None:
    """Export the acoustic model (features -> log-probs); the frontend stays in PyTorch.

    ``torch.export`` specialises the waveform length somewhere in the STFT framing, so
    the whole network does not export with dynamic lengths; the CTC model alone does.
    The CMVN statistics go into the metadata so the frontend can be rebuilt on load.
    """
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx and onnxscript packages: "
                          "pip install 'asr[export]'") from None
    with torch.no_grad():
        feats, feat_lens = net.frontend(*ex)
    frames = torch.export.Dim("frames", min=6, max=100_000)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.ctc, (feats, feat_lens), str(out), dynamo=True, verbose=False,
                          input_names=["feats", "feat_lens"], output_names=["log_probs", "out_lens"],
                          dynamic_shapes=({0: batch, 1: frames}, {0: batch}))
    m = onnx.load(str(out))
    d = json.loads(meta)
    d["cmvn_mean"] = net.frontend.cmvn_mean.tolist()
    d["cmvn_std"] = net.frontend.cmvn_std.tolist()
    m.metadata_props.add(key=META_KEY, value=json.dumps(d))
    onnx.save(m, str(out))


def onnx_providers(device: str) -> list[str]:
    """onnxruntime execution providers for a torch device name: CUDA first for "cuda[:N]".

    Raises:
        DeviceError: CUDA asked but this onnxruntime has no CUDA provider (it is the CPU build:
            ``pip install onnxruntime-gpu``) or the machine has no GPU.
    """
    import onnxruntime as ort

    if torch.device(device).type == "cpu":
        return ["CPUExecutionProvider"]
    if torch.device(device).type != "cuda":
        raise DeviceError(f"ONNX models run on cpu or cuda, not {device}")
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise DeviceError(f"device {device}: this onnxruntime has no CUDA provider (it has "
                          f"{', '.join(available)}); install onnxruntime-gpu, or use device cpu")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class OnnxNet:
    """Frontend in PyTorch + acoustic model in onnxruntime, called like the ASRModel.

    ``net(wavs (B, S), wav_lens (B,)) -> (log_probs (B, T, V), out_lens (B,))``. The frontend
    runs on the CPU; the acoustic model on the providers of ``device`` (see onnx_providers).
    """

    def __init__(self, path: Path, frontend: nn.Module, threads: int = 0, device: str = "cpu"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.log_severity_level = 3  # the exporter's static output-shape hints trigger harmless warnings
        providers = onnx_providers(device)
        if providers[0] == "CUDAExecutionProvider":
            providers[0] = ("CUDAExecutionProvider", {"device_id": torch.device(device).index or 0})
        self.session = ort.InferenceSession(str(path), so, providers=providers)
        if device != "cpu" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            raise DeviceError(f"{path}: onnxruntime could not start its CUDA provider on {device} "
                              f"(it fell back to {self.session.get_providers()[0]}); use device cpu")
        self.frontend = frontend.eval()

    def __call__(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            feats, feat_lens = self.frontend(wavs.cpu().float(), wav_lens.cpu())
        lp, lens = self.session.run(None, {"feats": feats.numpy(), "feat_lens": feat_lens.long().numpy()})
        return torch.from_numpy(np.asarray(lp)), torch.from_numpy(np.asarray(lens))


def load_exported(path: str | Path, device: str = "cpu") -> tuple[Callable, Config, Tokenizer, str]:
    """Load a file written by :func:`export_model`; ``asr.transcribe.load_model`` wraps it.

    Args:
        path: a TorchScript archive or an ``.onnx`` file.
        device: "cpu", "cuda" or "cuda:N" (a name ``asr.runtime.resolve_device`` accepted):
            TorchScript is mapped there; ONNX runs on onnxruntime's CUDA provider.

    Returns:
        (net, config, tokenizer, kind): ``net(wavs (B, S), wav_lens (B,)) -> (log_probs (B, T, V),
        out_lens (B,))`` runs the exported program (inputs on ``device``, outputs on ``device``
        for TorchScript, on the CPU for ONNX); kind is "torchscript", "torchscript-int8" or "onnx".

    Raises:
        ExportError: the file is missing, unreadable or not written by ``asr export``.
        DeviceError: an int8 model on CUDA, or ONNX on CUDA without onnxruntime's CUDA provider.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"exported model {path} does not exist")
    if path.suffix == ".onnx":
        try:
            import onnx
        except ImportError:
            raise ExportError(f"{path}: running ONNX models needs onnx and onnxruntime: "
                              f"pip install 'asr[export]'") from None
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if META_KEY not in meta:
            raise ExportError(f"{path}: not written by `asr export` (no '{META_KEY}' metadata)")
        config, tokenizer, kind = _from_meta(meta[META_KEY], path)
        from asr.features import Frontend

        frontend = Frontend(config.feature)
        d = json.loads(meta[META_KEY])
        frontend.set_cmvn(torch.tensor(d["cmvn_mean"]), torch.tensor(d["cmvn_std"]))
        return OnnxNet(path, frontend, device=device), config, tokenizer, kind
    extra = {META_KEY: ""}
    cuda = torch.device(device).type != "cpu"
    if cuda and _torchscript_kind(path).endswith("int8"):
        raise DeviceError(f"{path}: an int8 model runs on the CPU only; use device cpu "
                          f"(or export it without --quantize)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation notice
            net = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError) as e:
        raise ExportError(f"{path}: not a readable TorchScript file ({str(e).splitlines()[0]})") from None
    if not extra[META_KEY]:
        raise ExportError(f"{path}: not written by `asr export` (no '{META_KEY}' extra file)")
    config, tokenizer, kind = _from_meta(extra[META_KEY], path)
    net = net.eval()
    if cuda:  # a traced program may hold CPU constants: try it once rather than fail per utterance
        try:
            with torch.no_grad():
                net(*(x.to(device) for x in example_input(config.feature.sample_rate)))
        except RuntimeError as e:
            raise DeviceError(f"{path}: this TorchScript file does not run on {device} "
                              f"({str(e).splitlines()[0]}); use device cpu") from None
    return net, config, tokenizer, kind


def _torchscript_kind(path: Path) -> str:
    """The kind recorded in a TorchScript archive's metadata, read without loading the program
    ("" when it cannot be read: loading then reports why)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith(f"/extra/{META_KEY}")), None)
            return json.loads(z.read(name)).get("kind", "") if name else ""
    except (zipfile.BadZipFile, OSError, ValueError, AttributeError):
        return ""

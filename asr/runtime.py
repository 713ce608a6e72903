"""Where and how a training process runs: device, precision, seeds, DDP (its log and metrics
files: asr.runlog).

Small pieces the training loop (asr.train) calls at setup; none of them knows about models.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random

import numpy as np
import torch
import torch.distributed as dist

from asr.errors import DeviceError, TrainingError


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; under torchrun each rank takes cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"train.device={name} but CUDA is not available; use train.device=cpu")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse rather than hand it back to the kernel.

    A training step allocates and frees the same large activations every time; by default glibc
    returns freed blocks above a threshold to the kernel and the next step faults them in again,
    zeroed. Measured on the 2-core Xeon, 4 steps of the 4x320 BiLSTM on the CPU (bf16, 1 thread):
    system time 0.51-0.59 -> 0.26-0.37 s, page faults 230 k -> 111-161 k; the gain in wall time
    is tools/bench_train.py's "keep freed memory" row. The memory stays with the process (the
    peak it reached anyway). Returns False where the C library has no ``mallopt`` (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 1 << 30)
                and mallopt(m_top_pad, 256 << 20))


def cpu_bf16_support() -> tuple[bool, str]:
    """Whether bf16 is faster than fp32 on this CPU for our LSTMs (AMX-BF16), and how that was found.

    Only AMX makes oneDNN's bf16 LSTM faster: measured 1.3-1.4x on an AMX Xeon (forward and
    backward of the recipe's 4x256 model), but 0.44x (2.3x SLOWER) on a Xeon that shows
    AVX512-BF16 without AMX (tools/bench_train.py, 2026-12-02). So AVX512-BF16 alone says no.
    Read from /proc/cpuinfo's flags where it exists (Linux x86); elsewhere oneDNN's own check
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported``), which on x86 also says yes to plain
    AVX-512 (emulated bf16, not faster), so the flags are preferred.

    Returns:
        (native, reason), e.g. (True, "CPU flag amx_bf16").
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), None)
    except OSError:
        flags = None
    if flags is not None:
        if "amx_bf16" in flags:
            return True, "CPU flag amx_bf16"
        if "avx512_bf16" in flags:
            return False, ("CPU flag avx512_bf16 but no amx_bf16 (without AMX oneDNN's bf16 LSTM "
                           "measured 2.3x slower than fp32)")
        return False, "no amx_bf16 in the CPU flags"
    try:
        ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        ok = False
    return ok, f"oneDNN bf16 check: {'supported' if ok else 'not supported'}"


def resolve_amp(mode: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype for ``mode`` ("auto", "off", "bf16", "fp16") on ``device``, and why.

    CUDA: auto = bf16 where the GPU supports it, else fp16 (with a gradient scaler).
    CPU: auto = bf16 only where it is faster (AMX, see cpu_bf16_support: oneDNN's LSTM then
    runs forward and backward in bf16, measured 1.3-1.4x faster), fp32 elsewhere; bf16 forces
    it (slower without AMX: 0.44x with AVX512-BF16 alone, emulated on older CPUs); fp16 needs CUDA.
    The CTC loss and the features stay fp32 in every case (asr.ctc, asr.features).

    Raises:
        TrainingError: fp16 on a CPU.
    """
    if mode == "off":
        return None, "train.amp=off"
    if device.type == "cuda":
        if mode == "auto":
            bf16 = torch.cuda.is_bf16_supported()
            return (torch.bfloat16, "GPU supports bf16") if bf16 else (torch.float16, "GPU lacks bf16")
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode], f"train.amp={mode}"
    if mode == "fp16":
        raise TrainingError("train.amp=fp16 needs a CUDA device; on the CPU use train.amp=bf16, auto or off")
    native, why = cpu_bf16_support()
    if mode == "bf16":
        if native:
            return torch.bfloat16, f"bf16 forced ({why})"
        from asr.model import onednn_bf16_lstm

        lstm = ("oneDNN's bf16 LSTM emulated, expect it slower" if onednn_bf16_lstm() else
                "no bf16 LSTM in oneDNN here, so the LSTMs run in fp32 on PyTorch's native kernel, "
                "about 10x slower to train; the rest in bf16")
        return torch.bfloat16, f"bf16 forced ({why}: {lstm})"
    return (torch.bfloat16, f"auto: {why}") if native else (None, f"auto: {why}, so fp32")


def inference_amp(mode: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """Autocast dtype for inference: "auto" = bf16 only on CPUs with native bf16 (as training),
    fp32 on CUDA (not measured there) and elsewhere; "bf16" forces it; "off" = fp32."""
    if device.type == "cuda" and mode == "auto":
        return None, "auto: fp32 on CUDA"
    return resolve_amp(mode, device)


def resolve_device(name: str) -> str:
    """A ``--device`` value for inference: ``auto`` picks CUDA when available.

    Raises:
        DeviceError: not a device name, or a CUDA device this machine does not have.
    """
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise DeviceError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA devices; "
                         f"use --device cpu or auto")
    return name


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def micro_batch_seed(seed: int, step: int, micro: int) -> int:
    """Seed for the dropout and SpecAugment of one micro-batch of one update.

    ``micro`` is the micro-batch's index within the global batch (rank * accum_steps + j),
    so the same data gets the same masks with any split over ranks and accumulation.
    """
    return (seed * 1_000_003 + step * 10_007 + micro) % (2**62)


def all_reduce_sum(values: list[float], device: torch.device, world: int) -> list[float]:
    """Sum a few numbers over the DDP ranks (identity when ``world`` is 1)."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world_size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()

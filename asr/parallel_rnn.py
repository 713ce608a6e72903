"""Direction parallelism: the two directions of a bidirectional layer on two CPU cores at once.

On the CPU the recurrences of a layer's forward and backward directions are independent until
their outputs meet, and the small GEMMs of one recurrence scale poorly over intra-op threads.
``run_directions`` runs them concurrently instead, each direction in its own persistent worker
thread with ONE intra-op thread, in the forward pass and in the backward pass.

The autograd engine runs a CPU backward on the thread that called it, so two independent
branches of one graph are never differentiated in parallel. ``_DirectionPair`` (a
torch.autograd.Function) therefore owns the two sub-graphs: its forward runs each direction in a
worker under ``enable_grad`` on a detached input and keeps that graph; its backward runs
``torch.autograd.grad`` over both sub-graphs in the two workers at once (autograd is thread-safe)
and hands the input and parameter gradients back to the outer graph. Parameters are inputs of
the Function, so their gradients accumulate into ``.grad`` the usual way (clipping, gradient
accumulation and DDP hooks see nothing different), and nothing about the module or its
checkpoint changes: it is a runtime choice (``train.direction_parallel``, resolved by
``resolve_direction_parallel``), and a model trained with it loads and decodes without it.

Thread-local state a worker copies from the caller on every call: CPU autocast (enabled, dtype)
and flush-denormal (the MXCSR bits; a CTC backward with denormals is 4x slower). The one-thread
setting is per thread too: with OpenMP, ``torch.set_num_threads`` sets the calling thread's
OpenMP and MKL thread counts; the caller's count is restored after the workers start (it is
also the default a later new thread starts with).

Only gradient-tracking (training) passes use it; inference keeps the sequential path.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import nn

# Recurrent units whose kernels release the GIL (nn.LSTM, nn.GRU); the peephole LSTM is a Python
# loop that holds it, so two of them in threads do not overlap.
PARALLEL_RNN_TYPES = ("lstm", "gru")

# What ``auto`` does on a CPU with >= 2 torch threads: off. Measured 2026-12-02 on idle cores of
# the 2-core AMD EPYC (AVX2) machine with `tools/bench_train.py --directions`: bare 4x256 model
# 44.1 audio-s/s against 43.6 sequential on 2 threads (1.01x), the recipe's step 35.4 against 33.9
# (1.04x): within noise, so two intra-op threads stay the default; ``on`` forces it.
AUTO_ON_CPU = False

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _reset_after_fork() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()  # a forked child has none of the parent's threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def direction_pool() -> ThreadPoolExecutor:
    """The two persistent worker threads (one intra-op torch thread each), started on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            caller_threads = torch.get_num_threads()
            pool = ThreadPoolExecutor(2, thread_name_prefix="asr-direction")
            started = threading.Barrier(2, timeout=60)

            def init() -> None:
                # A thread takes the process-wide count at its first parallel op (ATen's lazy,
                # once-per-thread init) and would then drop the 1: run that init first.
                torch.get_num_threads()
                torch.set_num_threads(1)  # this thread's OpenMP / MKL count
                started.wait()  # both tasks at once: the pool has started both threads

            for f in [pool.submit(init) for _ in range(2)]:
                f.result()
            # set_num_threads also stores the process-wide default for threads started later:
            # put the caller's back (the caller's own OpenMP count was never changed)
            torch.set_num_threads(caller_threads)
            _pool = pool
    return _pool


# The smallest denormal double, from its bits: x * 1.0 is 0 when this thread flushes denormals.
# (Not the literal 5e-324: parsing it while denormals are flushed gives 0.0.)
_TINY = struct.unpack("<d", struct.pack("<q", 1))[0]


def _flush_denormal_on() -> bool:
    """Whether this thread flushes denormals (torch.set_flush_denormal has no getter)."""
    return _TINY * 1.0 == 0.0


def _in_worker(fn: Callable[[], object], grad: bool) -> Future:
    """Submit ``fn`` to a worker with the caller's autocast and flush-denormal state."""
    flush = _flush_denormal_on()
    autocast = torch.is_autocast_enabled("cpu")
    dtype = torch.get_autocast_dtype("cpu")

    def task():
        torch.set_flush_denormal(flush)
        with torch.autocast("cpu", dtype=dtype, enabled=autocast), torch.set_grad_enabled(grad):
            return fn()

    return direction_pool().submit(task)


class _DirectionPair(torch.autograd.Function):
    """(x_f, x_b, *params) -> (fwd(x_f), bwd(x_b)), both directions in the workers, both ways."""

    @staticmethod
    def forward(ctx, fwd: nn.Module, bwd: nn.Module, n_fwd: int, x_f: torch.Tensor, x_b: torch.Tensor,
                *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        need = ctx.needs_input_grad
        need_x = (need[3], need[4])

        def branch(rnn: nn.Module, x: torch.Tensor, need_x: bool):
            xd = x.detach().requires_grad_(need_x)
            return xd, rnn(xd)[0]

        jobs = [_in_worker(lambda: branch(fwd, x_f, need_x[0]), True),
                _in_worker(lambda: branch(bwd, x_b, need_x[1]), True)]
        (xd_f, out_f), (xd_b, out_b) = [j.result() for j in jobs]
        ctx.branches = [(xd_f, out_f, need_x[0], params[:n_fwd], need[5:5 + n_fwd]),
                        (xd_b, out_b, need_x[1], params[n_fwd:], need[5 + n_fwd:])]
        # detached: the outer graph gets this Function as their grad_fn, the sub-graphs stay intact
        return out_f.detach(), out_b.detach()

    @staticmethod
    def backward(ctx, g_f: torch.Tensor, g_b: torch.Tensor):
        def grads(branch, g: torch.Tensor) -> list[torch.Tensor | None]:
            xd, out, need_x, params, need_p = branch
            wanted = ([xd] if need_x else []) + [p for p, n in zip(params, need_p) if n]
            got = iter(torch.autograd.grad(out, wanted, g, allow_unused=True) if wanted and out.requires_grad
                       else [None] * len(wanted))
            return [next(got) if need_x else None] + [next(got) if n else None for n in need_p]

        branches, ctx.branches = ctx.branches, None  # the sub-graphs are freed with this backward
        jobs = [_in_worker(lambda: grads(branches[0], g_f), False),
                _in_worker(lambda: grads(branches[1], g_b), False)]
        (gx_f, *gp_f), (gx_b, *gp_b) = [j.result() for j in jobs]
        return None, None, None, gx_f, gx_b, *gp_f, *gp_b


def run_directions(fwd: nn.Module, bwd: nn.Module, x_f: torch.Tensor,
                   x_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fwd(x_f)[0]`` and ``bwd(x_b)[0]`` computed concurrently on two worker threads.

    Gradients flow to x_f, x_b and both modules' parameters as if the two calls had run one
    after the other (the same kernels run, so the results are the same up to float rounding).

    Args:
        fwd, bwd: unidirectional batch-first RNNs returning (output, state).
        x_f: (B, T, D) the forward direction's input.
        x_b: (B, T, D) the backward direction's input (already reversed by the caller).
    Returns:
        ((B, T, H), (B, T, H)) the two outputs.
    """
    if not torch.is_grad_enabled():
        jobs = [_in_worker(lambda: fwd(x_f)[0], False), _in_worker(lambda: bwd(x_b)[0], False)]
        out_f, out_b = [j.result() for j in jobs]
        return out_f, out_b
    p_f, p_b = list(fwd.parameters()), list(bwd.parameters())
    return _DirectionPair.apply(fwd, bwd, len(p_f), x_f, x_b, *p_f, *p_b)


def resolve_direction_parallel(mode: str, device: torch.device, rnn_type: str, bidirectional: bool,
                               threads: int) -> tuple[bool, str]:
    """Whether training runs the two directions of each layer concurrently, and why.

    ``auto`` turns it on where it is measured faster: a CPU with at least two torch threads, a
    bidirectional model of a unit whose kernel releases the GIL (lstm, gru). ``on`` forces it
    wherever it can run (a CPU and a bidirectional model); CUDA keeps its packed cuDNN path.

    Returns:
        (on, reason), e.g. (True, "train.direction_parallel=auto: CPU, 2 threads, bidirectional lstm").
    """
    name = f"train.direction_parallel={mode}"
    if mode == "off":
        return False, name
    if device.type != "cpu":
        return False, f"{name}: off on {device.type} (the packed path)"
    if not bidirectional:
        return False, f"{name}: off, the model is unidirectional"
    if mode == "on":
        return True, name
    if rnn_type not in PARALLEL_RNN_TYPES:
        return False, f"{name}: off for rnn_type={rnn_type} (a Python cell holds the GIL)"
    if threads < 2:
        return False, f"{name}: off with {threads} torch thread (it needs one core per direction)"
    if not AUTO_ON_CPU:
        return False, f"{name}: off (not measured faster on the CPU; =on forces it)"
    return True, f"{name}: CPU, {threads} threads, bidirectional {rnn_type}"

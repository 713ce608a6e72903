"""The acoustic model: subsampling -> deep (bi)directional RNN -> linear CTC head.

``CTCModel.forward(feats, feat_lens) -> (log_probs, out_lens)`` is a plain module;
loss, optimiser and decoding live elsewhere.

Padding never changes a result. Each direction of each layer is its own
unidirectional RNN; the backward direction reads every sequence reversed *within
its own length*, so it never sees padding first. On CUDA the sequences are packed
(cuDNN handles that well); on the CPU the same weights run on the padded batch with
per-sequence reversal, which gives the packed result at the padded speed (about 9x
faster to train than packing there, see PERFORMANCE.md).

Recurrent units (``model.rnn_type``):

- ``lstm``: ``nn.LSTM`` (cuDNN / oneDNN kernels), optionally with an LSTMP-style
  projection of each direction's output (``proj_size``, Sak et al. 2014).
- ``gru``: ``nn.GRU``, the gated recurrent unit of Cho et al. (2014) in the formulation
  every fast kernel implements (cuDNN): the reset gate multiplies ``W_hn h + b_hn``
  rather than ``h`` before the product. Both have the same parameters and capacity.
- ``lstm_peephole``: an LSTM with peephole connections (Gers & Schmidhuber 2000) as a
  custom cell in Python, for comparison only: it runs one step at a time and is much
  slower than ``lstm`` (tools/bench_train.py measures it; see tools/README.md).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asr.config import SUBSAMPLING_FACTOR, ModelConfig
from asr.features import lengths_to_mask
from asr.frames import subsampled_frames
from asr.parallel_rnn import run_directions


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's first ``lengths[b]`` steps; padding stays at the end.

    Args:
        x: (B, T, D)
        lengths: (B,)
    Returns:
        (B, T, D) with x[b, L-1-t] at position t for t < L.
    """
    B, T = x.shape[:2]
    t = torch.arange(T, device=x.device)[None, :]  # (1, T)
    L = lengths.to(x.device)[:, None]  # (B, 1)
    idx = torch.where(t < L, L - 1 - t, t)  # (B, T)
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[2]))


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on the CPU: four 16-bit slices of each 64-bit random
    word decide four elements (keep probability quantised to 1/65536), where ``bernoulli_`` draws
    one random number per element. Measured on the 2-core Xeon, (12, 333, 640) bf16 activations:
    12.5 ms against 44 ms per call (torch's dropout was 7-9 % of a training step of the 4x320 model). Same
    interface and expectation as ``nn.Dropout``, no state; on CUDA it is ``nn.Dropout``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: any shape -> same shape; each element zeroed with probability p, the rest scaled."""
        if not self.training or self.p == 0.0 or x.is_cuda or x.numel() == 0:
            return super().forward(x)
        n = x.numel()
        words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
        r = words.view(torch.int16)[:n].view(x.shape)  # uniform on [-32768, 32767]
        keep = r >= round(self.p * 65536) - 32768  # P(keep) = 1 - p (to 1/65536)
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))


class PeepholeLSTM(nn.Module):
    """Single-direction LSTM with peephole connections (Gers & Schmidhuber 2000).

    The input, forget and output gates also see the cell state through diagonal
    ("peephole") weights: i and f see c[t-1], o sees c[t]. With the peephole weights at
    zero it computes exactly what ``nn.LSTM`` computes. A Python-level recurrence:
    exact but much slower than the cuDNN/oneDNN ``nn.LSTM`` kernels; it is here for
    comparison (see tools/bench_train.py).
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.ih = nn.Linear(input_size, 4 * hidden_size)
        self.hh = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.peep_i = nn.Parameter(torch.zeros(hidden_size))
        self.peep_f = nn.Parameter(torch.zeros(hidden_size))
        self.peep_o = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Run the recurrence from zero state.

        Args:
            x: (B, T, D) input frames.
        Returns:
            ((B, T, H) hidden states, None).
        """
        B, T, _ = x.shape
        gates_x = self.ih(x)  # (B, T, 4H)
        h = x.new_zeros(B, self.hidden_size)
        c = x.new_zeros(B, self.hidden_size)
        outs = []
        for t in range(T):
            g = gates_x[:, t] + self.hh(h)
            i, f, z, o = g.chunk(4, dim=1)
            i = torch.sigmoid(i + self.peep_i * c)
            f = torch.sigmoid(f + self.peep_f * c)
            c = f * c + i * torch.tanh(z)
            o = torch.sigmoid(o + self.peep_o * c)
            h = o * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, 1), None


def _make_rnn(cfg: ModelConfig, input_size: int) -> nn.Module:
    if cfg.proj_size and cfg.rnn_type != "lstm":
        raise ValueError(f"model.proj_size is only supported with rnn_type=lstm, not {cfg.rnn_type!r}")
    if cfg.rnn_type == "lstm":
        return nn.LSTM(input_size, cfg.hidden_size, batch_first=True, proj_size=cfg.proj_size)
    if cfg.rnn_type == "gru":
        return nn.GRU(input_size, cfg.hidden_size, batch_first=True)
    if cfg.rnn_type == "lstm_peephole":
        return PeepholeLSTM(input_size, cfg.hidden_size)
    raise ValueError(f"model.rnn_type must be lstm, gru or lstm_peephole, got {cfg.rnn_type!r}")


# Below this batch size, CPU inference (no gradients) may run the LSTM with PyTorch's native
# kernel instead of oneDNN, when a probe on this machine finds native faster for that layer
# shape (native_lstm_faster). It differs by CPU: on the 2-core AMX Xeon (1 thread, 256 units,
# 300 frames, batch 2) oneDNN took 15.6 ms per utterance against native 5.9; on the 2-core
# AMD EPYC Zen 4 (2 threads, 320 units, 400 frames) oneDNN was 1.8-2.8x faster at batches 1-16.
NATIVE_LSTM_BELOW_BATCH = 8


def _kernel_seconds(rnn: nn.Module, x: torch.Tensor, onednn: bool, repeats: int = 3) -> float:
    """Fastest of ``repeats`` timed inference calls of ``rnn`` on ``x`` with oneDNN on or off
    (after one untimed warm-up call)."""
    with _onednn(onednn):
        rnn(x)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            rnn(x)
            best = min(best, time.perf_counter() - t0)
    return best


@functools.cache
def native_lstm_faster(input_size: int, hidden_size: int, proj_size: int, threads: int,
                       autocast_dtype: torch.dtype | None) -> bool:
    """Whether PyTorch's native LSTM kernel beats oneDNN for small-batch CPU inference of this
    layer shape here: timed once per process and shape on a random (2, 100, input_size) batch
    (a few ms), under the caller's autocast dtype and thread count. Native must be 10 % faster.
    The global random state is left untouched (a resumed run draws what the first run drew)."""
    log = logging.getLogger("asr.model")
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # leaves the caller's random draws as they were
        rnn = nn.LSTM(input_size, hidden_size, batch_first=True, proj_size=proj_size)
        x = torch.randn(2, 100, input_size)
        onednn = _kernel_seconds(rnn, x, True)
        native = _kernel_seconds(rnn, x, False)
    faster = native < 0.9 * onednn
    log.debug("CPU LSTM inference below batch %d, %d -> %d units, %d threads: oneDNN %.2f ms, native %.2f ms: %s",
              NATIVE_LSTM_BELOW_BATCH, input_size, hidden_size, threads, 1e3 * onednn, 1e3 * native,
              "native" if faster else "oneDNN")
    return faster


def _native_for_small_inference(rnn: nn.Module) -> bool:
    """native_lstm_faster for ``rnn``'s shape in the current thread count and autocast."""
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
    return native_lstm_faster(rnn.input_size, rnn.hidden_size, rnn.proj_size, torch.get_num_threads(), dtype)


@functools.cache
def onednn_bf16_lstm() -> bool:
    """Whether oneDNN runs a bf16 LSTM on this CPU (it needs AVX-512 at least: not on AVX2 CPUs)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cpu_bf16_autocast() -> bool:
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


@contextlib.contextmanager
def _onednn(enabled: bool) -> Iterator[None]:
    """oneDNN on or off (process-wide) for the block, then as it was."""
    prev = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = prev


class RNNLayer(nn.Module):
    """One (bi)directional recurrent layer over padded input with exact length handling."""

    def __init__(self, cfg: ModelConfig, input_size: int):
        super().__init__()
        self.fwd = _make_rnn(cfg, input_size)
        self.bwd = _make_rnn(cfg, input_size) if cfg.bidirectional else None
        unit = cfg.proj_size if (cfg.proj_size and cfg.rnn_type == "lstm") else cfg.hidden_size
        self.output_size = unit * (2 if cfg.bidirectional else 1)
        self.norm = nn.LayerNorm(self.output_size) if cfg.layer_norm else None
        self.packed = cfg.rnn_type != "lstm_peephole"
        self.direction_parallel = False  # runtime switch (set_direction_parallel), not in the state dict

    def _cpu_kernel(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        """PyTorch's native LSTM kernel instead of oneDNN where oneDNN is slow or lacks bf16."""
        if x.is_cuda:
            return contextlib.nullcontext()
        small_inference = (not torch.is_grad_enabled() and isinstance(self.fwd, nn.LSTM)
                           and x.shape[0] < NATIVE_LSTM_BELOW_BATCH and _native_for_small_inference(self.fwd))
        # bf16 forced (train.amp=bf16) on a CPU where oneDNN has no bf16 LSTM: PyTorch's native
        # kernel runs the recurrence in fp32 (autocast does not cast it; ~10x slower to train than
        # oneDNN, measured on an AVX2 CPU); the rest stays bf16. Only for tests and comparisons.
        no_bf16_lstm = _cpu_bf16_autocast() and not onednn_bf16_lstm()
        return _onednn(False) if (small_inference or no_bf16_lstm) else contextlib.nullcontext()

    def _run(self, rnn: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and self.packed:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
            return out
        with self._cpu_kernel(x):
            out, _ = rnn(x)  # forward recurrence: padding comes after every valid step
        return out

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D), lengths: (B,) -> (B, T, output_size), zero beyond lengths."""
        if self.bwd is not None and self.direction_parallel and not x.is_cuda and torch.is_grad_enabled():
            # both directions at once on two cores (asr.parallel_rnn); the kernel choice is made
            # here, once: torch.backends.mkldnn.enabled is process-wide, not per worker thread
            with self._cpu_kernel(x):
                out, rev = run_directions(self.fwd, self.bwd, x, reverse_within_lengths(x, lengths))
            out = torch.cat([out, reverse_within_lengths(rev, lengths)], dim=2)
        else:
            out = self._run(self.fwd, x, lengths)
            if self.bwd is not None:
                rev = self._run(self.bwd, reverse_within_lengths(x, lengths), lengths)
                out = torch.cat([out, reverse_within_lengths(rev, lengths)], dim=2)
        if self.norm is not None:
            out = self.norm(out)
        return out * lengths_to_mask(lengths.to(x.device), x.shape[1])[..., None]


def set_direction_parallel(model: nn.Module, on: bool) -> int:
    """Run (or stop running) the two directions of every bidirectional layer of ``model``
    concurrently while training on the CPU (asr.parallel_rnn). A runtime switch: parameters,
    state dict and results stay the same. Returns the number of layers it applies to."""
    layers = [m for m in model.modules() if isinstance(m, RNNLayer) and m.bwd is not None]
    for m in layers:
        m.direction_parallel = on
    return len(layers)


class Subsampling(nn.Module):
    """Reduce the frame rate: frame stacking (x2, x3, x4) or strided Conv2d (x2, x4)."""

    def __init__(self, kind: str, input_size: int, channels: int = 32):
        super().__init__()
        self.kind = kind
        if kind == "none":
            self.factor, self.output_size = 1, input_size
        elif kind.startswith("stack") and kind in SUBSAMPLING_FACTOR:
            self.factor = SUBSAMPLING_FACTOR[kind]
            self.output_size = input_size * self.factor
        elif kind in ("conv2", "conv4"):
            self.factor = int(kind[-1])
            n = 1 if kind == "conv2" else 2
            layers: list[nn.Module] = []
            ch_in, f = 1, input_size
            for _ in range(n):
                layers.append(nn.Conv2d(ch_in, channels, 3, stride=2, padding=1))
                ch_in, f = channels, subsampled_frames(f, "conv2")  # the kernel strides frequency too
            self.convs = nn.ModuleList(layers)
            self.output_size = channels * f
        else:
            raise ValueError(f"model.subsampling must be one of {', '.join(SUBSAMPLING_FACTOR)}, got {kind!r}")

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) feature frames -> (B,) output frames (asr.frames.subsampled_frames)."""
        return subsampled_frames(lengths, self.kind)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, F) -> (B, T', F'), lengths (B,) -> (B,)."""
        if self.kind.startswith("stack"):
            k = self.factor
            T = x.shape[1] // k * k
            x = x[:, :T].reshape(x.shape[0], T // k, x.shape[2] * k)  # (B, T, F) -> (B, T/k, k*F)
            return x, self.out_lengths(lengths)
        if self.kind.startswith("conv"):
            # Zero the padding first: the last valid output frame's kernel reaches one frame
            # past the end, which must read the same zero a lone utterance is padded with.
            x = x * lengths_to_mask(lengths.to(x.device), x.shape[1])[..., None]
            y = x[:, None]  # (B, 1, T, F)
            lens = lengths
            for conv in self.convs:
                y = torch.relu(conv(y))  # (B, C, T', F')
                lens = subsampled_frames(lens, "conv2")  # one stride-2 layer
                y = y * lengths_to_mask(lens.to(y.device), y.shape[2])[:, None, :, None]
            B, C, T, F = y.shape
            return y.permute(0, 2, 1, 3).reshape(B, T, C * F), lens  # (B, C, T, F) -> (B, T, C*F)
        return x, lengths


class CTCModel(nn.Module):
    """Features -> per-frame log-probabilities over the vocabulary (index 0 = blank).

    forward(feats (B, T, F), feat_lens (B,)) -> log_probs (B, T', V), out_lens (B,)
    """

    def __init__(self, cfg: ModelConfig, input_size: int, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.subsample = Subsampling(cfg.subsampling, input_size, cfg.conv_channels)
        layers = []
        size = self.subsample.output_size
        for _ in range(cfg.num_layers):
            layer = RNNLayer(cfg, size)
            layers.append(layer)
            size = layer.output_size
        self.layers = nn.ModuleList(layers)
        self.dropout = Dropout(cfg.dropout)
        self.head = nn.Linear(size, vocab_size)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lens = self.subsample(feats, feat_lens)
        lens = lens.clamp(min=1, max=x.shape[1]) if x.shape[1] > 0 else lens
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = self.dropout(x)
            x = layer(x, lens)
        logits = self.head(self.dropout(x))  # (B, T', V)
        return torch.log_softmax(logits.float(), dim=-1), lens


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class ASRModel(nn.Module):
    """Frontend + CTCModel: waveforms in, log-probs out. What a checkpoint holds."""

    def __init__(self, frontend: nn.Module, ctc: CTCModel):
        super().__init__()
        self.frontend = frontend
        self.ctc = ctc

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, feat_lens = self.frontend(wavs, wav_lens)
        return self.ctc(feats, feat_lens)

"""Direction parallelism (asr.parallel_rnn): the two directions of a layer on two worker threads
give the sequential path's outputs and gradients, carry the caller's thread-local state, and
train a real digits model whose checkpoint loads and decodes without it."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from test_train import config, write_manifest
from torch import nn

from asr import parallel_rnn
from asr.config import ModelConfig, load_config
from asr.errors import ConfigError
from asr.model import CTCModel, RNNLayer, set_direction_parallel
from asr.parallel_rnn import resolve_direction_parallel, run_directions
from asr.train import train
from asr.transcribe import load_model

CPU = torch.device("cpu")


def _grads(model: nn.Module, x: torch.Tensor, lens: torch.Tensor, parallel: bool):
    """Log-probs and the gradients of a fixed random projection of them w.r.t. x and every parameter."""
    set_direction_parallel(model, parallel)
    model.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    lp, out_lens = model(x, lens)
    w = torch.randn(lp.shape, generator=torch.Generator().manual_seed(1))
    (lp * w).sum().backward()
    return lp.detach(), out_lens, x.grad, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "equal-lengths"])
@pytest.mark.parametrize("extra", [{}, {"rnn_type": "gru"}, {"proj_size": 12, "layer_norm": True}],
                         ids=["lstm", "gru", "lstmp-layernorm"])
def test_outputs_and_all_gradients_equal_the_sequential_path(padded, extra):
    torch.manual_seed(0)
    model = CTCModel(ModelConfig(num_layers=3, hidden_size=24, subsampling="stack2", dropout=0.0, **extra), 20, 11)
    x = torch.randn(4, 30, 20)
    lens = torch.tensor([30, 23, 9, 16]) if padded else torch.full((4,), 30)
    seq, par = _grads(model, x, lens, False), _grads(model, x, lens, True)
    torch.testing.assert_close(par[0], seq[0], atol=1e-5, rtol=0)
    assert torch.equal(par[1], seq[1])
    torch.testing.assert_close(par[2], seq[2], atol=1e-5, rtol=0)
    assert par[3].keys() == seq[3].keys() and all(g is not None for g in par[3].values())
    for name, g in seq[3].items():
        torch.testing.assert_close(par[3][name], g, atol=1e-5, rtol=0, msg=name)
    assert par[2].abs().sum() > 0 and seq[3]["layers.0.bwd.weight_hh_l0"].abs().sum() > 0


def test_frozen_input_and_frozen_direction_get_no_gradient():
    """What needs no gradient gets none (the first layer's input: features under no_grad)."""
    torch.manual_seed(0)
    layer = RNNLayer(ModelConfig(num_layers=1, hidden_size=8), 6)
    layer.bwd.requires_grad_(False)
    set_direction_parallel(layer, True)
    x = torch.randn(2, 7, 6)
    layer(x, torch.tensor([7, 4])).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.fwd.parameters())
    assert all(p.grad is None for p in layer.bwd.parameters()) and x.grad is None


def test_inference_takes_the_sequential_path_and_run_directions_works_without_grad():
    torch.manual_seed(0)
    layer = RNNLayer(ModelConfig(num_layers=1, hidden_size=8), 6)
    set_direction_parallel(layer, True)
    x, lens = torch.randn(3, 9, 6), torch.tensor([9, 5, 2])
    with torch.no_grad():
        out = layer(x, lens)
        f, b = run_directions(layer.fwd, layer.bwd, x, x.flip(1))
    set_direction_parallel(layer, False)
    torch.testing.assert_close(out, layer(x, lens).detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(f, layer.fwd(x)[0].detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(b, layer.bwd(x.flip(1))[0].detach(), atol=1e-6, rtol=0)


class _Probe(nn.Module):
    """A stand-in direction: records its thread and torch thread count; a linear map times ``scale``."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.scale = scale
        self.seen: list[tuple[str, int]] = []

    def forward(self, x: torch.Tensor):
        self.seen.append((threading.current_thread().name, torch.get_num_threads()))
        return self.lin(x) * self.scale, None


def test_workers_use_one_thread_each_and_the_callers_state():
    """Each direction runs in a worker with one intra-op thread and the caller's autocast and
    flush-denormal settings; the caller's own thread count is left as it was."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        f, b = _Probe(), _Probe(1e-37)  # 1e-37 * ~1 is a normal float, * ~1e-3 a denormal one
        x = torch.full((1, 2, 4), 1e-3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            of, _ = run_directions(f, b, x, x)
        assert of.dtype == torch.bfloat16  # the worker ran under the caller's autocast
        assert torch.get_num_threads() == 2
        (name_f, n_f), (name_b, n_b) = f.seen[0], b.seen[0]
        assert name_f.startswith("asr-direction") and name_b.startswith("asr-direction")
        assert n_f == n_b == 1
        with torch.no_grad():
            b.lin.weight.fill_(1e-3)
            b.lin.bias.zero_()
        for flush in (False, True):
            torch.set_flush_denormal(flush)
            _, ob = run_directions(f, b, x, x)  # 4 * 1e-3 * 1e-3 * 1e-37: a denormal float32
            assert bool((ob == 0).all()) == flush, (flush, ob)
    finally:
        torch.set_flush_denormal(True)
        torch.set_num_threads(before)


@pytest.mark.parametrize(("mode", "device", "rnn", "bi", "threads", "on"), [
    ("auto", "cpu", "lstm", True, 2, True),
    ("auto", "cpu", "gru", True, 4, True),
    ("auto", "cpu", "lstm", True, 1, False),
    ("auto", "cpu", "lstm_peephole", True, 2, False),
    ("auto", "cpu", "lstm", False, 2, False),
    ("auto", "cuda", "lstm", True, 2, False),
    ("on", "cpu", "lstm_peephole", True, 1, True),
    ("on", "cuda", "lstm", True, 2, False),
    ("off", "cpu", "lstm", True, 2, False),
])
def test_auto_turns_it_on_for_cpu_training_with_two_threads(mode, device, rnn, bi, threads, on, monkeypatch):
    # where it measures faster (AUTO_ON_CPU); on the machines measured so far it does not (below)
    monkeypatch.setattr(parallel_rnn, "AUTO_ON_CPU", True)
    got, why = resolve_direction_parallel(mode, torch.device(device), rnn, bi, threads)
    assert got == on and why.startswith(f"train.direction_parallel={mode}")


def test_auto_is_off_where_it_measured_no_faster(monkeypatch):
    monkeypatch.setattr(parallel_rnn, "AUTO_ON_CPU", False)
    got, why = resolve_direction_parallel("auto", torch.device("cpu"), "lstm", True, 2)
    assert not got and "not measured faster" in why
    assert resolve_direction_parallel("on", torch.device("cpu"), "lstm", True, 2)[0]


def test_the_switch_reads_true_and_false_and_names_the_choices():
    assert [load_config(None, [f"train.direction_parallel={v}"]).train.direction_parallel
            for v in ("true", "false", "on", "off", "auto")] == ["on", "off", "on", "off", "auto"]
    with pytest.raises(ConfigError, match="train.direction_parallel must be one of auto, on, off"):
        load_config(None, ["train.direction_parallel=both"])


def test_training_with_it_matches_training_without_and_the_model_decodes_without_it(tmp_path):
    """Same seed and batches: the per-epoch losses with the directions in parallel equal the
    sequential run's; the loss falls; the checkpoint is the same kind and decodes without it."""
    m = write_manifest(tmp_path, "train", [[1, 2], [3], [4, 5], [6, 7], [8, 9], [0]])
    hist, outs = {}, {}
    for mode in ("off", "on"):
        cfg = config(tmp_path / mode, m, f"train.direction_parallel={mode}", "model.num_layers=2",
                     "model.hidden_size=48", "model.dropout=0", "train.epochs=12", "augment.specaugment=false",
                     "train.lr=5e-3", "train.warmup_steps=3", "train.scheduler=constant", "data.max_batch_seconds=20")
        outs[mode] = train(cfg, resume=False)
        hist[mode] = [h["train_loss"] for h in json.loads((tmp_path / mode / "history.json").read_text())]
        log = (tmp_path / mode / "train.log").read_text()
        assert ("directions of each layer: in parallel" in log) == (mode == "on"), log
    assert hist["on"][-1] < 0.3 * hist["on"][0], hist
    assert hist["on"] == pytest.approx(hist["off"], rel=1e-3), hist
    model = load_model(outs["on"])  # trained in parallel; loads into the sequential default
    assert not any(getattr(x, "direction_parallel", False) for x in model.net.modules())
    ref = load_model(outs["off"])
    audio = [json.loads(x)["audio"] for x in m.read_text().splitlines()]
    assert [model.transcribe(a).text for a in audio] == [ref.transcribe(a).text for a in audio]

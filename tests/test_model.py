"""CTCModel: padding never changes a result, the layers match torch's references, sizes add up."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asr.config import Config, FeatureConfig, ModelConfig
from asr.features import Frontend
from asr.frames import frame_geometry
from asr.model import (
    CTCModel,
    Dropout,
    PeepholeLSTM,
    RNNLayer,
    count_parameters,
    reverse_within_lengths,
)

COMBOS = list(itertools.product(["lstm", "gru", "lstm_peephole"],
                                ["none", "stack2", "stack3", "stack4", "conv2", "conv4"], [True, False]))


def _batch(lengths: list[int], dim: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features with garbage (not zeros) in the padding, to catch any leak."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), dim, generator=g)
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("rnn_type,subsampling,bidirectional", COMBOS)
def test_batched_output_equals_per_utterance_output(rnn_type, subsampling, bidirectional):
    torch.manual_seed(0)
    cfg = ModelConfig(rnn_type=rnn_type, num_layers=2, hidden_size=8, bidirectional=bidirectional,
                      subsampling=subsampling, conv_channels=4, dropout=0.3, layer_norm=True)
    model = CTCModel(cfg, input_size=12, vocab_size=6).eval()
    x, lens = _batch([29, 17, 10, 23])
    with torch.no_grad():
        out, out_lens = model(x, lens)
        for b in range(len(lens)):
            single, single_len = model(x[b : b + 1, : lens[b]], lens[b : b + 1])
            assert int(single_len) == int(out_lens[b]) == single.shape[1]
            torch.testing.assert_close(out[b, : out_lens[b]], single[0], atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_lstm_with_projection_is_padding_invariant_and_sized():
    torch.manual_seed(0)
    cfg = ModelConfig(rnn_type="lstm", num_layers=2, hidden_size=16, proj_size=6, subsampling="stack2")
    model = CTCModel(cfg, input_size=12, vocab_size=5).eval()
    assert model.layers[0].output_size == 12  # 2 directions x proj 6
    x, lens = _batch([20, 9])
    with torch.no_grad():
        out, out_lens = model(x, lens)
        single, _ = model(x[1:, :9], lens[1:])
    torch.testing.assert_close(out[1, : out_lens[1]], single[0], atol=1e-5, rtol=1e-5)


def test_bidirectional_layer_matches_packed_torch_bilstm():
    """Our per-direction layer with in-length reversal equals nn.LSTM(bidirectional) on packed input."""
    torch.manual_seed(0)
    layer = RNNLayer(ModelConfig(rnn_type="lstm", hidden_size=7, bidirectional=True), 5).eval()
    ref = nn.LSTM(5, 7, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, f"{name}_l0").copy_(getattr(layer.fwd, f"{name}_l0"))
            getattr(ref, f"{name}_l0_reverse").copy_(getattr(layer.bwd, f"{name}_l0"))
    x, lens = _batch([11, 4, 8], dim=5)
    with torch.no_grad():
        ours = layer(x, lens)
        packed, _ = ref(pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False))
        theirs, _ = pad_packed_sequence(packed, batch_first=True, total_length=x.shape[1])
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_reverse_within_lengths_keeps_padding_in_place():
    x = torch.arange(10.0).reshape(2, 5, 1)
    out = reverse_within_lengths(x, torch.tensor([3, 5]))
    assert out[..., 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]


def test_peephole_lstm_with_zero_peepholes_equals_nn_lstm():
    torch.manual_seed(0)
    cell = PeepholeLSTM(4, 6)
    ref = nn.LSTM(4, 6, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(cell.ih.weight)
        ref.bias_ih_l0.copy_(cell.ih.bias)
        ref.weight_hh_l0.copy_(cell.hh.weight)
        ref.bias_hh_l0.zero_()
    x = torch.randn(3, 9, 4)
    ours, _ = cell(x)
    theirs, _ = ref(x)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_peephole_weights_see_the_cell_state():
    """One step by hand: i, f see c[t-1] (zero at t=0), o sees the new c[t]."""
    torch.manual_seed(0)
    cell = PeepholeLSTM(2, 3)
    with torch.no_grad():
        cell.peep_o.fill_(2.0)
    x = torch.randn(1, 1, 2)
    h, _ = cell(x)
    i, f, z, o = cell.ih(x[:, 0]).chunk(4, dim=1)  # h0 = 0, so hh contributes nothing
    c = torch.sigmoid(i) * torch.tanh(z)
    expected = torch.sigmoid(o + 2.0 * c) * torch.tanh(c)
    torch.testing.assert_close(h[:, 0], expected)
    h.sum().backward()
    assert cell.peep_o.grad.abs().sum() > 0


def test_parameter_count_matches_hand_count():
    F, H, V = 12, 8, 5
    for rnn_type, gates in (("lstm", 4), ("gru", 3)):
        cfg = ModelConfig(rnn_type=rnn_type, num_layers=1, hidden_size=H, bidirectional=True,
                          subsampling="stack2")
        model = CTCModel(cfg, input_size=F, vocab_size=V)
        per_direction = gates * H * (2 * F + H) + 2 * gates * H  # input is 2F after stacking
        assert count_parameters(model) == 2 * per_direction + (2 * H * V + V)


@pytest.mark.parametrize("subsampling", ["none", "stack2", "stack3", "stack4", "conv2", "conv4"])
def test_output_frames_used_for_ctc_filtering_matches_the_model(subsampling):
    """asr.frames' count (the data-time CTC filter's) must agree with what the model emits."""
    cfg = Config(feature=FeatureConfig(sample_rate=8000, n_mels=10, cmvn="none"),
                 model=ModelConfig(subsampling=subsampling, num_layers=1, hidden_size=4, conv_channels=2))
    frontend = Frontend(cfg.feature)
    model = CTCModel(cfg.model, frontend.dim, 4).eval()
    samples = torch.tensor([1234, 4000, 8000, 8123, 16001])
    with torch.no_grad():
        feats, feat_lens = frontend(torch.randn(len(samples), int(samples.max())), samples)
        _, out_lens = model(feats, feat_lens)
    geometry = frame_geometry(cfg.feature, subsampling)
    expected = [geometry.seconds_to_output_frames(int(n) / 8000) for n in samples]
    assert out_lens.tolist() == expected


def test_waveform_batch_equals_single_through_frontend_and_model():
    """End to end from waveforms: a shorter utterance's frames never reach into the padding."""
    from asr.model import ASRModel

    torch.manual_seed(0)
    fe = Frontend(FeatureConfig(sample_rate=8000, n_mels=10, cmvn="utterance"))
    model = ASRModel(fe, CTCModel(ModelConfig(num_layers=1, hidden_size=6, subsampling="conv2",
                                              conv_channels=2), fe.dim, 4)).eval()
    lens = torch.tensor([8123, 4061, 300])
    wavs = torch.randn(3, 8123)
    with torch.no_grad():
        out, out_lens = model(wavs, lens)
        for b in range(3):
            single, single_len = model(wavs[b : b + 1, : lens[b]], lens[b : b + 1])
            assert int(single_len) == int(out_lens[b])
            torch.testing.assert_close(out[b, : out_lens[b]], single[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("native_faster", [True, False])
def test_inference_kernel_follows_the_probe_and_every_batch_size_gives_the_same_output(monkeypatch, native_faster):
    """Batches below NATIVE_LSTM_BELOW_BATCH run the native kernel only where the probe measured
    it faster; larger batches always run oneDNN; every batch size gives the same output."""
    import asr.model as M

    monkeypatch.setattr(M, "native_lstm_faster", lambda *shape: native_faster)
    seen = []  # (batch size, oneDNN enabled) of every LSTM call
    torch.manual_seed(0)
    model = CTCModel(ModelConfig(num_layers=2, hidden_size=8, subsampling="stack2"), 12, 5).eval()
    for m in model.modules():
        if isinstance(m, nn.LSTM):
            m.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].shape[0],
                                                                        torch.backends.mkldnn.enabled)))
    lengths = [30 - 2 * i for i in range(M.NATIVE_LSTM_BELOW_BATCH + 1)]
    x, lens = _batch(lengths)
    with torch.no_grad():
        out, out_lens = model(x, lens)
        for b in (0, len(lengths) - 1):
            single, _ = model(x[b : b + 1, : lens[b]], lens[b : b + 1])
            torch.testing.assert_close(out[b, : out_lens[b]], single[0], atol=1e-5, rtol=1e-5)
    assert {on for n, on in seen if n == len(lengths)} == {True}
    assert {on for n, on in seen if n == 1} == {not native_faster}
    assert torch.backends.mkldnn.enabled  # restored


def test_kernel_probe_picks_the_faster_kernel_once_per_shape(monkeypatch):
    import asr.model as M

    calls = []

    def fake_seconds(rnn, x, onednn, repeats=3):
        calls.append((rnn.input_size, rnn.hidden_size, tuple(x.shape), onednn))
        return speed[onednn]

    monkeypatch.setattr(M, "_kernel_seconds", fake_seconds)
    M.native_lstm_faster.cache_clear()
    try:
        speed = {True: 0.010, False: 0.004}  # native 2.5x faster
        assert M.native_lstm_faster(12, 8, 0, 2, None) is True
        assert M.native_lstm_faster(12, 8, 0, 2, None) is True and len(calls) == 2  # cached
        speed = {True: 0.010, False: 0.0095}  # within 10 %: oneDNN stays
        assert M.native_lstm_faster(16, 8, 0, 2, None) is False
        assert calls[-1] == (16, 8, (2, 100, 16), False)
    finally:
        M.native_lstm_faster.cache_clear()
    monkeypatch.undo()  # the real timing runs both kernels, leaves oneDNN and the random state as they were
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    assert isinstance(M.native_lstm_faster.__wrapped__(12, 8, 0, 1, None), bool)
    assert torch.backends.mkldnn.enabled
    assert torch.equal(torch.rand(4), expected)


def test_cheap_dropout_drops_p_scales_the_rest_and_backpropagates_through_the_mask():
    torch.manual_seed(0)
    d = Dropout(0.15)
    x = torch.randn(400, 500, requires_grad=True)
    y = d(x)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - 0.15) < 0.005  # 200 k draws: sd 0.0008
    assert torch.allclose(y[~dropped], x[~dropped] / 0.85)
    y.sum().backward()
    assert torch.allclose(x.grad, (~dropped).float() / 0.85)
    # a fresh mask each call, reproducible from the seed, identity in eval mode
    torch.manual_seed(1)
    a = d(x)
    torch.manual_seed(1)
    assert torch.equal(d(x), a) and not torch.equal((a == 0), dropped)
    d.eval()
    assert torch.equal(d(x), x)
    # bf16 activations keep their dtype; an odd element count (one partial random word) works
    z = Dropout(0.5).train()(torch.ones(3, 7, dtype=torch.bfloat16))
    assert z.dtype == torch.bfloat16 and set(z.unique().tolist()) <= {0.0, 2.0}

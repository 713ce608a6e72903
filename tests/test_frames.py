"""asr.frames: the one frame geometry, and every user of it agreeing with the real model."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import fsdd_file

from asr.config import Config, FeatureConfig, ModelConfig
from asr.data import Utterance
from asr.features import Frontend
from asr.frames import frame_geometry, min_frames_for
from asr.model import CTCModel
from asr.text import CharTokenizer
from asr.train_data import filter_trainable

KINDS = ["none", "stack2", "stack3", "stack4", "conv2", "conv4"]


def test_hand_worked_geometry():
    # 8 kHz, 25 ms window = 200 samples -> n_fft 256; hop 10 ms = 80 samples; stack3
    g = frame_geometry(FeatureConfig(sample_rate=8000), "stack3")
    assert (g.win_length, g.n_fft, g.hop, g.factor) == (200, 256, 80, 3)
    assert g.feature_frames(8000) == (8000 - 256) // 80 + 1 == 97
    assert g.output_frames(97) == 32
    assert g.frame_seconds == pytest.approx(0.03)
    assert g.min_samples == 256 + 2 * 80
    assert g.feature_frames(10) == 1 and g.feature_frames(10, pad=False) == 0  # padded to one frame
    assert frame_geometry(FeatureConfig(sample_rate=8000), "conv4").output_frames(97) == 25  # 97->49->25
    assert min_frames_for([5, 5, 6]) == 4  # a blank between the repeated 5s


@pytest.mark.parametrize("kind", KINDS)
def test_model_emits_what_the_geometry_says_and_min_samples_is_the_least(kind):
    """Frontend + CTCModel on real audio cut to awkward lengths (shorter than one frame, exactly
    min_samples, one sample less) give the geometry's counts, for int and tensor inputs alike."""
    feature = FeatureConfig(sample_rate=8000, n_mels=10, cmvn="none")
    g = frame_geometry(feature, kind)
    frontend = Frontend(feature)
    model = CTCModel(ModelConfig(subsampling=kind, num_layers=1, hidden_size=4, conv_channels=2),
                     frontend.dim, 4).eval()
    wav, _ = sf.read(fsdd_file(3), dtype="float32")
    lens = [wav.size, 3001, g.min_samples, g.min_samples - 1, 100]
    batch = torch.zeros(len(lens), max(lens))
    for i, n in enumerate(lens):
        batch[i, :n] = torch.from_numpy(wav[:n])
    with torch.no_grad():
        feats, feat_lens = frontend(batch, torch.tensor(lens))
        _, out_lens = model(feats, feat_lens)
    assert feat_lens.tolist() == [g.feature_frames(n) for n in lens]
    assert feat_lens.tolist() == g.feature_frames(torch.tensor(lens)).tolist()
    # the model clamps to at least one frame within a batch; the geometry counts what subsampling keeps
    assert out_lens.tolist() == [max(1, g.samples_to_output_frames(n)) for n in lens]
    assert g.samples_to_output_frames(g.min_samples) == 1
    if kind.startswith("stack"):
        assert g.samples_to_output_frames(g.min_samples - 1) == 0
    with torch.no_grad():  # alone, min_samples of audio still makes one output frame
        one = torch.from_numpy(wav[: g.min_samples])[None]
        _, n = model(*frontend(one, torch.tensor([g.min_samples])))
    assert n.tolist() == [1]


def test_trainability_filter_keeps_exactly_what_fits(tmp_path):
    """An utterance with as many CTC targets as output frames is kept; one more target is not."""
    cfg = Config(feature=FeatureConfig(sample_rate=8000), model=ModelConfig(subsampling="stack3"))
    g = frame_geometry(cfg.feature, cfg.model.subsampling)
    samples = g.min_samples + 9 * 3 * g.hop  # 30 feature frames -> 10 output frames
    assert g.samples_to_output_frames(samples) == 10
    path = tmp_path / "x.flac"
    sf.write(path, np.zeros(samples, dtype=np.float32), 8000)
    tok = CharTokenizer("abcdefghijk ")
    fits = Utterance("fits", str(path), samples / 8000, "abcdefghij")  # 10 targets
    over = Utterance("over", str(path), samples / 8000, "abcdefghijk")  # 11
    repeat = Utterance("repeat", str(path), samples / 8000, "abcdefghii")  # 10 + a blank
    kept = filter_trainable([fits, over, repeat], tok, cfg, "train")
    assert [u.id for u in kept] == ["fits"]


def test_transcriber_uses_the_geometry(tiny_digits_model):
    from asr.transcribe import load_model

    m = load_model(tiny_digits_model)
    g = frame_geometry(m.config.feature, m.config.model.subsampling)
    assert m.frame_shift == g.frame_seconds and m.min_samples == g.min_samples
    lp, lens = m.log_probs([np.zeros(10, dtype=np.float32), np.zeros(8000, dtype=np.float32)])
    assert lens.tolist() == [1, g.samples_to_output_frames(8000)]

"""The feature frontend: librosa compatibility, shapes, padding, CMVN, recording level."""

from __future__ import annotations

import dataclasses
import json

import librosa
import numpy as np
import pytest
import scipy.fft
import soundfile as sf
import torch
from conftest import MINI_LIBRISPEECH, shared_data

from asr.audio import load_audio
from asr.config import FeatureConfig, SpecAugmentConfig
from asr.features import CMVNAccumulator, Frontend, band_floor, lengths_to_mask, spec_augment

OPUS = (*MINI_LIBRISPEECH, "1088", "134315", "1088-134315-0000.opus")
LOG_TOL = 1e-3  # stated tolerance: log-mel values (natural log) agree within this


def real_speech(seconds: float = 3.0) -> np.ndarray:
    """Real speech at 16 kHz: the start of a Mini LibriSpeech utterance (../shared)."""
    return load_audio(shared_data(*OPUS))[: int(seconds * 16000)]


def batch_of(wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([w.size for w in wavs])
    out = torch.zeros(len(wavs), int(lens.max()))
    for i, w in enumerate(wavs):
        out[i, : w.size] = torch.from_numpy(w)
    return out, lens


def test_log_mel_matches_librosa_on_real_speech():
    wav = real_speech()
    fe = Frontend(FeatureConfig(cmvn="none", level_norm=False))
    feats, lens = fe(*batch_of([wav]))  # (1, T, 80)
    ref = librosa.feature.melspectrogram(
        y=wav, sr=16000, n_fft=512, hop_length=160, win_length=400, window="hann", center=False,
        power=2.0, n_mels=80, fmin=20.0, fmax=8000.0, htk=True, norm=None)  # (80, T)
    assert feats.shape == (1, ref.shape[1], 80) and int(lens[0]) == ref.shape[1]
    diff = np.abs(feats[0].numpy().T - np.log(ref + 1e-6))
    assert diff.max() < LOG_TOL, diff.max()


def test_mfcc_is_the_dct_of_librosa_log_mel():
    wav = real_speech(2.0)
    fe = Frontend(FeatureConfig(kind="mfcc", n_mels=40, n_mfcc=13, cmvn="none", level_norm=False))
    feats, _ = fe(*batch_of([wav]))
    assert fe.dim == 13 and feats.shape[2] == 13
    mel = librosa.feature.melspectrogram(
        y=wav, sr=16000, n_fft=512, hop_length=160, win_length=400, center=False, power=2.0,
        n_mels=40, fmin=20.0, fmax=8000.0, htk=True, norm=None)
    ref = scipy.fft.dct(np.log(mel + 1e-6), type=2, norm="ortho", axis=0)[:13]
    assert np.abs(feats[0].numpy().T - ref).max() < 5e-3


@pytest.mark.parametrize("kind,cmvn,band", [("fbank", "utterance", {}), ("mfcc", "none", {}), ("fbank", "global", {}),
                                            ("fbank", "global", {"floor_db": 60.0, "band_norm": "mean"}),
                                            ("mfcc", "global", {"band_norm": "mean"})])
def test_batched_features_equal_per_utterance_features(kind, cmvn, band):
    wav = real_speech(2.0)
    wavs = [wav[:12000], wav, wav[5000:9000]]
    fe = Frontend(FeatureConfig(kind=kind, cmvn=cmvn, n_mels=64, win_ms=20, hop_ms=12.5, **band))
    feats, lens = fe(*batch_of(wavs))
    assert lens.tolist() == fe.num_frames(torch.tensor([w.size for w in wavs])).tolist()
    # 20 ms window = 320 samples, centred in a 512-point FFT frame; hop 12.5 ms = 200 samples
    assert lens.tolist() == [(n - 512) // 200 + 1 for n in (12000, wav.size, 4000)]
    assert int(lens[0]) < feats.shape[1] and int(lens[2]) < feats.shape[1]  # two padded utterances
    for i, w in enumerate(wavs):
        one, n = fe(*batch_of([w]))
        assert int(n[0]) == int(lens[i])
        torch.testing.assert_close(feats[i, : lens[i]], one[0], atol=2e-4, rtol=1e-4)
        assert (feats[i, lens[i]:] == 0).all()  # padding frames are zero (none for the longest)


def test_streaming_cmvn_equals_the_statistics_of_all_frames():
    wav = real_speech(3.0)
    fe = Frontend(FeatureConfig())
    acc = CMVNAccumulator(fe.dim)
    all_frames = []
    for chunk in ([wav[:8000], wav[8000:20000]], [wav[20000:]]):  # two batches
        feats, lens = fe.raw_features(*batch_of(chunk))
        acc.update(feats, lens)
        all_frames += [feats[i, : lens[i]] for i in range(len(chunk))]
    frames = torch.cat(all_frames).double()
    mean, std = acc.result()
    torch.testing.assert_close(mean, frames.mean(0).float(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(std, frames.std(0, unbiased=False).float(), atol=1e-4, rtol=1e-4)
    fe.set_cmvn(mean, std)
    assert "cmvn_mean" in fe.state_dict() and "cmvn_std" in fe.state_dict()  # saved with the model
    normed, lens = fe(*batch_of([wav]))
    assert normed[0].mean(0).abs().max() < 0.05 and (normed[0].std(0) - 1).abs().max() < 0.05


def test_utterance_cmvn_gives_zero_mean_unit_variance_within_each_length():
    wav = real_speech(2.0)
    fe = Frontend(FeatureConfig(cmvn="utterance"))
    feats, lens = fe(*batch_of([wav[:9000], wav]))
    for i in range(2):
        f = feats[i, : lens[i]]
        assert f.mean(0).abs().max() < 1e-4
        assert (f.std(0, unbiased=False) - 1).abs().max() < 1e-3


def test_a_band_a_codec_emptied_reads_as_a_constant_with_floor_and_band_norm():
    """MP3 at 24 kbit/s empties the mel bins above ~6.5 kHz: they sit near the log floor, many
    standard deviations below what the CMVN statistics of full-band speech expect (a strong
    signal to the model). Floored 80 dB below the utterance's peak they are a constant, and with
    band_norm=mean exactly 0, as the mean, while the speech bins keep their shape."""
    from asr.degrade import degrade, parse_kind

    wav = real_speech(6.0)
    mp3 = degrade(wav, parse_kind("mp3:24"), np.random.default_rng(0))
    top = slice(72, 80)  # mel bins above ~6.5 kHz of 80 (8 kHz)
    plain = Frontend(FeatureConfig(cmvn="none"))
    banded = Frontend(FeatureConfig(cmvn="none", floor_db=80.0, band_norm="mean"))
    raw_clean, _ = plain(*batch_of([wav]))
    raw_mp3, _ = plain(*batch_of([mp3]))
    assert raw_mp3[0, :, top].mean() < raw_clean[0, :, top].mean() - 8  # the band is gone (in nats) ...
    z = (raw_mp3[0] - raw_clean[0].mean(0)) / raw_clean[0].std(0)  # as global CMVN would see it
    assert z[:, top].mean() < -2.0  # ... and reads as a strong value, not as "nothing"
    feats, _ = banded(*batch_of([mp3]))
    assert feats[0, :, top].abs().max() < 1e-5  # a constant, removed by the mean
    assert feats[0].mean(0).abs().max() < 1e-4  # every bin's utterance mean is removed
    mask = torch.ones(1, raw_clean.shape[1], 1, dtype=torch.bool)
    floored = band_floor(raw_clean, mask, 80.0)
    assert (floored != raw_clean)[0, :, :72].float().mean() < 0.01  # full-band speech is left alone
    clean, _ = banded(*batch_of([wav]))
    assert clean[0, :, top].std(0).min() > 0.5  # and keeps its top band
    with pytest.raises(ValueError, match="floor_db applies to fbank"):
        FeatureConfig(kind="mfcc", floor_db=80.0)
    with pytest.raises(ValueError, match="band_norm"):
        FeatureConfig(band_norm="median")


def test_bad_feature_settings_are_rejected():
    with pytest.raises(ValueError, match="fbank or mfcc|'fbank' or 'mfcc'"):
        Frontend(FeatureConfig(kind="plp"))
    with pytest.raises(ValueError, match="cmvn"):
        Frontend(FeatureConfig(cmvn="sometimes"))


def test_spec_augment_masks_are_bounded_seeded_and_inside_lengths():
    feats = torch.randn(3, 200, 80) + 5.0  # no natural zeros
    before = feats.clone()
    lens = torch.tensor([200, 120, 50])
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=30, time_width_ratio=0.2)
    a = spec_augment(feats, lens, cfg, torch.Generator().manual_seed(3))
    b = spec_augment(feats, lens, cfg, torch.Generator().manual_seed(3))
    c = spec_augment(feats, lens, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(feats, before) and (feats != 0).all()  # input untouched
    zero = a == 0
    freq_masked = zero.all(1)  # (B, F): bins zeroed at every frame
    time_masked = zero.all(2)  # (B, T): frames zeroed in every bin
    assert freq_masked.any() and time_masked.any()
    for i in range(3):
        assert freq_masked[i].sum() <= 2 * 10
        assert time_masked[i].sum() <= 2 * min(30, int(lens[i] * 0.2))
        assert not time_masked[i, lens[i]:].any()  # masks stay inside the utterance
    off = dataclasses.replace(cfg, freq_masks=0, time_masks=0)
    assert torch.equal(spec_augment(feats, lens, off), feats)


def test_lengths_to_mask():
    assert lengths_to_mask(torch.tensor([2, 0, 3]), 3).tolist() == [
        [True, True, False], [False, False, False], [True, True, True]]


def test_recording_level_does_not_change_the_transcript(tiny_digits_model):
    """The default frontend normalises level: -20 dB and +10 dB give the identical greedy output."""
    from asr.checkpoint import load_checkpoint
    from asr.decode import greedy_search

    cfg, tok, net, _ = load_checkpoint(tiny_digits_model)
    assert cfg.feature.level_norm and cfg.feature.cmvn == "global"  # the default configuration
    lines = [json.loads(x) for x in (tiny_digits_model.parent.parent / "train.jsonl").read_text().splitlines()]
    lines = lines[:10]
    wavs = [load_audio(x["audio"], cfg.feature.sample_rate) for x in lines]

    def transcribe(ws):
        with torch.no_grad():
            lp, n = net(*batch_of(ws))
        return [tok.decode(ids) for ids in greedy_search(lp, n)]

    base = transcribe(wavs)
    assert base == [x["text"] for x in lines]  # the model is right on real audio
    for db in (-20.0, 10.0):
        g = np.float32(10 ** (db / 20))
        assert transcribe([w * g for w in wavs]) == base, f"{db} dB changed the transcript"
    # Through a 16-bit file too (quantisation at -20 dB), one utterance at a time.
    tmp = tiny_digits_model.parent / "quiet.wav"
    sf.write(tmp, wavs[0] * 0.1, cfg.feature.sample_rate, subtype="PCM_16")
    assert transcribe([load_audio(tmp, cfg.feature.sample_rate)]) == base[:1]
    # The level normalisation is what makes this true: without it the features move a lot.
    fe_off = Frontend(dataclasses.replace(cfg.feature, level_norm=False))
    fe_off.load_state_dict(net.frontend.state_dict())
    quiet, loud = fe_off(*batch_of(wavs[:1])), fe_off(*batch_of([wavs[0] * 10]))
    assert (quiet[0] - loud[0]).abs().max() > 0.5  # ln(100) / CMVN std in speech frames
    with torch.no_grad():
        a, b = net.frontend(*batch_of(wavs[:1])), net.frontend(*batch_of([wavs[0] * 10]))
    assert (a[0] - b[0]).abs().max() < 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_frontend_and_spec_augment_on_gpu_match_cpu():
    wav = real_speech(2.0)
    wavs, lens = batch_of([wav, wav[:20000]])
    fe = Frontend(FeatureConfig(cmvn="utterance"))
    cpu, cpu_lens = fe(wavs, lens)
    gpu, gpu_lens = fe.cuda()(wavs.cuda(), lens.cuda())
    assert torch.equal(gpu_lens.cpu(), cpu_lens)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-3, rtol=1e-3)
    cfg = SpecAugmentConfig()
    a = spec_augment(cpu, cpu_lens, cfg, torch.Generator().manual_seed(0))
    b = spec_augment(gpu, gpu_lens, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(a == 0, b.cpu() == 0)  # same masks on either device

"""Waveform augmentation: speed perturbation, noise at an SNR, seeding, noise files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from conftest import fsdd_file

from asr.audio import resample
from asr.augment import WaveAugment, add_noise, generated_noise, speed_perturb
from asr.config import AugmentConfig

SR = 16000


def speech() -> np.ndarray:
    wav, sr = sf.read(fsdd_file(8, "yweweler", 4), dtype="float32")
    return resample(wav, sr, SR)


def tone(freq: float, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR).astype(np.float32)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    return 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_changes_length_and_pitch(factor):
    wav = speech()
    out = speed_perturb(wav, factor, SR)
    assert out.size == pytest.approx(wav.size / factor, rel=0.002)
    t = speed_perturb(tone(400.0, 2.0), factor, SR)
    peak_hz = np.argmax(np.abs(np.fft.rfft(t))) * SR / t.size
    assert peak_hz == pytest.approx(400.0 * factor, abs=2.0)
    assert speed_perturb(wav, 1.0, SR) is wav


@pytest.mark.parametrize("target", [0.0, 10.0, 25.0])
def test_noise_is_mixed_at_the_requested_snr(target):
    wav = speech()
    rng = np.random.default_rng(0)
    for noise in (generated_noise(wav.size, rng), generated_noise(wav.size // 3, rng), tone(1000.0, 0.2)):
        noisy = add_noise(wav, noise, target)
        assert noisy.shape == wav.shape and noisy.dtype == np.float32
        assert snr_db(wav, noisy) == pytest.approx(target, abs=0.05)


def test_generated_noise_is_seeded_white_or_pink():
    a = generated_noise(32000, np.random.default_rng(1))
    b = generated_noise(32000, np.random.default_rng(1))
    assert np.array_equal(a, b)
    slopes = set()
    for seed in range(8):
        n = generated_noise(32000, np.random.default_rng(seed))
        p = np.abs(np.fft.rfft(n)) ** 2
        low, high = p[100:1000].mean(), p[10000:15000].mean()
        slopes.add("pink" if low > 5 * high else "white")
    assert slopes == {"pink", "white"}


def test_wave_augment_is_reproducible_and_off_by_default():
    assert not WaveAugment(AugmentConfig()).active  # default config: no waveform augmentation
    cfg = AugmentConfig(speed_perturb=(0.9, 1.0, 1.1), noise_prob=1.0, noise_snr_db=(5.0, 15.0))
    aug = WaveAugment(cfg, SR)
    wav = speech()
    a = aug(wav, np.random.default_rng([7, 0]))
    b = aug(wav, np.random.default_rng([7, 0]))
    assert np.array_equal(a, b)
    outs = {aug(wav, np.random.default_rng([7, e])).size for e in range(12)}
    assert len(outs) > 1  # speed factors vary across epochs


def test_noise_comes_from_the_noise_manifest(tmp_path):
    noise_path = tmp_path / "hum.flac"
    sf.write(noise_path, 0.3 * tone(1000.0, 3.0), SR)
    manifest = tmp_path / "noise.jsonl"
    manifest.write_text(json.dumps({"id": "hum", "audio": str(noise_path), "duration": 3.0}) + "\n")
    cfg = AugmentConfig(noise_prob=1.0, noise_snr_db=(10.0, 10.0), noise_manifest=str(manifest))
    aug = WaveAugment(cfg, SR)
    assert aug.noise_files == [str(noise_path)]
    wav = speech()
    out = aug(wav, np.random.default_rng(3))
    added = out - wav
    spec = np.abs(np.fft.rfft(added))
    assert np.argmax(spec) * SR / added.size == pytest.approx(1000.0, abs=3.0)  # the hum, not hiss
    assert snr_db(wav, out) == pytest.approx(10.0, abs=0.1)


def test_an_unreadable_noise_file_falls_back_to_generated_noise(tmp_path, caplog):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....junk")
    aug = WaveAugment(AugmentConfig(noise_prob=1.0, noise_snr_db=(20.0, 20.0)), SR, noise_files=[str(bad)])
    wav = speech()
    out = aug(wav, np.random.default_rng(0))
    assert snr_db(wav, out) == pytest.approx(20.0, abs=0.1)
    assert "bad.wav" in caplog.text
    out2 = aug(wav, np.random.default_rng(1))  # reported once, then not tried again
    assert len([r for r in caplog.records if "bad.wav" in r.getMessage()]) == 1
    assert out2.shape == wav.shape

"""Waveform augmentation for training: speed perturbation and additive noise.

Each function takes a seeded ``numpy.random.Generator`` so augmentation is
reproducible (and identical after a resume). Nothing here runs at evaluation.
"""

from __future__ import annotations

import numpy as np

from asr.audio import load_audio, resample
from asr.config import AugmentConfig


def speed_perturb(wav: np.ndarray, factor: float, sample_rate: int = 16000) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch, like sox ``speed``) via resampling."""
    if factor == 1.0:
        return wav
    # Treat the signal as if recorded at sr*factor and resample back to sr.
    orig = int(round(sample_rate * factor / 100)) * 100
    return resample(wav, orig, sample_rate)


def add_noise(wav: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Mix ``noise`` (tiled/cropped to the length of ``wav``) at the given SNR in dB."""
    if noise.size == 0:
        return wav
    reps = int(np.ceil(wav.size / noise.size))
    noise = np.tile(noise, reps)[: wav.size]
    p_sig = float(np.mean(wav**2)) + 1e-12
    p_noise = float(np.mean(noise**2)) + 1e-12
    scale = np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
    return (wav + scale * noise).astype(np.float32)


def generated_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White or pink (1/f) noise of ``n`` samples."""
    white = rng.standard_normal(n).astype(np.float32)
    if rng.random() < 0.5:
        return white
    spec = np.fft.rfft(white)
    f = np.arange(spec.size, dtype=np.float32)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n).astype(np.float32)


class WaveAugment:
    """Callable ``(wav, rng) -> wav`` applying the configured waveform augmentations."""

    def __init__(self, cfg: AugmentConfig, sample_rate: int = 16000, noise_files: list[str] | None = None):
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.noise_files = noise_files or []

    @property
    def active(self) -> bool:
        return bool(self.cfg.speed_perturb) or self.cfg.noise_prob > 0

    def __call__(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.cfg.speed_perturb:
            factor = float(rng.choice(self.cfg.speed_perturb))
            wav = speed_perturb(wav, factor, self.sample_rate)
        if self.cfg.noise_prob > 0 and rng.random() < self.cfg.noise_prob:
            lo, hi = self.cfg.noise_snr_db
            snr = float(rng.uniform(lo, hi))
            if self.noise_files:
                noise = load_audio(self.noise_files[int(rng.integers(len(self.noise_files)))], self.sample_rate)
            else:
                noise = generated_noise(wav.size, rng)
            wav = add_noise(wav, noise, snr)
        return wav

"""Waveform augmentation for training: speed perturbation and additive noise.

Each function takes a seeded ``numpy.random.Generator`` so augmentation is
reproducible (and identical after a resume). Nothing here runs at evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from asr.audio import AudioError, audio_info, load_audio, resample, speed_perturb  # noqa: F401 (re-exported)
from asr.config import AugmentConfig

log = logging.getLogger("asr.augment")


def add_noise(wav: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Mix ``noise`` (tiled/cropped to the length of ``wav``) at the given SNR in dB.

    Args:
        wav: float32 (samples,) clean signal.
        noise: float32 (n,) noise; looped when shorter than ``wav``.
        snr_db: wanted 10 log10(signal power / noise power).

    Returns:
        float32 (samples,) mixture.
    """
    if noise.size == 0:
        return wav
    reps = int(np.ceil(wav.size / noise.size))
    noise = np.tile(noise, reps)[: wav.size]
    p_sig = float(np.mean(wav**2)) + 1e-12
    p_noise = float(np.mean(noise**2)) + 1e-12
    scale = np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
    return (wav + scale * noise).astype(np.float32)


def generated_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White or pink (1/f power) noise, chosen at random.

    Args:
        n: samples.
        rng: seeded generator.

    Returns:
        float32 (n,).
    """
    white = rng.standard_normal(n).astype(np.float32)
    if rng.random() < 0.5:
        return white
    spec = np.fft.rfft(white)
    f = np.arange(spec.size, dtype=np.float32)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n).astype(np.float32)


class WaveAugment:
    """Callable ``(wav, rng) -> wav`` applying the configured waveform augmentations.

    Noise comes from ``noise_files`` (or the audio of ``cfg.noise_manifest``): a random
    stretch as long as the utterance is read from a random file (looped when shorter), and
    mixed at an SNR drawn uniformly from ``cfg.noise_snr_db``. Without noise files, white
    or pink noise is generated. A noise file that cannot be read is reported once and
    generated noise is used instead, so augmentation never drops an utterance.
    """

    def __init__(self, cfg: AugmentConfig, sample_rate: int = 16000, noise_files: list[str] | None = None):
        self.cfg = cfg
        self.sample_rate = sample_rate
        if noise_files is None and cfg.noise_manifest:
            from asr.data import read_manifest

            noise_files = [u.audio for u in read_manifest(cfg.noise_manifest, strict=False)]
            if not noise_files:
                raise ValueError(f"augment.noise_manifest {cfg.noise_manifest} lists no audio")
        self.noise_files = list(noise_files or [])
        self._durations: dict[str, float] = {}
        self._bad: set[str] = set()

    @property
    def active(self) -> bool:
        return bool(self.cfg.speed_perturb) or self.cfg.noise_prob > 0

    def _noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples of noise: a random stretch of a noise file, or generated noise."""
        good = [f for f in self.noise_files if f not in self._bad]
        if not good:
            return generated_noise(n, rng)
        path = good[int(rng.integers(len(good)))]
        try:
            if path not in self._durations:
                self._durations[path] = audio_info(path)[0]
            total = self._durations[path]
            seconds = n / self.sample_rate
            offset = float(rng.uniform(0.0, total - seconds)) if total > seconds else 0.0
            return load_audio(path, self.sample_rate, offset, seconds)
        except AudioError as e:
            log.warning("noise file unusable, generating noise instead: %s", e)
            self._bad.add(path)
            return generated_noise(n, rng)

    def __call__(self, wav: np.ndarray, rng: np.random.Generator,
                 speed: Callable[[float], np.ndarray] | None = None) -> np.ndarray:
        """Augment one utterance.

        Args:
            wav: float32 (samples,) at ``sample_rate``.
            rng: seeded generator (same seed, same result).
            speed: returns ``wav`` at a speed factor (e.g. from asr.wavecache, so each variant is
                resampled once per run); default ``speed_perturb``. Draws are the same either way.

        Returns:
            float32 (samples',) where samples' differs from samples under speed perturbation.
        """
        if self.cfg.speed_perturb:
            factor = float(rng.choice(self.cfg.speed_perturb))
            wav = speed(factor) if speed is not None else speed_perturb(wav, factor, self.sample_rate)
        if self.cfg.noise_prob > 0 and rng.random() < self.cfg.noise_prob:
            lo, hi = self.cfg.noise_snr_db
            snr = float(rng.uniform(lo, hi))
            wav = add_noise(wav, self._noise(wav.size, rng), snr)
        return wav

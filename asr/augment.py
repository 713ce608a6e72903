"""Waveform augmentation for training: speed perturbation, channels (asr.channel), additive noise.

Each function takes a seeded ``numpy.random.Generator`` so augmentation is
reproducible (and identical after a resume). Nothing here runs at evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from asr.audio import AudioError, audio_info, load_audio, resample, speed_perturb  # noqa: F401 (re-exported)
from asr.channel import ChannelAugment, apply_gain
from asr.config import AugmentConfig
from asr.degrade import add_noise, generated_noise  # noqa: F401 (re-exported)

log = logging.getLogger("asr.augment")


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
        self.noise_files = _usable_noise_files(noise_files or [])
        self._durations: dict[str, float] = {}
        self._bad: set[str] = set()
        self.channel = ChannelAugment(cfg.channel, sample_rate)
        if self.channel.active:
            log.info("channel augmentation: %s%s", self.channel.describe(),
                     f" (from epoch {cfg.channel_from_epoch}, with the noise)" if cfg.channel_from_epoch > 1 else "")

    @property
    def active(self) -> bool:
        return bool(self.cfg.speed_perturb) or self.cfg.noise_prob > 0 or self.channel.active

    def _noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples of noise: a random stretch of a noise file, or generated noise.

        Two draws (file, offset) whatever happens, and a file that fails gives generated noise
        from the same generator: the result does not depend on which files failed before (a
        resumed run, which has not met the bad file yet, mixes the same noise).
        """
        if not self.noise_files:
            return generated_noise(n, rng)
        path = self.noise_files[int(rng.integers(len(self.noise_files)))]
        where = float(rng.random())
        if path in self._bad:
            return generated_noise(n, rng)
        try:
            if path not in self._durations:
                self._durations[path] = audio_info(path)[0]
            seconds = n / self.sample_rate
            offset = where * max(0.0, self._durations[path] - seconds)
            return load_audio(path, self.sample_rate, offset, seconds)
        except AudioError as e:
            log.warning("noise file unusable, generating noise instead: %s", e)
            self._bad.add(path)
            return generated_noise(n, rng)

    def __call__(self, wav: np.ndarray, rng: np.random.Generator,
                 speed: Callable[[float], np.ndarray] | None = None,
                 cached: Callable[[tuple, Callable[[], np.ndarray]], np.ndarray] | None = None,
                 uid: str = "", epoch: int = 0) -> np.ndarray:
        """Augment one utterance: (codec variant,) speed, (narrow band, low-pass, high-pass,)
        noise, (gain).

        Args:
            wav: float32 (samples,) at ``sample_rate``, unperturbed.
            rng: seeded generator (same seed, same result).
            speed: returns ``wav`` at a speed factor (e.g. from asr.wavecache, so each variant is
                resampled once per run); default ``speed_perturb``. Draws are the same either way.
            cached: ``(tag, make) -> make()``, kept per utterance and tag for the run (the wave
                cache): codec variants are encoded through it once; None encodes at every draw.
            uid: the utterance id: chooses the codec of each of its codec variants.
            epoch: the training epoch, from 0: noise and channels apply from ``cfg.channel_from_epoch``
                (counted from 1) on, so a run can learn clean speech first (a curriculum).

        Returns:
            float32 (samples',) where samples' differs from samples under speed perturbation
            (and by a codec's decoder delay).
        """
        factor = float(rng.choice(self.cfg.speed_perturb)) if self.cfg.speed_perturb else 1.0
        channels = epoch + 1 >= self.cfg.channel_from_epoch
        ch = self.channel.draw(rng) if self.channel.active and channels else None
        if ch is not None and ch.codec_variant is not None:
            # a codec variant of the unperturbed audio (cached), then the speed factor (cheap:
            # it also moves the codec's cut-off by the factor, more variety for free)
            wav = speed_perturb(self.channel.codec(wav, uid, ch.codec_variant, cached), factor, self.sample_rate)
        elif self.cfg.speed_perturb:
            wav = speed(factor) if speed is not None else speed_perturb(wav, factor, self.sample_rate)
        if ch is not None:
            wav = self.channel.filters(wav, ch)
        if channels and self.cfg.noise_prob > 0 and rng.random() < self.cfg.noise_prob:
            lo, hi = self.cfg.noise_snr_db
            snr = float(rng.uniform(lo, hi))
            wav = add_noise(wav, self._noise(wav.size, rng), snr)
        if ch is not None and ch.gain_db is not None:
            wav = apply_gain(wav, ch.gain_db)
        return wav


def _usable_noise_files(files: list[str]) -> list[str]:
    """The noise files whose header reads and that hold samples; the others are reported and
    skipped (once, here, so the list every draw indexes is fixed for the run)."""
    good = []
    for f in files:
        try:
            if audio_info(f)[0] <= 0:
                raise AudioError(f"{f}: holds 0 samples")
        except (AudioError, OSError) as e:
            log.warning("noise file skipped: %s", e)
            continue
        good.append(f)
    return good

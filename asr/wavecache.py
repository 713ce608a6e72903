"""Decoded training waveforms kept in RAM, so each utterance is decoded (and each speed variant
resampled) once per run instead of once per epoch.

``data.cache=ram`` keeps every waveform the data loaders produce (the base waveform at the
working rate, and each speed-perturbed variant) as int16 with its scale: 2 bytes a sample, so
Mini LibriSpeech's 4.2 training hours at three speeds take about 1.5 GB. The CMVN pass fills it
with the base waveforms; the first epochs add the speed variants as the augmentation draws them.

Exactness: the same utterances, batches and random draws as without the cache (the augmentation
asks the cache for the variant its generator chose). Audio stored as 16-bit PCM at the working
rate is kept exactly; other audio (Opus, resampled variants) is rounded to 16 bits (error below
2e-5 of full scale, -94 dB), the same way in every epoch and after a resume.

The cache lives in the process that runs the dataset: with ``data.num_workers`` > 0 the workers
are restarted every epoch, so the cache is not used (a warning says so); under DDP every rank
holds its own copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

log = logging.getLogger("asr.data")


class WaveCache:
    """``get(key, make) -> float32 (samples,)``: ``make()``'s result, computed once per key.

    Waveforms are stored as int16 with a per-waveform scale (exact for values on the int16
    grid, i.e. 16-bit PCM); once ``max_bytes`` are held, new waveforms are computed every time
    (nothing is evicted), and a warning says so once.
    """

    def __init__(self, max_gb: float = 8.0):
        self.max_bytes = int(max_gb * 2**30)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._store: dict[tuple, tuple[np.ndarray, float]] = {}
        self._full_warned = False

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: tuple) -> bool:
        return key in self._store

    @property
    def full(self) -> bool:
        """True once a waveform could not be stored (``max_bytes`` reached)."""
        return self._full_warned

    def get(self, key: tuple, make: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached waveform for ``key``, or ``make()`` (stored for next time).

        Args:
            key: hashable identity of the waveform, e.g. (path, offset, duration, speed).
            make: computes it: float32 (samples,). Its exceptions pass through (nothing stored).
        Returns:
            float32 (samples,): what ``make()`` returned, rounded to 16 bits.
        """
        hit = self._store.get(key)
        if hit is not None:
            self.hits += 1
            return dequantize(*hit)
        self.misses += 1
        q, scale = quantize(make())
        self.put(key, q, scale)
        return dequantize(q, scale)

    def put(self, key: tuple, q: np.ndarray, scale: float) -> None:
        """Store a waveform already quantized by ``quantize`` (made elsewhere, e.g. by a worker
        process); nothing is stored once ``max_bytes`` are held."""
        if self.nbytes + q.nbytes <= self.max_bytes:
            self._store[key] = (q, scale)
            self.nbytes += q.nbytes
        elif not self._full_warned:
            self._full_warned = True
            log.warning("data.cache: the RAM cache is full (%.1f GB, data.cache_max_gb); the "
                        "remaining audio is decoded every epoch", self.nbytes / 2**30)


def quantize(wav: np.ndarray) -> tuple[np.ndarray, float]:
    """float32 (samples,) -> (int16 (samples,), scale): ``q / scale`` is the waveform rounded to 16 bits."""
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    # 32768 keeps 16-bit PCM exact (its samples are k / 32768); louder signals are scaled down
    scale = 32768.0 if peak < 1.0 else 32767.0 / peak
    return np.clip(np.rint(wav * np.float32(scale)), -32768, 32767).astype(np.int16), scale


def dequantize(q: np.ndarray, scale: float) -> np.ndarray:
    """int16 (samples,) and its scale -> float32 (samples,)."""
    return q.astype(np.float32) / np.float32(scale)

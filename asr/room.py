"""Rooms: a synthetic impulse response and the convolution that puts a recording in it.

Used by the ``reverb:RT60`` degradation (asr.degrade) and the rooms of channel augmentation
(asr.channel).
"""

from __future__ import annotations

import math

import numpy as np

SAMPLE_RATE = 16000


def room_impulse_response(rt60_s: float, drr_db: float, rng: np.random.Generator,
                          sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic room impulse response: the direct sound, then an exponentially decaying
    Gaussian tail (the statistical model of late reverberation, Polack 1988).

    The tail starts 2.5 ms after the direct sound (about where a room's first reflections
    arrive), decays 60 dB in ``rt60_s`` and is cut there; its energy is ``drr_db`` below the
    direct sound's. The decay is the same at every frequency (real rooms lose the highs
    faster): it smears each band in time as a room does, which is what a recogniser of
    spectral features meets, for the cost of one FFT convolution.

    Args:
        rt60_s: reverberation time, seconds.
        drr_db: direct-to-reverberant energy ratio, dB.
        rng: seeded generator (the tail's noise).
        sample_rate: rate of the response.

    Returns:
        float32 (taps,), taps = 2.5 ms + rt60_s of samples; the direct sound is tap 0, 1.0.
    """
    gap = int(round(0.0025 * sample_rate))
    n = max(1, int(round(rt60_s * sample_rate)))
    t = np.arange(n, dtype=np.float64) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-3.0 * math.log(10) * t / rt60_s)  # -60 dB at rt60
    tail *= math.sqrt(10 ** (-drr_db / 10) / max(1e-30, float(np.sum(tail**2))))
    return np.concatenate([[1.0], np.zeros(gap - 1), tail]).astype(np.float32)


def reverberate(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with an impulse response (direct sound at tap 0, so nothing is delayed),
    cut to the input's length and scaled to keep its RMS level; clipped to [-1, 1].

    Args:
        wav: float32 (samples,).
        rir: float32 (taps,), e.g. from ``room_impulse_response``.

    Returns:
        float32 (samples,).
    """
    from scipy.signal import oaconvolve

    if wav.size == 0:
        return wav
    dry = wav.astype(np.float64)
    out = oaconvolve(dry, rir.astype(np.float64))[: wav.size]
    gain = math.sqrt((float(np.mean(dry**2)) + 1e-20) / (float(np.mean(out**2)) + 1e-20))
    return np.clip(out * gain, -1.0, 1.0).astype(np.float32)

"""Training-time channel simulation: codec round trips, rooms, band limits, narrow-band resampling, gain.

The audio people bring went through channels the training audio did not: MP3s and Opus at low
bit rates (which low-pass at 4-7 kHz), telephone lines (8 kHz sampling, 300-3400 Hz), small
microphones (no low end), clipping recorders. A phone line is one draw of its own
(``telephone_prob``): the band edges of a handset and exchange, 8 kHz sampling and G.711 mu-law
together, where the separate narrow-band and high-pass draws meet in the full 300-3400 Hz band
only by chance. ``ChannelAugment`` draws such a channel per training utterance from a seeded
generator (``augment.channel``; every probability is 0 by default) and never runs at evaluation
(only the training loader has an augmentation).

Cost. An encoder is slow (measured on one core: LAME ~80x real time, libopus ~17x, libvorbis
~200x), so a codec is never run per draw: each utterance has ``codec_variants`` variants, variant
``k`` encoded with a codec kind chosen by (utterance id, k) alone, built the first time it is
drawn and kept by the run's wave cache (``data.cache=ram``), so every later epoch reuses it.
Without the cache (or with loader workers) a variant is encoded again at each draw, in the
worker processes when there are some. The filters (a synthetic room impulse response, a steep
elliptic low-pass, a Butterworth high-pass: IIR designs made once per 50 Hz of cut-off) and the
8 kHz round trip run per draw at hundreds to thousands of times real time.
``tools/bench_channel.py`` measures each piece. The room comes after the codec (which is cached
from the dry audio): the reverse of the physical order, a price of encoding each variant once.

Off the training thread: with the cache, training encodes every variant before epoch 1 in
``data.cache_workers`` worker processes of one thread each (``encode_variant``, run by
asr.train_data.fill_wave_cache), so the training step never waits for an encoder.

Exactness: a variant depends only on its key (the utterance, k), so a run resumed with an
empty cache builds the same audio, and encoding it before training or at its first draw gives
the same samples; the draws come from the utterance's per-epoch generator.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torchaudio.functional import mu_law_decoding, mu_law_encoding

from asr.audio import resample
from asr.config import ChannelAugmentConfig
from asr.degrade import (
    DegradeError,
    Kind,
    check_writable,
    degrade,
    parse_kind,
)
from asr.errors import ConfigError
from asr.room import reverberate, room_impulse_response

DESIGN_STEP_HZ = 50.0  # cut-offs are rounded to this for the filter design cache


@dataclass(frozen=True)
class ChannelDraw:
    """One utterance's channel, drawn from its generator (None: that stage is off)."""

    codec_variant: int | None = None  # which of the utterance's codec variants
    narrowband: bool = False  # resampled through the narrow-band rate and back
    lowpass_hz: float | None = None
    highpass_hz: float | None = None
    gain_db: float | None = None
    reverb: tuple[float, float, int] | None = None  # a room: (RT60 s, DRR dB, seed of its response)
    telephone: tuple[float, float] | None = None  # a phone line: its band (low Hz, high Hz)


@functools.lru_cache(maxsize=256)
def _lowpass(cutoff_hz: float, sample_rate: int) -> np.ndarray:
    from scipy.signal import ellip

    # 6th-order elliptic (0.5 dB ripple, 50 dB stop band), one pass: as steep as a codec's
    # low-pass (LAME at 24 kbit/s: -70 dB within a few hundred Hz of its cut-off)
    return ellip(6, 0.5, 50, cutoff_hz, btype="lowpass", fs=sample_rate, output="sos")


@functools.lru_cache(maxsize=256)
def _highpass(cutoff_hz: float, sample_rate: int) -> np.ndarray:
    from scipy.signal import butter

    return butter(4, cutoff_hz, btype="highpass", fs=sample_rate, output="sos")


def lowpass(wav: np.ndarray, cutoff_hz: float, sample_rate: int = 16000) -> np.ndarray:
    """Steep low-pass (cut-off rounded to 50 Hz); none at or above 0.95 x Nyquist.

    Args:
        wav: float32 (samples,).
        cutoff_hz: pass-band edge.
        sample_rate: rate of ``wav``.

    Returns:
        float32 (samples,).
    """
    from scipy.signal import sosfilt

    cutoff = round(cutoff_hz / DESIGN_STEP_HZ) * DESIGN_STEP_HZ
    if cutoff >= 0.95 * sample_rate / 2:
        return wav
    return sosfilt(_lowpass(cutoff, sample_rate), wav).astype(np.float32)


def highpass(wav: np.ndarray, cutoff_hz: float, sample_rate: int = 16000) -> np.ndarray:
    """4th-order Butterworth high-pass (cut-off rounded to 50 Hz, at least 50 Hz).

    Args:
        wav: float32 (samples,).
        cutoff_hz: -3 dB edge.
        sample_rate: rate of ``wav``.

    Returns:
        float32 (samples,).
    """
    from scipy.signal import sosfilt

    cutoff = max(DESIGN_STEP_HZ, round(cutoff_hz / DESIGN_STEP_HZ) * DESIGN_STEP_HZ)
    return sosfilt(_highpass(cutoff, sample_rate), wav).astype(np.float32)


def narrowband(wav: np.ndarray, rate: int, sample_rate: int = 16000) -> np.ndarray:
    """Resampled to ``rate`` and back (what an 8 kHz phone line or recording keeps).

    A steep low-pass at 0.95 x the narrow Nyquist frequency before and after, as a narrow-band
    recorder's anti-aliasing filter and a good upsampler's: torchaudio's windowed sinc alone
    leaves the band above (aliases, then images) only ~18 dB down on speech.

    Returns:
        float32 (samples,) at ``sample_rate``.
    """
    if rate >= sample_rate:
        return wav
    edge = 0.95 * rate / 2
    back = lowpass(resample(resample(lowpass(wav, edge, sample_rate), sample_rate, rate), rate, sample_rate),
                   edge, sample_rate)
    return np.pad(back, (0, max(0, wav.size - back.size)))[: wav.size]


def mulaw(wav: np.ndarray) -> np.ndarray:
    """G.711 mu-law (mu = 255): companded, rounded to 8 bits and expanded (what a digital phone line
    keeps), by torchaudio's ``mu_law_encoding`` / ``mu_law_decoding``.

    Args:
        wav: float32 (samples,) in [-1, 1] (clipped there).

    Returns:
        float32 (samples,): one of 256 levels, spaced finely near 0 and coarsely near full scale.
    """
    x = torch.from_numpy(np.clip(wav, -1.0, 1.0).astype(np.float32, copy=False))
    return mu_law_decoding(mu_law_encoding(x, 256), 256).numpy()


def telephone_line(wav: np.ndarray, band_hz: tuple[float, float], rate: int = 8000,
                   sample_rate: int = 16000) -> np.ndarray:
    """A phone call: band-passed to ``band_hz``, sampled at ``rate``, mu-law coded, back at ``sample_rate``.

    Args:
        wav: float32 (samples,).
        band_hz: (low, high) edges of the handset and line (a high-pass and a steep low-pass).
        rate: the line's sample rate (below ``sample_rate``).

    Returns:
        float32 (samples,) at ``sample_rate``.
    """
    low, high = band_hz
    narrow = resample(lowpass(highpass(wav, low, sample_rate), high, sample_rate), sample_rate, rate)
    back = lowpass(resample(mulaw(narrow), rate, sample_rate), 0.95 * rate / 2, sample_rate)
    return np.pad(back, (0, max(0, wav.size - back.size)))[: wav.size]


def apply_gain(wav: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale by ``gain_db``, clip at full scale and round to 16 bits, as a recorder would."""
    out = np.clip(wav * np.float32(10 ** (gain_db / 20)), -1.0, 1.0)
    return (np.rint(out * 32767.0) / 32767.0).astype(np.float32)


class ChannelAugment:
    """Draws and applies a channel per training utterance (``augment.channel``).

    Raises (at construction):
        ConfigError: a codec kind that is malformed or that this machine's libsndfile cannot
            write; the message names the kind and what to install.
    """

    def __init__(self, cfg: ChannelAugmentConfig, sample_rate: int = 16000):
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.kinds: list[Kind] = []
        if cfg.codec_prob > 0:
            for spec in cfg.codecs:
                try:
                    kind = parse_kind(spec)
                    if not kind.codec:
                        raise DegradeError(f"kind {spec!r} is not a codec (mp3:KBPS, opus:KBPS, vorbis:Q, aac:KBPS)")
                    check_writable(kind)
                except DegradeError as e:
                    raise ConfigError(f"augment.channel.codecs: {e}") from None
                self.kinds.append(kind)

    @property
    def active(self) -> bool:
        c = self.cfg
        return any(p > 0 for p in (c.codec_prob, c.narrowband_prob, c.lowpass_prob, c.highpass_prob, c.gain_prob,
                                   c.reverb_prob, c.telephone_prob))

    def draw(self, rng: np.random.Generator) -> ChannelDraw:
        """The channel of one utterance: a fixed sequence of draws for a given config."""
        c = self.cfg

        def maybe(p: float, lo_hi: tuple[float, float]) -> float | None:
            if p > 0 and rng.random() < p:
                return float(rng.uniform(*lo_hi))
            return None

        variant = None
        if c.codec_prob > 0 and rng.random() < c.codec_prob:
            variant = int(rng.integers(c.codec_variants))
        nb = bool(c.narrowband_prob > 0 and rng.random() < c.narrowband_prob)
        low, high, gain = maybe(c.lowpass_prob, c.lowpass_hz), maybe(c.highpass_prob, c.highpass_hz), \
            maybe(c.gain_prob, c.gain_db)
        reverb = None  # drawn last (and only when on), so configs without it draw as before
        if c.reverb_prob > 0 and rng.random() < c.reverb_prob:
            reverb = (float(rng.uniform(*c.reverb_rt60)), float(rng.uniform(*c.reverb_drr_db)),
                      int(rng.integers(2**31)))
        phone = None  # after the room, likewise
        if c.telephone_prob > 0 and rng.random() < c.telephone_prob:
            phone = (float(rng.uniform(*c.telephone_low_hz)), float(rng.uniform(*c.telephone_high_hz)))
        return ChannelDraw(variant, nb, low, high, gain, reverb, phone)

    def variant_kind(self, uid: str, k: int) -> Kind:
        """The codec of variant ``k`` of utterance ``uid`` (the same in every run and epoch)."""
        r = np.random.default_rng([zlib.crc32(uid.encode()), k])
        return self.kinds[int(r.integers(len(self.kinds)))]

    def variant_kinds(self, uid: str) -> list[tuple[int, Kind]]:
        """``(k, codec)`` of each of the utterance's codec variants ([] when codecs are off)."""
        return [(k, self.variant_kind(uid, k)) for k in range(self.cfg.codec_variants)] if self.kinds else []

    def codec(self, wav: np.ndarray, uid: str, k: int,
              cached: Callable[[tuple, Callable[[], np.ndarray]], np.ndarray] | None = None) -> np.ndarray:
        """Codec variant ``k`` of the utterance: encoded and decoded once per run through ``cached``.

        Args:
            wav: float32 (samples,) the utterance's unperturbed waveform.
            uid: its id (chooses the codec).
            k: variant index, < ``codec_variants``.
            cached: ``(tag, make) -> make()``, kept per utterance and tag (asr.data.AudioDataset
                passes the run's wave cache); None encodes every time.

        Returns:
            float32 (samples',): samples' is samples plus the decoder's delay (LAME: up to 1,408).
        """
        kind = self.variant_kind(uid, k)
        make = functools.partial(encode_variant, wav, kind.spec, self.sample_rate)
        return make() if cached is None else cached(variant_tag(k, kind.spec), make)

    def filters(self, wav: np.ndarray, d: ChannelDraw) -> np.ndarray:
        """Room, phone line, narrow-band round trip, low-pass and high-pass, as drawn (float32 in, float32 out)."""
        if d.reverb is not None:
            rt60, drr, seed = d.reverb
            wav = reverberate(wav, room_impulse_response(rt60, drr, np.random.default_rng(seed), self.sample_rate))
        if d.telephone is not None:
            wav = telephone_line(wav, d.telephone, self.cfg.narrowband_rate, self.sample_rate)
        elif d.narrowband:  # a phone line is narrow-band already
            wav = narrowband(wav, self.cfg.narrowband_rate, self.sample_rate)
        if d.lowpass_hz is not None:
            wav = lowpass(wav, d.lowpass_hz, self.sample_rate)
        if d.highpass_hz is not None:
            wav = highpass(wav, d.highpass_hz, self.sample_rate)
        return wav

    def describe(self) -> str:
        """One line for the training log."""
        c, parts = self.cfg, []
        if c.codec_prob:
            parts.append(f"codec p={c.codec_prob:g} ({c.codec_variants} variants of {', '.join(k.spec for k in self.kinds)})")
        if c.narrowband_prob:
            parts.append(f"{c.narrowband_rate} Hz round trip p={c.narrowband_prob:g}")
        if c.lowpass_prob:
            parts.append(f"low-pass {c.lowpass_hz[0]:g}-{c.lowpass_hz[1]:g} Hz p={c.lowpass_prob:g}")
        if c.highpass_prob:
            parts.append(f"high-pass {c.highpass_hz[0]:g}-{c.highpass_hz[1]:g} Hz p={c.highpass_prob:g}")
        if c.reverb_prob:
            parts.append(f"room RT60 {c.reverb_rt60[0]:g}-{c.reverb_rt60[1]:g} s, DRR {c.reverb_drr_db[0]:g}-"
                         f"{c.reverb_drr_db[1]:g} dB p={c.reverb_prob:g}")
        if c.telephone_prob:
            parts.append(f"phone line {c.telephone_low_hz[0]:g}-{c.telephone_low_hz[1]:g} to {c.telephone_high_hz[0]:g}-"
                         f"{c.telephone_high_hz[1]:g} Hz, {c.narrowband_rate} Hz mu-law p={c.telephone_prob:g}")
        if c.gain_prob:
            parts.append(f"gain {c.gain_db[0]:g}..{c.gain_db[1]:g} dB p={c.gain_prob:g}")
        return "; ".join(parts) or "off"


def variant_tag(k: int, spec: str) -> tuple:
    """The wave-cache tag of codec variant ``k`` encoded as ``spec`` (added to the utterance's key)."""
    return ("codec", k, spec)


def encode_variant(wav: np.ndarray, spec: str, sample_rate: int = 16000) -> np.ndarray:
    """One codec round trip: float32 (samples,) -> float32 (samples',) (a decoder delay added).

    A function of (wav, spec) alone (codecs draw nothing from the generator), picklable by name:
    worker processes run it (asr.train_data.fill_wave_cache).
    """
    return degrade(wav, parse_kind(spec), np.random.default_rng(0), None, sample_rate)


__all__ = ["ChannelAugment", "ChannelDraw", "apply_gain", "encode_variant", "highpass", "lowpass", "mulaw",
           "narrowband", "telephone_line", "variant_tag"]

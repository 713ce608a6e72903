"""Channel degradations: codecs, telephone band, additive noise, level, reverberation.

Pure functions of a waveform (and a seeded ``numpy.random.Generator`` where chance is
involved), used by ``asr data degrade`` to build degraded copies of a dev set and
reusable for training augmentation. A degradation is named by a *kind* string:

    mp3:KBPS     MPEG-2 layer III at a constant bit rate (LAME through libsndfile)
    opus:KBPS    Opus in Ogg at a target bit rate (libopus through libsndfile)
    vorbis:Q     Vorbis in Ogg at quality Q, 0-10 as ``oggenc -q`` (variable bit rate: about
                 27 kbit/s at 0, 77 at 10 on 16 kHz speech)
    aac:KBPS     AAC-LC in an M4A at a target bit rate (FFmpeg's encoder through PyAV, asr.media):
                 the codec of video soundtracks and phone recorders
    phone        telephone band: 8 kHz sampling and a 300-3400 Hz band-pass
    noise:SNR    white or pink noise (or a noise recording) at SNR dB over the utterance
    level:DBFS   scaled so that the utterance's RMS is DBFS (20 log10 rms; a full-scale
                 square wave is 0 dBFS)
    reverb:RT60  a room: convolved with a synthetic impulse response whose reverberant tail
                 decays 60 dB in RT60 seconds, 3 dB below the direct sound (DRR 3 dB)

>>> parse_kind("mp3:24").folder
'mp3_24'
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from asr import media
from asr.audio import open_audio, resample
from asr.errors import AudioError
from asr.room import reverberate, room_impulse_response

SAMPLE_RATE = 16000

# MPEG-2 layer III (16, 22.05 and 24 kHz) constant bit rates, kbit/s.
MP3_RATES = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
OPUS_KBPS = (6.0, 256.0)  # the range libsndfile's compression level spans
DEFAULT_KINDS = ("mp3:24", "mp3:40", "opus:12", "phone", "noise:10", "level:-30")
PHONE_BAND_HZ = (300.0, 3400.0)
PHONE_RATE = 8000
REVERB_RT60_S = (0.05, 3.0)  # the range a reverb kind accepts, seconds
REVERB_DRR_DB = 3.0  # direct-to-reverberant ratio of a reverb kind (a talker 1-2 m away in a room)

VORBIS_QUALITY = (0.0, 10.0)
AAC_KBPS = (8.0, 256.0)
# kind name -> (libsndfile format, subtype, file suffix); kinds not listed are written as FLAC
CODECS = {"mp3": ("MP3", "MPEG_LAYER_III", ".mp3"), "opus": ("OGG", "OPUS", ".opus"),
          "vorbis": ("OGG", "VORBIS", ".ogg")}
FFMPEG_CODECS = {"aac": ".m4a"}  # kind name -> file suffix, encoded and decoded by FFmpeg (asr.media)
INSTALL_HINT = ("install a soundfile whose libsndfile (>= 1.1) has MP3 (LAME, mpg123), Opus and Vorbis "
                "support: `pip install -U 'soundfile>=0.12.1'` (its wheels bundle one), or a system "
                "libsndfile built with them")


class DegradeError(ValueError):
    """A kind that is malformed or that this machine cannot produce; the message says what to do."""


@dataclass(frozen=True)
class Kind:
    """One degradation, parsed from its kind string."""

    name: str  # mp3, opus, vorbis, phone, noise, level, reverb
    value: float | None  # kbit/s, Vorbis quality, SNR dB, dBFS or RT60 seconds; None for phone
    spec: str  # the kind string, e.g. "mp3:24"

    @property
    def folder(self) -> str:
        """A file-system friendly name: ``mp3:24`` -> ``mp3_24``."""
        return self.spec.replace(":", "_")

    @property
    def codec(self) -> bool:
        return self.name in CODECS or self.name in FFMPEG_CODECS

    @property
    def suffix(self) -> str:
        if self.name in FFMPEG_CODECS:
            return FFMPEG_CODECS[self.name]
        return CODECS[self.name][2] if self.codec else ".flac"


_USAGE = ("kinds: mp3:KBPS, opus:KBPS, vorbis:QUALITY, aac:KBPS, phone, noise:SNR_DB, level:DBFS, reverb:RT60_S "
          "(e.g. " + " ".join(DEFAULT_KINDS) + ")")


def parse_kind(spec: str) -> Kind:
    """Parse and check a kind string.

    Raises:
        DegradeError: unknown kind, missing or out-of-range value.
    """
    name, _, raw = spec.strip().partition(":")
    name = name.lower()
    if name == "phone":
        if raw:
            raise DegradeError(f"kind {spec!r}: phone takes no value; {_USAGE}")
        return Kind("phone", None, "phone")
    if name not in ("mp3", "opus", "vorbis", "aac", "noise", "level", "reverb"):
        raise DegradeError(f"unknown kind {spec!r}; {_USAGE}")
    try:
        value = float(raw)
    except ValueError:
        raise DegradeError(f"kind {spec!r}: {name} needs a number after ':'; {_USAGE}") from None
    if not math.isfinite(value):
        raise DegradeError(f"kind {spec!r}: the value must be finite")
    if name == "mp3" and value not in MP3_RATES:
        raise DegradeError(f"kind {spec!r}: MP3 at 16 kHz has the bit rates "
                           f"{', '.join(map(str, MP3_RATES))} kbit/s")
    if name == "opus" and not OPUS_KBPS[0] <= value <= OPUS_KBPS[1]:
        raise DegradeError(f"kind {spec!r}: Opus bit rate must be {OPUS_KBPS[0]:g}-{OPUS_KBPS[1]:g} kbit/s")
    if name == "vorbis" and not VORBIS_QUALITY[0] <= value <= VORBIS_QUALITY[1]:
        raise DegradeError(f"kind {spec!r}: Vorbis quality must be {VORBIS_QUALITY[0]:g}-{VORBIS_QUALITY[1]:g} "
                           "(as oggenc -q)")
    if name == "aac" and not AAC_KBPS[0] <= value <= AAC_KBPS[1]:
        raise DegradeError(f"kind {spec!r}: AAC bit rate must be {AAC_KBPS[0]:g}-{AAC_KBPS[1]:g} kbit/s")
    if name == "level" and value > 0:
        raise DegradeError(f"kind {spec!r}: a level is at most 0 dBFS")
    if name == "reverb" and not REVERB_RT60_S[0] <= value <= REVERB_RT60_S[1]:
        raise DegradeError(f"kind {spec!r}: RT60 must be {REVERB_RT60_S[0]:g}-{REVERB_RT60_S[1]:g} s")
    return Kind(name, value, f"{name}:{value:g}")


# ---------------------------------------------------------------- codecs


def mp3_compression_level(kbps: float, sample_rate: int = SAMPLE_RATE) -> float:
    """libsndfile's compression level that gives a constant ``kbps`` MP3.

    libsndfile 1.2 (mpeg_l3_encode.c), in CONSTANT bit-rate mode, asks LAME for
    ``int(hi - level * (hi - lo))`` kbit/s with (lo, hi) = (8, 160) at 16-24 kHz
    (MPEG-2), (32, 320) at >= 32 kHz and (8, 64) below 16 kHz; LAME takes the nearest
    legal rate. Measured here: level 0.9 (the issue's setting) gives 24.0 kbit/s in
    CONSTANT mode but 25.5 kbit/s in the default VARIABLE mode (VBR quality 9).
    """
    lo, hi = (32.0, 320.0) if sample_rate >= 32000 else (8.0, 160.0) if sample_rate >= 16000 else (8.0, 64.0)
    # aim half a kbit/s above: the C code truncates to an int
    return min(1.0, max(0.0, (hi - kbps - 0.5) / (hi - lo)))


def opus_compression_level(kbps: float) -> float:
    """libsndfile's compression level for an Opus target bit rate.

    libsndfile 1.2 (ogg_opus.c) maps level 0..1 linearly onto 256..6 kbit/s; measured on
    44 s of speech: level 0.9 -> 31.1, 0.95 -> 18.8 kbit/s including the Ogg overhead.
    """
    return min(1.0, max(0.0, 1.0 - (kbps - OPUS_KBPS[0]) / (OPUS_KBPS[1] - OPUS_KBPS[0])))


def vorbis_compression_level(quality: float) -> float:
    """libsndfile's compression level for a Vorbis quality 0-10 (as ``oggenc -q``).

    libsndfile 1.2 (ogg_vorbis.c) asks libvorbis for quality ``1 - level`` on its 0..1 scale
    (oggenc's q / 10). Measured on 16 s of 16 kHz speech: level 1 -> 26.6, 0.5 -> 46.6,
    0 -> 76.6 kbit/s.
    """
    return min(1.0, max(0.0, 1.0 - quality / 10.0))


def encode(wav: np.ndarray, kind: Kind, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Encode with a codec kind (mp3, opus, vorbis, aac).

    Args:
        wav: float32 (samples,) in [-1, 1].
        kind: a codec kind.
        sample_rate: rate of ``wav``.

    Returns:
        the bytes of an .mp3, .opus, .ogg (Vorbis) or .m4a (AAC) file; Ogg stream serial numbers
        are random, the audio is the same on every call.

    Raises:
        DegradeError: libsndfile (FFmpeg for aac) cannot write this codec.
    """
    if kind.name in FFMPEG_CODECS:
        try:
            return media.encode(wav, sample_rate, kind.value, kind.name)
        except AudioError as e:
            raise DegradeError(f"kind {kind.spec}: {e}") from None
    fmt, subtype, _ = CODECS[kind.name]
    if kind.name == "mp3":
        kw = {"compression_level": mp3_compression_level(kind.value, sample_rate), "bitrate_mode": "CONSTANT"}
    elif kind.name == "vorbis":
        kw = {"compression_level": vorbis_compression_level(kind.value)}
    else:
        kw = {"compression_level": opus_compression_level(kind.value)}
    buf = io.BytesIO()
    try:
        sf.write(buf, np.clip(wav, -1.0, 1.0), sample_rate, format=fmt, subtype=subtype, **kw)
    except (sf.LibsndfileError, ValueError, TypeError, RuntimeError) as e:
        raise DegradeError(f"kind {kind.spec}: libsndfile {sf.__libsndfile_version__} cannot write "
                           f"{fmt}/{subtype} ({str(e).strip() or type(e).__name__}); {INSTALL_HINT}") from None
    return buf.getvalue()


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Decode file bytes (soundfile, or FFmpeg for what it cannot read): float32 (samples,) mono
    and its sample rate."""
    with open_audio(data) as f:
        wav = f.read(frames=-1, dtype="float32", always_2d=True)
        return wav.mean(axis=1), f.samplerate


@functools.cache
def check_writable(kind: Kind) -> None:
    """Fail early, naming the kind and what to install, when this machine cannot produce it.

    Raises:
        DegradeError: the libsndfile in use lacks the format, the subtype or the encoder.
    """
    if not kind.codec:
        return
    if kind.name in FFMPEG_CODECS:
        if not media.available():
            raise DegradeError(f"kind {kind.spec}: encoding {kind.name} needs FFmpeg; {media.INSTALL_HINT}")
        encode(np.zeros(SAMPLE_RATE // 10, dtype=np.float32), kind)
        return
    fmt, subtype, _ = CODECS[kind.name]
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        raise DegradeError(f"kind {kind.spec}: libsndfile {sf.__libsndfile_version__} on this machine "
                           f"cannot write {fmt}/{subtype}; {INSTALL_HINT}")
    encode(np.zeros(SAMPLE_RATE // 10, dtype=np.float32), kind)  # the encoder itself (and its settings)


# ---------------------------------------------------------------- additive noise


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


# ---------------------------------------------------------------- signal degradations


@functools.lru_cache(maxsize=8)
def _band_pass(low_hz: float, high_hz: float, sample_rate: int) -> np.ndarray:
    from scipy.signal import ellip

    # 8th-order elliptic (0.5 dB ripple, 60 dB stop band), run forwards and backwards
    # (zero phase, 120 dB): measured on speech, < -65 dB of the energy is left below
    # 250 Hz or above 3.45 kHz (a Butterworth of the same order leaves -22 dB below 290 Hz).
    return ellip(8, 0.5, 60, [low_hz, high_hz], btype="bandpass", fs=sample_rate, output="sos")


def band_pass(wav: np.ndarray, low_hz: float, high_hz: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Zero-phase steep band-pass.

    Args:
        wav: float32 (samples,).
        low_hz, high_hz: the pass band.
        sample_rate: rate of ``wav``.

    Returns:
        float32 (samples,).
    """
    from scipy.signal import sosfiltfilt

    sos = _band_pass(float(low_hz), float(high_hz), int(sample_rate))
    if wav.size <= 3 * (2 * len(sos) + 1):
        return np.zeros_like(wav)  # too short to filter: a few samples carry nothing in the band
    return sosfiltfilt(sos, wav).astype(np.float32)


def telephone(wav: np.ndarray, sample_rate: int = SAMPLE_RATE, band_hz: tuple[float, float] = PHONE_BAND_HZ,
              phone_rate: int = PHONE_RATE) -> np.ndarray:
    """A telephone channel: resampled to 8 kHz and back, then band-passed to 300-3400 Hz.

    Args:
        wav: float32 (samples,).
        sample_rate: rate of ``wav`` (and of the result).
        band_hz: the pass band.
        phone_rate: the narrow-band sample rate.

    Returns:
        float32 (samples,).
    """
    narrow = resample(wav, sample_rate, phone_rate)
    back = resample(narrow, phone_rate, sample_rate)
    back = np.pad(back, (0, max(0, wav.size - back.size)))[: wav.size]
    return band_pass(back, band_hz[0], band_hz[1], sample_rate)


def rms_dbfs(wav: np.ndarray) -> float:
    """RMS level in dBFS (20 log10 rms; -inf for silence).

    >>> round(rms_dbfs(np.full(100, 0.1, dtype=np.float32)), 3)
    -20.0
    """
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if wav.size else 0.0
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def set_level(wav: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale so that the RMS level is ``dbfs``; samples beyond full scale are clipped, as
    a recorder would. Silence is returned unchanged.

    Args:
        wav: float32 (samples,).
        dbfs: wanted RMS level.

    Returns:
        float32 (samples,).
    """
    now = rms_dbfs(wav)
    if not math.isfinite(now):
        return wav
    return np.clip(wav * 10 ** ((dbfs - now) / 20), -1.0, 1.0).astype(np.float32)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """10 log10(clean power / power of ``noisy - clean``)."""
    return 10 * math.log10(float(np.mean(np.square(clean, dtype=np.float64)))
                           / max(1e-30, float(np.mean(np.square(noisy - clean, dtype=np.float64)))))


def degrade(wav: np.ndarray, kind: Kind, rng: np.random.Generator, noise: np.ndarray | None = None,
            sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Apply one degradation.

    Args:
        wav: float32 (samples,) in [-1, 1].
        kind: the degradation.
        rng: seeded generator (generated noise).
        noise: float32 (n,) noise for ``noise`` kinds (looped or cropped to ``samples``);
            None generates white or pink noise.
        sample_rate: rate of ``wav``.

    Returns:
        float32 (samples',) at ``sample_rate``. samples' == samples except for codecs,
        whose decoder may add a delay (LAME at 24 kbit/s: about 1,100 samples at the start).
        ``noise`` mixtures that would clip are scaled down as a whole (the SNR is kept).
    """
    if kind.codec:
        out, sr = decode(encode(wav, kind, sample_rate))
        return resample(out, sr, sample_rate)
    if kind.name == "phone":
        return telephone(wav, sample_rate)
    if kind.name == "level":
        return set_level(wav, kind.value)
    if kind.name == "reverb":
        return reverberate(wav, room_impulse_response(kind.value, REVERB_DRR_DB, rng, sample_rate))
    if kind.name == "noise":
        if noise is None:
            noise = generated_noise(wav.size, rng)
        out = add_noise(wav, noise, kind.value)
        peak = float(np.abs(out).max()) if out.size else 0.0
        return (out * (0.99 / peak)).astype(np.float32) if peak > 0.99 else out
    raise DegradeError(f"unknown kind {kind.spec!r}; {_USAGE}")

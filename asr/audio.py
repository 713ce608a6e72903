"""Reading audio: soundfile for decoding (any format it reads; FFmpeg through asr.media for the
rest: video soundtracks, AAC, AMR, WMA...), torchaudio for resampling."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from asr import media
from asr.errors import AudioError
from asr.errors import first_line as _reason

SAMPLE_RATE = 16000  # the toolkit's working rate

# File extensions taken as audio when a folder is scanned (lower case, no dot): the one list, used
# by `asr transcribe FOLDER`, the corpus importers, the noise banks and the server. Every format
# this soundfile (libsndfile) build reads, plus the names its containers and codecs go by, plus
# what FFmpeg reads (asr.media) when PyAV is installed.
AUDIO_EXTENSIONS = frozenset({k.lower() for k in sf.available_formats()} | {
    "wav", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff", "au", "snd", "w64", "caf"}
    | (media.MEDIA_EXTENSIONS if media.available() else frozenset()))


def is_audio_file(path: str | Path) -> bool:
    """Whether ``path``'s extension is one of :data:`AUDIO_EXTENSIONS` (the name alone is looked at).

    >>> is_audio_file("a/b.FLAC"), is_audio_file("notes.txt"), is_audio_file("talk.opus")
    (True, False, True)
    """
    return Path(path).suffix.lower().lstrip(".") in AUDIO_EXTENSIONS


@functools.lru_cache(maxsize=32)
def _resampler(orig_sr: int, new_sr: int) -> torchaudio.transforms.Resample:
    # The windowed-sinc kernel is computed once per rate pair (about 2x faster than
    # torchaudio.functional.resample, which rebuilds it on every call).
    return torchaudio.transforms.Resample(orig_sr, new_sr)


def resample(wav: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample with torchaudio's windowed-sinc resampler.

    Args:
        wav: float32 array of shape (samples,).
        orig_sr: its sample rate.
        new_sr: the wanted rate.

    Returns:
        float32 array of shape (ceil(samples * new_sr / orig_sr),).
    """
    if orig_sr == new_sr:
        return wav
    with torch.no_grad():
        out = _resampler(int(orig_sr), int(new_sr))(torch.from_numpy(np.ascontiguousarray(wav)))
    return out.numpy()


def open_audio(source: str | Path | bytes, name: str | None = None):
    """Open audio for reading: a ``soundfile.SoundFile``, or when soundfile cannot read the
    format, an ``asr.media.MediaFile`` (FFmpeg) with the same ``samplerate``, ``channels``,
    ``frames``, ``read`` and ``seek``. Close it (or use it in a ``with``).

    Raises:
        AudioError: neither can open it; the message names the file and both decoders' reasons.
    """
    name = name or ("<bytes>" if isinstance(source, (bytes, bytearray)) else str(source))
    try:
        return sf.SoundFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source))
    except Exception as e:  # soundfile raises several types
        sf_reason = _reason(e)
    if not media.available():
        raise AudioError(f"{name}: cannot decode audio ({sf_reason}); for video soundtracks, AAC (M4A), "
                         f"AMR or WMA {media.INSTALL_HINT}")
    try:
        return media.MediaFile(source, name)
    except media.MediaError as e:
        raise AudioError(f"{name}: cannot decode audio (soundfile: {sf_reason}; FFmpeg: {e.reason})") from None


def audio_info(path: str | Path) -> tuple[float, int, int]:
    """(duration seconds, sample rate, channels) from the header, without decoding (an FFmpeg
    input whose header has no duration is decoded and counted)."""
    try:
        info = sf.info(str(path))
    except Exception:  # soundfile raises several types
        info = None
    if info is None:
        try:
            with open_audio(path) as f:
                frames = f.frames if f.frames >= 0 else f.count_frames()
                return frames / f.samplerate, f.samplerate, f.channels
        except AudioError as e:
            raise AudioError(str(e).replace("cannot decode audio", "cannot read audio header", 1)) from None
    if info.samplerate <= 0:
        raise AudioError(f"{path}: invalid sample rate {info.samplerate}")
    return info.frames / info.samplerate, info.samplerate, info.channels


def load_audio(
    path: str | Path | bytes,
    sample_rate: int = SAMPLE_RATE,
    offset: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Read audio as mono float32 at ``sample_rate``.

    Args:
        path: file path (any format soundfile or, through asr.media, FFmpeg reads), or its bytes.
        sample_rate: target rate; the file is resampled if it differs.
        offset: start reading this many seconds in (only that segment is decoded).
        duration: seconds to read; None reads to the end.

    Returns:
        float32 array of shape (samples,), values in [-1, 1].

    Raises:
        AudioError: missing, unreadable, empty, or non-finite audio; the message names the file.
    """
    name = "<bytes>" if isinstance(path, (bytes, bytearray)) else str(path)
    if not isinstance(path, (bytes, bytearray)) and not Path(path).is_file():
        raise AudioError(f"{name}: file does not exist")
    size = len(path) if isinstance(path, (bytes, bytearray)) else Path(path).stat().st_size
    if size == 0:
        raise AudioError(f"{name}: file is empty (0 bytes)")
    f = open_audio(path, name)
    try:
        with f:
            sr = f.samplerate
            start = int(round(offset * sr))
            if start:
                f.seek(min(start, f.frames) if f.frames >= 0 else start)
            frames = -1 if duration is None else int(round(duration * sr))
            data = f.read(frames=frames, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"{name}: cannot decode audio ({_reason(e)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wav).all():
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    wav = resample(wav, sr, sample_rate)
    return np.ascontiguousarray(wav, dtype=np.float32)


def speed_perturb(wav: np.ndarray, factor: float, sample_rate: int = 16000) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch, like sox ``speed``) via resampling.

    Args:
        wav: float32 (samples,).
        factor: speed, e.g. 0.9 (slower, longer) or 1.1 (faster, shorter).
        sample_rate: rate of ``wav`` (the output has the same rate).

    Returns:
        float32 (about samples / factor,).
    """
    if factor == 1.0:
        return wav
    # Treat the signal as if recorded at sr*factor and resample back to sr.
    orig = int(round(sample_rate * factor / 100)) * 100
    return resample(wav, orig, sample_rate)

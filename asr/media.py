"""Media: audio in the containers and codecs soundfile cannot read, through FFmpeg (PyAV).

Video soundtracks (MP4, MOV, MKV, WebM), AAC (M4A, ADTS), AMR, WMA, AC-3 and the rest of
what FFmpeg decodes. ``asr.audio`` tries soundfile first (its formats decode exactly as
before) and comes here only when soundfile cannot open a file, so a user never has to
convert first. :class:`MediaFile` reads like ``soundfile.SoundFile`` (``samplerate``,
``channels``, ``frames``, ``read``, ``seek``), decoding lazily, so a two-hour video is never
held whole. :func:`encode` writes AAC in an M4A (the ``aac:KBPS`` degradation).

PyAV (``av``) bundles its own FFmpeg libraries; nothing needs to be on the PATH.
"""

from __future__ import annotations

import importlib.util
import io
import math
from pathlib import Path

import numpy as np

from asr.errors import AudioError
from asr.errors import first_line as _reason

# Extensions of files FFmpeg reads that soundfile does not (lower case, no dot).
MEDIA_EXTENSIONS = frozenset({
    "m4a", "m4b", "aac", "mp4", "m4v", "mov", "3gp", "3g2", "mkv", "mka", "webm", "wma", "asf",
    "wmv", "amr", "ac3", "eac3", "avi", "flv", "mts", "m2ts", "mpg", "mpeg", "ra"})  # not .ts: TypeScript too
PREROLL_S = 0.2  # a seek lands this much early: a lapped-transform codec needs the frame before
INSTALL_HINT = "install PyAV (`pip install av`; its wheels bundle FFmpeg)"


class MediaError(AudioError):
    """FFmpeg cannot open or decode a file; ``reason`` is FFmpeg's word for why."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def _av():
    try:
        import av
    except ImportError:
        return None
    return av


def available() -> bool:
    """Whether PyAV (and so FFmpeg) is installed (found without importing it)."""
    return importlib.util.find_spec("av") is not None


class MediaFile:
    """A ``soundfile.SoundFile``-like reader of the first audio stream of any FFmpeg input.

    Attributes:
        samplerate: the stream's rate, Hz.
        channels: its channel count.
        frames: samples per channel, from the container's header (the decoders' padding
            at the end is cut to it); decoded and counted when the header has no duration.
    """

    def __init__(self, source: str | Path | bytes, name: str | None = None):
        av = _av()
        self.name = name or ("<bytes>" if isinstance(source, (bytes, bytearray)) else str(source))
        if av is None:
            raise AudioError(f"{self.name}: soundfile cannot read this format and PyAV is not installed; "
                             f"{INSTALL_HINT}")
        self._source = bytes(source) if isinstance(source, (bytes, bytearray)) else str(source)
        self._container = self._open()
        streams = self._container.streams
        if not streams.audio:
            kinds = ", ".join(sorted({s.type for s in streams})) or "no streams"
            self.close()
            why = f"no audio stream in this file ({kinds})"
            raise MediaError(f"{self.name}: {why}; give a file with sound", why)
        self._stream = streams.audio[0]
        cc = self._stream.codec_context
        self.samplerate = int(cc.sample_rate or self._stream.rate or 0)
        self.channels = int(cc.layout.nb_channels) if cc.layout else int(getattr(cc, "channels", 1) or 1)
        if self.samplerate <= 0:
            self.close()
            raise MediaError(f"{self.name}: the audio stream has no sample rate", "its audio stream has no sample rate")
        self._layout = cc.layout.name if cc.layout else None
        self.frames = self._header_frames()
        self._restart(0)

    def _open(self):
        av = _av()
        src = io.BytesIO(self._source) if isinstance(self._source, bytes) else self._source
        try:
            return av.open(src, mode="r")
        except Exception as e:  # av.error.FFmpegError and friends
            raise MediaError(f"{self.name}: cannot decode audio ({_reason(e)})", _reason(e)) from None

    def _header_frames(self) -> int:
        st = self._stream
        seconds = None
        if st.duration is not None and st.time_base is not None:
            seconds = float(st.duration * st.time_base)
        elif self._container.duration:
            seconds = self._container.duration / 1_000_000  # AV_TIME_BASE
        if seconds is None or not math.isfinite(seconds) or seconds <= 0:
            return -1
        return int(round(seconds * self.samplerate))

    def _restart(self, sample: int) -> None:
        """Position the decoder so that the next sample read is ``sample``."""
        av = _av()
        self._resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=self.samplerate)
        self._pending: list[np.ndarray] = []  # (channels, n) blocks decoded but not yet read
        self._pending_n = 0
        self._pos = sample
        self._done = self._flushed = False
        skip_to = sample
        if sample > 0:
            t = max(0.0, sample / self.samplerate - PREROLL_S)
            try:
                self._container.seek(int(t / self._stream.time_base), stream=self._stream, backward=True)
                self._decoded = None  # the first frame's time says where decoding resumed
            except Exception:  # not seekable (e.g. some raw streams): decode from the start
                self._container.close()
                self._container = self._open()
                self._stream = self._container.streams.audio[0]
                self._decoded = 0
        else:
            self._decoded = 0
        self._frames_iter = self._container.decode(self._stream)
        self._skip_to = skip_to

    def _next_block(self) -> np.ndarray | None:
        """The next (channels, n) float32 block of the stream, or None at its end."""
        while True:
            try:
                frame = next(self._frames_iter)
            except StopIteration:
                frame = None
            except Exception as e:
                raise AudioError(f"{self.name}: cannot decode audio near {self._pos / self.samplerate:.1f} s "
                                 f"({_reason(e)})") from None
            if frame is None:
                if self._flushed:
                    return None
                self._flushed = True
                if self._decoded is None:
                    self._decoded = self._skip_to
            elif self._decoded is None:
                start = frame.time if frame.time is not None else 0.0
                self._decoded = max(0, int(round(start * self.samplerate)))
            out = self._resampler.resample(frame)
            if out:
                block = np.concatenate([f.to_ndarray().reshape(self.channels, -1) for f in out], axis=1)
                start, self._decoded = self._decoded, self._decoded + block.shape[1]
                if self._decoded > self._skip_to:
                    return block[:, max(0, self._skip_to - start):].astype(np.float32, copy=False)
                continue
            if frame is None:
                return None

    def read(self, frames: int = -1, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        """Read ``frames`` samples per channel (-1: to the end), as soundfile does.

        Returns:
            float32 (n, channels) when ``always_2d`` (else (n,) for mono); n < frames only at the end.
        """
        if dtype != "float32":
            raise ValueError("MediaFile reads float32 only")
        limit = self.frames - self._pos if self.frames >= 0 else None  # the decoders' end padding is cut
        want = frames if frames >= 0 else None
        if limit is not None:
            want = limit if want is None else min(want, limit)
        while not self._done and (want is None or self._pending_n < want):
            block = self._next_block()
            if block is None:
                self._done = True
                break
            self._pending.append(block)
            self._pending_n += block.shape[1]
        data = (np.concatenate(self._pending, axis=1) if self._pending
                else np.zeros((self.channels, 0), dtype=np.float32))
        n = data.shape[1] if want is None else max(0, min(want, data.shape[1]))
        out, rest = data[:, :n], data[:, n:]
        self._pending, self._pending_n = ([rest] if rest.shape[1] else []), rest.shape[1]
        self._pos += n
        out = np.ascontiguousarray(out.T)  # (n, channels)
        return out if always_2d or self.channels > 1 else out[:, 0]

    def seek(self, frame: int) -> int:
        """Move to sample ``frame`` (per channel); returns it."""
        frame = max(0, int(frame))
        self._restart(frame)
        return frame

    def count_frames(self) -> int:
        """Decode the whole stream and count its samples (for files whose header has no duration)."""
        self._restart(0)
        n = 0
        while (block := self._next_block()) is not None:
            n += block.shape[1]
        self._restart(0)
        return n

    def close(self) -> None:
        try:
            self._container.close()
        except Exception:
            pass

    def __enter__(self) -> MediaFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def encode(wav: np.ndarray, sample_rate: int, kbps: float, codec: str = "aac") -> bytes:
    """Encode mono audio with an FFmpeg encoder (AAC-LC in an M4A) at a target bit rate.

    Args:
        wav: float32 (samples,) in [-1, 1].
        sample_rate: its rate.
        kbps: target bit rate, kbit/s.
        codec: the FFmpeg encoder ("aac": FFmpeg's native AAC-LC).

    Returns:
        the bytes of an .m4a file.

    Raises:
        AudioError: PyAV is missing or cannot encode.
    """
    av = _av()
    if av is None:
        raise AudioError(f"encoding {codec} needs PyAV; {INSTALL_HINT}")
    buf = io.BytesIO()
    try:
        with av.open(buf, mode="w", format="ipod") as c:
            st = c.add_stream(codec, rate=sample_rate, layout="mono")
            st.bit_rate = int(kbps * 1000)
            frame = av.AudioFrame.from_ndarray(np.clip(wav, -1.0, 1.0).astype(np.float32)[None, :],
                                               format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, 0
            for packet in st.encode(frame):
                c.mux(packet)
            for packet in st.encode(None):
                c.mux(packet)
    except Exception as e:
        raise AudioError(f"FFmpeg (PyAV {av.__version__}) cannot encode {codec} at {kbps:g} kbit/s "
                         f"({_reason(e)})") from None
    return buf.getvalue()

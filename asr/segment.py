"""Long audio as a stream of segments cut at quiet points: ``iter_segments``.

Audio of any length is read block by block and cut into segments of at most
``SegmentOptions.max_seconds`` at the quietest point of the last few seconds before
that limit (energy-based voice activity detection), so an hour-long recording is
transcribed in bounded memory and words are rarely cut in two. ``asr.transcribe``
decodes the segments and stitches their texts and word times; ``asr.serve`` batches
the segments of concurrent requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr.audio import AudioError, _reason, open_audio, resample


@dataclass(frozen=True)
class SegmentOptions:
    max_seconds: float = 30.0  # longest segment decoded at once (bounds memory and latency)
    search_seconds: float = 5.0  # look for the quietest cut point in this final stretch of a segment
    frame_ms: float = 20.0  # energy frame length for finding the cut point
    batch_seconds: float = 120.0  # audio seconds decoded together in one batch of segments


def _quietest_cut(buf: np.ndarray, sr: int, opts: SegmentOptions) -> int:
    """Sample index in the last ``search_seconds`` of ``buf`` with the least local energy."""
    hop = max(1, int(sr * opts.frame_ms / 1000))
    lo = max(hop, buf.size - int(opts.search_seconds * sr))
    region = buf[lo: lo + (buf.size - lo) // hop * hop]
    if region.size < hop:
        return buf.size
    energy = (region.reshape(-1, hop).astype(np.float64) ** 2).mean(1)  # (frames,)
    if energy.size >= 3:  # smooth over 3 frames so a single quiet sample run is not chosen
        energy = np.convolve(energy, np.ones(3) / 3, mode="same")
    return lo + int(energy.argmin()) * hop + hop // 2


def iter_segments(
    source: str | Path | bytes | np.ndarray,
    sample_rate: int,
    opts: SegmentOptions = SegmentOptions(),
    source_rate: int | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Stream audio as segments cut at quiet points, resampled to ``sample_rate`` and mono.

    Args:
        source: a path (any format soundfile reads), the bytes of such a file, or a float
            array (samples,) or (samples, channels).
        sample_rate: the rate of the segments returned.
        opts: segment length and cut-point search.
        source_rate: the array's rate (arrays only; default ``sample_rate``).

    Yields:
        (start in seconds, float32 array (samples,)) per segment, in order; only one
        segment (plus one read block) is held in memory at a time.

    Raises:
        AudioError: missing, unreadable, empty or non-finite audio; the message names the source.
    """
    if isinstance(source, np.ndarray):
        arr = source.astype(np.float32, copy=False)
        arr = arr.mean(axis=1) if arr.ndim > 1 else arr
        yield from _cut(_array_blocks(arr), source_rate or sample_rate, sample_rate, opts, "<array>")
        return
    name = "<stdin>" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)) and not Path(source).is_file():
        raise AudioError(f"{name}: file does not exist")
    if (len(source) if isinstance(source, (bytes, bytearray)) else Path(source).stat().st_size) == 0:
        raise AudioError(f"{name}: file is empty (0 bytes)")
    f = open_audio(source, name)  # soundfile, or FFmpeg (asr.media) for what it cannot read
    with f:
        yield from _cut(_file_blocks(f, name), f.samplerate, sample_rate, opts, name)


def _array_blocks(arr: np.ndarray) -> Callable[[int], np.ndarray]:
    pos = 0

    def read(n: int) -> np.ndarray:
        nonlocal pos
        out = arr[pos: pos + n]
        pos += out.size
        return out

    return read


def _file_blocks(f, name: str) -> Callable[[int], np.ndarray]:
    """Blocks of ``f`` (a soundfile.SoundFile or an asr.media.MediaFile), downmixed."""
    def read(n: int) -> np.ndarray:
        try:
            data = f.read(frames=n, dtype="float32", always_2d=True)
        except AudioError:
            raise
        except Exception as e:
            raise AudioError(f"{name}: cannot decode audio ({_reason(e)})") from None
        return data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]

    return read


def _cut(read: Callable[[int], np.ndarray], sr: int, target_sr: int, opts: SegmentOptions,
         name: str) -> Iterator[tuple[float, np.ndarray]]:
    max_n = max(1, int(opts.max_seconds * sr))
    buf = np.zeros(0, dtype=np.float32)
    pos = 0  # index of buf[0] in the source, in source samples
    total = 0
    while True:
        need = max_n - buf.size
        data = read(need)
        total += data.size
        buf = np.concatenate([buf, data]) if buf.size else data
        eof = data.size < need
        cut = buf.size if eof else _quietest_cut(buf, sr, opts)
        if cut > 0:
            seg = buf[:cut]
            if not np.isfinite(seg).all():
                raise AudioError(f"{name}: audio contains NaN or infinite samples near {pos / sr:.1f} s")
            yield pos / sr, np.ascontiguousarray(resample(seg, sr, target_sr), dtype=np.float32)
        if eof:
            break
        buf, pos = buf[cut:], pos + cut
    if total == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")

"""The audio of a report's listed utterances: embedded in the page, or linked to the files.

A small report (its listed audio estimated under the embedding limit) carries each clip inside
report.html as a ``data:audio/ogg`` URI, so the page plays wherever it is mailed or copied; only
the utterance's segment is encoded, at 16 kHz mono. A large one links each utterance's audio file
by a path relative to the report folder (an absolute ``file:`` URL where no relative path exists),
with a media fragment ``#t=start,end`` when the manifest entry is a segment of a longer file, so
the browser plays just that segment.

Ogg Vorbis rather than Opus: libsndfile's Opus encoder costs about 12 times the CPU of its Vorbis
encoder at the same size (28 s of 16 kHz speech: 1.7 s against 0.13 s; 26 against 23 kbit/s).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from asr.audio import AudioError, load_audio

log = logging.getLogger("asr.report")

EMBED_MB = 20.0  # default limit on the embedded audio of one page (MB of data: URIs)
CLIP_RATE = 16000  # embedded clips: the toolkit's working rate, mono
CLIP_QUALITY = 1.0  # libsndfile compression level: Vorbis at about 23 kbit/s for speech
PLAN_BYTES_PER_S = 4000  # estimate before encoding (32 kbit/s: above what speech needs, a margin)


@dataclass
class Clips:
    """What the page plays for each listed utterance."""

    mode: str  # "embedded", "linked" or "none" (no audio paths known)
    src: dict[str, str] = field(default_factory=dict)  # utterance id -> <audio> src
    missing: dict[str, str] = field(default_factory=dict)  # utterance id -> why it has no clip
    note: str = ""  # one sentence for the page: what was done, and why


def encode_clip(path: str, offset: float = 0.0, duration: float | None = None) -> bytes:
    """One utterance's audio (only its segment) as Ogg Vorbis bytes, 16 kHz mono.

    Raises:
        AudioError: missing or unreadable audio (the message names the file).
    """
    wav = load_audio(path, CLIP_RATE, offset, duration)
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", CLIP_RATE, 1, format="OGG", subtype="VORBIS",
                      compression_level=CLIP_QUALITY) as f:
        f.write(wav)
    return buf.getvalue()


def link(path: str, out_dir: str | Path, offset: float | None = None, duration: float = 0.0) -> str:
    """The URL of an audio file as seen from a page in ``out_dir``: relative where possible,
    with ``#t=start,end`` for a segment (``offset`` not None)."""
    try:
        url = urllib.parse.quote(Path(os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))).as_posix())
    except ValueError:  # another drive (Windows): no relative path exists
        url = Path(path).resolve().as_uri()
    if offset is not None:
        url += f"#t={offset:.3f}" + (f",{offset + duration:.3f}" if duration > 0 else "")
    return url


def _span(u: dict) -> tuple[float | None, float | None]:
    """(offset or None for a whole file, seconds to read or None for to the end)."""
    dur = u["duration"] if u.get("duration", 0) > 0 else None
    return u.get("offset"), dur


def report_clips(utts: list[dict], out_dir: str | Path, embed_mb: float = EMBED_MB,
                 progress: bool = True) -> Clips:
    """Clips for the listed utterances: embedded when they fit in ``embed_mb``, else linked.

    Args:
        utts: report utterances with "id", "duration" and, when known, "audio" (path) and
            "offset" (seconds into the file for a segment, None for a whole file).
        out_dir: the report folder (links are relative to it).
        embed_mb: the most embedded audio (MB of data: URIs) a page holds; 0 always links.
        progress: show a progress bar while encoding.

    Returns:
        Clips, with a note saying which was done.
    """
    with_audio = [u for u in utts if u.get("audio")]
    if not with_audio:
        return Clips("none", note="No audio: the report was written without the utterances' audio paths.")
    clips = _clips(with_audio, out_dir, embed_mb, progress)
    if clips.missing:
        uid, why = next(iter(clips.missing.items()))
        log.warning("report.html: no player for %d utterances (%s: %s)", len(clips.missing), uid, why)
    return clips


def _clips(with_audio: list[dict], out_dir: str | Path, embed_mb: float, progress: bool) -> Clips:
    """Embed when the estimate and then the encoded clips fit; else link."""
    limit = embed_mb * 1e6
    planned = sum(u["duration"] for u in with_audio) * PLAN_BYTES_PER_S * 4 / 3
    if embed_mb > 0 and planned <= limit:
        clips = _embed(with_audio, limit, progress)
        if clips is not None:
            return clips  # (None: the estimate was low and the encoded clips did not fit)
    why = ("embedding is off (--embed-audio-mb 0)" if embed_mb <= 0 else
           f"embedded they would take more than the {embed_mb:g} MB limit (--embed-audio-mb)")
    clips = Clips("linked", note=(
        f"Audio linked: each player plays the utterance's file (its segment for segments) by a path "
        f"relative to this page, so keep the page and the audio where they are; {why}."))
    for u in with_audio:
        if not Path(u["audio"]).is_file():
            clips.missing[u["id"]] = f"{u['audio']}: file does not exist"
            continue
        offset, dur = _span(u)
        clips.src[u["id"]] = link(u["audio"], out_dir, offset, dur or 0.0)
    return clips


def _embed(utts: list[dict], limit: float, progress: bool) -> Clips | None:
    """Encode every clip as a data: URI; None as soon as they pass ``limit`` bytes."""
    clips, total = Clips("embedded"), 0
    for u in tqdm(utts, desc="report audio", unit="clip", disable=not progress or None, leave=False):
        offset, dur = _span(u)
        try:
            data = encode_clip(u["audio"], offset or 0.0, dur)
        except AudioError as e:
            clips.missing[u["id"]] = str(e)
            continue
        uri = "data:audio/ogg;base64," + base64.b64encode(data).decode("ascii")
        total += len(uri)
        if total > limit:
            return None
        clips.src[u["id"]] = uri
    clips.note = (f"Audio embedded in this page: {len(clips.src)} clips, {total / 1e6:.1f} MB "
                  f"(Ogg Vorbis, {CLIP_RATE // 1000} kHz mono, only each utterance's segment).")
    return clips

"""Subtitles from timed words: SubRip (.srt) and WebVTT (.vtt).

Words are grouped into cues that end at a pause, at ``max_chars`` characters or at
``max_seconds``, whichever comes first.

>>> words = [{"word": "hello", "start": 0.5, "end": 0.9}, {"word": "world", "start": 1.0, "end": 1.4}]
>>> print(render(words, "srt"))
1
00:00:00,500 --> 00:00:01,400
hello world
<BLANKLINE>
"""

from __future__ import annotations


def _stamp(t: float, sep: str) -> str:
    ms = int(round(max(0.0, t) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def cues(words: list[dict], max_chars: int = 42, max_seconds: float = 5.0,
         max_gap: float = 0.8) -> list[tuple[float, float, str]]:
    """Group timed words ({"word", "start", "end"}) into (start, end, text) cues."""
    out: list[tuple[float, float, str]] = []
    cur: list[dict] = []

    def flush() -> None:
        if cur:
            out.append((cur[0]["start"], cur[-1]["end"], " ".join(w["word"] for w in cur)))
            cur.clear()

    for w in words:
        if cur:
            text_len = sum(len(x["word"]) + 1 for x in cur) + len(w["word"])
            if (w["start"] - cur[-1]["end"] > max_gap or text_len > max_chars
                    or w["end"] - cur[0]["start"] > max_seconds):
                flush()
        cur.append(w)
    flush()
    return out


def render(words: list[dict], fmt: str) -> str:
    """SubRip ("srt") or WebVTT ("vtt") text for timed words."""
    if fmt not in ("srt", "vtt"):
        raise ValueError(f"subtitle format must be srt or vtt, got {fmt!r}")
    sep = "," if fmt == "srt" else "."
    lines = ["WEBVTT", ""] if fmt == "vtt" else []
    for i, (start, end, text) in enumerate(cues(words), 1):
        if fmt == "srt":
            lines.append(str(i))
        lines += [f"{_stamp(start, sep)} --> {_stamp(end, sep)}", text, ""]
    return "\n".join(lines)

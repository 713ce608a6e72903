"""The work behind ``asr data import|split|validate|stats`` and ``asr tokenizer train``.

The CLI parses arguments; these functions do the work and return what they print, so
they are easy to test and to call from recipes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asr.audio import AudioError, audio_info, load_audio
from asr.data import ManifestError, Utterance, parse_manifest_line, read_manifest, write_manifest
from asr.importers import IMPORTERS, CorpusError, split_by_speaker

log = logging.getLogger("asr.datatools")


def import_corpus(kind: str, src: str | Path, out: str | Path, workers: int = 8,
                  progress: bool = True, speaker_pattern: str | None = None) -> str:
    """Import a corpus folder into a manifest.

    Args:
        kind: "librispeech", "kaldi" or "folder".
        src: the corpus folder.
        out: manifest to write (JSONL; written atomically).
        workers: threads reading audio headers.
        progress: show a progress bar.
        speaker_pattern: "folder" layout only: regex whose first group is the speaker.

    Returns:
        a one-line summary (utterances, hours, speakers, skipped).
    """
    if kind not in IMPORTERS:
        raise CorpusError(f"unknown corpus layout {kind!r}; choose one of {', '.join(IMPORTERS)}")
    extra = {}
    if speaker_pattern:
        if kind != "folder":
            raise CorpusError("--speaker-pattern applies to the 'folder' layout only")
        extra["speaker_pattern"] = speaker_pattern
    rep = IMPORTERS[kind](src, workers=workers, progress=progress, **extra)
    if not rep.utts:
        why = f" (e.g. {rep.skipped[0][0]}: {rep.skipped[0][1]})" if rep.skipped else ""
        raise CorpusError(f"{src}: no usable utterances found{why}")
    write_manifest(rep.utts, out)
    return f"{out}: {rep.summary()}"


def split_manifest(manifest: str | Path, train_out: str | Path, dev_out: str | Path,
                   dev_speakers: list[str] | None = None, dev_fraction: float = 0.1,
                   seed: int = 0) -> str:
    """Split a manifest into speaker-disjoint train and dev manifests.

    Args:
        manifest: input JSONL.
        train_out, dev_out: manifests to write.
        dev_speakers: speakers for dev; None picks speakers at random (``seed``) until dev
            holds ``dev_fraction`` of the audio.
        dev_fraction: share of audio for dev in the random split.
        seed: random split seed.

    Returns:
        a summary naming the dev speakers and the size of each side.
    """
    utts = read_manifest(manifest)
    train, dev = split_by_speaker(utts, dev_speakers, dev_fraction, seed)
    if not train or not dev:
        raise CorpusError(f"{manifest}: the split leaves {'train' if not train else 'dev'} empty")
    write_manifest(train, train_out)
    write_manifest(dev, dev_out)
    spk = sorted({u.speaker for u in dev}, key=lambda s: (len(s), s))
    return (f"train {_size(train)} -> {train_out}\n"
            f"dev   {_size(dev)} -> {dev_out}\n"
            f"dev speakers: {','.join(spk)}")


def _size(utts: list[Utterance]) -> str:
    hours = sum(u.duration for u in utts) / 3600
    return f"{len(utts)} utterances, {hours:.2f} h, {len({u.speaker for u in utts})} speakers"


# ---------------------------------------------------------------- validate


# Fast read speech is about 15-20 characters a second; far more means a transcript that does
# not belong to its audio (or a wrong duration), and CTC cannot fit it anyway.
MAX_CHARS_PER_SECOND = 40


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest line."""

    line: int  # 1-based line number in the manifest
    id: str  # utterance id ("" when the line could not be parsed)
    kind: str  # bad-line, duplicate-id, missing-audio, empty-audio, unreadable-audio,
    #            zero-duration, duration-mismatch, empty-text, unencodable-text, text-too-long
    message: str

    def format(self, manifest: str | Path) -> str:
        return f"{manifest}:{self.line}: {self.id or '-'}: {self.kind}: {self.message}"


def _check_audio(u: Utterance, tolerance: float, decode: bool) -> list[tuple[str, str]]:
    """Problems (kind, message) with one utterance's audio file."""
    p = Path(u.audio)
    if not p.is_file():
        return [("missing-audio", f"{p} does not exist")]
    if p.stat().st_size == 0:
        return [("empty-audio", f"{p} is an empty file (0 bytes)")]
    try:
        total, sr, _ = audio_info(p)
    except AudioError as e:
        return [("unreadable-audio", str(e))]
    if total <= 0:
        return [("empty-audio", f"{p} holds 0 samples")]
    out = []
    if u.duration <= 0:
        out.append(("zero-duration", f"manifest duration is {u.duration} s"))
    elif u.offset + u.duration > total + tolerance:
        what = (f"segment ends at {u.offset + u.duration:.3f} s" if u.segment
                else f"duration {u.duration:.3f} s")
        out.append(("duration-mismatch", f"{what} but {p.name} holds {total:.3f} s"))
    elif not u.segment and abs(total - u.duration) > tolerance:
        out.append(("duration-mismatch", f"duration {u.duration:.3f} s but {p.name} holds {total:.3f} s"))
    if decode and not out:
        try:
            wav = load_audio(p, sr, u.offset, u.duration if u.duration > 0 else None)
        except AudioError as e:
            return [("unreadable-audio", str(e))]
        if abs(wav.size / sr - u.duration) > tolerance:
            out.append(("duration-mismatch", f"decoded {wav.size / sr:.3f} s, manifest says "
                                             f"{u.duration:.3f} s (damaged or truncated file?)"))
    return out


def validate_manifest(manifest: str | Path, tokenizer=None, check_audio: bool = True,
                      decode: bool = False, tolerance: float = 0.05, workers: int = 8,
                      progress: bool = True) -> tuple[int, list[Problem]]:
    """Check every line of a manifest.

    Args:
        manifest: JSONL file.
        tokenizer: when given, transcripts it cannot encode are reported.
        check_audio: open each audio file's header (missing, empty, unreadable, duration).
        decode: also decode the audio (finds damaged bodies behind a good header; slower).
        tolerance: seconds a duration may differ from the file's.
        workers: threads checking audio.
        progress: show a progress bar.

    Returns:
        (lines with an utterance, problems sorted by line).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"manifest {manifest} does not exist")
    problems: list[Problem] = []
    utts: list[tuple[int, Utterance]] = []
    seen: dict[str, int] = {}
    with open(manifest, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                problems.append(Problem(n, "", "bad-line", "line is not valid UTF-8"))
                continue
            if not line:
                continue
            try:
                u = parse_manifest_line(line, manifest.parent, f"{manifest}:{n}")
            except ManifestError as e:
                problems.append(Problem(n, "", "bad-line", str(e).split(": ", 1)[-1]))
                continue
            if u.id in seen:
                problems.append(Problem(n, u.id, "duplicate-id", f"id already used on line {seen[u.id]}"))
            else:
                seen[u.id] = n
            if not u.text.strip():
                problems.append(Problem(n, u.id, "empty-text", "transcript is empty"))
            elif u.duration > 0 and len(u.text) > MAX_CHARS_PER_SECOND * u.duration:
                problems.append(Problem(n, u.id, "text-too-long",
                                        f"{len(u.text)} characters for {u.duration:.2f} s of audio "
                                        f"(more than {MAX_CHARS_PER_SECOND}/s: wrong transcript or "
                                        "duration?)"))
            elif tokenizer is not None:
                bad = tokenizer.unknown_chars(u.text)
                if bad:
                    problems.append(Problem(n, u.id, "unencodable-text",
                                            f"characters the tokenizer cannot encode: "
                                            f"{''.join(sorted(bad))!r}"))
            utts.append((n, u))
    if check_audio:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
            results = ex.map(lambda nu: _check_audio(nu[1], tolerance, decode), utts)
            for (n, u), found in zip(utts, tqdm(results, total=len(utts), desc="validate", unit="utt",
                                                disable=not progress or None)):
                problems += [Problem(n, u.id, kind, msg) for kind, msg in found]
    problems.sort(key=lambda p: p.line)
    return len(utts) + sum(p.kind == "bad-line" for p in problems), problems


# ---------------------------------------------------------------- stats


def manifest_stats(utts: list[Utterance], bins: int = 10, width: int = 40) -> str:
    """A plain-text summary: hours, utterances, speakers, words and a duration histogram.

    Args:
        utts: the utterances.
        bins: histogram bins (equal width from 0 to the longest utterance, rounded up).
        width: characters of the longest histogram bar.

    Returns:
        the summary, several lines.
    """
    if not utts:
        return "0 utterances"
    durs = np.array([u.duration for u in utts])
    words = sum(len(u.text.split()) for u in utts)
    spk: dict[str, float] = defaultdict(float)
    for u in utts:
        spk[u.speaker] += u.duration
    lines = [
        f"utterances  {len(utts)}",
        f"hours       {durs.sum() / 3600:.3f}",
        f"speakers    {len(spk)}" + (f" (per speaker {min(spk.values()) / 60:.1f}-"
                                      f"{max(spk.values()) / 60:.1f} min)" if len(spk) > 1 else ""),
        f"words       {words}",
        f"duration    min {durs.min():.2f} s, mean {durs.mean():.2f} s, "
        f"median {np.median(durs):.2f} s, max {durs.max():.2f} s",
        "histogram (seconds: utterances)",
    ]
    top = max(1.0, float(np.ceil(durs.max())))
    step = top / bins
    counts, edges = np.histogram(durs, bins=bins, range=(0.0, top))
    for c, lo, hi in zip(counts, edges[:-1], edges[1:]):
        bar = "#" * int(round(width * c / counts.max())) if counts.max() else ""
        lines.append(f"  {lo:6.{1 if step < 10 else 0}f}-{hi:<6.{1 if step < 10 else 0}f} {c:6d} {bar}")
    return "\n".join(lines)


# ---------------------------------------------------------------- tokenizer


def train_tokenizer_file(manifests: list[str | Path], out: str | Path, kind: str = "char",
                         vocab_size: int = 256, model_type: str = "unigram", lowercase: bool = True,
                         keep_chars: str = "'", strip_accents: bool = False) -> str:
    """Train a tokenizer on the transcripts of manifests and save it (``asr tokenizer train``).

    Args:
        manifests: JSONL files whose ``text`` fields are the training text.
        out: tokenizer file to write (JSON; use it with ``tokenizer.path=FILE``).
        kind: "char" or "sentencepiece".
        vocab_size: SentencePiece vocabulary size.
        model_type: SentencePiece "bpe" or "unigram".
        lowercase: normalise to lower case.
        keep_chars: punctuation kept by normalisation.
        strip_accents: drop accents in normalisation.

    Returns:
        a one-line summary.
    """
    from asr.config import TokenizerConfig
    from asr.text import save_tokenizer, train_tokenizer

    texts = [u.text for m in manifests for u in read_manifest(m, strict=False) if u.text.strip()]
    if not texts:
        raise ManifestError(f"{', '.join(map(str, manifests))}: no transcripts to train a tokenizer on")
    cfg = TokenizerConfig(kind=kind, vocab_size=vocab_size, sp_model_type=model_type,
                          lowercase=lowercase, keep_chars=keep_chars, strip_accents=strip_accents)
    try:
        tok = train_tokenizer(texts, cfg)
    except RuntimeError as e:  # sentencepiece reports bad settings this way
        raise ManifestError(f"cannot train the tokenizer: {str(e).strip().splitlines()[-1]}") from None
    save_tokenizer(tok, out)
    return f"{out}: {kind} tokenizer, {len(tok)} tokens (id 0 = blank), trained on {len(texts)} transcripts"

"""Corpus layouts -> manifests, and speaker-disjoint train/dev splits.

Three layouts are read:

- LibriSpeech: ``<root>/.../<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` with one
  ``<id> <TRANSCRIPT>`` line per utterance and ``<id>.<ext>`` beside it, in any audio format
  soundfile reads (.flac, .opus, .wav, .mp3 ...).
- A Kaldi data directory: ``wav.scp`` (``<rec> <path>``), ``text``, and optionally
  ``utt2spk`` and ``segments`` (``<utt> <rec> <start> <end>``, which become ``offset``/``duration``).
- A folder of audio files, each with a same-named ``.txt`` transcript beside it.

Durations come from the audio headers (no decoding), read in a thread pool with a
progress bar. Utterances whose audio is missing or unreadable are reported with their id,
counted in the returned ``ImportReport`` and left out; transcripts are kept as written
(normalisation belongs to the tokenizer).
"""

from __future__ import annotations

import logging
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from asr.audio import AudioError, audio_info, is_audio_file
from asr.data import Utterance
from asr.errors import CorpusError

log = logging.getLogger("asr.importers")


@dataclass
class ImportReport:
    """What an importer produced and what it left out (utterance id, reason)."""

    utts: list[Utterance] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        hours = sum(u.duration for u in self.utts) / 3600
        speakers = len({u.speaker for u in self.utts})
        s = f"{len(self.utts)} utterances, {hours:.2f} h, {speakers} speakers"
        if self.skipped:
            s += f"; skipped {len(self.skipped)} (e.g. {self.skipped[0][0]}: {self.skipped[0][1]})"
        return s


@dataclass(frozen=True)
class _Pending:
    id: str
    audio: Path
    text: str
    speaker: str
    offset: float = 0.0
    duration: float | None = None  # known from segments; None means read from the header


def _resolve(pending: list[_Pending], workers: int, progress: bool, desc: str) -> ImportReport:
    """Read durations from headers in parallel; keep file order; collect failures."""

    def info(p: _Pending) -> tuple[float, str]:
        try:
            total, _, _ = audio_info(p.audio)
        except AudioError as e:
            return -1.0, str(e)
        if total <= 0:
            return -1.0, f"{p.audio}: audio is empty (0 samples)"
        return total, ""

    rep = ImportReport()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        results = ex.map(info, pending)
        bar = tqdm(results, total=len(pending), desc=desc, unit="file", disable=not progress or None)
        for p, (total, err) in zip(pending, bar):
            if err:
                rep.skipped.append((p.id, err))
                continue
            dur = total - p.offset if p.duration is None else p.duration
            if p.offset + dur > total + 0.01 or dur <= 0:
                rep.skipped.append(
                    (p.id, f"segment {p.offset:.2f}-{p.offset + dur:.2f} s lies outside "
                           f"{p.audio} ({total:.2f} s)"))
                continue
            rep.utts.append(Utterance(p.id, str(p.audio.resolve()), round(dur, 6), p.text,
                                      p.speaker, round(p.offset, 6), p.duration is not None))
    for uid, why in rep.skipped[:10]:
        log.warning("skipping %s: %s", uid, why)
    if len(rep.skipped) > 10:
        log.warning("... and %d more skipped", len(rep.skipped) - 10)
    return rep


def _find_audio(folder: Path, stem: str, listing: dict[Path, dict[str, Path]]) -> Path | None:
    """The audio file ``folder/stem.<ext>`` for a readable extension (folder listed once)."""
    if folder not in listing:
        by_stem: dict[str, Path] = {}
        for f in sorted(folder.iterdir()):
            if is_audio_file(f) and f.is_file():
                by_stem.setdefault(f.stem, f)
        listing[folder] = by_stem
    return listing[folder].get(stem)


def import_librispeech(root: str | Path, workers: int = 8, progress: bool = True) -> ImportReport:
    """Import a LibriSpeech-layout folder (any subset, any audio extension soundfile reads).

    Args:
        root: a folder holding ``*.trans.txt`` files at any depth (a subset such as
            ``train-clean-5`` or the ``LibriSpeech`` folder above several subsets).
        workers: threads reading audio headers.
        progress: show a progress bar.

    Returns:
        ImportReport with utterances sorted by id; speaker = the id's first field.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root} is not a folder")
    trans = sorted(root.rglob("*.trans.txt"))
    if not trans:
        raise CorpusError(f"{root}: no *.trans.txt files found; is this a LibriSpeech-layout folder?")
    listing: dict[Path, dict[str, Path]] = {}
    pending: list[_Pending] = []
    missing: list[tuple[str, str]] = []
    for t in trans:
        for n, line in enumerate(t.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            uid, _, text = line.partition(" ")
            audio = _find_audio(t.parent, uid, listing)
            if audio is None:
                missing.append((uid, f"{t}:{n}: no audio file {t.parent / uid}.* in a readable format"))
                continue
            pending.append(_Pending(uid, audio, text.strip(), uid.split("-")[0]))
    rep = _resolve(pending, workers, progress, "librispeech")
    rep.skipped = missing + rep.skipped
    for uid, why in missing[:10]:
        log.warning("skipping %s: %s", uid, why)
    rep.utts.sort(key=lambda u: u.id)
    return rep


def _read_table(path: Path, required: bool = True) -> dict[str, str]:
    """Kaldi ``<key> <value...>`` file -> dict; errors name the file and line."""
    if not path.is_file():
        if required:
            raise CorpusError(f"{path} does not exist (a Kaldi data directory needs it)")
        return {}
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        key, _, value = line.partition(" ")
        if key in out:
            raise CorpusError(f"{path}:{n}: duplicate key {key!r}")
        out[key] = value.strip()
    return out


def import_kaldi(data_dir: str | Path, workers: int = 8, progress: bool = True) -> ImportReport:
    """Import a Kaldi data directory (``wav.scp``, ``text``, optional ``utt2spk`` and ``segments``).

    ``wav.scp`` entries must be file paths (a relative one is looked for from the current
    folder, then the recipe folder two levels above ``data/train`` as Kaldi runs there, then
    the data directory's parent and the directory itself); piped commands (``... |``) are
    rejected with a message.

    Args:
        data_dir: the folder holding the files.
        workers: threads reading audio headers.
        progress: show a progress bar.

    Returns:
        ImportReport in the order of ``text``.
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise CorpusError(f"{d} is not a folder")
    scp = _read_table(d / "wav.scp")
    text = _read_table(d / "text")
    utt2spk = _read_table(d / "utt2spk", required=False)
    segments = _read_table(d / "segments", required=False)
    pending: list[_Pending] = []
    skipped: list[tuple[str, str]] = []
    for uid, txt in text.items():
        if segments:
            if uid not in segments:
                skipped.append((uid, f"{d / 'segments'}: no segment for this utterance"))
                continue
            fields = segments[uid].split()
            try:
                rec, start, end = fields[0], float(fields[1]), float(fields[2])
            except (IndexError, ValueError):
                raise CorpusError(
                    f"{d / 'segments'}: line for {uid!r} must be '<utt> <rec> <start> <end>'") from None
            offset, dur = start, end - start
        else:
            rec, offset, dur = uid, 0.0, None
        if rec not in scp:
            skipped.append((uid, f"{d / 'wav.scp'}: no entry for recording {rec!r}"))
            continue
        entry = scp[rec]
        if entry.endswith("|"):
            raise CorpusError(
                f"{d / 'wav.scp'}: recording {rec!r} is a piped command; convert the audio to files "
                "(e.g. with sox or ffmpeg) and list their paths instead")
        path = Path(entry)
        if not path.is_absolute():
            # Kaldi runs from the recipe folder (data/train -> ../..); try that, then nearer.
            bases = [Path.cwd(), d.parent.parent, d.parent, d]
            path = next((b / path for b in bases if (b / path).exists()), d.parent.parent / path)
        pending.append(_Pending(uid, path, txt, utt2spk.get(uid, rec), offset, dur))
    rep = _resolve(pending, workers, progress, "kaldi")
    rep.skipped = skipped + rep.skipped
    return rep


def import_folder(folder: str | Path, workers: int = 8, progress: bool = True,
                  speaker_of: Callable[[Path], str] | None = None,
                  speaker_pattern: str | None = None) -> ImportReport:
    """Import every audio file under ``folder`` that has a same-named ``.txt`` transcript.

    Args:
        folder: searched recursively.
        workers: threads reading audio headers.
        progress: show a progress bar.
        speaker_of: audio path -> speaker id; default: the name of the file's parent folder.
        speaker_pattern: instead, a regular expression searched in the path relative to
            ``folder``; its first group is the speaker (e.g. ``^\\d+_([a-z]+)_`` for FSDD's
            ``<digit>_<speaker>_<n>.wav``). A file it does not match is skipped.

    Returns:
        ImportReport; the id is the path relative to ``folder`` without extension, with
        ``/`` replaced by ``-``. Audio without a transcript is listed in ``skipped``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise CorpusError(f"{root} is not a folder")
    files = sorted(p for p in root.rglob("*") if is_audio_file(p) and p.is_file())
    if not files:
        raise CorpusError(f"{root}: no audio files found")
    try:
        pattern = re.compile(speaker_pattern) if speaker_pattern else None
    except re.error as e:
        raise CorpusError(f"speaker pattern {speaker_pattern!r} is not a regular expression ({e})") from None
    if pattern is not None and pattern.groups < 1:
        raise CorpusError(f"speaker pattern {speaker_pattern!r} needs a (group) for the speaker")
    speaker_of = speaker_of or (lambda p: p.parent.name)
    pending, skipped = [], []
    for p in files:
        uid = "-".join(p.relative_to(root).with_suffix("").parts)
        speaker = speaker_of(p)
        if pattern is not None:
            m = pattern.search(p.relative_to(root).as_posix())
            if m is None:
                skipped.append((uid, f"{p}: speaker pattern {speaker_pattern!r} does not match"))
                continue
            speaker = m.group(1)
        txt = p.with_suffix(".txt")
        if not txt.is_file():
            skipped.append((uid, f"{p}: no transcript {txt.name} beside it"))
            continue
        text = " ".join(txt.read_text(encoding="utf-8").split())
        pending.append(_Pending(uid, p, text, speaker))
    rep = _resolve(pending, workers, progress, "folder")
    rep.skipped = skipped + rep.skipped
    return rep


IMPORTERS: dict[str, Callable[..., ImportReport]] = {
    "librispeech": import_librispeech,
    "kaldi": import_kaldi,
    "folder": import_folder,
}


def split_by_speaker(
    utts: Iterable[Utterance],
    dev_speakers: Iterable[str] | None = None,
    dev_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[list[Utterance], list[Utterance]]:
    """Speaker-disjoint train/dev split.

    Args:
        utts: utterances with ``speaker`` set.
        dev_speakers: these speakers go to dev; when None, speakers are shuffled with
            ``seed`` and taken until dev holds at least ``dev_fraction`` of the audio.
        dev_fraction: target share of dev audio (by duration) for the random split.
        seed: seed of the random split (same seed, same manifest -> same split).

    Returns:
        (train, dev), each in input order; no speaker is in both.
    """
    utts = list(utts)
    nospk = [u.id for u in utts if not u.speaker]
    if nospk:
        raise CorpusError(f"utterance {nospk[0]} (and {len(nospk) - 1} more) has no speaker; "
                          "a speaker-disjoint split needs one on every line")
    by_spk: dict[str, float] = defaultdict(float)
    for u in utts:
        by_spk[u.speaker] += u.duration
    if dev_speakers is not None:
        dev_set = {str(s) for s in dev_speakers}
        unknown = sorted(dev_set - set(by_spk))
        if unknown:
            raise CorpusError(f"dev speaker(s) {', '.join(unknown)} not in the manifest "
                              f"(it has {len(by_spk)} speakers, e.g. {', '.join(sorted(by_spk)[:5])})")
    else:
        if not 0 < dev_fraction < 1:
            raise CorpusError(f"dev fraction must be between 0 and 1, got {dev_fraction}")
        if len(by_spk) < 2:
            raise CorpusError("a speaker-disjoint split needs at least two speakers")
        speakers = sorted(by_spk)
        random.Random(seed).shuffle(speakers)
        total = sum(by_spk.values())
        dev_set, acc = set(), 0.0
        for s in speakers[:-1]:  # always leave one speaker for training
            if acc >= dev_fraction * total:
                break
            dev_set.add(s)
            acc += by_spk[s]
    train = [u for u in utts if u.speaker not in dev_set]
    dev = [u for u in utts if u.speaker in dev_set]
    return train, dev

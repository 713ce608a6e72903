"""Degraded copies of a manifest (``asr data degrade``): one folder and manifest per kind.

    OUT/<kind folder>/manifest.jsonl     same ids, texts and speakers; audio below
    OUT/<kind folder>/<id>.flac|.mp3|.opus
    OUT/<kind folder>/degrade.json       what was built (kind, seed, source's SHA-256, noise files)

Codec kinds keep their codec's file (what a user brings; soundfile or FFmpeg reads it back), the others
are written as 16-bit FLAC. Every utterance has its own generator seeded from (seed, kind,
utterance id), so the result does not depend on the number of workers or their order. A
kind built from a manifest of the same content with the same settings is not built again (an
exp folder copied or moved keeps its sets). Files are written to a temporary name and renamed,
so two runs on one folder (or a run killed half way) never leave a torn file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from asr.audio import AudioError, audio_info, is_audio_file, load_audio
from asr.data import ManifestError, Utterance, load_utterance, read_manifest
from asr.degrade import SAMPLE_RATE, DegradeError, Kind, check_writable, degrade, encode, parse_kind

log = logging.getLogger("asr.degrade")



class NoiseBank:
    """Noise recordings to draw random stretches from.

    Files whose header cannot be read or that hold no samples are reported and skipped when
    the bank is made; one that fails to decode later is reported and skipped then. Which
    stretch an utterance gets depends only on its generator and on which files are usable,
    never on the order utterances are processed in.
    """

    def __init__(self, folder: str | Path, sample_rate: int = SAMPLE_RATE):
        folder = Path(folder)
        if not folder.is_dir():
            raise DegradeError(f"--noise-dir {folder}: no such folder")
        files = sorted(p for p in folder.rglob("*") if is_audio_file(p) and p.is_file())
        self.sample_rate = sample_rate
        self.files: list[str] = []
        self.seconds: list[float] = []
        self.skipped: list[str] = []
        for p in files:
            try:
                if p.stat().st_size == 0:
                    raise AudioError(f"{p}: file is empty (0 bytes)")
                total = audio_info(p)[0]
                if total <= 0:
                    raise AudioError(f"{p}: holds 0 samples")
            except AudioError as e:
                self._skip(str(e))
                continue
            self.files.append(str(p))
            self.seconds.append(total)
        self._bad: set[int] = set()
        if not self.files:
            raise DegradeError(f"--noise-dir {folder}: no usable noise audio ({len(files)} audio files, "
                               f"{len(self.skipped)} skipped); give a folder of recordings soundfile reads")

    def _skip(self, why: str) -> None:
        log.warning("noise file skipped: %s", why)
        self.skipped.append(why)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples (or fewer, when the file is shorter) from a random file and offset.

        Args:
            n: wanted samples.
            rng: the utterance's generator.

        Returns:
            float32 (m,), 0 < m <= n.
        """
        while len(self._bad) < len(self.files):
            # two draws per attempt whatever happens, so a known-bad file costs the same draws
            # as one found bad now: the choice is independent of processing order
            i, u = int(rng.integers(len(self.files))), float(rng.random())
            if i in self._bad:
                continue
            seconds = n / self.sample_rate
            offset = u * max(0.0, self.seconds[i] - seconds)
            try:
                wav = load_audio(self.files[i], self.sample_rate, offset, seconds)
            except AudioError as e:
                self._bad.add(i)
                self._skip(str(e))
                continue
            return wav[:n]
        raise DegradeError("every noise file failed to decode (see the warnings above)")

    def describe(self) -> list[str]:
        return [f for i, f in enumerate(self.files) if i not in self._bad]


def utterance_rng(seed: int, kind: Kind, utt_id: str) -> np.random.Generator:
    """The generator of one utterance under one kind (stable across runs and machines)."""
    return np.random.default_rng([seed, zlib.crc32(kind.spec.encode()), zlib.crc32(utt_id.encode())])


def _atomic_write(path: Path, data: bytes) -> None:
    # a unique temporary name per writer (not mkstemp: its files are private, 0600)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _file_names(utts: list[Utterance], suffix: str) -> list[str]:
    """A unique, file-system safe file name per utterance."""
    seen: set[str] = set()
    out = []
    for i, u in enumerate(utts):
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", u.id).strip(".") or f"utt{i}"
        if name in seen:
            name = f"{name}-{i}"
        seen.add(name)
        out.append(name + suffix)
    return out


def _one(u: Utterance, path: Path, kind: Kind, seed: int, noise: NoiseBank | None) -> tuple[Utterance, int]:
    """Degrade one utterance into ``path``; returns its manifest entry and the file's size."""
    wav = load_utterance(u, SAMPLE_RATE)
    if kind.codec:
        data = encode(wav, kind, SAMPLE_RATE)
    else:
        rng = utterance_rng(seed, kind, u.id)
        extra = noise.draw(wav.size, rng) if (noise is not None and kind.name == "noise") else None
        buf = io.BytesIO()
        sf.write(buf, degrade(wav, kind, rng, extra, SAMPLE_RATE), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        data = buf.getvalue()
    _atomic_write(path, data)
    duration = audio_info(path)[0]  # the file's own length (an MP3 decoder adds a delay)
    # the file name alone: manifests resolve relative paths against their own folder, so the set
    # reads the same from any working directory and after the folder is moved
    return Utterance(u.id, path.name, round(duration, 4), u.text, u.speaker), len(data)


def _stamp(kind: Kind, seed: int, source_sha256: str, noise: NoiseBank | None) -> dict:
    # the source by its content, not its path or time: a copied or moved exp folder keeps its sets
    return {"kind": kind.spec, "seed": seed, "source_sha256": source_sha256,
            "noise_files": noise.files if (noise is not None and kind.name == "noise") else None}


def _cached(folder: Path, stamp: dict) -> bool:
    m, s = folder / "manifest.jsonl", folder / "degrade.json"
    if not (m.is_file() and s.is_file()):
        return False
    try:
        old = json.loads(s.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return {k: old.get(k) for k in stamp} == stamp


def degrade_manifest(manifest: str | Path, kinds: list[str], out: str | Path, seed: int = 0,
                     noise_dir: str | Path | None = None, workers: int = 2, force: bool = False,
                     progress: bool = True, on_kind: Callable[[str], None] | None = None) -> list[str]:
    """Write a degraded copy of ``manifest`` per kind under ``out``.

    Args:
        manifest: the clean manifest (JSONL).
        kinds: kind strings (see ``asr.degrade``), e.g. ["mp3:24", "phone"].
        out: folder; each kind gets ``out/<kind folder>/manifest.jsonl``.
        seed: seed of the random choices (noise).
        noise_dir: folder of noise recordings for ``noise`` kinds; None generates noise.
        workers: threads (the codecs and filters release the GIL).
        force: rebuild kinds that are cached.
        progress: show a progress bar per kind.
        on_kind: called with each kind's summary line as soon as that kind is done.

    Returns:
        one summary line per kind (utterances, hours, measured bit rate, skipped).

    Raises:
        DegradeError: a bad kind, one this machine cannot write, or unusable noise.
        ManifestError: the manifest is missing or holds no utterances.
    """
    manifest, out = Path(manifest), Path(out)
    parsed = [parse_kind(k) for k in kinds]
    for k in parsed:
        check_writable(k)  # before any work: a missing encoder is found in a second, not after an hour
    utts = read_manifest(manifest, strict=False)
    if not utts:
        raise ManifestError(f"{manifest}: no utterances to degrade")
    noise = NoiseBank(noise_dir) if noise_dir and any(k.name == "noise" for k in parsed) else None
    source_sha256 = hashlib.sha256(manifest.read_bytes()).hexdigest()
    lines = []
    for kind in parsed:
        folder = out / kind.folder
        stamp = _stamp(kind, seed, source_sha256, noise)
        if not force and _cached(folder, stamp):
            lines.append(f"{kind.spec}: cached, {folder / 'manifest.jsonl'}")
            if on_kind:
                on_kind(lines[-1])
            continue
        folder.mkdir(parents=True, exist_ok=True)
        # an old manifest must not pass for this build if this one is cut short
        (folder / "manifest.jsonl").unlink(missing_ok=True)
        paths = [folder / name for name in _file_names(utts, kind.suffix)]

        def job(i: int, kind=kind, paths=paths):
            try:
                return _one(utts[i], paths[i], kind, seed, noise)
            except (AudioError, DegradeError) as e:
                return f"{utts[i].id}: {e}"

        done: list[Utterance] = []
        skipped: list[str] = []
        nbytes = 0
        with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
            for r in tqdm(ex.map(job, range(len(utts))), total=len(utts), desc=kind.spec, unit="utt",
                          disable=not progress or None):
                if isinstance(r, str):
                    log.warning("skipping utterance %s", r)
                    skipped.append(r)
                else:
                    done.append(r[0])
                    nbytes += r[1]
        if not done:
            raise DegradeError(f"{manifest}: no utterance could be degraded with {kind.spec} "
                               f"(e.g. {skipped[0]})")
        text = "".join(u.to_json() + "\n" for u in done).encode()
        _atomic_write(folder / "degrade.json", json.dumps(dict(stamp, skipped=skipped), indent=1).encode())
        _atomic_write(folder / "manifest.jsonl", text)
        seconds = sum(u.duration for u in done)
        rate = f", {nbytes * 8 / seconds / 1000:.1f} kbit/s measured (file size)" if kind.codec else ""
        lines.append(f"{kind.spec}: {len(done)} utterances, {seconds / 3600:.2f} h{rate}"
                     f"{f', {len(skipped)} skipped' if skipped else ''} -> {folder / 'manifest.jsonl'}")
        if on_kind:
            on_kind(lines[-1])
    return lines

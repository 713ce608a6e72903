"""Manifests, the audio dataset, duration-bucketed batching and collation.

A manifest is JSON Lines, one utterance per line::

    {"id": "84-121123-0000", "audio": "/data/84-121123-0000.flac", "duration": 2.3,
     "text": "go do you hear", "speaker": "84"}

NeMo's field names (``audio_filepath``) are accepted on read; ``offset`` selects a
segment of a longer recording. Relative audio paths are resolved against the
manifest's folder.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import random
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from asr.audio import AudioError, load_audio, speed_perturb
from asr.errors import ManifestError

log = logging.getLogger("asr.data")


@dataclass(frozen=True)
class Utterance:
    id: str  # unique utterance id
    audio: str  # absolute path of the audio file
    duration: float  # seconds (of the segment when offset is set)
    text: str = ""  # transcript (empty for unlabelled audio)
    speaker: str = ""  # speaker id, for speaker-disjoint splits and per-speaker WER
    offset: float = 0.0  # start of the segment within the file, seconds
    segment: bool = False  # a segment of a longer file (its manifest line has "offset", maybe 0)

    def to_json(self) -> str:
        d = asdict(self)
        if not (d.pop("segment") or d["offset"]):
            del d["offset"]
        return json.dumps(d, ensure_ascii=False)


def parse_manifest_line(line: str, base: Path, where: str) -> Utterance:
    """One JSON line -> Utterance.

    Args:
        line: the JSON text.
        base: folder that relative audio paths are resolved against (the manifest's).
        where: "file:line" for error messages.

    Raises:
        ManifestError: the line is not an object with audio and a numeric duration.
    """
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    audio = d.get("audio", d.get("audio_filepath"))
    if not audio:
        raise ManifestError(f"{where}: missing 'audio' (or 'audio_filepath')")
    if "duration" not in d:
        raise ManifestError(f"{where}: missing 'duration'; run `asr data import` to compute it")
    try:
        duration = float(d["duration"])
        offset = float(d.get("offset", 0.0) or 0.0)
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: 'duration' and 'offset' must be numbers") from None
    if not (math.isfinite(duration) and math.isfinite(offset)) or offset < 0:
        raise ManifestError(f"{where}: 'duration' and 'offset' must be finite and 'offset' not "
                            f"negative (got {duration}, {offset}); run `asr data import` to recompute")
    path = Path(audio)
    if not path.is_absolute():
        path = base / path
    uid = str(d.get("id") or d.get("utt_id") or Path(audio).stem)
    text = d.get("text", "")
    if not isinstance(text, str):
        raise ManifestError(f"{where}: 'text' must be a string")
    return Utterance(uid, str(path), duration, text, str(d.get("speaker", "")), offset, "offset" in d)


def read_manifest(path: str | Path, strict: bool = True, skipped: list[str] | None = None) -> list[Utterance]:
    """Read a JSONL manifest.

    Args:
        path: manifest file.
        strict: raise on the first bad line; otherwise log it, skip it and go on.
        skipped: when given (and not strict), each skipped line's "file:line: reason" is appended.

    Returns:
        the utterances, in file order.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    out = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            where = f"{path}:{n}"
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                err = ManifestError(f"{where}: line is not valid UTF-8")
                if strict:
                    raise err from None
                log.warning("skipping %s", err)
                if skipped is not None:
                    skipped.append(str(err))
                continue
            if not line:
                continue
            try:
                out.append(parse_manifest_line(line, path.parent, where))
            except ManifestError as e:
                if strict:
                    raise
                log.warning("skipping %s", e)
                if skipped is not None:
                    skipped.append(str(e))
    return out


def write_manifest(utts: list[Utterance], path: str | Path) -> None:
    """Write utterances as JSON Lines, atomically (temp file + rename); folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        for u in utts:
            f.write(u.to_json() + "\n")
    tmp.replace(path)


def filter_by_duration(utts: list[Utterance], min_s: float, max_s: float) -> list[Utterance]:
    """Utterances with ``min_s <= duration <= max_s``; the others are counted in a warning."""
    keep = [u for u in utts if min_s <= u.duration <= max_s]
    if len(keep) < len(utts):
        out = [u.id for u in utts if not min_s <= u.duration <= max_s]
        log.warning("skipped %d utterances outside %.2f-%.1f s (e.g. %s)", len(out), min_s, max_s,
                    ", ".join(out[:5]) + (", ..." if len(out) > 5 else ""))
    return keep


def load_utterance(u: Utterance, sample_rate: int = 16000) -> np.ndarray:
    """Read an utterance's audio: its segment (``offset``, ``duration``) of the file.

    At most ``duration`` seconds are decoded (the manifest is the truth that batching
    relied on), so a segment that starts at 0 s of a long recording is not read whole.

    Args:
        u: the utterance.
        sample_rate: target rate.

    Returns:
        float32 array of shape (samples,).

    Raises:
        AudioError: missing, unreadable, empty or non-finite audio (the message names the file).
    """
    return load_audio(u.audio, sample_rate, u.offset, u.duration if u.duration > 0 else None)


class AudioDataset(Dataset):
    """Loads an utterance's audio and token ids; a bad item yields None (reported, skipped).

    ``num_failed`` counts failed loads across DataLoader worker processes too (shared
    memory); ``failures`` lists ``(id, reason)`` of those that failed in this process. Each
    bad utterance is named in a warning the first time it fails in this process (not again
    every epoch). Each batch's ``skipped`` says how many of its items were dropped.
    """

    def __init__(self, utts: list[Utterance], tokenizer=None, sample_rate: int = 16000, augment=None,
                 warned: set[str] | None = None, cache=None):
        self.utts = utts
        self.cache = cache  # asr.wavecache.WaveCache or None: decoded/perturbed waveforms kept
        self.tokenizer = tokenizer
        self.sample_rate = sample_rate
        self.augment = augment  # callable(wav np.ndarray, rng, uid=utterance id, epoch=from 0) -> wav (with the cache: see __getitem__), or None
        self.epoch = 0  # set by the training loop so augmentation differs per epoch, reproducibly
        self.seed = 0
        self.failures: list[tuple[str, str]] = []
        self._num_failed = mp.Value("q", 0)  # shared with worker processes
        # ids already named in a warning by this process; datasets over the same utterances
        # (the CMVN pass and training) share one set
        self._warned = warned if warned is not None else set()

    @property
    def num_failed(self) -> int:
        """Items that could not be loaded so far, in this process and its DataLoader workers."""
        return int(self._num_failed.value)

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int):
        u = self.utts[i]
        try:
            wav = self.waveform(u)
            tokens = self.tokenizer.encode(u.text) if self.tokenizer is not None else []
            if self.augment is not None:
                rng = np.random.default_rng([zlib.crc32(u.id.encode()), self.epoch, self.seed])
                if self.cache is None:
                    wav = self.augment(wav, rng, uid=u.id, epoch=self.epoch)
                else:  # speed and codec variants from the cache (see asr.augment.WaveAugment)
                    wav = self.augment(wav, rng, lambda f: self.waveform(u, f),
                                       lambda tag, make: self.cache.get(self.cache_key(u) + tag, make), u.id,
                                       epoch=self.epoch)
        except (AudioError, ValueError, RuntimeError, MemoryError) as e:
            # One bad utterance must never stop an epoch: report it with its id, count it, skip it.
            # Named once: a file that fails in epoch 1 fails again in every later epoch. (DataLoader
            # workers that are not persistent start from the main process's set each epoch.)
            if u.id not in self._warned:
                self._warned.add(u.id)
                log.warning("skipping utterance %s (%s): %s", u.id, u.audio, e)
            else:
                log.debug("skipping utterance %s again", u.id)
            self.failures.append((u.id, str(e)))
            with self._num_failed.get_lock():
                self._num_failed.value += 1
            return None
        return {"id": u.id, "wav": torch.from_numpy(wav), "tokens": torch.tensor(tokens, dtype=torch.long)}


    def cache_key(self, u: Utterance) -> tuple:
        """The cache key of the utterance's audio; its variants add a tag (speed, codec)."""
        return (u.audio, u.offset, u.duration, self.sample_rate)

    def waveform(self, u: Utterance, speed: float = 1.0) -> np.ndarray:
        """The utterance's waveform at the working rate (played ``speed`` times faster), through
        the cache when there is one."""
        if self.cache is None:
            wav = load_utterance(u, self.sample_rate)
            return wav if speed == 1.0 else speed_perturb(wav, speed, self.sample_rate)
        key = self.cache_key(u) + (speed,)
        if speed == 1.0:
            return self.cache.get(key, lambda: load_utterance(u, self.sample_rate))
        return self.cache.get(key, lambda: speed_perturb(self.waveform(u), speed, self.sample_rate))


def collate(items: list) -> dict | None:
    """Pad a list of dataset items into a batch; None items (bad audio) are dropped.

    Returns:
        {"ids": [B], "wavs": (B, S), "wav_lens": (B,), "tokens": (B, L), "token_lens": (B,),
         "skipped": int} or None when every item was bad.
    """
    good = [x for x in items if x is not None]
    if not good:
        return None
    wav_lens = torch.tensor([x["wav"].numel() for x in good])
    tok_lens = torch.tensor([x["tokens"].numel() for x in good])
    wavs = torch.zeros(len(good), int(wav_lens.max()))
    tokens = torch.zeros(len(good), max(1, int(tok_lens.max())), dtype=torch.long)
    for i, x in enumerate(good):
        wavs[i, : wav_lens[i]] = x["wav"]
        tokens[i, : tok_lens[i]] = x["tokens"]
    return {
        "ids": [x["id"] for x in good],
        "wavs": wavs,
        "wav_lens": wav_lens,
        "tokens": tokens,
        "token_lens": tok_lens,
        "skipped": len(items) - len(good),
    }


class BucketBatchSampler(Sampler[list[int]]):
    """Dynamic batches of similar-length utterances, capped by total seconds.

    Utterances are sorted by duration and cut into ``num_buckets`` buckets; each epoch
    shuffles within buckets (seeded by seed + epoch), packs batches up to
    ``max_seconds`` of padded audio, and shuffles the batch order. For DDP each rank
    takes every ``num_replicas``-th batch (the batch list is padded so that all ranks
    run the same number of steps).
    """

    def __init__(
        self,
        durations: list[float],
        max_seconds: float,
        max_batch_size: int = 64,
        num_buckets: int = 10,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        self.durations = list(durations)
        self.max_seconds = max_seconds
        self.max_batch_size = max_batch_size
        self.num_buckets = max(1, num_buckets)
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start_batch = 0  # batches of this epoch already done (exact resume)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def _all_batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        order = sorted(range(len(self.durations)), key=lambda i: self.durations[i])
        size = math.ceil(len(order) / self.num_buckets) if order else 1
        buckets = [order[i : i + size] for i in range(0, len(order), size)]
        batches: list[list[int]] = []
        for b in buckets:
            if self.shuffle:
                rng.shuffle(b)
                b.sort(key=lambda i: self.durations[i])  # stable sort keeps shuffled ties
                # Shuffle in small windows so batches differ between epochs but stay tight.
                chunks = [b[i : i + 4] for i in range(0, len(b), 4)]
                for c in chunks:
                    rng.shuffle(c)
                b = [i for c in chunks for i in c]
            cur: list[int] = []
            cur_max = 0.0
            for i in b:
                d = self.durations[i]
                new_max = max(cur_max, d)
                if cur and (new_max * (len(cur) + 1) > self.max_seconds or len(cur) >= self.max_batch_size):
                    batches.append(cur)
                    cur, new_max = [], d
                cur.append(i)
                cur_max = new_max
            if cur:
                batches.append(cur)
        if self.shuffle:
            rng.shuffle(batches)
        if self.num_replicas > 1 and batches:
            extra = (-len(batches)) % self.num_replicas
            batches = batches + [batches[i % len(batches)] for i in range(extra)]  # cycle if few
            batches = batches[self.rank :: self.num_replicas]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._all_batches()[self.start_batch :]

    def __len__(self) -> int:
        return max(0, len(self._all_batches()) - self.start_batch)


def padding_fraction(batches: list[list[int]], durations: list[float]) -> float:
    """Fraction of padded audio in a list of batches (0 = no padding)."""
    total = sum(max(durations[i] for i in b) * len(b) for b in batches)
    real = sum(durations[i] for b in batches for i in b)
    return 1.0 - real / total if total else 0.0

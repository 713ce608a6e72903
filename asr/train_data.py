"""The training loop's data side: manifests and tokenizer, CTC-feasibility filtering, bucketed
loaders, the waveform cache (filled before epoch 1 by worker processes), the CMVN pass."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from asr.audio import speed_perturb
from asr.channel import encode_variant, variant_tag
from asr.config import Config
from asr.data import (
    AudioDataset,
    BucketBatchSampler,
    collate,
    filter_by_duration,
    load_utterance,
    read_manifest,
)
from asr.errors import TrainingError
from asr.features import CMVNAccumulator
from asr.frames import frame_geometry, min_frames_for
from asr.text import train_tokenizer
from asr.wavecache import dequantize, quantize

log = logging.getLogger("asr.train")


def filter_trainable(utts, tokenizer, cfg: Config, name: str):
    """Drop utterances the tokenizer cannot encode or whose targets cannot fit CTC's frames.

    Args:
        utts: list of Utterance.
        tokenizer: encodes text to ids (blank = 0 is never produced).
        cfg: feature and subsampling settings decide the output frame count.
        name: "train" or "dev", for the warning.
    Returns:
        the usable utterances; each kind of skip is logged once with a count and an example.
    """
    geometry = frame_geometry(cfg.feature, cfg.model.subsampling)
    keep, bad_text, too_long = [], [], []
    for u in utts:
        try:
            toks = tokenizer.encode(u.text)
        except ValueError as e:
            bad_text.append((u.id, str(e)))
            continue
        if not toks or min_frames_for(toks) > geometry.seconds_to_output_frames(u.duration):
            too_long.append(u.id)
            continue
        keep.append(u)
    if bad_text:
        log.warning("%s: skipped %d utterances with text the tokenizer cannot encode (e.g. %s: %s)",
                    name, len(bad_text), *bad_text[0])
    if too_long:
        log.warning("%s: skipped %d utterances with empty text or more CTC targets than output "
                    "frames after %s subsampling (e.g. %s); use less subsampling or a smaller "
                    "token inventory to keep them", name, len(too_long), cfg.model.subsampling,
                    too_long[0])
    return keep


def read_training_data(cfg: Config, tokenizer=None):
    """The run's utterances and tokenizer: manifests read (bad lines reported and skipped), the
    duration limits applied, the tokenizer trained on the training text (or the resumed run's),
    and the utterances it cannot encode or CTC cannot fit dropped (counted in the log).

    Args:
        cfg: data.* (manifests, durations), tokenizer.*, and the frame geometry's settings.
        tokenizer: a resumed run's tokenizer; None trains one.
    Returns:
        (tokenizer, training utterances, dev utterances ([] without a dev manifest)).
    Raises:
        TrainingError: no training manifest, or no usable training utterance.
    """
    if not cfg.data.train_manifest:
        raise TrainingError("data.train_manifest is not set (pass data.train_manifest=PATH)")
    train_utts = read_manifest(cfg.data.train_manifest, strict=False)
    train_utts = filter_by_duration(train_utts, cfg.data.min_duration, cfg.data.max_duration)
    if tokenizer is None:
        tokenizer = train_tokenizer([u.text for u in train_utts], cfg.tokenizer)
    train_utts = filter_trainable(train_utts, tokenizer, cfg, "train")
    if not train_utts:
        raise TrainingError(f"{cfg.data.train_manifest}: no usable training utterances")
    dev_utts = []
    if cfg.data.dev_manifest:
        dev_utts = read_manifest(cfg.data.dev_manifest, strict=False)
        if hasattr(tokenizer, "prepare"):  # phones: G2P for the dev words, at once, logged
            tokenizer.prepare([u.text for u in dev_utts], "dev")
        dev_utts = filter_trainable(filter_by_duration(dev_utts, cfg.data.min_duration, cfg.data.max_duration),
                                    tokenizer, cfg, "dev")
    return tokenizer, train_utts, dev_utts


def make_loader(utts, tokenizer, cfg: Config, train: bool, rank=0, world=1, augment=None, pin=False,
                warned: set[str] | None = None, cache=None):
    """DataLoader over duration buckets; the training one is sharded over DDP ranks. ``warned``:
    ids of unloadable utterances already named in a warning (see AudioDataset); ``cache``: an
    asr.wavecache.WaveCache shared by the loaders of one run (or None)."""
    ds = AudioDataset(utts, tokenizer, cfg.feature.sample_rate, augment=augment, warned=warned, cache=cache)
    ds.seed = cfg.train.seed
    sampler = BucketBatchSampler(
        [u.duration for u in utts],
        cfg.data.max_batch_seconds,
        cfg.data.max_batch_size,
        cfg.data.num_buckets,
        shuffle=train,
        seed=cfg.train.seed,
        num_replicas=world if train else 1,
        rank=rank if train else 0,
    )
    return DataLoader(
        ds,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.data.num_workers,
        worker_init_fn=_worker_init,
        pin_memory=pin,
        # Its own generator: iterating must not draw from the global torch RNG, or a resumed
        # epoch (a new iterator) would shift every later random draw.
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )


def make_cache(cfg: Config):
    """The run's WaveCache for ``data.cache=ram`` (None when off, or with loader workers)."""
    if cfg.data.cache == "off":
        if cfg.augment.channel.codec_prob > 0 and cfg.data.num_workers == 0:
            log.warning("augment.channel.codec_prob > 0 without data.cache=ram or data.num_workers: every "
                        "codec draw is encoded in the training process (a codec runs at 17-200x real "
                        "time); set data.cache=ram to encode each variant once per run")
        return None
    if cfg.data.num_workers > 0:
        log.warning("data.cache=ram is not used with data.num_workers=%d (workers restart every "
                    "epoch, so each would decode again); set data.num_workers=0 to use it",
                    cfg.data.num_workers)
        return None
    from asr.wavecache import WaveCache

    return WaveCache(cfg.data.cache_max_gb)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # several torch processes spinning on few cores is ~10x slower


def utterance_waves(u, sample_rate: int, speeds: list[float], codecs: list[tuple[int, str]]) -> list[tuple]:
    """Every waveform training asks the wave cache for, for one utterance (run by worker processes).

    Args:
        u: the asr.data.Utterance.
        sample_rate: the working rate.
        speeds: speed factors other than 1 (speed-perturbed variants of the decoded audio).
        codecs: ``(k, codec kind)`` of each codec variant (asr.channel.encode_variant).
    Returns:
        ``[(tag, int16 q, scale, error)]``: tag ``(1.0,)`` for the decoded audio, ``(f,)`` for
        speed ``f``, asr.channel.variant_tag for a codec variant; each made from the decoded
        audio as the cache holds it (rounded to 16 bits), exactly as the training process would
        make it; ``q`` None and ``error`` the message for a variant whose encoder failed.
    Raises:
        AudioError (and the like): the audio cannot be read.
    """
    q, scale = quantize(load_utterance(u, sample_rate))
    out = [((1.0,), q, scale, None)]
    base = dequantize(q, scale)
    for f in speeds:
        out.append(((f,), *quantize(speed_perturb(base, f, sample_rate)), None))
    for k, spec in codecs:
        tag = variant_tag(k, spec)
        try:
            out.append((tag, *quantize(encode_variant(base, spec, sample_rate)), None))
        except Exception as e:  # one encoder failing on one waveform: that draw tries again (or skips it)
            out.append((tag, None, 0.0, str(e)))
    return out


def fill_wave_cache(ds: AudioDataset, processes: int, show: bool = True) -> dict:
    """Fill ``ds``'s wave cache before training, in worker processes of one thread each.

    For every utterance: the decoded audio, its speed-perturbed variants and its codec variants
    (those ``ds.augment`` can draw), made by ``processes`` worker processes (``utterance_waves``)
    instead of by the training thread at first use: decoding, resampling and the codecs (17-200x
    real time on one core) then never hold up a training step, and the CMVN pass reads the cache.
    The same samples as when made at first use. Audio that cannot be read is reported and skipped
    (the CMVN pass and training meet it again and skip the utterance, as without this pass); a
    full cache (data.cache_max_gb) stops the pass.

    Args:
        ds: an AudioDataset with a cache (``data.cache=ram``).
        processes: worker processes (>= 1).
        show: progress bar (rate and ETA).
    Returns:
        {"utts", "waveforms", "seconds" (audio made), "wall" (seconds), "failed" (utterances or
        variants not made)}.
    """
    aug = ds.augment
    speeds = sorted({float(f) for f in aug.cfg.speed_perturb} - {1.0}) if aug is not None else []
    channel = aug.channel if aug is not None and aug.channel.active else None
    todo = []  # (utterance, its codec variants) for those with a waveform not cached yet
    for u in ds.utts:
        codecs = [(k, kind.spec) for k, kind in channel.variant_kinds(u.id)] if channel is not None else []
        tags = [(1.0,), *[(f,) for f in speeds], *[variant_tag(k, c) for k, c in codecs]]
        if any(ds.cache_key(u) + t not in ds.cache for t in tags):
            todo.append((u, codecs))
    stats = {"utts": 0, "waveforms": 0, "seconds": 0.0, "wall": 0.0, "failed": 0}
    if not todo:
        return stats
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc="wave cache", unit="utt", leave=False, disable=not show or None)

    def collect(f: Future, u) -> None:
        bar.update(1)
        try:
            waves = f.result()
        except BrokenProcessPool:
            raise
        except Exception as e:  # unreadable audio: named here, skipped by training as before
            stats["failed"] += 1
            log.warning("wave cache: %s (%s) not read before training: %s", u.id, u.audio, e)
            return
        stats["utts"] += 1
        for tag, q, scale, err in waves:
            if q is None:
                stats["failed"] += 1
                log.warning("wave cache: %s variant %s not made before training: %s", u.id, tag, err)
            elif ds.cache_key(u) + tag not in ds.cache:
                ds.cache.put(ds.cache_key(u) + tag, q, scale)
                stats["waveforms"] += 1
                stats["seconds"] += q.size / ds.sample_rate

    ctx = mp.get_context("spawn")  # no fork of a process holding torch's thread pools
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the workers' numpy and torch start with one thread
    pending: list[tuple[Future, object]] = []
    try:
        with ProcessPoolExecutor(processes, mp_context=ctx, initializer=_worker_init, initargs=(0,)) as pool:
            for u, codecs in todo:
                if ds.cache.full:
                    log.warning("wave cache: full (data.cache_max_gb); the rest is made at first use")
                    break
                pending.append((pool.submit(utterance_waves, u, ds.sample_rate, speeds, codecs), u))
                while len(pending) >= 4 * processes or (pending and pending[0][0].done()):
                    collect(*pending.pop(0))  # in order, a bounded number in flight
            for item in pending:
                collect(*item)
    except BrokenProcessPool as e:  # a worker killed (e.g. out of memory): training makes the rest itself
        log.warning("wave cache: the worker processes stopped (%s); the rest is made at first use", e)
    finally:
        if env_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_threads
        bar.close()
    stats["wall"] = time.perf_counter() - t0
    return stats


# ---------------------------------------------------------------- model and optimisation


@torch.no_grad()
def compute_cmvn(model, utts, tokenizer, cfg: Config, device, rank: int = 0, world: int = 1,
                 warned: set[str] | None = None, cache=None) -> None:
    """Global mean/std of raw features over the training set; DDP ranks each take a shard
    (and fill ``cache``, when given, with its decoded waveforms)."""
    acc = CMVNAccumulator(model.frontend.dim)
    loader = make_loader(utts[rank::world], tokenizer, cfg, False, warned=warned, cache=cache)
    for batch in tqdm(loader, desc="cmvn", unit="batch", leave=False, disable=rank != 0 or None):
        if batch is None:
            continue
        feats, lens = model.frontend.raw_features(batch["wavs"].to(device), batch["wav_lens"].to(device))
        acc.update(feats, lens)
    if world > 1:
        sums = torch.cat([torch.tensor([float(acc.n)], dtype=torch.float64), acc.sum, acc.sumsq])
        sums = sums.to(device)
        dist.all_reduce(sums)
        sums = sums.cpu()
        d = model.frontend.dim
        acc.n, acc.sum, acc.sumsq = int(sums[0]), sums[1 : 1 + d], sums[1 + d :]
    mean, std = acc.result()
    model.frontend.set_cmvn(mean.to(device), std.to(device))

"""The training loop's data side: manifests and tokenizer, CTC-feasibility filtering, bucketed
loaders, the waveform cache (and its codec variants, encoded before epoch 1), the CMVN pass."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from asr.channel import ChannelAugment, encode_variant, variant_tag
from asr.config import Config
from asr.data import AudioDataset, BucketBatchSampler, collate, filter_by_duration, read_manifest
from asr.errors import AudioError, TrainingError
from asr.features import CMVNAccumulator
from asr.frames import frame_geometry, min_frames_for
from asr.text import train_tokenizer

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


def _one_thread() -> None:
    torch.set_num_threads(1)


def encode_codec_variants(ds: AudioDataset, channel: ChannelAugment, processes: int, show: bool = True) -> dict:
    """Encode every codec variant of every utterance of ``ds`` into its wave cache, before training.

    The training process reads each waveform (through the cache, so it is decoded once) and hands
    it to ``processes`` worker processes of one thread each, which run the encoder and decoder
    (``asr.channel.encode_variant``); the results go into the cache under the keys the
    augmentation asks for, so training never waits for an encoder and draws exactly what it would
    have encoded itself. A waveform that cannot be read or encoded is reported and skipped (the
    training draw meets it again and skips the utterance as usual); a full cache stops the pass.

    Args:
        ds: the training AudioDataset, with a cache (``data.cache=ram``).
        channel: the run's ChannelAugment (its codec kinds choose each variant).
        processes: worker processes (>= 1).
        show: progress bar.
    Returns:
        {"variants": encoded, "seconds": audio seconds encoded, "wall": seconds, "failed": n}.
    """
    todo = [(u, [(k, kind) for k, kind in channel.variant_kinds(u.id)
                 if ds.cache_key(u) + variant_tag(k, kind) not in ds.cache]) for u in ds.utts]
    todo = [(u, ks) for u, ks in todo if ks]
    stats = {"variants": 0, "seconds": 0.0, "wall": 0.0, "failed": 0}
    if not todo:
        return stats
    t0 = time.perf_counter()
    window = 4 * processes  # variants in flight: bounded memory
    pending: list[tuple[Future, object, int, object]] = []
    bar = tqdm(total=sum(len(ks) for _, ks in todo), desc="codec variants", unit="variant", leave=False,
               disable=not show or None)

    def collect(f: Future, u, k: int, kind) -> None:
        try:
            out = f.result()
        except Exception as e:  # an encoder that fails on one waveform: its draw tries again (or skips it)
            stats["failed"] += 1
            log.warning("codec variant %d (%s) of %s not encoded before training: %s", k, kind.spec, u.id, e)
        else:
            ds.cache.get(ds.cache_key(u) + variant_tag(k, kind), lambda: out)
            stats["variants"] += 1
            stats["seconds"] += out.size / ds.sample_rate
        bar.update(1)

    ctx = mp.get_context("spawn")  # no fork of a process holding torch's thread pools
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the workers' numpy/torch start with one thread
    try:
        with ProcessPoolExecutor(processes, mp_context=ctx, initializer=_one_thread) as pool:
            for u, ks in todo:
                if ds.cache.full:
                    log.warning("data.cache is full: the remaining codec variants are encoded at their first draw")
                    break
                try:
                    wav = ds.waveform(u)
                except (AudioError, ValueError, RuntimeError, MemoryError) as e:
                    stats["failed"] += len(ks)
                    bar.update(len(ks))
                    log.warning("codec variants of %s not encoded before training (training skips it): %s", u.id, e)
                    continue
                for k, kind in ks:
                    pending.append((pool.submit(encode_variant, wav, kind.spec, ds.sample_rate), u, k, kind))
                while len(pending) >= window or (pending and pending[0][0].done()):
                    collect(*pending.pop(0))
            for item in pending:
                collect(*item)
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

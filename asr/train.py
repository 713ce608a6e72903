"""The training loop, readable top to bottom.

    train(cfg)
      ├─ setup: device, threads, seeds, run folder, logging (asr.runlog), DDP
      ├─ data: manifests -> tokenizer -> filters (asr.train_data) -> bucketed loaders, dev set (asr.validation)
      │        -> the wave cache filled by worker processes (decoded audio, speed and codec variants)
      ├─ model: frontend (+ CMVN statistics) + CTC model, optimizer, LR schedule
      ├─ resume from <run>/checkpoints/last.pt if it exists (asr.checkpoint.restore_training)
      └─ for each epoch: train_one_epoch (asr.update.Updater per update) -> validate -> save (-> early stop)
         then: the full dev set once (with train.valid_subset) -> model.pt (best or average of the best)

Works on CPU (tested) and CUDA (AMP, pinned memory, packed RNNs); DDP through
``torchrun --nproc_per_node N -m asr train ...``. Device, precision, seeding and process-group
helpers live in asr.runtime; train.log, metrics.jsonl and TensorBoard in asr.runlog; optimizers
and LR schedules in asr.optim; the CTC forward (loss) in asr.ctc; one optimizer update (exact
over ranks and micro-batches, non-finite updates skipped) in asr.update; dev metrics and which dev
utterances are scored when in asr.validation; checkpoint writing, resuming and retention in
asr.checkpoint.

Exactness. An update is the mean CTC loss over every utterance of its global batch
(``accum_steps`` micro-batches on each of ``world`` ranks), whatever the micro-batch
sizes: so N ranks give the same update as one process with ``accum_steps x N``. Dropout
and SpecAugment draw from a generator seeded by (seed, step, micro-batch index), and the
DataLoader uses its own generator, so a resumed run (model, optimizer, scheduler,
scaler, sampler position and RNG states restored) repeats the uninterrupted one step
for step.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from asr.augment import WaveAugment
from asr.checkpoint import (
    build_model,
    init_units,
    init_weights,
    read_checkpoint,
    restore_training,
    retain_checkpoints,
    save_training,
    write_final_model,
)
from asr.config import Config, save_config, to_dict
from asr.data import BucketBatchSampler
from asr.model import count_parameters, set_direction_parallel
from asr.optim import LRSchedule, make_optimizer
from asr.parallel_rnn import resolve_direction_parallel
from asr.runlog import RunLog
from asr.runtime import (
    TrainingError,
    all_reduce_sum,
    init_distributed,
    keep_freed_memory,
    resolve_amp,
    seed_everything,
    select_device,
)
from asr.selection import Selection
from asr.text import tokenizer_from_dict
from asr.train_data import (
    compute_cmvn,
    fill_wave_cache,
    make_cache,
    make_loader,
    read_training_data,
)
from asr.update import Updater
from asr.validation import Validator

log = logging.getLogger("asr.train")


@dataclass
class TrainState:
    """Run state (kept apart from config): everything needed to resume exactly."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer updates done
    batch_in_epoch: int = 0  # batches of the current epoch already consumed (on each rank)
    best_wer: float = math.inf  # best dev WER so far (PER for a phone model)
    bad_epochs: int = 0  # epochs since the best dev WER (early stopping)
    plateau_scale: float = 1.0  # LR factor from reduce-on-plateau
    history: list = field(default_factory=list)  # per-epoch metrics
    best: list = field(default_factory=list)  # [(wer, path)] of kept best checkpoints
    audio_seconds: float = 0.0  # audio trained on so far (all ranks)


# ---------------------------------------------------------------- the trainer


class Trainer:
    """Holds the pieces of one training run; methods are the phases of the loop."""

    def __init__(self, cfg: Config, resume: bool = True, max_steps: int = 0, save_every_steps: int = 0):
        self.cfg = cfg
        self.max_steps = max_steps  # stop after this many updates (tests, benchmarks); 0 = no limit
        self.save_every_steps = save_every_steps  # mid-epoch last.pt for exact resume after a crash
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = select_device(cfg.train.device)
        self.rank, self.world = init_distributed(self.device)
        self.is_main = self.rank == 0
        if self.device.type == "cpu":
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            torch.set_num_threads(cfg.train.threads or max(1, (os.cpu_count() or 1) // local_world))
            torch.set_flush_denormal(True)  # denormal CTC gradients make the backward pass 4x slower
            keep_freed_memory()  # no page faults on every step's activations
        self.amp, self.amp_reason = resolve_amp(cfg.train.amp, self.device)
        seed_everything(cfg.train.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(exist_ok=True)
        self.state = TrainState()
        last = self.ckpt_dir / "last.pt"
        self.resume_obj = read_checkpoint(last) if (resume and last.is_file()) else None
        if self.world > 1:
            (resuming,) = all_reduce_sum([float(self.resume_obj is not None)], self.device, self.world)
            if resuming not in (0, self.world):
                raise TrainingError(f"only {int(resuming)} of {self.world} processes found {last}: "
                                    "run_dir must be on storage that every node shares")
        # train.log, metrics.jsonl (a fresh run starts a fresh file) and TensorBoard
        self.runlog = RunLog(self.run_dir, self.rank, fresh=self.resume_obj is None)
        self._setup_data_and_model()

    # -- setup

    def _setup_data_and_model(self) -> None:
        cfg = self.cfg
        init = read_checkpoint(cfg.train.init_from) if cfg.train.init_from and self.resume_obj is None else None
        units = self.resume_obj["tokenizer"] if self.resume_obj is not None else None  # a resumed run's units
        if init is not None:  # fine-tuning: that model's units, if of the config's kind
            units = init_units(init, cfg.train.init_from, cfg.tokenizer.kind)
        self.tokenizer, train_utts, dev_utts = read_training_data(
            cfg, tokenizer_from_dict(units) if units is not None else None)
        pin = self.device.type == "cuda"
        augment = WaveAugment(cfg.augment, cfg.feature.sample_rate)
        warned: set[str] = set()  # unloadable training files are named once, not in every pass
        self.cache = make_cache(cfg)  # decoded and speed-perturbed waveforms, once per run
        self.train_loader = make_loader(train_utts, self.tokenizer, cfg, True, self.rank, self.world,
                                        augment if augment.active else None, pin, warned, self.cache)
        self.validator = Validator(dev_utts, self.tokenizer, cfg, pin, self.cache, self.rank, self.world)
        self.selection = Selection(cfg, self.tokenizer, pin, self.cache)  # train.select_on: sets ranking epochs
        self.score_name = self.validator.metric  # what ranks the checkpoints (the last epoch's, for the log)
        self.train_seconds = sum(u.duration for u in train_utts)
        if self.cache is not None and cfg.data.cache_workers:
            self._fill_cache()  # before the CMVN pass, which then reads the cache

        self.model = build_model(cfg, len(self.tokenizer)).to(self.device)
        n_params = count_parameters(self.model)
        log.info("model: %s %dx%d%s%s, %s subsampling, %s parameters (%.2fM), vocab %d, device %s%s%s",
                 cfg.model.rnn_type, cfg.model.num_layers, cfg.model.hidden_size,
                 f" proj {cfg.model.proj_size}" if cfg.model.proj_size else "",
                 " bidirectional" if cfg.model.bidirectional else "", cfg.model.subsampling,
                 f"{n_params:,}", n_params / 1e6, len(self.tokenizer), self.device,
                 f", AMP {self.amp}" if self.amp else "",
                 f", DDP world {self.world}" if self.world > 1 else "")
        log.info("precision: %s autocast around the model, CTC loss and features in fp32 (%s)"
                 if self.amp else "precision: %s (%s)", str(self.amp or "fp32").replace("torch.", ""),
                 self.amp_reason)
        par, why = resolve_direction_parallel(cfg.train.direction_parallel, self.device, cfg.model.rnn_type,
                                              cfg.model.bidirectional, torch.get_num_threads())
        set_direction_parallel(self.model, par)  # runtime only: the checkpoints are the same either way
        log.info("directions of each layer: %s (%s)", "in parallel, one core each" if par else "in turn", why)
        log.info("data: %d training utterances (%.2f h), %s%s", len(train_utts), self.train_seconds / 3600,
                 self.validator.describe(),
                 f"; waveforms cached in RAM as int16 (up to {cfg.data.cache_max_gb:g} GB)" if self.cache else "")
        self.ctc_module = self.model.ctc
        if self.world > 1:
            self.ctc_module = DDP(self.model.ctc,
                                  device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = make_optimizer(self.model.ctc.parameters(), cfg)
        steps_per_epoch = math.ceil(len(self.train_loader.batch_sampler) / cfg.train.accum_steps)
        self.schedule = LRSchedule(self.optimizer, cfg, steps_per_epoch * cfg.train.epochs, self.state)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.updater = Updater(cfg, self.model, self.ctc_module, self.optimizer, self.schedule, self.scaler,
                               self.device, self.amp, self.rank, self.world)

        if self.resume_obj is not None:
            self._restore(self.resume_obj)
        elif init is not None:
            init_weights(init, cfg.train.init_from, self.model)
            log.info("fine-tuning: weights, units and CMVN from %s", cfg.train.init_from)
        elif cfg.feature.cmvn == "global":
            compute_cmvn(self.model, train_utts, self.tokenizer, cfg, self.device, self.rank, self.world,
                         warned, self.cache)
        if self.is_main:
            save_config(cfg, self.run_dir / "config.yaml")

    def _fill_cache(self) -> None:
        """Decoded audio, speed and codec variants into the wave cache before epoch 1 (asr.train_data)."""
        n = self.cfg.data.cache_workers
        n = n if n > 0 else torch.get_num_threads()
        st = fill_wave_cache(self.train_loader.dataset, n, self.is_main)
        log.info("wave cache: %d waveforms of %d utterances (%.2f h of audio) made before training in %.0f s by "
                 "%d processes (%.0f audio-s/s)%s", st["waveforms"], st["utts"], st["seconds"] / 3600, st["wall"],
                 n, st["seconds"] / max(1e-9, st["wall"]),
                 f"; {st['failed']} not made (made at first use, or the utterance skipped)" if st["failed"] else "")

    def _restore(self, obj: dict) -> None:
        last = self.ckpt_dir / "last.pt"
        saved = restore_training(obj, last, self.model, self.optimizer, self.schedule, self.scaler)
        names = {f.name for f in dataclasses.fields(TrainState)}
        for k, v in saved.items():
            if k in names:
                setattr(self.state, k, v)
        self.runlog.resumed_at(self.state.step)
        log.info("resumed from %s: epoch %d, batch %d, step %d", last, self.state.epoch + 1,
                 self.state.batch_in_epoch, self.state.step)

    # -- checkpoints

    def _save(self, path: Path) -> None:
        save_training(path, self.cfg, self.tokenizer, self.model, self.optimizer, self.schedule, self.scaler,
                      dataclasses.asdict(self.state))

    def save_last(self) -> None:
        if self.is_main:
            self._save(self.ckpt_dir / "last.pt")

    def save_epoch(self, wer: float | None) -> None:
        """Epoch checkpoint (keep the last N), best-by-dev-error-rate checkpoints (keep the best N), last.pt."""
        if not self.is_main:
            return
        c = self.cfg.train
        self._save(self.ckpt_dir / f"epoch-{self.state.epoch}.pt")
        self.state.best = retain_checkpoints(self.ckpt_dir, self.state.epoch, wer, self.state.best,
                                             c.keep_best, c.keep_last)
        self._save(self.ckpt_dir / "last.pt")

    def write_final_model(self) -> Path:
        """Write <run>/model.pt: the average of the best N checkpoints, or the best, or the last."""
        out = self.run_dir / "model.pt"
        what = write_final_model(self.ckpt_dir, self.state.best, self.cfg.train.average_best, out,
                                 self.score_name)
        log.info("model.pt = %s", what)
        return out

    # -- the loop

    def train_step(self, batches: list[dict]) -> dict | None:
        """One optimizer update over this rank's micro-batches (asr.update.Updater)."""
        return self.updater(batches, self.state)

    def train_one_epoch(self) -> dict:
        """Train until the epoch ends (or max_steps); returns epoch metrics."""
        cfg, st = self.cfg, self.state
        sampler: BucketBatchSampler = self.train_loader.batch_sampler
        sampler.set_epoch(st.epoch, st.batch_in_epoch)
        self.train_loader.dataset.epoch = st.epoch
        self.model.train()
        bar = tqdm(total=st.batch_in_epoch + len(sampler), initial=st.batch_in_epoch,
                   desc=f"epoch {st.epoch + 1}/{cfg.train.epochs}", unit="batch",
                   disable=not self.is_main or None, dynamic_ncols=True)
        t0, secs, loss_sum, n_sum, stopped = time.time(), 0.0, 0.0, 0, False
        self.optimizer.zero_grad(set_to_none=True)
        batches = iter(self.train_loader)
        while group := list(itertools.islice(batches, cfg.train.accum_steps)):
            st.batch_in_epoch += len(group)
            bar.update(len(group))
            out = self.train_step(group)
            if out is None:
                continue
            secs += out["audio_seconds"]
            if out["finite"]:
                loss_sum += out["loss"] * out["utts"]
                n_sum += out["utts"]
            # 5. log: progress bar, then metrics.jsonl, TensorBoard and train.log (asr.runlog)
            rate = secs / max(1e-9, time.time() - t0)
            bar.set_postfix(loss=f"{loss_sum / max(1, n_sum):.3f}", lr=f"{out['lr']:.2e}",
                            audio_s_per_s=f"{rate:.0f}")
            self.runlog.update({"step": st.step, "epoch": st.epoch + 1, "batch": st.batch_in_epoch,
                             **{k: out[k] for k in ("loss", "utts", "lr", "grad_norm", "audio_seconds")},
                             "audio_s_per_s": rate}, loss_sum / max(1, n_sum), cfg.train.log_every)
            # 6. optional mid-epoch validation and checkpoint
            if cfg.train.eval_every and st.step % cfg.train.eval_every == 0:
                self.runlog.dev(self.validate(), st.epoch + 1, st.step)
            if self.save_every_steps and st.step % self.save_every_steps == 0:
                self.save_last()
            if self.max_steps and st.step >= self.max_steps:
                stopped = True
                break
        bar.close()
        elapsed = time.time() - t0
        return {"train_loss": loss_sum / max(1, n_sum), "epoch_seconds": elapsed,
                "audio_seconds_per_second": secs / max(1e-9, elapsed), "stopped": stopped}

    def validate(self) -> dict:
        """Dev metrics for choosing checkpoints (asr.validation: the subset, or the whole dev set)."""
        return self.validator.run(self.model, self.device, self.amp)

    def fit(self) -> Path:
        """Train to the end (or early stop); returns <run>/model.pt (last.pt after max_steps)."""
        cfg, st = self.cfg, self.state
        log.info("run folder %s; config written to config.yaml", self.run_dir)
        while st.epoch < cfg.train.epochs:
            failed_before = self.train_loader.dataset.num_failed
            metrics = self.train_one_epoch()
            # utterances whose audio could not be loaded (this rank's shard); each was logged by id
            metrics["failed_utts"] = self.train_loader.dataset.num_failed - failed_before
            if metrics.pop("stopped"):
                self.save_last()
                log.info("stopped after %d steps (max_steps); resume by running again", st.step)
                return self.ckpt_dir / "last.pt"
            st.epoch += 1
            st.batch_in_epoch = 0
            dev = self.validate()
            if self.selection.loaders:  # degraded dev copies etc. (train.select_on)
                dev.update(self.validator.share(self.selection.validate(self.model, self.device, self.amp)
                                                if self.is_main else {}))
            score_name, wer = self.selection.score(dev)  # dev WER (PER for phones), or the mean over select_on
            self.score_name = score_name
            metrics.update(dev)
            improved = wer is not None and wer < st.best_wer
            if improved:
                st.best_wer, st.bad_epochs = wer, 0
            else:
                st.bad_epochs += 1
            self.schedule.epoch_end(improved or wer is None)
            metrics["epoch"] = st.epoch
            st.history.append(metrics)
            log.info("epoch %d: train loss %.4f, %.0f audio-s/s", st.epoch, metrics["train_loss"],
                     metrics["audio_seconds_per_second"])
            if metrics["failed_utts"]:
                log.warning("epoch %d: skipped %d utterances whose audio could not be loaded (each named "
                            "once, when it first failed; `asr data validate` lists them all)", st.epoch,
                            metrics["failed_utts"])
            self.runlog.dev(dev, st.epoch, st.step)
            self.save_epoch(wer)
            if self.cache is not None and st.epoch == 1:
                c = self.cache
                log.info("wave cache: %d waveforms, %.2f GB, %d hits / %d decodes so far", len(c),
                         c.nbytes / 2**30, c.hits, c.misses)
            if cfg.train.patience and wer is not None and st.bad_epochs >= cfg.train.patience:
                log.info("early stop: dev %s has not improved for %d epochs", score_name, st.bad_epochs)
                break
        # the subset chose the checkpoints; the full dev set scores the last model once
        full = self.validator.final(self.model, self.device, self.amp, st.history[-1] if st.history else None)
        if full:
            st.history[-1].update(full)
            self.runlog.dev(full, st.epoch, st.step)
        if self.is_main:
            out = self.write_final_model()
            (self.run_dir / "history.json").write_text(json.dumps(st.history, indent=1))
            log.info("final model: %s", out)
        self.runlog.close()
        return self.run_dir / "model.pt"


def train(cfg: Config, resume: bool = True, max_steps: int = 0, save_every_steps: int = 0) -> Path:
    """Train (or resume) a model as configured.

    Args:
        cfg: the resolved config; it is written to <run_dir>/config.yaml and every checkpoint.
        resume: continue from <run_dir>/checkpoints/last.pt when it exists.
        max_steps: stop (resumably) after this many updates in total; 0 = no limit.
        save_every_steps: also write last.pt every N updates (exact mid-epoch resume).
    Returns:
        the final model file (<run_dir>/model.pt), or last.pt when stopped by max_steps.
    """
    try:
        trainer = Trainer(cfg, resume=resume, max_steps=max_steps, save_every_steps=save_every_steps)
        out = trainer.fit()
        if dist.is_initialized():
            # every rank is done with its collectives before any tears the group down: a rank that left
            # first could make gloo abort another's process at exit ("terminate called", SIGABRT)
            dist.barrier()
        return out
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["LRSchedule", "Trainer", "TrainState", "TrainingError", "train", "to_dict"]

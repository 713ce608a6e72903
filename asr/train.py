"""The training loop, readable top to bottom.

    train(cfg)
      ├─ setup: device, threads, seeds, run folder, logging, DDP
      ├─ data: manifests -> tokenizer -> datasets -> bucketed loaders
      ├─ model: frontend (+ CMVN statistics) + CTC model, optimizer, LR schedule
      ├─ resume from <run>/checkpoints/last.pt if it exists
      └─ for each epoch: train_one_epoch (train_step per update) -> validate -> save (-> early stop)

Works on CPU (tested) and CUDA (AMP, pinned memory, packed RNNs); DDP through
``torchrun --nproc_per_node N -m asr train ...``. Device, precision, seeding, logging and
process-group helpers live in asr.runtime; optimizers and LR schedules in asr.optim; the CTC
forward (loss) and dev validation in asr.ctc; checkpoint retention in asr.checkpoint.

Exactness. An update is the mean CTC loss over every utterance of its global batch
(``accum_steps`` micro-batches on each of ``world`` ranks), whatever the micro-batch
sizes: so N ranks give the same update as one process with ``accum_steps x N``. Dropout
and SpecAugment draw from a generator seeded by (seed, step, micro-batch index), and the
DataLoader uses its own generator, so a resumed run (model, optimizer, scheduler,
scaler, sampler position and RNG states restored) repeats the uninterrupted one step
for step.
"""

from __future__ import annotations

import contextlib
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
    export_model,
    get_rng_state,
    read_checkpoint,
    retain_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from asr.config import Config, save_config, to_dict
from asr.ctc import compute_loss, validate
from asr.data import BucketBatchSampler, filter_by_duration, read_manifest
from asr.model import count_parameters
from asr.optim import LRSchedule, make_optimizer
from asr.runtime import (
    MetricsLog,
    TrainingError,
    init_distributed,
    micro_batch_seed,
    resolve_amp,
    seed_everything,
    select_device,
    setup_logging,
)
from asr.selection import Selection
from asr.text import tokenizer_from_dict, train_tokenizer
from asr.train_data import (  # noqa: F401  (output_frames, min_frames_for: public via asr.train)
    compute_cmvn,
    dev_subset,
    filter_trainable,
    make_cache,
    make_loader,
    min_frames_for,
    output_frames,
)

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
        self.amp, self.amp_reason = resolve_amp(cfg.train.amp, self.device)
        seed_everything(cfg.train.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(exist_ok=True)
        setup_logging(self.run_dir, self.rank)
        self.state = TrainState()
        self.bad_updates = 0  # consecutive updates with a non-finite loss or gradient
        self.writer = None
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"))
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", self.is_main)
        last = self.ckpt_dir / "last.pt"
        self.resume_obj = read_checkpoint(last) if (resume and last.is_file()) else None
        if self.world > 1:
            (resuming,) = self._all_reduce([float(self.resume_obj is not None)])
            if resuming not in (0, self.world):
                raise TrainingError(f"only {int(resuming)} of {self.world} processes found {last}: "
                                    "run_dir must be on storage that every node shares")
        if self.resume_obj is None and self.is_main:
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh file
        self._setup_data_and_model()

    # -- setup

    def _setup_data_and_model(self) -> None:
        cfg = self.cfg
        if not cfg.data.train_manifest:
            raise TrainingError("data.train_manifest is not set (pass data.train_manifest=PATH)")
        train_utts = read_manifest(cfg.data.train_manifest, strict=False)
        train_utts = filter_by_duration(train_utts, cfg.data.min_duration, cfg.data.max_duration)
        if self.resume_obj is not None:
            self.tokenizer = tokenizer_from_dict(self.resume_obj["tokenizer"])
        else:
            self.tokenizer = train_tokenizer([u.text for u in train_utts], cfg.tokenizer)
        train_utts = filter_trainable(train_utts, self.tokenizer, cfg, "train")
        if not train_utts:
            raise TrainingError(f"{cfg.data.train_manifest}: no usable training utterances")
        dev_utts = []
        if cfg.data.dev_manifest:
            dev_utts = read_manifest(cfg.data.dev_manifest, strict=False)
            if hasattr(self.tokenizer, "prepare"):  # phones: G2P for the dev words, at once, logged
                self.tokenizer.prepare([u.text for u in dev_utts], "dev")
            dev_utts = filter_trainable(
                filter_by_duration(dev_utts, cfg.data.min_duration, cfg.data.max_duration),
                self.tokenizer, cfg, "dev")
        pin = self.device.type == "cuda"
        augment = WaveAugment(cfg.augment, cfg.feature.sample_rate)
        warned: set[str] = set()  # unloadable training files are named once, not in every pass
        self.cache = make_cache(cfg)  # decoded and speed-perturbed waveforms, once per run
        self.train_loader = make_loader(train_utts, self.tokenizer, cfg, True, self.rank, self.world,
                                        augment if augment.active else None, pin, warned, self.cache)
        self.dev_loader = self.dev_subset_loader = None
        if dev_utts:
            self.dev_loader = make_loader(dev_utts, self.tokenizer, cfg, False, pin=pin, cache=self.cache)
            subset = dev_subset(dev_utts, cfg.train.valid_subset)
            if len(subset) < len(dev_utts):  # each epoch on the subset, the full dev set at the end
                self.dev_subset_loader = make_loader(subset, self.tokenizer, cfg, False, pin=pin, cache=self.cache)
        self.selection = Selection(cfg, self.tokenizer, pin, self.cache)  # train.select_on: sets ranking epochs
        self.train_seconds = sum(u.duration for u in train_utts)

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
        log.info("data: %d training utterances (%.2f h), %d dev%s%s", len(train_utts),
                 self.train_seconds / 3600, len(dev_utts),
                 f" (a fixed subset of {len(self.dev_subset_loader.dataset)} after each epoch, all at the end)"
                 if self.dev_subset_loader else "",
                 f"; waveforms cached in RAM as int16 (up to {cfg.data.cache_max_gb:g} GB)" if self.cache else "")
        self.ctc_module = self.model.ctc
        if self.world > 1:
            self.ctc_module = DDP(self.model.ctc,
                                  device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = make_optimizer(self.model.ctc.parameters(), cfg)
        steps_per_epoch = math.ceil(len(self.train_loader.batch_sampler) / cfg.train.accum_steps)
        self.schedule = LRSchedule(self.optimizer, cfg, steps_per_epoch * cfg.train.epochs, self.state)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)

        if self.resume_obj is not None:
            self._restore(self.resume_obj)
        elif cfg.feature.cmvn == "global":
            compute_cmvn(self.model, train_utts, self.tokenizer, cfg, self.device, self.rank, self.world,
                         warned, self.cache)
        if self.is_main:
            save_config(cfg, self.run_dir / "config.yaml")

    def _restore(self, obj: dict) -> None:
        try:
            self.model.frontend.load_state_dict(obj["frontend"])
            self.model.ctc.load_state_dict(obj["model"])
            self.optimizer.load_state_dict(obj["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise TrainingError(
                f"{self.ckpt_dir / 'last.pt'} does not match this config ({str(e).splitlines()[0]}); "
                "use the config it was trained with, --no-resume, or a new run_dir") from None
        self.schedule.load_state_dict(obj["scheduler"] or {})
        st = obj["state"]
        names = {f.name for f in dataclasses.fields(TrainState)}
        for k, v in st["train_state"].items():
            if k in names:
                setattr(self.state, k, v)
        if st.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(st["scaler"])
        set_rng_state(st["rng"])
        self.metrics.truncate_after(self.state.step)
        log.info("resumed from %s: epoch %d, batch %d, step %d", self.ckpt_dir / "last.pt",
                 self.state.epoch + 1, self.state.batch_in_epoch, self.state.step)

    # -- distributed helpers

    def _all_reduce(self, values: list[float]) -> list[float]:
        """Sum a few numbers over ranks (identity without DDP)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def _broadcast(self, obj):
        """Rank 0's value of ``obj`` on every rank (identity without DDP)."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _dummy_loss(self) -> torch.Tensor:
        """A zero loss through the DDP module, for a rank whose micro-batches all failed to load:
        it still takes part in the gradient all-reduce, so the other ranks do not hang."""
        feats = torch.zeros(1, 8, self.model.frontend.dim, device=self.device)
        log_probs, _ = self.ctc_module(feats, torch.tensor([8], device=self.device))
        return log_probs.sum() * 0.0

    # -- checkpoints

    def _save(self, path: Path) -> None:
        save_checkpoint(path, self.cfg, self.tokenizer, self.model, self.optimizer, self.schedule, {
            "train_state": dataclasses.asdict(self.state),
            "rng": get_rng_state(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
        })

    def save_last(self) -> None:
        if self.is_main:
            self._save(self.ckpt_dir / "last.pt")

    def save_epoch(self, wer: float | None) -> None:
        """Epoch checkpoint (keep the last N), best-by-WER checkpoints (keep the best N), last.pt."""
        if not self.is_main:
            return
        c = self.cfg.train
        self._save(self.ckpt_dir / f"epoch-{self.state.epoch}.pt")
        self.state.best = retain_checkpoints(self.ckpt_dir, self.state.epoch, wer, self.state.best,
                                             c.keep_best, c.keep_last)
        self._save(self.ckpt_dir / "last.pt")

    def export_final(self) -> Path:
        """Write <run>/model.pt: the average of the best N checkpoints, or the best, or the last."""
        out = self.run_dir / "model.pt"
        log.info("model.pt = %s", export_model(self.ckpt_dir, self.state.best, self.cfg.train.average_last, out))
        return out

    # -- the loop

    def train_step(self, batches: list[dict]) -> dict | None:
        """One optimizer update over this rank's micro-batches (None entries failed to load).

        Returns:
            {"loss": mean loss per utterance of the global batch, "utts", "audio_seconds",
             "grad_norm", "lr", "finite"}, or None when no rank had any utterance.
        """
        cfg, st = self.cfg, self.state
        batches = [b for b in batches if b is not None]
        # 1. size of the global batch, so the update is the mean over all its utterances
        n_local = sum(len(b["ids"]) for b in batches)
        (n_global,) = self._all_reduce([float(n_local)])
        if n_global == 0:
            return None
        # DDP averages gradients over ranks; multiplying by world undoes that, so each
        # rank's summed loss is weighted 1/n_global exactly as in a single process.
        weight = self.world / n_global
        loss_sum, secs, bad_ids = 0.0, 0.0, []
        micro_batches: list[dict | None] = list(batches) or [None]
        for j, batch in enumerate(micro_batches):
            # 2. dropout and SpecAugment seeded by (step, micro-batch) for exact resume and DDP
            seed = micro_batch_seed(cfg.train.seed, st.step, self.rank * cfg.train.accum_steps + j)
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            last = j == len(micro_batches) - 1
            sync = self.ctc_module.no_sync() if (self.world > 1 and not last) else contextlib.nullcontext()
            with sync:
                # 3. forward + loss (AMP inside compute_loss), backward (scaled for fp16)
                if batch is None:
                    loss = self._dummy_loss()
                else:
                    loss, _, _ = compute_loss(self.model, self.ctc_module, batch, self.device, cfg,
                                              self.amp, gen)
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        bad_ids += batch["ids"][:3]
                    loss_sum += value
                    secs += float(batch["wav_lens"].sum()) / cfg.feature.sample_rate
                self.scaler.scale(loss * weight).backward()
        # 4. unscale, clip, step: a non-finite gradient (all-reduced, so every rank agrees)
        #    skips the update; the fp16 scaler then lowers its scale
        self.scaler.unscale_(self.optimizer)
        clip = cfg.train.grad_clip if cfg.train.grad_clip > 0 else math.inf
        gnorm = float(torch.nn.utils.clip_grad_norm_(self.model.ctc.parameters(), clip))
        lr = self.schedule.step(st.step)
        finite = math.isfinite(gnorm)
        if finite or self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        st.step += 1
        loss_sum, secs = self._all_reduce([loss_sum, secs])
        st.audio_seconds += secs
        if finite:
            self.bad_updates = 0
        else:
            self.bad_updates += 1
            log.warning("non-finite loss or gradient at step %d%s; update skipped", st.step,
                        f" (utterances {','.join(bad_ids)})" if bad_ids else "")
            if self.bad_updates >= cfg.train.max_bad_steps:
                raise TrainingError(f"{self.bad_updates} consecutive non-finite updates: stopping. Lower "
                                    "train.lr, check the data with `asr data validate`, or disable AMP.")
        return {"loss": loss_sum / n_global, "utts": int(n_global), "audio_seconds": secs,
                "grad_norm": gnorm, "lr": lr, "finite": finite}

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
            # 5. log: progress bar, TensorBoard, metrics.jsonl, train.log
            rate = secs / max(1e-9, time.time() - t0)
            bar.set_postfix(loss=f"{loss_sum / max(1, n_sum):.3f}", lr=f"{out['lr']:.2e}",
                            audio_s_per_s=f"{rate:.0f}")
            self.metrics.write({"step": st.step, "epoch": st.epoch + 1, "batch": st.batch_in_epoch,
                                **{k: out[k] for k in ("loss", "utts", "lr", "grad_norm", "audio_seconds")},
                                "audio_s_per_s": rate})
            if self.writer is not None:
                self.writer.add_scalar("train/loss", out["loss"], st.step)
                self.writer.add_scalar("train/lr", out["lr"], st.step)
                self.writer.add_scalar("train/grad_norm", out["grad_norm"], st.step)
                self.writer.add_scalar("train/audio_seconds_per_second", rate, st.step)
            if st.step % cfg.train.log_every == 0:
                log.info("epoch %d step %d loss %.4f lr %.2e grad_norm %.2f %.0f audio-s/s",
                         st.epoch + 1, st.step, loss_sum / max(1, n_sum), out["lr"], out["grad_norm"], rate)
            # 6. optional mid-epoch validation and checkpoint
            if cfg.train.eval_every and st.step % cfg.train.eval_every == 0:
                self.log_dev(self.run_validation(), st.epoch + 1)
            if self.save_every_steps and st.step % self.save_every_steps == 0:
                self.save_last()
            if self.max_steps and st.step >= self.max_steps:
                stopped = True
                break
        bar.close()
        elapsed = time.time() - t0
        return {"train_loss": loss_sum / max(1, n_sum), "epoch_seconds": elapsed,
                "audio_seconds_per_second": secs / max(1e-9, elapsed), "stopped": stopped}

    def run_validation(self, full: bool = False) -> dict:
        """Dev metrics computed on rank 0 and shared with every rank ({} without a dev set): on
        the fixed subset (train.valid_subset) when there is one, unless ``full``."""
        metrics = {}
        loader = self.dev_subset_loader if (self.dev_subset_loader is not None and not full) else self.dev_loader
        if loader is not None and self.is_main:
            metrics = validate(self.model, loader, self.tokenizer, self.device, self.cfg, self.amp)
        return self._broadcast(metrics)

    def log_dev(self, metrics: dict, epoch: int) -> None:
        """Log dev metrics of (1-based) ``epoch`` at the current step."""
        if not metrics:
            return
        st = self.state
        if "dev_per" in metrics:  # a phone model: its greedy output is phones
            log.info("epoch %d step %d: dev loss %.4f, dev PER (phone error rate) %.2f%%", epoch, st.step,
                     metrics["dev_loss"], 100 * metrics["dev_per"])
        else:
            log.info("epoch %d step %d: dev loss %.4f, dev WER %.2f%%, CER %.2f%%", epoch, st.step,
                     metrics["dev_loss"], 100 * metrics["dev_wer"], 100 * metrics["dev_cer"])
        self.metrics.write({"step": st.step, "epoch": epoch, **metrics})
        if self.writer is not None:
            for k, v in metrics.items():
                if k.startswith("dev_"):
                    self.writer.add_scalar(f"dev/{k[4:]}", v, st.step)
            self.writer.flush()

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
            dev = self.run_validation()
            if self.selection.loaders:  # degraded dev copies etc. (train.select_on)
                dev.update(self._broadcast(self.selection.validate(self.model, self.device, self.amp)
                                           if self.is_main else {}))
            score_name, wer = self.selection.score(dev)  # dev WER (PER for phones), or the mean over select_on
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
            self.log_dev(dev, st.epoch)
            self.save_epoch(wer)
            if self.cache is not None and st.epoch == 1:
                c = self.cache
                log.info("wave cache: %d waveforms, %.2f GB, %d hits / %d decodes so far", len(c),
                         c.nbytes / 2**30, c.hits, c.misses)
            if cfg.train.patience and wer is not None and st.bad_epochs >= cfg.train.patience:
                log.info("early stop: dev %s has not improved for %d epochs", score_name, st.bad_epochs)
                break
        if self.dev_subset_loader is not None and st.history and "dev_full_wer" not in st.history[-1]:
            # the subset chose the checkpoints; the full dev set scores the last model once
            full = {f"dev_full_{k[4:]}": v for k, v in self.run_validation(full=True).items()}
            st.history[-1].update(full)
            log.info("epoch %d step %d: full dev set: loss %.4f, WER %.2f%%, CER %.2f%% (%d utterances)",
                     st.epoch, st.step, full["dev_full_loss"], 100 * full["dev_full_wer"],
                     100 * full["dev_full_cer"], full["dev_full_utts"])
            self.metrics.write({"step": st.step, "epoch": st.epoch, **full})
        if self.is_main:
            out = self.export_final()
            (self.run_dir / "history.json").write_text(json.dumps(st.history, indent=1))
            log.info("final model: %s", out)
        if self.writer is not None:
            self.writer.close()
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
        return trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["LRSchedule", "Trainer", "TrainState", "TrainingError", "train", "to_dict"]

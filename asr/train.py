"""The training loop, readable top to bottom.

    train(cfg)
      ├─ setup: device, threads, seeds, run folder, logging, DDP
      ├─ data: manifests -> tokenizer -> datasets -> bucketed loaders
      ├─ model: frontend (+ CMVN statistics) + CTC model, optimizer, LR schedule
      ├─ resume from <run>/checkpoints/last.pt if it exists
      └─ for each epoch: train_one_epoch -> validate -> save_checkpoints (-> early stop)

Works on CPU (tested) and CUDA (AMP, pinned memory, packed RNNs); DDP through
``torchrun --nproc_per_node N -m asr train ...``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from asr.augment import WaveAugment
from asr.checkpoint import average_checkpoints, build_model, read_checkpoint, save_checkpoint
from asr.config import Config, save_config, to_dict
from asr.data import AudioDataset, BucketBatchSampler, collate, filter_by_duration, read_manifest
from asr.decode import greedy_search
from asr.features import CMVNAccumulator, spec_augment
from asr.metrics import ErrorCounts, char_errors, word_errors
from asr.model import count_parameters
from asr.text import tokenizer_from_dict, train_tokenizer

log = logging.getLogger("asr.train")


class TrainingError(RuntimeError):
    pass


@dataclass
class TrainState:
    """Run state (kept apart from config): everything needed to resume exactly."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer updates done
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    best_wer: float = math.inf  # best dev WER so far
    bad_epochs: int = 0  # epochs since the best dev WER (early stopping)
    plateau_scale: float = 1.0  # LR factor from reduce-on-plateau
    history: list = field(default_factory=list)  # per-epoch metrics
    best: list = field(default_factory=list)  # [(wer, path)] of kept best checkpoints
    audio_seconds: float = 0.0  # audio trained on so far


# ---------------------------------------------------------------- setup


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"train.device={name} but CUDA is not available; use train.device=cpu")
    return dev


def amp_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    mode = cfg.train.amp
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_logging(run_dir: Path, rank: int) -> None:
    root = logging.getLogger("asr")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    if rank == 0:
        fh = logging.FileHandler(run_dir / "train.log")
        fh.setFormatter(fmt)
        root.addHandler(fh)
    sh = logging.StreamHandler()
    sh.setFormatter(fmt)
    sh.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    root.addHandler(sh)
    root.propagate = False


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world_size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


# ---------------------------------------------------------------- data


def min_frames_for(tokens: list[int]) -> int:
    """CTC needs one frame per token plus one blank between each repeated pair."""
    return len(tokens) + sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)


def output_frames(duration: float, cfg: Config) -> int:
    sr = cfg.feature.sample_rate
    win = int(round(sr * cfg.feature.win_ms / 1000))
    hop = int(round(sr * cfg.feature.hop_ms / 1000))
    frames = max(1, (int(duration * sr) - win) // hop + 1)
    sub = cfg.model.subsampling
    if sub.startswith("stack"):
        return frames // int(sub[-1])
    if sub.startswith("conv"):
        for _ in range(1 if sub == "conv2" else 2):
            frames = (frames - 1) // 2 + 1
    return frames


def filter_trainable(utts, tokenizer, cfg: Config, name: str):
    """Drop utterances the tokenizer cannot encode or whose targets cannot fit CTC's frames."""
    keep, bad_text, too_long = [], [], []
    for u in utts:
        try:
            toks = tokenizer.encode(u.text)
        except ValueError as e:
            bad_text.append((u.id, str(e)))
            continue
        if not toks or min_frames_for(toks) > output_frames(u.duration, cfg):
            too_long.append(u.id)
            continue
        keep.append(u)
    if bad_text:
        log.warning("%s: skipped %d utterances with text the tokenizer cannot encode (e.g. %s: %s)",
                    name, len(bad_text), *bad_text[0])
    if too_long:
        log.warning("%s: skipped %d utterances with empty text or more tokens than output frames (e.g. %s)",
                    name, len(too_long), too_long[0])
    return keep


def make_loader(utts, tokenizer, cfg: Config, train: bool, rank=0, world=1, augment=None, pin=False):
    ds = AudioDataset(utts, tokenizer, cfg.feature.sample_rate, augment=augment)
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
    loader = DataLoader(
        ds,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.data.num_workers,
        worker_init_fn=_worker_init,
        pin_memory=pin,
        persistent_workers=False,
    )
    return loader


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # several torch processes spinning on few cores is ~10x slower


# ---------------------------------------------------------------- model and optimisation


class LRSchedule:
    """Linear warm-up, then constant, cosine, Noam or reduce-on-plateau."""

    def __init__(self, optimizer, cfg: Config, total_steps: int, state: TrainState):
        self.opt, self.cfg, self.total, self.state = optimizer, cfg.train, max(1, total_steps), state

    def factor(self, step: int) -> float:
        c = self.cfg
        warm = max(1, c.warmup_steps)
        if c.scheduler == "noam":
            return min((step + 1) / warm, math.sqrt(warm / (step + 1)))
        f = min(1.0, (step + 1) / warm)
        if c.scheduler == "cosine" and step >= warm:
            p = min(1.0, (step - warm) / max(1, self.total - warm))
            f = c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
        elif c.scheduler not in ("cosine", "constant", "plateau"):
            raise TrainingError(f"train.scheduler must be constant, cosine, noam or plateau, got {c.scheduler!r}")
        return f * self.state.plateau_scale

    def step(self, step: int) -> float:
        lr = self.cfg.lr * self.factor(step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def epoch_end(self, improved: bool) -> None:
        if self.cfg.scheduler == "plateau" and not improved:
            self.state.plateau_scale *= 0.5

    def state_dict(self) -> dict:
        return {"plateau_scale": self.state.plateau_scale}

    def load_state_dict(self, d: dict) -> None:
        self.state.plateau_scale = d.get("plateau_scale", 1.0)


def make_optimizer(params, cfg: Config):
    c = cfg.train
    if c.optimizer == "adam":
        return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
    if c.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
    if c.optimizer == "sgd":
        return torch.optim.SGD(params, lr=c.lr, momentum=0.9, nesterov=True, weight_decay=c.weight_decay)
    raise TrainingError(f"train.optimizer must be adam, adamw or sgd, got {c.optimizer!r}")


@torch.no_grad()
def compute_cmvn(model, loader, device) -> None:
    """One streaming pass over the training data for global mean/std of raw features."""
    acc = CMVNAccumulator(model.frontend.dim)
    for batch in tqdm(loader, desc="cmvn", unit="batch", leave=False, disable=None):
        if batch is None:
            continue
        feats, lens = model.frontend.raw_features(batch["wavs"].to(device), batch["wav_lens"].to(device))
        acc.update(feats, lens)
    mean, std = acc.result()
    model.frontend.set_cmvn(mean.to(device), std.to(device))


def compute_loss(model, ctc_module, batch, device, cfg: Config, amp: torch.dtype | None, generator=None):
    """Forward one batch and return (mean CTC loss per utterance, batch size).

    Features are computed in fp32; the RNN runs under autocast when AMP is on; the CTC
    loss is always fp32 (log_probs are returned in fp32).
    """
    wavs = batch["wavs"].to(device, non_blocking=True)
    wav_lens = batch["wav_lens"].to(device, non_blocking=True)
    feats, feat_lens = model.frontend(wavs, wav_lens)  # (B, T, F)
    if model.training and cfg.augment.specaugment:
        feats = spec_augment(feats, feat_lens, cfg.augment.spec, generator)
    with torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None):
        log_probs, out_lens = ctc_module(feats, feat_lens)  # (B, T', V)
    loss = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1),  # (B, T', V) -> (T', B, V) as ctc_loss expects
        batch["tokens"].to(device),
        out_lens,
        batch["token_lens"].to(device),
        blank=0,
        reduction="sum",
        zero_infinity=True,
    )
    return loss / len(batch["ids"]), len(batch["ids"])


# ---------------------------------------------------------------- loop


@torch.no_grad()
def validate(model, loader, tokenizer, device, cfg: Config, amp) -> dict:
    """Dev loss and greedy WER/CER."""
    model.eval()
    wer, cer = ErrorCounts(), ErrorCounts()
    total_loss, n = 0.0, 0
    for batch in loader:
        if batch is None:
            continue
        loss, bs = compute_loss(model, model.ctc, batch, device, cfg, amp)
        if torch.isfinite(loss):
            total_loss += float(loss) * bs
            n += bs
        feats, feat_lens = model.frontend(batch["wavs"].to(device), batch["wav_lens"].to(device))
        log_probs, out_lens = model.ctc(feats, feat_lens)
        hyps = greedy_search(log_probs, out_lens)
        for i, ids in enumerate(hyps):
            ref = tokenizer.decode(batch["tokens"][i, : batch["token_lens"][i]].tolist())
            hyp = tokenizer.decode(ids)
            wer += word_errors(ref, hyp)
            cer += char_errors(ref, hyp)
    model.train()
    return {"dev_loss": total_loss / max(1, n), "dev_wer": wer.rate, "dev_cer": cer.rate, "dev_utts": n}


def _rng_state() -> dict:
    st = {
        "python": repr(random.getstate()),
        "numpy": repr(np.random.get_state()[1].tolist()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    import ast

    random.setstate(_tuple_deep(ast.literal_eval(st["python"])))
    np.random.set_state(("MT19937", np.array(ast.literal_eval(st["numpy"]), dtype=np.uint32), 624, 0, 0.0))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _tuple_deep(x):
    return tuple(_tuple_deep(i) for i in x) if isinstance(x, (list, tuple)) else x


class Trainer:
    """Holds the pieces of one training run; methods are the phases of the loop."""

    def __init__(self, cfg: Config, resume: bool = True, max_steps: int = 0, save_every_steps: int = 0):
        self.cfg = cfg
        self.max_steps = max_steps  # stop after this many updates (tests, benchmarks); 0 = no limit
        self.save_every_steps = save_every_steps  # mid-epoch checkpoints for exact resume
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = select_device(cfg.train.device)
        self.rank, self.world = init_distributed(self.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        self.is_main = self.rank == 0
        if self.device.type == "cpu":
            torch.set_num_threads(cfg.train.threads or (os.cpu_count() or 1))
            torch.set_flush_denormal(True)  # denormal CTC gradients make the backward pass 4x slower
        self.amp = amp_dtype(cfg, self.device)
        seed_everything(cfg.train.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(exist_ok=True)
        setup_logging(self.run_dir, self.rank)
        self.state = TrainState()
        self.writer = None
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"))
        last = self.ckpt_dir / "last.pt"
        self.resume_obj = read_checkpoint(last) if (resume and last.is_file()) else None
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
            dev_utts = filter_trainable(
                filter_by_duration(dev_utts, cfg.data.min_duration, cfg.data.max_duration),
                self.tokenizer, cfg, "dev")
        pin = self.device.type == "cuda"
        augment = WaveAugment(cfg.augment, cfg.feature.sample_rate)
        self.train_loader = make_loader(train_utts, self.tokenizer, cfg, True, self.rank, self.world,
                                        augment if augment.active else None, pin)
        self.dev_loader = make_loader(dev_utts, self.tokenizer, cfg, False, pin=pin) if dev_utts else None
        self.train_seconds = sum(u.duration for u in train_utts)

        self.model = build_model(cfg, len(self.tokenizer)).to(self.device)
        n_params = count_parameters(self.model)
        log.info("model: %s %dx%d%s, %s subsampling, %.2fM parameters, vocab %d, device %s%s",
                 cfg.model.rnn_type, cfg.model.num_layers, cfg.model.hidden_size,
                 " bidirectional" if cfg.model.bidirectional else "", cfg.model.subsampling,
                 n_params / 1e6, len(self.tokenizer), self.device,
                 f", AMP {self.amp}" if self.amp else "")
        log.info("data: %d training utterances (%.2f h), %d dev", len(train_utts),
                 self.train_seconds / 3600, len(dev_utts))
        self.ctc_module = self.model.ctc
        if self.world > 1:
            self.ctc_module = DDP(self.model.ctc, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = make_optimizer(self.model.ctc.parameters(), cfg)
        steps_per_epoch = math.ceil(len(self.train_loader.batch_sampler) / cfg.train.accum_steps)
        self.schedule = LRSchedule(self.optimizer, cfg, steps_per_epoch * cfg.train.epochs, self.state)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)

        if self.resume_obj is not None:
            self._restore(self.resume_obj)
        else:
            stats_loader = make_loader(train_utts, self.tokenizer, cfg, False)
            if cfg.feature.cmvn == "global":
                compute_cmvn(self.model, stats_loader, self.device)
            if self.is_main:
                save_config(cfg, self.run_dir / "config.yaml")

    def _restore(self, obj: dict) -> None:
        self.model.frontend.load_state_dict(obj["frontend"])
        self.model.ctc.load_state_dict(obj["model"])
        self.optimizer.load_state_dict(obj["optimizer"])
        self.schedule.load_state_dict(obj["scheduler"] or {})
        st = obj["state"]
        fields = {f.name for f in dataclasses.fields(TrainState)}
        for k, v in st["train_state"].items():
            if k in fields:
                setattr(self.state, k, v)
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        _set_rng_state(st["rng"])
        log.info("resumed from %s: epoch %d, batch %d, step %d", self.ckpt_dir / "last.pt",
                 self.state.epoch, self.state.batch_in_epoch, self.state.step)

    # -- checkpoints

    def _save(self, path: Path) -> None:
        save_checkpoint(path, self.cfg, self.tokenizer, self.model, self.optimizer, self.schedule, {
            "train_state": dataclasses.asdict(self.state),
            "rng": _rng_state(),
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
        ep = self.state.epoch
        path = self.ckpt_dir / f"epoch-{ep}.pt"
        self._save(path)
        epochs = sorted(self.ckpt_dir.glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
        best_paths = {b[1] for b in self.state.best}
        if wer is not None:
            best_path = self.ckpt_dir / f"best-epoch-{ep}.pt"
            shutil.copyfile(path, best_path)
            self.state.best.append([wer, str(best_path)])
            self.state.best.sort(key=lambda b: b[0])
            for _, p in self.state.best[c.keep_best:]:
                Path(p).unlink(missing_ok=True)
            self.state.best = self.state.best[: c.keep_best]
            best_paths = {b[1] for b in self.state.best}
        for p in epochs[: -c.keep_last] if c.keep_last > 0 else epochs:
            if str(p) not in best_paths:
                p.unlink(missing_ok=True)
        self._save(self.ckpt_dir / "last.pt")

    def export_final(self) -> Path:
        """Write <run>/model.pt: the average of the best N checkpoints, or the best, or the last."""
        out = self.run_dir / "model.pt"
        best = [p for _, p in self.state.best if Path(p).is_file()]
        if self.cfg.train.average_last > 1 and len(best) > 1:
            average_checkpoints(best[: self.cfg.train.average_last], out)
            log.info("model.pt = average of %d best checkpoints", min(len(best), self.cfg.train.average_last))
        elif best:
            shutil.copyfile(best[0], out)
            log.info("model.pt = best checkpoint %s (dev WER %.2f%%)", best[0], 100 * self.state.best[0][0])
        else:
            shutil.copyfile(self.ckpt_dir / "last.pt", out)
        return out

    # -- the loop

    def train_one_epoch(self) -> dict:
        cfg, st = self.cfg, self.state
        sampler: BucketBatchSampler = self.train_loader.batch_sampler
        sampler.set_epoch(st.epoch, st.batch_in_epoch)
        self.train_loader.dataset.epoch = st.epoch
        self.model.train()
        total_batches = st.batch_in_epoch + len(sampler)
        bar = tqdm(total=total_batches, initial=st.batch_in_epoch, desc=f"epoch {st.epoch + 1}/{cfg.train.epochs}",
                   unit="batch", disable=not self.is_main or None, dynamic_ncols=True)
        t0, secs, loss_sum, n_sum, bad = time.time(), 0.0, 0.0, 0, 0
        self.optimizer.zero_grad(set_to_none=True)
        accum, stopped = 0, False
        for batch in self.train_loader:
            st.batch_in_epoch += 1
            bar.update(1)
            if batch is None:
                continue
            # 1. forward + loss; SpecAugment masks are seeded by the step, so a resume repeats them
            gen = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + st.step * 97 + accum)
            loss, bs = compute_loss(self.model, self.ctc_module, batch, self.device, cfg, self.amp, gen)
            # 2. a non-finite loss skips the batch; too many in a row stops the run
            if not torch.isfinite(loss):
                bad += 1
                log.warning("non-finite loss at epoch %d batch %d (utterances %s); batch skipped",
                            st.epoch + 1, st.batch_in_epoch, ",".join(batch["ids"][:3]))
                self.optimizer.zero_grad(set_to_none=True)
                accum = 0
                if bad >= cfg.train.max_bad_steps:
                    raise TrainingError(f"{bad} consecutive non-finite losses: stopping. "
                                        "Lower train.lr, check the data with `asr data validate`, or disable AMP.")
                continue
            bad = 0
            # 3. backward (scaled for fp16), accumulating over accum_steps batches
            self.scaler.scale(loss / cfg.train.accum_steps).backward()
            accum += 1
            wav_secs = float(batch["wav_lens"].sum()) / cfg.feature.sample_rate
            secs += wav_secs
            st.audio_seconds += wav_secs
            loss_sum += float(loss.detach()) * bs
            n_sum += bs
            if accum < cfg.train.accum_steps:
                continue
            # 4. clip, step, schedule
            self.scaler.unscale_(self.optimizer)
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.ctc.parameters(), cfg.train.grad_clip)
            lr = self.schedule.step(st.step)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            accum = 0
            st.step += 1
            # 5. log
            rate = secs / max(1e-9, time.time() - t0)
            bar.set_postfix(loss=f"{loss_sum / max(1, n_sum):.3f}", lr=f"{lr:.2e}", audio_s_per_s=f"{rate:.0f}")
            if self.writer is not None:
                self.writer.add_scalar("train/loss", float(loss.detach()), st.step)
                self.writer.add_scalar("train/lr", lr, st.step)
                self.writer.add_scalar("train/grad_norm", float(gnorm), st.step)
                self.writer.add_scalar("train/audio_seconds_per_second", rate, st.step)
            if st.step % cfg.train.log_every == 0:
                log.info("epoch %d step %d loss %.4f lr %.2e grad_norm %.2f %.0f audio-s/s",
                         st.epoch + 1, st.step, loss_sum / max(1, n_sum), lr, float(gnorm), rate)
            if self.save_every_steps and st.step % self.save_every_steps == 0:
                self.save_last()
            if self.max_steps and st.step >= self.max_steps:
                stopped = True
                break
        bar.close()
        elapsed = time.time() - t0
        return {"train_loss": loss_sum / max(1, n_sum), "epoch_seconds": elapsed,
                "audio_seconds_per_second": secs / max(1e-9, elapsed), "stopped": stopped}

    def fit(self) -> Path:
        cfg, st = self.cfg, self.state
        log.info("run folder %s; config written to config.yaml", self.run_dir)
        while st.epoch < cfg.train.epochs:
            metrics = self.train_one_epoch()
            if metrics.pop("stopped"):
                self.save_last()
                log.info("stopped after %d steps (max_steps); resume by running again", st.step)
                return self.ckpt_dir / "last.pt"
            st.epoch += 1
            st.batch_in_epoch = 0
            if self.dev_loader is not None and self.is_main:
                metrics.update(validate(self.model, self.dev_loader, self.tokenizer, self.device, cfg, self.amp))
            wer = metrics.get("dev_wer")
            improved = wer is not None and wer < st.best_wer
            if improved:
                st.best_wer, st.bad_epochs = wer, 0
            else:
                st.bad_epochs += 1
            self.schedule.epoch_end(improved or wer is None)
            metrics["epoch"] = st.epoch
            st.history.append(metrics)
            msg = f"epoch {st.epoch}: train loss {metrics['train_loss']:.4f}, {metrics['audio_seconds_per_second']:.0f} audio-s/s"
            if wer is not None:
                msg += f", dev loss {metrics['dev_loss']:.4f}, dev WER {100 * wer:.2f}%, CER {100 * metrics['dev_cer']:.2f}%"
            log.info(msg)
            if self.writer is not None:
                for k, v in metrics.items():
                    if k.startswith("dev_"):
                        self.writer.add_scalar(f"dev/{k[4:]}", v, st.step)
                self.writer.flush()
            self.save_epoch(wer)
            if cfg.train.patience and st.bad_epochs >= cfg.train.patience:
                log.info("early stop: dev WER has not improved for %d epochs", st.bad_epochs)
                break
        if self.is_main:
            out = self.export_final()
            (self.run_dir / "history.json").write_text(json.dumps(st.history, indent=1))
            log.info("final model: %s", out)
        if self.writer is not None:
            self.writer.close()
        return self.run_dir / "model.pt"


def train(cfg: Config, resume: bool = True, max_steps: int = 0, save_every_steps: int = 0) -> Path:
    """Train (or resume) a model as configured; returns the path of the final model file."""
    trainer = Trainer(cfg, resume=resume, max_steps=max_steps, save_every_steps=save_every_steps)
    try:
        return trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["Trainer", "TrainState", "TrainingError", "train", "to_dict"]

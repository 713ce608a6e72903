"""One optimizer update: the mean CTC loss over a global batch, exact under DDP and gradient
accumulation, with non-finite updates skipped (and too many in a row stopping the run).

An update is the mean CTC loss over every utterance of its global batch (``accum_steps``
micro-batches on each of ``world`` ranks), whatever the micro-batch sizes: N ranks give the same
update as one process with ``accum_steps x N``. Dropout and SpecAugment draw from a generator
seeded by (seed, step, micro-batch index), so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math

import torch

from asr.config import Config
from asr.ctc import compute_loss
from asr.runtime import TrainingError, all_reduce_sum, micro_batch_seed

log = logging.getLogger("asr.train")


class Updater:
    """``updater(batches, state) -> metrics``: one update of ``model`` over this rank's micro-batches.

    Args (construction):
        cfg: train.* (seed, accum_steps, grad_clip, max_bad_steps), the CTC and feature settings.
        model: the asr.model module (its ``ctc`` part holds the parameters).
        ctc_module: ``model.ctc``, or its DDP wrapper.
        optimizer, schedule, scaler: the run's optimizer, asr.optim.LRSchedule, GradScaler.
        device, amp: where and in which autocast dtype (None: fp32) the forward runs.
        rank, world: this process and the number of DDP processes.
    """

    def __init__(self, cfg: Config, model, ctc_module, optimizer, schedule, scaler, device: torch.device,
                 amp, rank: int = 0, world: int = 1):
        self.cfg, self.model, self.ctc_module = cfg, model, ctc_module
        self.optimizer, self.schedule, self.scaler = optimizer, schedule, scaler
        self.device, self.amp, self.rank, self.world = device, amp, rank, world
        self.bad_updates = 0  # consecutive updates with a non-finite loss or gradient

    def _sum(self, values: list[float]) -> list[float]:
        return all_reduce_sum(values, self.device, self.world)

    def _dummy_loss(self) -> torch.Tensor:
        """A zero loss through the DDP module, for a rank whose micro-batches all failed to load:
        it still takes part in the gradient all-reduce, so the other ranks do not hang."""
        feats = torch.zeros(1, 8, self.model.frontend.dim, device=self.device)
        log_probs, _ = self.ctc_module(feats, torch.tensor([8], device=self.device))
        return log_probs.sum() * 0.0

    def __call__(self, batches: list[dict | None], state) -> dict | None:
        """One optimizer update over this rank's micro-batches (None entries failed to load).

        Args:
            batches: collated micro-batches (asr.data.collate), up to ``train.accum_steps``.
            state: the run's asr.train.TrainState: ``step`` and ``audio_seconds`` advance.
        Returns:
            {"loss": mean loss per utterance of the global batch, "utts", "audio_seconds",
             "grad_norm", "lr", "finite"}, or None when no rank had any utterance.
        Raises:
            TrainingError: ``train.max_bad_steps`` non-finite updates in a row.
        """
        cfg, st = self.cfg, state
        batches = [b for b in batches if b is not None]
        # 1. size of the global batch, so the update is the mean over all its utterances
        n_local = sum(len(b["ids"]) for b in batches)
        (n_global,) = self._sum([float(n_local)])
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
        loss_sum, secs = self._sum([loss_sum, secs])
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


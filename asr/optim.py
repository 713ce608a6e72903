"""Optimizers and learning-rate schedules (warm-up, then constant, cosine, Noam or plateau)."""

from __future__ import annotations

import math

import torch

from asr.config import Config


class LRSchedule:
    """Linear warm-up, then constant, cosine, Noam or reduce-on-plateau (halving)."""

    def __init__(self, optimizer, cfg: Config, total_steps: int, state):
        # state: the run's TrainState; reduce-on-plateau keeps its LR factor there, so it is
        # saved and resumed with the rest of the run state
        self.opt, self.cfg, self.total, self.state = optimizer, cfg.train, max(1, total_steps), state

    def factor(self, step: int) -> float:
        """LR multiplier for update ``step`` (0-based)."""
        c = self.cfg
        warm = max(1, c.warmup_steps)
        if c.scheduler == "noam":
            return min((step + 1) / warm, math.sqrt(warm / (step + 1))) * self.state.plateau_scale
        f = min(1.0, (step + 1) / warm)
        if c.scheduler == "cosine" and step >= warm:
            p = min(1.0, (step - warm) / max(1, self.total - warm))
            f = c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
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
    return torch.optim.SGD(params, lr=c.lr, momentum=0.9, nesterov=True, weight_decay=c.weight_decay)

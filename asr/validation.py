"""Dev validation during training: the metrics, the metric that ranks checkpoints, and the policy
of which dev utterances are scored when (a fixed subset after each epoch, the full set once at
the end, when ``train.valid_subset`` is set).

Metrics are greedy: WER and CER for character and SentencePiece models; for a phone model the
phone error rate (PER), because its greedy output is phones, not words (word error rates of a
phone model come from the lexicon decoder: ``asr evaluate``).
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from asr.config import Config
from asr.ctc import compute_loss
from asr.decode import greedy_search
from asr.metrics import ErrorCounts, char_errors, word_errors
from asr.train_data import make_loader

log = logging.getLogger("asr.train")


def metric_name(tokenizer) -> str:
    """The error rate that ranks a model's checkpoints: "PER" for a phone model, else "WER"."""
    return "PER" if getattr(tokenizer, "kind", "") == "phone" else "WER"


def dev_score(metrics: dict) -> tuple[str, float | None]:
    """The dev error rate that ranks checkpoints: ("PER", dev_per) for a phone model (its greedy
    output is phones, so a WER of it means nothing), else ("WER", dev_wer); None without a dev set."""
    if "dev_per" in metrics:
        return "PER", metrics["dev_per"]
    return "WER", metrics.get("dev_wer")


def describe(metrics: dict, prefix: str = "dev_", name: str = "dev ") -> str:
    """Metrics with keys ``<prefix>loss``, ``<prefix>wer``/``cer`` or ``<prefix>per`` in words.

    >>> describe({"dev_loss": 0.5, "dev_per": 0.125, "dev_utts": 3})
    'dev loss 0.5000, dev PER (phone error rate) 12.50%'
    >>> describe({"dev_full_loss": 0.5, "dev_full_wer": 0.25, "dev_full_cer": 0.1}, "dev_full_", "")
    'loss 0.5000, WER 25.00%, CER 10.00%'
    """
    m = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}
    if "per" in m:
        return f"{name}loss {m['loss']:.4f}, {name}PER (phone error rate) {100 * m['per']:.2f}%"
    return f"{name}loss {m['loss']:.4f}, {name}WER {100 * m['wer']:.2f}%, CER {100 * m['cer']:.2f}%"


@torch.no_grad()
def validate(model, loader, tokenizer, device, cfg: Config, amp) -> dict:
    """Dev loss (mean per utterance) and greedy error rates over a loader: WER and CER, or for a
    phone tokenizer the phone error rate (PER: phones alone, word boundaries not counted).

    Returns:
        {"dev_loss", "dev_wer", "dev_cer", "dev_utts"} or {"dev_loss", "dev_per", "dev_utts"}.
    """
    was_training = model.training
    model.eval()
    phone = metric_name(tokenizer) == "PER"
    wer, cer, per = ErrorCounts(), ErrorCounts(), ErrorCounts()
    total_loss, n = 0.0, 0
    for batch in loader:
        if batch is None:
            continue
        loss, log_probs, out_lens = compute_loss(model, model.ctc, batch, device, cfg, amp)
        if torch.isfinite(loss):
            total_loss += float(loss)
            n += len(batch["ids"])
        for i, ids in enumerate(greedy_search(log_probs, out_lens)):
            ref_ids = batch["tokens"][i, : batch["token_lens"][i]].tolist()
            if phone:
                per += word_errors(tokenizer.phones(ref_ids), tokenizer.phones(ids))
                continue
            ref, hyp = tokenizer.decode(ref_ids), tokenizer.decode(ids)
            wer += word_errors(ref, hyp)
            cer += char_errors(ref, hyp)
    model.train(was_training)
    if phone:
        return {"dev_loss": total_loss / max(1, n), "dev_per": per.rate, "dev_utts": n}
    return {"dev_loss": total_loss / max(1, n), "dev_wer": wer.rate, "dev_cer": cer.rate, "dev_utts": n}


def dev_subset(utts: list, n: int) -> list:
    """A fixed, evenly spread subset of ``n`` dev utterances (by id order: every speaker and
    length has its share); all of them when ``n`` is 0 or not smaller."""
    if not n or n >= len(utts):
        return list(utts)
    order = sorted(utts, key=lambda u: u.id)
    return [order[int(i * len(order) / n)] for i in range(n)]


class Validator:
    """A run's dev set and when each part of it is scored.

    After each epoch (and every ``train.eval_every`` updates) the fixed subset of
    ``train.valid_subset`` utterances is scored, or the whole dev set when there is no subset;
    it ranks the checkpoints and drives early stopping. With a subset, the full dev set scores
    the last model once at the end (``dev_full_*`` metrics). Rank 0 computes, every rank gets
    the result. Without dev utterances every call returns {}.
    """

    def __init__(self, utts: list, tokenizer, cfg: Config, pin: bool = False, cache=None,
                 rank: int = 0, world: int = 1):
        self.tokenizer, self.cfg, self.rank, self.world = tokenizer, cfg, rank, world
        self.metric = metric_name(tokenizer)  # "WER" or "PER": what ranks the checkpoints
        self.loader = self.subset_loader = None
        self.num_utts = len(utts)
        if utts:
            self.loader = make_loader(utts, tokenizer, cfg, False, pin=pin, cache=cache)
            subset = dev_subset(utts, cfg.train.valid_subset)
            if len(subset) < len(utts):  # each epoch on the subset, the full dev set at the end
                self.subset_loader = make_loader(subset, tokenizer, cfg, False, pin=pin, cache=cache)

    def describe(self) -> str:
        """The dev set for the data log line: "12 dev (a fixed subset of 5 after each epoch...)"."""
        sub = (f" (a fixed subset of {len(self.subset_loader.dataset)} after each epoch, all at the end)"
               if self.subset_loader is not None else "")
        return f"{self.num_utts} dev{sub}"

    def run(self, model, device, amp, full: bool = False) -> dict:
        """Dev metrics (:func:`validate`) on the subset, or on the full set when there is no
        subset or ``full``; {} without a dev set. Every rank returns rank 0's result."""
        loader = self.subset_loader if (self.subset_loader is not None and not full) else self.loader
        metrics = {}
        if loader is not None and self.rank == 0:
            metrics = validate(model, loader, self.tokenizer, device, self.cfg, amp)
        return self.share(metrics)

    def share(self, metrics: dict) -> dict:
        """Rank 0's ``metrics`` on every rank (as given without DDP)."""
        if self.world > 1:
            box = [metrics]
            dist.broadcast_object_list(box, src=0)
            metrics = box[0]
        return metrics

    def final(self, model, device, amp, last: dict | None) -> dict:
        """The end-of-training full dev pass, as ``dev_full_*`` metrics: {} when each epoch
        already scored the full set (no subset), or when ``last`` (the last epoch's metrics)
        holds them already (a run resumed after its end)."""
        if self.subset_loader is None or last is None or any(k.startswith("dev_full_") for k in last):
            return {}
        return {f"dev_full_{k[4:]}": v for k, v in self.run(model, device, amp, full=True).items()}

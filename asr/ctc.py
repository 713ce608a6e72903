"""The CTC forward pass shared by training and validation: features, (SpecAugment,) the model
under autocast, and the fp32 CTC loss; and dev validation (loss, greedy WER/CER, or PER for phones)."""

from __future__ import annotations

import torch

from asr.config import Config
from asr.decode import greedy_search
from asr.features import spec_augment
from asr.metrics import ErrorCounts, char_errors, word_errors


def compute_loss(model, ctc_module, batch, device, cfg: Config, amp: torch.dtype | None,
                 generator: torch.Generator | None = None):
    """Forward one batch: summed CTC loss (blank 0, zero_infinity) and the model output.

    Features are computed in fp32; the RNN runs under autocast when AMP is on; the CTC
    loss is always fp32 (log_probs are returned in fp32).

    Args:
        model: ASRModel (its frontend is used directly).
        ctc_module: model.ctc or its DDP wrapper.
        batch: collated batch (see asr.data.collate).
        generator: SpecAugment's RNG (training only).
    Returns:
        (loss summed over the batch's utterances (scalar), log_probs (B, T', V), out_lens (B,))
    """
    wavs = batch["wavs"].to(device, non_blocking=True)
    wav_lens = batch["wav_lens"].to(device, non_blocking=True)
    feats, feat_lens = model.frontend(wavs, wav_lens)  # (B, T, F)
    if model.training and cfg.augment.specaugment:
        feats = spec_augment(feats, feat_lens, cfg.augment.spec, generator)
    with torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None):
        log_probs, out_lens = ctc_module(feats, feat_lens)  # (B, T', V)
    log_probs = log_probs.float()  # bf16 under CPU autocast: the loss is computed in fp32
    loss = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1),  # (B, T', V) -> (T', B, V) as ctc_loss expects
        batch["tokens"].to(device),
        out_lens,
        batch["token_lens"].to(device),
        blank=0,
        reduction="sum",
        zero_infinity=True,
    )
    return loss, log_probs, out_lens


def dev_score(metrics: dict) -> tuple[str, float | None]:
    """The dev error rate that ranks checkpoints: ("PER", dev_per) for a phone model (its greedy
    output is phones, so a WER of it means nothing), else ("WER", dev_wer); None without a dev set."""
    if "dev_per" in metrics:
        return "PER", metrics["dev_per"]
    return "WER", metrics.get("dev_wer")


@torch.no_grad()
def validate(model, loader, tokenizer, device, cfg: Config, amp) -> dict:
    """Dev loss (mean per utterance) and greedy error rates over a loader: WER and CER, or for a
    phone tokenizer the phone error rate (PER: phones alone, word boundaries not counted)."""
    was_training = model.training
    model.eval()
    phone = getattr(tokenizer, "kind", "") == "phone"
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

"""The CTC forward pass shared by training and validation (asr.validation): features,
(SpecAugment,) the model under autocast, and the fp32 CTC loss."""

from __future__ import annotations

import torch

from asr.config import Config
from asr.features import spec_augment


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

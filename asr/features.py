"""The feature frontend: waveforms in, normalised log-mel (or MFCC) frames out.

``Frontend`` is an ``nn.Module`` saved inside the model, together with its CMVN
statistics, so training and inference cannot disagree about features. It runs on
whatever device the model is on.
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import nn

from asr.config import FeatureConfig, SpecAugmentConfig
from asr.frames import frame_geometry

LOG_FLOOR = 1e-6  # keeps log() finite on digital silence


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True inside each sequence."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def band_floor(feats: torch.Tensor, mask: torch.Tensor, floor_db: float) -> torch.Tensor:
    """Floor natural-log power features ``floor_db`` dB below each utterance's loudest value.

    A band a codec or a telephone line emptied holds quantisation residue 90-110 dB below the
    speech; its log fluctuates like noise. Floored, it is a constant (and 0 after
    ``band_norm=mean``), as digital silence is.

    Args:
        feats: (B, T, F) log-mel (natural log of power).
        mask: (B, T, 1) True on valid frames (the maximum is taken over them only).
        floor_db: dynamic range kept below the maximum.

    Returns:
        (B, T, F) floored features.
    """
    peak = feats.masked_fill(~mask, -torch.inf).amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    return torch.maximum(feats, peak - floor_db * math.log(10.0) / 10.0)


class Frontend(nn.Module):
    """Waveform -> features, with optional level normalisation, band flooring and
    per-utterance band mean normalisation, and CMVN.

    forward(wavs (B, S), wav_lens (B,)) -> feats (B, T, F), feat_lens (B,)
    """

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        sr = cfg.sample_rate
        self.geometry = frame_geometry(cfg)  # samples -> frames (asr.frames)
        self.win_length, self.hop_length = self.geometry.win_length, self.geometry.hop
        # torch.stft centres the window in n_fft samples: every frame spans n_fft samples.
        self.n_fft = n_fft = self.geometry.n_fft
        mel_kwargs = dict(
            sample_rate=sr,
            n_fft=n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            f_min=cfg.f_min,
            f_max=cfg.f_max or sr / 2,
            n_mels=cfg.n_mels,
            center=False,
            power=2.0,
        )
        if cfg.kind == "fbank":
            self.mel = torchaudio.transforms.MelSpectrogram(**mel_kwargs)
            self.dim = cfg.n_mels
        elif cfg.kind == "mfcc":
            mfcc_mel = {k: v for k, v in mel_kwargs.items() if k != "sample_rate"}  # MFCC passes it
            self.mel = torchaudio.transforms.MFCC(
                sample_rate=sr, n_mfcc=cfg.n_mfcc, log_mels=True, melkwargs=mfcc_mel
            )
            self.dim = cfg.n_mfcc
        else:
            raise ValueError(f"feature.kind must be 'fbank' or 'mfcc', got {cfg.kind!r}")
        if cfg.cmvn not in ("global", "utterance", "none"):
            raise ValueError(f"feature.cmvn must be global, utterance or none, got {cfg.cmvn!r}")
        self.register_buffer("cmvn_mean", torch.zeros(self.dim))
        self.register_buffer("cmvn_std", torch.ones(self.dim))

    def num_frames(self, wav_lens: torch.Tensor) -> torch.Tensor:
        """Frames produced for waveforms of these lengths (center=False framing).

        Counted with n_fft (the span torch.stft reads per frame), not win_length: a frame
        counted with win_length would read past the end of a shorter utterance into the
        batch's padding, so padding would change the result.
        """
        return self.geometry.feature_frames(wav_lens, pad=False)

    def raw_features(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features before CMVN: (B, S) -> (B, T, F), lengths (B,)."""
        wavs = wavs.float()
        if wavs.shape[1] < self.n_fft:  # pad so every utterance yields at least one frame
            wavs = nn.functional.pad(wavs, (0, self.n_fft - wavs.shape[1]))
        wav_lens = wav_lens.clamp(min=self.n_fft)
        mask = lengths_to_mask(wav_lens, wavs.shape[1])
        wavs = wavs * mask
        if self.cfg.level_norm:
            # Unit RMS within each utterance's own length, so the recording level does not matter.
            energy = (wavs**2).sum(1) / wav_lens.clamp(min=1)
            wavs = wavs / energy.clamp(min=1e-10).sqrt()[:, None]
        with torch.autocast(device_type=wavs.device.type, enabled=False):
            spec = self.mel(wavs)  # (B, F, T)
            if self.cfg.kind == "fbank":
                spec = torch.log(spec + LOG_FLOOR)
        feats = spec.transpose(1, 2)  # (B, F, T) -> (B, T, F)
        feat_lens = self.geometry.feature_frames(wav_lens).clamp(max=feats.shape[1])
        mask = lengths_to_mask(feat_lens, feats.shape[1])[..., None]  # (B, T, 1)
        if self.cfg.floor_db:
            feats = band_floor(feats, mask, self.cfg.floor_db)
        if self.cfg.band_norm == "mean":
            n = feat_lens.clamp(min=1)[:, None].float()  # (B, 1)
            feats = feats - ((feats * mask).sum(1) / n)[:, None]  # each bin's utterance mean: (B, 1, F)
        return feats * mask, feat_lens

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, feat_lens = self.raw_features(wavs, wav_lens)
        mask = lengths_to_mask(feat_lens, feats.shape[1])[..., None]
        if self.cfg.cmvn == "global":
            feats = (feats - self.cmvn_mean) / self.cmvn_std
        elif self.cfg.cmvn == "utterance":
            n = feat_lens.clamp(min=1)[:, None].float()
            mean = (feats * mask).sum(1) / n
            var = (((feats - mean[:, None]) * mask) ** 2).sum(1) / n
            feats = (feats - mean[:, None]) / var.clamp(min=1e-8).sqrt()[:, None]
        return feats * mask, feat_lens

    @torch.no_grad()
    def set_cmvn(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.cmvn_mean.copy_(mean)
        self.cmvn_std.copy_(std.clamp(min=1e-3))


class CMVNAccumulator:
    """Streaming mean/std of raw features over many batches (one pass, float64 sums)."""

    def __init__(self, dim: int):
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.sumsq = torch.zeros(dim, dtype=torch.float64)

    def update(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> None:
        mask = lengths_to_mask(feat_lens, feats.shape[1])
        valid = feats[mask].double().cpu()  # (N, F)
        self.n += valid.shape[0]
        self.sum += valid.sum(0)
        self.sumsq += (valid**2).sum(0)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n == 0:
            raise ValueError("no frames seen: cannot compute CMVN statistics")
        mean = self.sum / self.n
        var = (self.sumsq / self.n - mean**2).clamp(min=1e-8)
        return mean.float(), var.sqrt().float()


def spec_augment(
    feats: torch.Tensor, feat_lens: torch.Tensor, cfg: SpecAugmentConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Frequency and time masking (Park et al. 2019), in place of a copy.

    Args:
        feats: (B, T, F) normalised features (masked values are set to 0, the mean).
        feat_lens: (B,) valid frames.
        cfg: mask counts and widths.
        generator: torch RNG for reproducible masks.

    Returns:
        (B, T, F) masked copy.
    """
    feats = feats.clone()
    B, T, F = feats.shape
    dev = feats.device

    def rand_int(high: torch.Tensor) -> torch.Tensor:  # uniform in [0, high] per element
        r = torch.rand(high.shape, generator=generator)
        return (r * (high.float().cpu() + 1)).floor().long().to(dev)

    if cfg.freq_masks > 0 and cfg.freq_width > 0:
        for _ in range(cfg.freq_masks):
            w = rand_int(torch.full((B,), min(cfg.freq_width, F)))
            f0 = rand_int((F - w).clamp(min=0).cpu())
            bins = torch.arange(F, device=dev)[None, :]
            m = (bins >= f0[:, None]) & (bins < (f0 + w)[:, None])  # (B, F)
            feats.masked_fill_(m[:, None, :], 0.0)
    if cfg.time_masks > 0 and cfg.time_width > 0:
        for _ in range(cfg.time_masks):
            maxw = torch.minimum(
                torch.full_like(feat_lens, cfg.time_width),
                (feat_lens.float() * cfg.time_width_ratio).long(),
            ).cpu()
            w = rand_int(maxw)
            t0 = rand_int((feat_lens.cpu() - w).clamp(min=0))
            frames = torch.arange(T, device=dev)[None, :]
            m = (frames >= t0[:, None]) & (frames < (t0 + w)[:, None])  # (B, T)
            feats.masked_fill_(m[:, :, None], 0.0)
    return feats

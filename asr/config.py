"""Typed, frozen configuration: the sections' dataclasses, YAML loading and checked dotted overrides
(the typed conversion itself: asr.schema).

A config file holds values only. ``load_config("conf/digits.yaml", ["train.lr=1e-3"])``
reads the YAML, applies the overrides, and checks every key against the dataclass
fields, so a typo is an error that lists the valid keys instead of a silent no-op.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from asr.errors import ConfigError
from asr.schema import (
    check_choice,
    check_range,
    field_types,
    from_dict,
    renamed,
    renamed_keys,
    to_dict,
)


@dataclass(frozen=True)
class FeatureConfig:
    kind: str = "fbank"  # "fbank" (log-mel filterbank) or "mfcc"
    sample_rate: int = 16000  # audio is resampled to this rate before features
    n_mels: int = 80  # mel bands (fbank output size; MFCC's filterbank size)
    n_mfcc: int = 40  # cepstra kept when kind == "mfcc"
    win_ms: float = 25.0  # analysis window length
    hop_ms: float = 10.0  # frame shift
    f_min: float = 20.0  # lowest mel band edge in Hz
    f_max: float = 0.0  # highest mel band edge in Hz; 0 means sample_rate / 2
    level_norm: bool = True  # scale each utterance to unit RMS so recording level does not matter
    cmvn: str = "global"  # "global" (training-set stats stored in the model), "utterance" or "none"
    floor_db: float = 0.0  # fbank: floor each utterance's log-mel this many dB below its loudest bin (a band a codec emptied reads as a constant, not as noise); 0 = off
    band_norm: str = "none"  # "mean": subtract each bin's mean over the utterance before CMVN (a missing or tilted band reads as its mean); "none"

    def __post_init__(self) -> None:
        check_choice("feature.band_norm", self.band_norm, ("none", "mean"))
        check_range("feature.floor_db", self.floor_db, 0.0)
        if self.floor_db and self.kind != "fbank":
            raise ConfigError(f"feature.floor_db applies to fbank features only (feature.kind is "
                              f"{self.kind!r}); set feature.floor_db=0")


@dataclass(frozen=True)
class SpecAugmentConfig:
    freq_masks: int = 2  # number of frequency masks per utterance
    freq_width: int = 15  # maximum width of a frequency mask in bins
    time_masks: int = 2  # number of time masks per utterance
    time_width: int = 40  # maximum width of a time mask in frames
    time_width_ratio: float = 0.1  # time masks never exceed this fraction of the utterance


@dataclass(frozen=True)
class ChannelAugmentConfig:
    """Training-time channel simulation (asr.channel); every probability 0 (off) by default."""

    codec_prob: float = 0.0  # probability of a codec round trip: one of the utterance's codec variants
    codecs: tuple[str, ...] = ("mp3:16", "mp3:24", "mp3:32", "mp3:48", "opus:8", "opus:12", "opus:24",
                               "vorbis:0", "vorbis:4")  # asr.degrade codec kinds each variant draws from
    codec_variants: int = 2  # codec variants per utterance, each encoded once per run (kept by data.cache=ram)
    narrowband_prob: float = 0.0  # probability of resampling through narrowband_rate and back
    narrowband_rate: int = 8000  # the narrow-band sample rate (telephone: 8000)
    lowpass_prob: float = 0.0  # probability of a steep low-pass
    lowpass_hz: tuple[float, float] = (3400.0, 7500.0)  # its cut-off, drawn uniformly
    highpass_prob: float = 0.0  # probability of a high-pass
    highpass_hz: tuple[float, float] = (50.0, 300.0)  # its cut-off, drawn uniformly
    gain_prob: float = 0.0  # probability of a gain change (applied last, clipped at full scale)
    gain_db: tuple[float, float] = (-30.0, 10.0)  # the gain, drawn uniformly
    reverb_prob: float = 0.0  # probability of a synthetic room (asr.room.room_impulse_response)
    reverb_rt60: tuple[float, float] = (0.2, 1.0)  # its reverberation time, seconds, drawn uniformly
    reverb_drr_db: tuple[float, float] = (0.0, 12.0)  # its direct-to-reverberant ratio, dB, drawn uniformly
    telephone_prob: float = 0.0  # probability of a whole phone line: band-pass, 8 kHz, G.711 mu-law (asr.channel)
    telephone_low_hz: tuple[float, float] = (200.0, 400.0)  # its lower band edge, drawn uniformly
    telephone_high_hz: tuple[float, float] = (3000.0, 3600.0)  # its upper band edge, drawn uniformly

    def __post_init__(self) -> None:
        for name in ("codec_prob", "narrowband_prob", "lowpass_prob", "highpass_prob", "gain_prob", "reverb_prob",
                     "telephone_prob"):
            check_range(f"augment.channel.{name}", getattr(self, name), 0.0, 1.0)
        check_range("augment.channel.codec_variants", self.codec_variants, 1)
        check_range("augment.channel.narrowband_rate", self.narrowband_rate, 1000)
        for name in ("lowpass_hz", "highpass_hz", "gain_db", "reverb_rt60", "reverb_drr_db", "telephone_low_hz",
                     "telephone_high_hz"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
                raise ConfigError(f"augment.channel.{name} must be [low, high] with low <= high; got {list(lo_hi)}")
        if min(self.lowpass_hz + self.highpass_hz) <= 0:
            raise ConfigError("augment.channel.lowpass_hz and highpass_hz must be above 0 Hz")
        (lo, lo_top), (hi_bottom, hi) = self.telephone_low_hz, self.telephone_high_hz
        if self.telephone_prob > 0 and not (0 < lo and lo_top < hi_bottom and hi < self.narrowband_rate / 2):
            raise ConfigError("augment.channel.telephone_low_hz and telephone_high_hz must be bands 0 < low < high < "
                              f"narrowband_rate / 2 = {self.narrowband_rate / 2:g} Hz; got "
                              f"{list(self.telephone_low_hz)} and {list(self.telephone_high_hz)}")
        if not (0.05 <= self.reverb_rt60[0] and self.reverb_rt60[1] <= 3.0):
            raise ConfigError(f"augment.channel.reverb_rt60 must lie in 0.05-3.0 s; got {list(self.reverb_rt60)}")
        if self.codec_prob > 0 and not self.codecs:
            raise ConfigError("augment.channel.codec_prob > 0 needs augment.channel.codecs (e.g. [mp3:24, opus:12])")


@dataclass(frozen=True)
class AugmentConfig:
    specaugment: bool = True  # apply SpecAugment in training (never at evaluation)
    spec: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    speed_perturb: tuple[float, ...] = ()  # e.g. (0.9, 1.0, 1.1); empty disables
    noise_prob: float = 0.0  # probability of adding noise to a training utterance
    noise_snr_db: tuple[float, float] = (10.0, 30.0)  # SNR range for added noise
    noise_manifest: str = ""  # manifest of noise recordings; empty means generated noise
    channel: ChannelAugmentConfig = field(default_factory=ChannelAugmentConfig)  # codecs, band limits, gain
    channel_from_epoch: int = 1  # noise and channel augmentation from this epoch on (1: every epoch); speed every epoch

    def __post_init__(self) -> None:
        check_range("augment.channel_from_epoch", self.channel_from_epoch, 1)


# model.subsampling kinds and the frame-rate reduction of each (the one list: config, model, transcribe)
SUBSAMPLING_FACTOR = {"none": 1, "stack2": 2, "stack3": 3, "stack4": 4, "conv2": 2, "conv4": 4}


@dataclass(frozen=True)
class ModelConfig:
    rnn_type: str = "lstm"  # "lstm", "gru" or "lstm_peephole" (custom cell, slower)
    num_layers: int = 4  # stacked recurrent layers
    hidden_size: int = 320  # units per direction
    bidirectional: bool = True  # run a backward direction too
    proj_size: int = 0  # LSTMP-style projection of each layer's output; 0 disables
    dropout: float = 0.1  # dropout between recurrent layers
    layer_norm: bool = False  # layer norm on each layer's output
    subsampling: str = "stack3"  # "none", "stack2", "stack3", "stack4", "conv2" or "conv4"
    conv_channels: int = 32  # channels of the Conv2d subsampling front-end

    def __post_init__(self) -> None:
        check_choice("model.rnn_type", self.rnn_type, ("lstm", "gru", "lstm_peephole"))
        check_choice("model.subsampling", self.subsampling, tuple(SUBSAMPLING_FACTOR))
        check_range("model.num_layers", self.num_layers, 1)
        check_range("model.hidden_size", self.hidden_size, 1)
        check_range("model.conv_channels", self.conv_channels, 1)
        check_range("model.dropout", self.dropout, 0.0, 1.0, hi_open=True)
        if self.proj_size < 0 or (self.proj_size and self.proj_size >= self.hidden_size):
            raise ConfigError(f"model.proj_size must be 0 (off) or below hidden_size "
                              f"({self.hidden_size}), got {self.proj_size}")
        if self.proj_size and self.rnn_type != "lstm":
            raise ConfigError(f"model.proj_size is only supported with rnn_type=lstm, "
                              f"not {self.rnn_type!r}; set model.proj_size=0")


@dataclass(frozen=True)
class TokenizerConfig:
    kind: str = "char"  # "char", "sentencepiece" or "phone" (ARPAbet phonemes through a lexicon)
    vocab_size: int = 256  # SentencePiece vocabulary size
    sp_model_type: str = "unigram"  # SentencePiece "bpe" or "unigram"
    lowercase: bool = True  # normalise text to lower case
    keep_chars: str = "'"  # punctuation kept by normalisation (letters, digits, space always kept)
    strip_accents: bool = False  # drop accents in normalisation ("café" -> "cafe")
    path: str = ""  # tokenizer file from `asr tokenizer train`; when set, used instead of training one
    lexicon: str = ""  # phone: pronunciation file (WORD P1 P2 ... lines) used instead of CMUdict
    phone_stress: bool = False  # phone: keep CMUdict's stress digits (69 units instead of 39)


@dataclass(frozen=True)
class DataConfig:
    train_manifest: str = ""  # JSONL manifest of training utterances
    dev_manifest: str = ""  # JSONL manifest used for validation and best-checkpoint selection
    max_batch_seconds: float = 120.0  # total audio seconds per batch (dynamic batch size)
    max_batch_size: int = 64  # hard cap on utterances per batch
    num_buckets: int = 10  # duration buckets for batching
    min_duration: float = 0.05  # shorter utterances are skipped with a warning
    max_duration: float = 30.0  # longer utterances are skipped with a warning
    num_workers: int = 0  # DataLoader worker processes (each uses one torch thread)
    cache: str = "off"  # "ram": keep decoded (and speed-perturbed) waveforms as int16 in RAM, decoded once per run (asr.wavecache; needs num_workers=0)
    cache_max_gb: float = 8.0  # RAM the cache may use; beyond it audio is decoded every epoch
    cache_workers: int = -1  # processes (1 thread each) filling the cache before epoch 1 (decoded audio, speed and codec variants); -1: one per training thread, 0: each waveform at first use, in the training process

    def __post_init__(self) -> None:
        check_choice("data.cache", self.cache, ("off", "ram"))
        check_range("data.cache_max_gb", self.cache_max_gb, 0.0)
        check_range("data.cache_workers", self.cache_workers, -1)


@dataclass(frozen=True)
class TrainConfig:
    # keys renamed since configs and checkpoints were first written (asr.schema reads the old ones with a warning)
    RENAMED: ClassVar[tuple[str, dict[str, str]]] = ("train", {"average_last": "average_best"})  # it averaged the best

    epochs: int = 10  # passes over the training data
    optimizer: str = "adam"  # "adam", "adamw" or "sgd"
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # L2 (adam/sgd) or decoupled (adamw) weight decay
    scheduler: str = "cosine"  # "constant", "cosine", "noam" or "plateau"
    warmup_steps: int = 200  # linear warm-up steps before the schedule
    min_lr_ratio: float = 0.05  # cosine floor as a fraction of lr
    grad_clip: float = 5.0  # max global gradient norm
    accum_steps: int = 1  # gradient accumulation steps per optimizer update
    seed: int = 1234  # seeds python, numpy and torch
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    amp: str = "auto"  # "auto" (CUDA: bf16/fp16; CPU: bf16 with AMX, the only CPUs where it is faster, else off), "off", "bf16" or "fp16" (CUDA)
    threads: int = 0  # CPU threads for torch; 0 means all cores
    direction_parallel: str = "auto"  # CPU: the two directions of each BiLSTM layer at once, one core each (asr.parallel_rnn); "auto" (off: measured no faster, see asr.parallel_rnn.AUTO_ON_CPU), "on" (true) or "off" (false); a runtime choice, checkpoints are the same
    keep_last: int = 3  # epoch checkpoints kept
    keep_best: int = 3  # best-by-dev-WER (PER for phones) checkpoints kept
    patience: int = 0  # stop after this many epochs without dev WER improvement; 0 disables
    log_every: int = 20  # steps between log lines
    max_bad_steps: int = 20  # stop after this many consecutive non-finite losses
    average_best: int = 0  # average the best N checkpoints (by dev WER, PER for phones) into model.pt at the end; 0 or 1: the best alone (the old name average_last is still read)
    valid_subset: int = 0  # validate on a fixed subset of N dev utterances after each epoch (selection, patience), the full dev set after the last; 0 = full dev every epoch
    eval_every: int = 0  # also compute dev loss/WER every N updates (logged; best checkpoints are chosen at epoch ends); 0 = off
    init_from: str = ""  # fine-tuning: start from this checkpoint's weights, units and CMVN (model.pt or any checkpoint of the same model config) with a fresh optimizer and LR schedule; "" = random init; ignored when resuming
    select_on: tuple[str, ...] = ("dev",)  # dev sets whose mean WER ranks epochs (best checkpoints, patience): "dev" (data.dev_manifest) and/or manifest paths, e.g. degraded copies of dev (asr.selection)

    def __post_init__(self) -> None:
        check_choice("train.optimizer", self.optimizer, ("adam", "adamw", "sgd"))
        check_choice("train.scheduler", self.scheduler, ("constant", "cosine", "noam", "plateau"))
        check_choice("train.amp", self.amp, ("auto", "off", "bf16", "fp16"))
        check_choice("train.direction_parallel", self.direction_parallel, ("auto", "on", "off"))
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        check_range("train.epochs", self.epochs, 1)
        check_range("train.lr", self.lr, 0.0, hi_open=True, lo_open=True)
        check_range("train.accum_steps", self.accum_steps, 1)
        check_range("train.log_every", self.log_every, 1)
        for name in ("warmup_steps", "threads", "keep_last", "keep_best", "patience", "eval_every", "valid_subset",
                     "average_best", "max_bad_steps"):
            check_range(f"train.{name}", getattr(self, name), 0)
        check_range("train.grad_clip", self.grad_clip, 0.0)
        check_range("train.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)


@dataclass(frozen=True)
class DecodeConfig:
    method: str = "greedy"  # "greedy" or "beam"
    beam_size: int = 8  # beam width for "beam"
    token_topk: int = 0  # only extend with the k most likely tokens per frame; 0 = all
    token_min_logp: float = -12.0  # skip tokens less likely than this per frame
    lm_path: str = ""  # ARPA word n-gram for shallow fusion; empty disables
    lm_weight: float = 0.5  # alpha
    word_bonus: float = 1.0  # beta, added per word
    lexicon: str = ""  # file of allowed words (one per line); empty disables
    nbest: int = 1  # hypotheses returned per utterance
    oov_penalty: float = -10.0  # added per word the LM does not know (with an LM, no lexicon)
    num_workers: int = 1  # threads decoding the utterances of a batch in parallel
    # LM + lexicon: score a partial word by the best LM score of the words it can become: "context" (given
    # its LM history), "unigram" (flashlight's smearing) or "off"; true/false (older configs): unigram/off
    lm_lookahead: str = "context"

    def __post_init__(self):
        object.__setattr__(self, "lm_lookahead", lookahead_mode(self.lm_lookahead, "decode.lm_lookahead"))


LOOKAHEAD_MODES = ("context", "unigram", "off")  # decode.lm_lookahead, BeamOptions.lm_lookahead


def lookahead_mode(value, name: str = "lm_lookahead") -> str:
    """An LM look-ahead setting as one of ``LOOKAHEAD_MODES``: true (YAML on) and false, from configs,
    options and tuned-weights files of before the context look-ahead, read as "unigram" and "off".

    Raises:
        ConfigError: any other value.
    """
    mode = {"true": "unigram", "on": "unigram", "false": "off"}.get(str(value).lower(), value)
    check_choice(name, mode, LOOKAHEAD_MODES)
    return mode


@dataclass(frozen=True)
class Config:
    run_dir: str = "runs/default"  # where checkpoints, logs and reports are written
    feature: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` overrides; values are parsed as YAML scalars."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = data
        cls: Any = Config
        for i, part in enumerate(parts):
            valid = field_types(cls)
            if i == len(parts) - 1 and part in renamed_keys(cls)[1]:
                part = next(iter(renamed(cls, {part: None}, f"override {item!r}")))
            if part not in valid:
                prefix = ".".join(parts[:i]) or "config"
                raise ConfigError(
                    f"override {item!r}: unknown key {part!r} in {prefix}; "
                    f"valid keys are: {', '.join(valid)}"
                )
            if i == len(parts) - 1:
                if dataclasses.is_dataclass(valid[part]):
                    raise ConfigError(f"override {item!r}: {key} is a section, set one of its keys")
                node[part] = yaml.safe_load(raw) if raw.strip() else ""
            else:
                if not dataclasses.is_dataclass(valid[part]):
                    raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
                node = node[part]
                cls = valid[part]
    return from_dict(Config, data)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
    try:
        cfg = from_dict(Config, data, where=str(path) if path else "config")
    except ConfigError:
        raise
    return apply_overrides(cfg, overrides or [])


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config (every field, defaults included) as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

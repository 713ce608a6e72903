"""Run a model over a manifest and score it: per-utterance results and corpus WER/CER."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from asr.audio import AudioError
from asr.data import BucketBatchSampler, Utterance, load_utterance
from asr.metrics import ErrorCounts, char_errors, word_errors
from asr.transcribe import Model

log = logging.getLogger("asr.evaluate")


@dataclass
class UttResult:
    id: str
    speaker: str
    duration: float
    ref: str  # normalised reference
    hyp: str
    wer: dict  # word ErrorCounts.to_dict()
    cer: dict  # char ErrorCounts.to_dict()


@dataclass
class EvalResult:
    utts: list[UttResult] = field(default_factory=list)
    words: ErrorCounts = field(default_factory=ErrorCounts)
    chars: ErrorCounts = field(default_factory=ErrorCounts)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (utterance id, reason)
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def wer(self) -> float:
        return self.words.rate

    @property
    def cer(self) -> float:
        return self.chars.rate


def evaluate(model: Model, utts: list[Utterance], max_batch_seconds: float = 120.0, progress: bool = True) -> EvalResult:
    """Transcribe every utterance (batched by duration) and accumulate error counts.

    An utterance whose audio cannot be read, or that makes the model or decoder fail, is reported,
    counted in ``failed`` and skipped; the others are still scored.
    """
    res = EvalResult()
    sampler = BucketBatchSampler([u.duration for u in utts], max_batch_seconds, 64, 10, shuffle=False)
    bar = tqdm(total=sum(u.duration for u in utts), unit="audio-s", desc="evaluate", disable=not progress or None,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} audio-s [{elapsed}<{remaining}, {rate_fmt}]")
    t0 = time.time()
    for idx in sampler:
        batch_utts, wavs = [], []
        for i in idx:
            u = utts[i]
            if u.duration > model.segment_opts.max_seconds:
                # A long recording is cut into segments and streamed (bounded memory), not batched.
                _evaluate_long(model, u, res)
                bar.update(u.duration)
                continue
            try:
                wavs.append(load_utterance(u, model.sample_rate))
                batch_utts.append(u)
            except AudioError as e:
                log.warning("skipping utterance %s: %s", u.id, e)
                res.failed.append((u.id, str(e)))
            bar.update(u.duration)
        if not wavs:
            continue
        for u, out, w in _transcribe_or_isolate(model, batch_utts, wavs, res):
            ref = model.tokenizer.normalize(u.text)
            we, ce = word_errors(ref, out.text), char_errors(ref, out.text)
            res.words += we
            res.chars += ce
            res.audio_seconds += w.size / model.sample_rate
            res.utts.append(UttResult(u.id, u.speaker, u.duration, ref, out.text, we.to_dict(), ce.to_dict()))
    bar.close()
    res.decode_seconds = time.time() - t0
    order = {u.id: i for i, u in enumerate(utts)}
    res.utts.sort(key=lambda r: order[r.id])
    return res


def _transcribe_or_isolate(model: Model, utts: list[Utterance], wavs: list, res: EvalResult):
    """Transcribe a batch; if it fails, retry each utterance alone so that only the one at fault
    is reported (in ``res.failed``) and skipped, and the evaluation goes on."""
    try:
        with torch.no_grad():
            return list(zip(utts, model.transcribe_batch(wavs), wavs))
    except Exception as e:  # noqa: BLE001 - any failure of one batch must not lose the whole evaluation
        if len(wavs) == 1:
            log.warning("skipping utterance %s (%s): %s: %s", utts[0].id, utts[0].audio, type(e).__name__, e)
            res.failed.append((utts[0].id, f"{type(e).__name__}: {e}"))
            return []
    out = []
    for u, w in zip(utts, wavs):
        out += _transcribe_or_isolate(model, [u], [w], res)
    return out


def _evaluate_long(model: Model, u: Utterance, res: EvalResult) -> None:
    """Score one utterance longer than a segment through ``model.transcribe`` (chunked)."""
    try:
        # a whole file is streamed from disk; a segment of one is read (only its frames) first
        src = load_utterance(u, model.sample_rate) if (u.segment or u.offset) else u.audio
        with torch.no_grad():
            out = model.transcribe(src)
    except AudioError as e:
        log.warning("skipping utterance %s: %s", u.id, e)
        res.failed.append((u.id, str(e)))
        return
    ref = model.tokenizer.normalize(u.text)
    we, ce = word_errors(ref, out.text), char_errors(ref, out.text)
    res.words += we
    res.chars += ce
    res.audio_seconds += out.duration
    res.utts.append(UttResult(u.id, u.speaker, u.duration, ref, out.text, we.to_dict(), ce.to_dict()))

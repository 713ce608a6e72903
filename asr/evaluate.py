"""Run a model over a manifest and score it: per-utterance results and corpus WER/CER.

A phone model is scored twice from the same forward pass: WER on the words of the lexicon
beam search (greedy decoding has no words), PER (phone error rate) on its greedy phones
against the reference's pronunciation (the tokenizer's ``encode``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from asr.audio import AudioError
from asr.data import BucketBatchSampler, Utterance, load_utterance
from asr.decoding import DecodingOptions
from asr.errors import one_line
from asr.metrics import ErrorCounts, char_errors, word_alignment, word_errors
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
    per: dict | None = None  # phone models: phone ErrorCounts.to_dict() of the greedy phones
    alternatives: list | None = None  # with nbest > 1: [(text, score)], best first


@dataclass
class EvalResult:
    utts: list[UttResult] = field(default_factory=list)
    words: ErrorCounts = field(default_factory=ErrorCounts)
    chars: ErrorCounts = field(default_factory=ErrorCounts)
    phones: ErrorCounts = field(default_factory=ErrorCounts)  # phone models only
    # phone models: per reference phone {"ref", "sub", "del"} and per hypothesis phone "ins" (greedy phones)
    phone_units: dict[str, dict[str, int]] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (utterance id, reason): skipped
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0
    options: DecodingOptions | None = None  # the decoding options used

    @property
    def wer(self) -> float:
        return self.words.rate

    @property
    def cer(self) -> float:
        return self.chars.rate

    @property
    def per(self) -> float:
        """Phone error rate of a phone model's greedy output (0 for other models)."""
        return self.phones.rate


def evaluate(model: Model, utts: list[Utterance], max_batch_seconds: float = 120.0, progress: bool = True,
             options: DecodingOptions | None = None) -> EvalResult:
    """Transcribe every utterance (batched by duration) and accumulate error counts.

    An utterance whose audio cannot be read, or that makes the model or decoder fail (greedy or
    beam search, in a batch, alone, or cut into segments when longer than a segment), is logged,
    listed in ``failed`` with the reason and skipped; the others are still scored.

    Args:
        options: decoding options (default: the model's); ``model`` itself is not changed.
    """
    res = EvalResult()
    if options is not None:
        model = model.with_decoding(options)
    if getattr(model, "is_phone", False) and not model.uses_beam:
        log.warning("phone model: WER from lexicon beam decoding (beam size %d), PER from greedy decoding",
                    model.options.beam_size)
        model = model.with_decoding(method="beam")
    res.options = model.options
    if getattr(model, "is_phone", False):
        _warn_missing_words(model, utts)
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
            except Exception as e:  # noqa: BLE001 - AudioError, or an audio library's own error on a damaged file
                _skip(res, u, e)
            bar.update(u.duration)
        if not wavs:
            continue
        for u, out, w in _transcribe_or_isolate(model, batch_utts, wavs, res):
            _score(model, u, out, w.size / model.sample_rate, res)
    bar.close()
    res.decode_seconds = time.time() - t0
    order = {u.id: i for i, u in enumerate(utts)}
    res.utts.sort(key=lambda r: order[r.id])
    return res


def _warn_missing_words(model: Model, utts: list[Utterance]) -> None:
    """Name the reference words a phone model's lexicon lacks: it can never output them."""
    lexicon = model.lexicon()
    missing = Counter(w for u in utts for w in model.tokenizer.normalize(u.text).split() if w not in lexicon)
    if missing:
        examples = ", ".join(repr(w) for w, _ in missing.most_common(5))
        log.warning("%d reference words (%d distinct, most frequent: %s) are not in the lexicon, so the "
                    "phone model cannot output them; add their pronunciations with --lexicon FILE",
                    sum(missing.values()), len(missing), examples)


def _phone_errors(model: Model, ref: str, hyp_phones: str, utt_id: str,
                  units: dict[str, dict[str, int]]) -> ErrorCounts | None:
    """Phone edit operations of a phone model's greedy phones against the reference's
    pronunciation, each phone's share added to ``units`` (see :func:`count_phone_units`); None
    for other models (or a reference the tokenizer cannot encode)."""
    if not getattr(model, "is_phone", False):
        return None
    try:
        ids = model.tokenizer.encode(ref)
    except ValueError as e:
        log.warning("utterance %s: no PER (the reference cannot be turned into phones: %s)", utt_id, e)
        return None
    return count_phone_units(model._phones(ids), hyp_phones, units)


def count_phone_units(ref: str, hyp: str, units: dict[str, dict[str, int]]) -> ErrorCounts:
    """One utterance's phone edit operations (as :func:`asr.metrics.word_errors` counts them, from
    the same single alignment), each added to ``units`` per phone: how often the reference has it
    ("ref"), and of those how often it was substituted ("sub") or deleted ("del"); insertions
    count for the inserted phone ("ins"). Which sounds a channel takes away (a telephone band's
    fricatives and nasals) shows here, where a PER cannot tell.

    >>> u = {}
    >>> count_phone_units("S IY N", "F IY", u)
    ErrorCounts(sub=1, dele=1, ins=0, ref=3)
    >>> u["S"], u["N"], u["IY"]["ref"]
    ({'ref': 1, 'sub': 1, 'del': 0, 'ins': 0}, {'ref': 1, 'sub': 0, 'del': 1, 'ins': 0}, 1)
    """
    def unit(p: str) -> dict[str, int]:
        return units.setdefault(p, {"ref": 0, "sub": 0, "del": 0, "ins": 0})

    total = ErrorCounts()
    for op, r, h in word_alignment(ref, hyp):
        if op == "insert":
            unit(h)["ins"] += 1
            total.ins += 1
            continue
        c = unit(r)
        c["ref"] += 1
        total.ref += 1
        if op == "substitute":
            c["sub"] += 1
            total.sub += 1
        elif op == "delete":
            c["del"] += 1
            total.dele += 1
    return total


def _transcribe_or_isolate(model: Model, utts: list[Utterance], wavs: list, res: EvalResult):
    """Transcribe a batch; if it fails, retry each utterance alone so that only the one at fault
    is reported (in ``res.failed``) and skipped, and the evaluation goes on."""
    try:
        with torch.no_grad():
            return list(zip(utts, model.transcribe_batch(wavs), wavs))
    except Exception as e:  # noqa: BLE001 - any failure of one batch must not lose the whole evaluation
        if len(wavs) == 1:
            _skip(res, utts[0], e)
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
    except Exception as e:  # noqa: BLE001 - unreadable audio, or the model or decoder failing on a segment
        _skip(res, u, e)
        return
    _score(model, u, out, out.duration, res)


def _skip(res: EvalResult, u: Utterance, e: Exception) -> None:
    """Log and list an utterance that could not be decoded (the evaluation goes on)."""
    reason = str(e) if isinstance(e, AudioError) else f"{type(e).__name__}: {one_line(e)}"
    log.warning("skipping utterance %s (%s): %s", u.id, u.audio, reason)
    res.failed.append((u.id, reason))


def _score(model: Model, u: Utterance, out, seconds: float, res: EvalResult) -> None:
    """Add one decoded utterance's errors to ``res`` (and its per-utterance result)."""
    ref = model.tokenizer.normalize(u.text)
    we, ce = word_errors(ref, out.text), char_errors(ref, out.text)
    res.words += we
    res.chars += ce
    res.audio_seconds += seconds
    pe = _phone_errors(model, ref, out.phones, u.id, res.phone_units)
    if pe is not None:
        res.phones += pe
    alts = [[t, round(s, 3)] for t, s in out.alternatives] if model.options.nbest > 1 else None
    res.utts.append(UttResult(u.id, u.speaker, u.duration, ref, out.text, we.to_dict(), ce.to_dict(),
                              pe.to_dict() if pe is not None else None, alts))

"""Word timestamps from CTC posteriors: forced alignment of a token sequence to the frames.

Given an utterance's log-probabilities and the token ids of its transcript (the
decoder's best hypothesis, or a reference), ``torchaudio.functional.forced_align``
finds the most likely frame-level CTC path that spells exactly those tokens. Each
token then owns a run of frames; a word runs from the first frame of its first
token to the last frame of its last token. Frames are converted to seconds with the
model's output frame shift (feature hop x subsampling factor).

CTC posteriors are "peaky": a token usually fires on one or two frames, often a
little after the sound starts, so times are accurate to a few output frames
(tens of milliseconds), not to the phone boundary.

>>> import torch
>>> lp = torch.full((6, 4), -10.0)
>>> for t, k in enumerate([0, 1, 3, 0, 2, 0]):  # blank, "a", " ", blank, "b", blank
...     lp[t, k] = 0.0
>>> [(w.word, w.start, w.end) for w in word_timestamps(lp, [1, 3, 2], ["-", "a", "b", " "], 0.5)]
[('a', 0.5, 1.0), ('b', 2.0, 2.5)]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torchaudio.functional as AF

from asr.wordpieces import piece_role


@dataclass
class Word:
    word: str  # the word's text
    start: float  # seconds from the start of the audio
    end: float  # seconds; end > start
    confidence: float  # mean posterior of the word's tokens on their aligned frames, in [0, 1]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["start"], d["end"], d["confidence"] = round(self.start, 3), round(self.end, 3), round(self.confidence, 4)
        return d


def align_tokens(log_probs: torch.Tensor, tokens: list[int], blank: int = 0) -> list[tuple[int, int, float]]:
    """Forced-align ``tokens`` to the frames of one utterance.

    Args:
        log_probs: (T, V) log-probabilities of the utterance's valid frames.
        tokens: token ids (no blanks) to align, in order.
        blank: blank id.

    Returns:
        one (first_frame, last_frame, mean_posterior) per token, frames inclusive and increasing.
        Falls back to the best path's spans when the frames are too few for the tokens
        (CTC needs one frame per token plus one between repeats).
    """
    T = log_probs.shape[0]
    if not tokens or T == 0:
        return []
    lp = log_probs.detach().float().cpu()
    repeats = sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)
    if len(tokens) + repeats > T:
        return _best_path_spans(lp, len(tokens), blank)
    targets = torch.tensor([tokens], dtype=torch.int32)
    path, scores = AF.forced_align(lp[None], targets, blank=blank)  # (1, T), (1, T)
    path, post = path[0].tolist(), scores[0].exp().tolist()
    spans: list[tuple[int, int, float]] = []
    prev = blank
    for t, k in enumerate(path):
        if k != blank and k != prev:
            spans.append((t, t, post[t]))  # a new token starts here
        elif k != blank:
            s, _, p = spans[-1]  # the same token continues: extend it, keep the best posterior
            spans[-1] = (s, t, max(p, post[t]))
        prev = k
    return spans


def _best_path_spans(lp: torch.Tensor, n: int, blank: int) -> list[tuple[int, int, float]]:
    """Token spans of the argmax path (used only when forced alignment is impossible)."""
    best = lp.argmax(-1).tolist()
    spans: list[tuple[int, int, float]] = []
    prev = blank
    for t, k in enumerate(best):
        if k != blank and k != prev:
            spans.append((t, t, math.exp(float(lp[t, k]))))
        elif k != blank:
            s, _, p = spans[-1]
            spans[-1] = (s, t, max(p, math.exp(float(lp[t, k]))))
        prev = k
    T = lp.shape[0]
    while len(spans) < n:  # pad so that every token gets a (possibly degenerate) span
        spans.append((T - 1, T - 1, 0.0))
    return spans[:n]


def frame_energy_db(wav, num_frames: int, frame_samples: int):
    """Mean energy in dB of each output frame's stretch of audio.

    Args:
        wav: 1-D float array at the model's rate.
        num_frames: output frames T of the model for this audio.
        frame_samples: samples per output frame (frame shift x sample rate).

    Returns:
        (T,) float array of dB values (silence near -100).
    """
    import numpy as np

    n = num_frames * frame_samples
    x = np.zeros(n, dtype=np.float64)
    m = min(n, wav.size)
    x[:m] = wav[:m]
    return 10 * np.log10((x.reshape(num_frames, frame_samples) ** 2).mean(1) + 1e-10)


def _voiced(energy_db) -> list[bool]:
    """Frames louder than a level between the recording's noise floor and its peaks."""
    import numpy as np

    floor, peak = np.percentile(energy_db, 10), np.percentile(energy_db, 95)
    thr = max(floor + 0.25 * (peak - floor), peak - 30.0)
    return (energy_db > thr).tolist()


def _runs(voiced: list[bool]) -> list[tuple[int, int]]:
    """(first, last) frames of each stretch of voiced frames."""
    runs, start = [], None
    for t, v in enumerate(voiced + [False]):
        if v and start is None:
            start = t
        elif not v and start is not None:
            runs.append((start, t - 1))
            start = None
    return runs


def _refine(groups: list[list[tuple[int, int]]], voiced: list[bool]) -> list[tuple[int, int]]:
    """Move each word onto the voiced stretch where its tokens sit.

    A bidirectional CTC model often emits a word's first characters early, in the pause
    before it or at the end of the previous word. Each word therefore takes, among the
    voiced stretches between its neighbours' tokens, the one where its own tokens make
    the largest share of all token frames (then the most of them). A word with no token
    in a voiced stretch keeps its tokens' span.
    """
    T = len(voiced)
    owner = [-1] * T  # which word's token sits on each frame
    for i, g in enumerate(groups):
        for s, e in g:
            for t in range(s, e + 1):
                owner[t] = i
    runs = _runs(voiced)
    out = []
    for i, g in enumerate(groups):
        lo = groups[i - 1][-1][1] + 1 if i > 0 else 0
        hi = groups[i + 1][0][0] - 1 if i + 1 < len(groups) else T - 1
        best, best_key = (g[0][0], g[-1][1]), (0, 0.0, 0)
        for rs, re in runs:
            s, e = max(rs, lo), min(re, hi)
            if s > e:
                continue
            own = sum(1 for t in range(s, e + 1) if owner[t] == i)
            others = sum(1 for t in range(rs, re + 1) if owner[t] not in (-1, i))
            key = (int(own > 0), own / (own + others) if own else 0.0, own)
            if own > 0 and key > best_key:
                best, best_key = (s, e), key
        out.append(best)
    for i in range(1, len(out)):  # keep words in order and non-overlapping
        if out[i][0] <= out[i - 1][1]:
            out[i] = (out[i - 1][1] + 1, max(out[i][1], out[i - 1][1] + 1))
    return out


def word_timestamps(
    log_probs: torch.Tensor,
    tokens: list[int],
    token_strings: list[str],
    frame_shift: float,
    offset: float = 0.0,
    blank: int = 0,
    space_id: int | None = None,
    energy_db=None,
    words: list[str] | None = None,
    joiner: str = "",
) -> list[Word]:
    """Words of a token sequence with start/end times in seconds.

    Args:
        log_probs: (T, V) log-probabilities of one utterance (valid frames only).
        tokens: the transcript's token ids (e.g. the best hypothesis).
        token_strings: the vocabulary's strings (index = id); words are split at the space
            token of a character vocabulary or at the SentencePiece marker "▁".
        frame_shift: seconds per output frame (feature hop x subsampling).
        offset: seconds added to every time (the segment's start in a long recording).
        blank: blank id.
        space_id: id of the word separator; default ``token_strings.index(" ")`` if present.
        energy_db: optional (T,) frame energies (see :func:`frame_energy_db`); when given,
            each word is moved onto the voiced stretch that holds most of its tokens.
        words: the words of the token groups, in order, when the tokens do not spell them
            (a phone model's words come from the lexicon decoder: one per group of phones
            between word boundaries); extra trailing groups (a final partial word the lexicon
            rejected) are dropped.
        joiner: put between a word's token strings (" " for phones); "" spells characters.

    Returns:
        the words in order, each with ``start < end`` within ``offset + T * frame_shift``.
    """
    if space_id is None:
        space_id = token_strings.index(" ") if " " in token_strings else -1
    spans = align_tokens(log_probs, tokens, blank)
    found: list[tuple[str, list[tuple[int, int]], float]] = []  # (text, token spans, confidence)
    cur: list[tuple[str, int, int, float]] = []  # (text, first frame, last frame, posterior)

    def flush() -> None:
        text = joiner.join(c[0] for c in cur)
        if text:
            found.append((text, [(c[1], c[2]) for c in cur], sum(c[3] for c in cur) / len(cur)))
        cur.clear()

    for tok, (s, e, p) in zip(tokens, spans):
        role, piece = piece_role(token_strings[tok])  # asr.wordpieces: the one splitter
        if tok == space_id or role == "separator":
            flush()
            continue
        if role == "start":
            flush()
        cur.append((piece, s, e, p))
    flush()
    if words is not None:
        found = [(w, g, conf) for w, (_, g, conf) in zip(words, found)]
    if energy_db is not None and len(found) and len(energy_db) == log_probs.shape[0]:
        frames = _refine([g for _, g, _ in found], _voiced(energy_db))
    else:
        frames = [(g[0][0], g[-1][1]) for _, g, _ in found]
    return [Word(text, offset + s * frame_shift, offset + (e + 1) * frame_shift, min(1.0, conf))
            for (text, _, conf), (s, e) in zip(found, frames)]

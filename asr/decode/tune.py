"""Tune the LM weight (alpha) and word bonus (beta) on a dev set by grid search.

The acoustic model runs once; each (alpha, beta) pair only re-runs the beam search on the
stored log-probabilities, which the C++ search makes cheap.
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from asr.decode.beam import BeamOptions, beam_search
from asr.metrics import ErrorCounts, word_errors

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
DEFAULT_BETAS = (-1.0, 0.0, 1.0, 2.0, 3.0)
DEFAULT_OPTIONS = BeamOptions()


@dataclass
class TuneResult:
    lm_weight: float  # best alpha
    word_bonus: float  # best beta
    wer: float  # dev WER at the best pair
    grid: list[dict] = field(default_factory=list)  # [{"lm_weight", "word_bonus", "wer"}] for every pair


def corpus_wer(hyps: list[str], refs: list[str]) -> float:
    total = ErrorCounts()
    for h, r in zip(hyps, refs):
        total += word_errors(r, h)
    return total.rate


def grid_search(
    log_probs: torch.Tensor | np.ndarray,
    lengths: torch.Tensor | np.ndarray | list[int],
    refs: list[str],
    tokens: list[str],
    lm,
    lexicon: set[str] | None = None,
    options: BeamOptions = DEFAULT_OPTIONS,
    alphas=DEFAULT_ALPHAS,
    betas=DEFAULT_BETAS,
    progress: bool = True,
    refine: bool = True,
) -> TuneResult:
    """Decode the dev set at every (alpha, beta) and keep the pair with the lowest WER.

    Args:
        log_probs: (B, T, V) log-probabilities of the dev utterances.
        lengths: (B,) valid frames.
        refs: (B,) normalised reference transcripts.
        tokens: (V,) token strings.
        lm: the word LM (``NGramLM`` or ``KenLMModel``).
        lexicon: optional allowed words.
        options: the other beam settings (beam width, pruning, threads).
        alphas: LM weights to try.
        betas: word bonuses to try.
        progress: show a progress bar.
        refine: after the grid, hill-climb from its best pair (grid steps, then half steps).

    Returns:
        the best pair (ties: the earlier one tried), its WER, and every pair tried.
    """
    if len(refs) != len(lengths):
        raise ValueError(f"{len(refs)} references for {len(lengths)} utterances")
    grid: list[dict] = []
    seen: dict[tuple[float, float], dict] = {}

    def score(alpha: float, beta: float) -> dict:
        key = (round(float(alpha), 6), round(float(beta), 6))
        if key not in seen:
            opts = replace(options, lm_weight=key[0], word_bonus=key[1], nbest=1)
            out = beam_search(log_probs, lengths, opts, tokens, lm, lexicon)
            wer = corpus_wer([" ".join(h[0].words) for h in out], refs)
            seen[key] = {"lm_weight": key[0], "word_bonus": key[1], "wer": wer}
            grid.append(seen[key])
        return seen[key]

    best = None
    pairs = list(itertools.product(alphas, betas))
    for alpha, beta in tqdm(pairs, desc="tune alpha/beta", disable=not progress or None):
        g = score(alpha, beta)
        if best is None or g["wer"] < best["wer"]:
            best = g
    if refine:
        best = _refine(score, best, _spacing(alphas, 0.25), _spacing(betas, 1.0))
    return TuneResult(best["lm_weight"], best["word_bonus"], best["wer"], grid)


def _spacing(values, default: float) -> float:
    v = sorted(set(float(x) for x in values))
    return min(b - a for a, b in zip(v, v[1:])) if len(v) > 1 else default


def _refine(score, best: dict, step_a: float, step_b: float, max_moves: int = 12) -> dict:
    """Hill-climb from the best grid point: move to a better neighbour while there is one (so an
    optimum beyond the edge of the grid is still found), then once more at half the step."""
    for sa, sb in ((step_a, step_b), (step_a / 2, step_b / 2)):
        for _ in range(max_moves):
            a0, b0 = best["lm_weight"], best["word_bonus"]
            moves = [(a0 + da * sa, b0 + db * sb) for da in (-1, 0, 1) for db in (-1, 0, 1) if da or db]
            cand = min((score(a, b) for a, b in moves if a >= 0), key=lambda g: g["wer"])
            if cand["wer"] >= best["wer"]:
                break
            best = cand
    return best


def dev_log_probs(model, utts, batch_seconds: float = 60.0, progress: bool = True):
    """Run the acoustic model once over ``utts`` (batched by duration).

    Returns (log_probs (B, T, V) padded with -1e4, lengths, normalised references); unreadable
    utterances are reported and skipped. Raises ValueError when none can be read.
    """
    from asr.audio import AudioError, load_audio

    lps, refs, wavs = [], [], []

    def run_batch():
        lp, lens = model.log_probs([w for w, _ in wavs])
        for k, (_, u) in enumerate(wavs):
            lps.append(lp[k, : int(lens[k])])
            refs.append(model.tokenizer.normalize(u.text))
        wavs.clear()

    for u in tqdm(sorted(utts, key=lambda u: u.duration), desc="log-probs", unit="utt", disable=not progress or None):
        try:
            wavs.append((load_audio(u.audio, model.sample_rate, u.offset, u.duration if u.offset else None), u))
        except AudioError as e:
            print(f"asr: warning: skipping utterance {u.id}: {e}", file=sys.stderr)
            continue
        if sum(w.size for w, _ in wavs) >= batch_seconds * model.sample_rate:
            run_batch()
    if wavs:
        run_batch()
    if not lps:
        raise ValueError("no readable utterances")
    lengths = [x.shape[0] for x in lps]
    batch = lps[0].new_full((len(lps), max(lengths), lps[0].shape[1]), -1e4)
    for i, x in enumerate(lps):
        batch[i, : x.shape[0]] = x
    return batch, lengths, refs


def tuned_path(model_path: str | Path) -> Path:
    """Where ``asr tune-lm`` writes its result: ``<model>.lm.json`` beside the model."""
    p = Path(model_path)
    return p.with_name(p.stem + ".lm.json")


def write_tuned(model_path: str | Path, result: TuneResult, extra: dict) -> Path:
    """Write the best values (and the grid) next to the model; returns the file."""
    path = tuned_path(model_path)
    data = {"lm_weight": result.lm_weight, "word_bonus": result.word_bonus, "dev_wer": result.wer, **extra,
            "grid": result.grid}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path

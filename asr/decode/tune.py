"""Tune the LM weight (alpha) and word bonus (beta) on a dev set by grid search.

The acoustic model runs once; each (alpha, beta) pair only re-runs the beam search on the
stored log-probabilities, which the C++ search makes cheap.
"""

from __future__ import annotations

import itertools
import json
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

    Returns:
        the best pair (ties: the earlier in the grid), its WER, and the whole grid.
    """
    if len(refs) != len(lengths):
        raise ValueError(f"{len(refs)} references for {len(lengths)} utterances")
    grid = []
    best = None
    pairs = list(itertools.product(alphas, betas))
    for alpha, beta in tqdm(pairs, desc="tune alpha/beta", disable=not progress or None):
        opts = replace(options, lm_weight=float(alpha), word_bonus=float(beta), nbest=1)
        out = beam_search(log_probs, lengths, opts, tokens, lm, lexicon)
        wer = corpus_wer([" ".join(h[0].words) for h in out], refs)
        grid.append({"lm_weight": float(alpha), "word_bonus": float(beta), "wer": wer})
        if best is None or wer < best["wer"]:
            best = grid[-1]
    return TuneResult(best["lm_weight"], best["word_bonus"], best["wer"], grid)


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

"""Greedy (best-path) CTC decoding."""

from __future__ import annotations

import torch


def greedy_search(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks.

    Args:
        log_probs: (B, T, V) log-probabilities (or any scores; only the argmax matters).
        lengths: (B,) valid frames per utterance.
        blank: blank token id.

    Returns:
        one token-id list per utterance.

    >>> lp = torch.log(torch.tensor([[[.1, .9, 0], [.1, .9, 0], [.8, .1, .1], [.1, .9, 0]]]))
    >>> greedy_search(lp, torch.tensor([4]))
    [[1, 1]]
    """
    best = log_probs.argmax(-1).cpu()  # (B, T)
    out = []
    for b in range(best.shape[0]):
        path = best[b, : int(lengths[b])]
        if path.numel() == 0:
            out.append([])
            continue
        keep = torch.ones_like(path, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        tokens = path[keep & (path != blank)]
        out.append(tokens.tolist())
    return out

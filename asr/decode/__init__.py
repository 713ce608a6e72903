"""CTC decoders: pure functions of (log_probs, lengths, options)."""

from asr.decode.beam import (
    BeamOptions,
    Hypothesis,
    beam_search,
    native_available,
    prefix_beam_search,
)
from asr.decode.greedy import greedy_search

__all__ = ["BeamOptions", "Hypothesis", "beam_search", "greedy_search", "native_available", "prefix_beam_search"]

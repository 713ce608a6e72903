"""CTC prefix beam search with word n-gram shallow fusion, a lexicon and n-best lists.

A pure function of ``(log_probs, lengths, options)`` (plus the vocabulary, LM and lexicon
it decodes with). Scores are natural logs; a hypothesis' score is::

    log P_ctc(prefix) + lm_weight * ln P_lm(words) + word_bonus * len(words)

Words are delimited by the space token for character (and phone) vocabularies and by the
SentencePiece word-start marker "▁" for subword vocabularies. The LM scores a word
when it is completed (and ``</s>`` at the end).

Lexicons. For character and SentencePiece models a lexicon is a set of words, spelled by the
tokens (spelling = pronunciation). For phone models it is a pronunciation lexicon
``{word: [token ids, ...]}``: the tokens between two word boundaries must be a pronunciation,
and at the boundary the hypothesis branches into every word with that pronunciation
(homophones), which the LM then tells apart; ``Hypothesis.words`` holds the chosen words.
Without an LM homophones tie, so only the lexicon's first is kept (a phone model's own lexicon
lists its training words most frequent first): copies of one phone string would fill the beam.

Implementation choice. The search runs in C++ (``_ctcdecode.cpp``), compiled by pip
when the package is installed (setuptools ``ext_modules`` in setup.py). It needs only
a C++ compiler and the Python C API: no pybind11, numpy headers or CUDA at build time,
so ``pip install`` works on a fresh Linux/macOS machine. We chose it over

- vectorised torch/numpy: a prefix beam search is a loop over frames of small,
  data-dependent hash-map updates (prefix merging); vectorising it costs more in
  bookkeeping than it saves;
- numba (a dependency already, through librosa): fast loops, but its typed dicts are
  slow, the LM and lexicon tries would have to live in numba structures too, and each
  process pays seconds of JIT compilation on first use;

The C++ search also owns the n-gram LM (an ARPA reader with KenLM's back-off and state
minimisation) and the lexicon trie, so an utterance is decoded without returning to
Python, with the GIL released: a batch is spread over ``num_workers`` threads.

``reference.py`` holds the same algorithm in Python. It is used when the extension was
not built (a warning says so), with a KenLM binary LM, or when
``implementation="python"``; tests check that both give identical results.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from asr.config import lookahead_mode
from asr.decode.reference import reference_search, token_kinds, words_of
from asr.lexicon import pronunciation_pairs

log = logging.getLogger("asr.decode")

try:
    from asr.decode import _ctcdecode
except ImportError:  # not built (no compiler at install time): the Python reference search
    _ctcdecode = None


def native_available() -> bool:
    """True when the C++ beam search was built at install time."""
    return _ctcdecode is not None


@dataclass(frozen=True)
class BeamOptions:
    beam_size: int = 8  # hypotheses kept after each frame
    token_topk: int = 0  # extend each frame only with its k most likely tokens; 0 = all
    token_min_logp: float = -12.0  # ...and only with tokens at least this likely (the best always)
    lm_weight: float = 0.5  # alpha: weight of the word LM ln-probability
    word_bonus: float = 1.0  # beta: added per word (only used with an LM or lexicon)
    nbest: int = 1  # hypotheses returned per utterance
    blank: int = 0  # blank token id
    beam_threshold: float = 0.0  # also drop hypotheses this far below the best; 0 = off
    num_workers: int = 1  # threads decoding utterances of a batch in parallel (C++ search)
    implementation: str = "auto"  # "auto" (C++ when built), "native" (C++ or error), "python"
    # added per word outside the LM's vocabulary (LM without lexicon), as soon as its spelling
    # leaves the vocabulary; unweighted, like pyctcdecode's unk_score_offset and flashlight's unk_score
    oov_penalty: float = -10.0
    # with an LM and a lexicon, score a partial word by alpha * the best ln P of the words it can still
    # become, replaced by the LM score when it completes: "context", the best given its LM history (the
    # back-off chain of its state; as "unigram" with a KenLM binary); "unigram", the best unigram
    # (flashlight's smearing); "off". True and False read as "unigram" and "off"
    lm_lookahead: str = "context"


@dataclass
class Hypothesis:
    tokens: list[int]  # token ids of the hypothesis
    score: float  # total score (CTC + alpha * LM + beta * words)
    ctc_score: float = 0.0  # log P_ctc(prefix)
    lm_score: float = 0.0  # ln P_lm(words), unweighted, including </s>
    # the words: spelled by the tokens (when token strings were given), or chosen from a
    # pronunciation lexicon
    words: list[str] = field(default_factory=list)


_WARNED = False
_LOOKAHEAD_CODE = {"off": 0, "unigram": 1, "context": 2}  # the C++ search's lm_lookahead
_DECODERS: dict[tuple, tuple] = {}
# the word trie becomes a dense (node x token) table up to this many cells (character vocabularies)
DENSE_TRIE_CELLS = 1 << 23


def _native_decoder(V: int, blank: int, tokens: list[str] | None, lm, lexicon):
    """A C++ decoder for (vocabulary, LM, lexicon), cached: building tries costs time."""
    key = (V, blank, tuple(tokens) if tokens is not None else None, id(lm), id(lexicon))
    hit = _DECODERS.get(key)
    if hit is not None and hit[1] is lm and hit[2] is lexicon:
        return hit[0]
    if tokens is not None:
        kinds, chars = token_kinds(tokens, blank)
    else:
        kinds, chars = [0] * V, [""] * V
    if isinstance(lexicon, Mapping):  # pronunciations: (word, token ids) pairs
        lex = pronunciation_pairs(lexicon)
    else:
        lex = sorted(lexicon) if lexicon is not None else None
    if lexicon is not None and lm is not None:
        _report_missing(sorted(lexicon), lm)
    dec = _ctcdecode.decoder_new([c.encode() for c in chars], kinds, blank,
                                 lm.native if lm is not None else None, lex, DENSE_TRIE_CELLS)
    if len(_DECODERS) >= 8:
        _DECODERS.pop(next(iter(_DECODERS)))
    _DECODERS[key] = (dec, lm, lexicon)
    return dec


def _report_missing(lexicon: list[str], lm) -> None:
    """Warn (once per decoder) about lexicon words the LM does not know: they are scored as <unk>."""
    known = set(lm.words())
    missing = [w for w in lexicon if w and w not in known]
    if missing:
        log.warning("%d of %d lexicon words are not in the LM %s (e.g. %s); they are scored as <unk>. "
                    "Build the LM with this word list (asr lm build --vocab) or drop them from the lexicon",
                    len(missing), len(lexicon), getattr(lm, "path", None) or "", ", ".join(missing[:3]))


def _use_native(options: BeamOptions, lm) -> bool:
    global _WARNED
    if options.implementation == "python":
        return False
    if options.implementation not in ("auto", "native"):
        raise ValueError(f"implementation must be auto, native or python, got {options.implementation!r}")
    if _ctcdecode is None:
        if options.implementation == "native":
            raise RuntimeError("the C++ beam search was not built; reinstall with a C++ compiler "
                               "(pip install -e .)")
        if not _WARNED:
            log.warning("the C++ beam search is not built; using the slow Python search "
                        "(reinstall with a C++ compiler: pip install -e .)")
            _WARNED = True
        return False
    if lm is not None and getattr(lm, "native", None) is None:
        if options.implementation == "native":
            raise ValueError("the C++ search reads ARPA models only; this LM is a KenLM binary")
        return False
    return True


def _to_numpy(log_probs) -> np.ndarray:
    if isinstance(log_probs, torch.Tensor):
        log_probs = log_probs.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(log_probs, dtype=np.float32)


def _check(lp: np.ndarray, lens: np.ndarray, tokens, lm, lexicon, blank: int) -> None:
    if lp.ndim != 3:
        raise ValueError(f"log_probs must be (B, T, V), got shape {tuple(lp.shape)}")
    if lens.shape != (lp.shape[0],):
        raise ValueError(f"lengths must be ({lp.shape[0]},), got {tuple(lens.shape)}")
    if (lens < 0).any() or (lens > lp.shape[1]).any():
        raise ValueError(f"lengths must lie in [0, {lp.shape[1]}], got {lens.tolist()}")
    if tokens is not None and len(tokens) != lp.shape[2]:
        raise ValueError(f"{len(tokens)} token strings for a vocabulary of {lp.shape[2]}")
    if (lm is not None or lexicon is not None) and tokens is None:
        raise ValueError("tokens are required for LM fusion or a lexicon")
    if not 0 <= blank < lp.shape[2]:
        raise ValueError(f"blank id {blank} is outside the vocabulary of {lp.shape[2]}")
    if isinstance(lexicon, Mapping):
        kinds, _ = token_kinds(tokens, blank)
        for w, ids in pronunciation_pairs(lexicon):
            bad = [i for i in ids if not 0 <= i < len(kinds) or kinds[i] != 0]
            if bad:
                raise ValueError(f"lexicon word {w!r}: token id {bad[0]} is not a unit of the vocabulary")


def beam_search(
    log_probs: torch.Tensor | np.ndarray,
    lengths: torch.Tensor | np.ndarray | list[int],
    options: BeamOptions = BeamOptions(),
    tokens: list[str] | None = None,
    lm=None,
    lexicon: set[str] | Mapping[str, list] | None = None,
) -> list[list[Hypothesis]]:
    """Decode a batch.

    Args:
        log_probs: (B, T, V) log-probabilities (torch or numpy; any device).
        lengths: (B,) valid frames per utterance.
        options: beam settings.
        tokens: (V,) token strings; needed with an LM or lexicon, and to fill ``Hypothesis.words``.
        lm: ``NGramLM`` (C++ search) or ``KenLMModel`` (Python search), or None.
        lexicon: allowed words (a set of spellings, or for phone vocabularies a mapping
            word -> token-id pronunciations), or None for an open vocabulary.

    Returns:
        per utterance, up to ``options.nbest`` hypotheses, best first.

    >>> lp = torch.log(torch.tensor([[[.1, .9, 0], [.1, .9, 0], [.8, .1, .1], [.1, .9, 0]]]))
    >>> [h.tokens for h in beam_search(lp, [4], BeamOptions(beam_size=4))[0]]
    [[1, 1]]
    """
    lp = _to_numpy(log_probs)
    lens = np.asarray(lengths.cpu() if isinstance(lengths, torch.Tensor) else lengths, dtype=np.int64)
    _check(lp, lens, tokens, lm, lexicon, options.blank)
    if lp.shape[0] == 0:
        return []
    if _use_native(options, lm):
        dec = _native_decoder(lp.shape[2], options.blank, tokens, lm, lexicon)
        workers = options.num_workers if options.num_workers > 0 else (os.cpu_count() or 1)
        raw = _ctcdecode.decode(dec, lp, np.ascontiguousarray(lens), options.beam_size, options.token_topk,
                                options.token_min_logp, options.lm_weight, options.word_bonus,
                                options.oov_penalty, options.nbest, options.beam_threshold, workers,
                                _LOOKAHEAD_CODE[lookahead_mode(options.lm_lookahead)])
    else:
        raw = [reference_search(lp[b], int(lens[b]), options, tokens, lm, lexicon) for b in range(lp.shape[0])]
    return [
        [Hypothesis(list(ids), score, ctc, lm_score,
                    words if words is not None else (words_of(ids, tokens) if tokens is not None else []))
         for ids, score, ctc, lm_score, words in hyps]
        for hyps in raw
    ]


def prefix_beam_search(
    log_probs: torch.Tensor | np.ndarray,
    length: int | None = None,
    options: BeamOptions = BeamOptions(),
    tokens: list[str] | None = None,
    lm=None,
    lexicon: set[str] | Mapping[str, list] | None = None,
) -> list[Hypothesis]:
    """Decode one utterance.

    Args:
        log_probs: (T, V) log-probabilities.
        length: valid frames (default T).
        options: beam settings.
        tokens: (V,) token strings (needed with an LM or lexicon).
        lm: ``NGramLM``/``KenLMModel`` or None.
        lexicon: allowed words; prefixes that cannot become one are pruned.

    Returns:
        up to ``options.nbest`` hypotheses, best first.
    """
    lp = _to_numpy(log_probs)
    T = lp.shape[0] if length is None else int(length)
    return beam_search(lp[None], [T], options, tokens, lm, lexicon)[0]

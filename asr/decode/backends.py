"""Beam search backends behind one interface: ours, torchaudio's flashlight decoder, pyctcdecode.

``make_decoder(name, tokens, options, lm_path, lexicon)`` returns a function
``decode(log_probs (B, T, V), lengths (B,)) -> list[list[Hypothesis]]``, so the same
log-probabilities, LM and beam width can be given to each (tools/bench_decode.py does).

Settings are translated so that the searches optimise the same score:

- alpha (``lm_weight``) weighs ln P_lm in ours and pyctcdecode; flashlight's KenLM wrapper
  returns log10, so it gets ``alpha * ln 10``; beta (``word_bonus``) is per word in all three.
- flashlight merges prefixes by log-add (``log_add=True``) like ours. Its lexicon-free decoder
  fuses a *token*-level LM, so with a word LM flashlight needs a lexicon: we give it the
  lexicon (or, without one, the LM's vocabulary) and ours gets the same lexicon.
- pyctcdecode has no hard lexicon; it receives the lexicon (or else the LM's vocabulary) as its
  unigrams, as it expects: words outside them get its unknown-word offset.

flashlight supports character vocabularies only here (its lexicon spells words with tokens and
needs a word-boundary token); pyctcdecode handles SentencePiece pieces ("▁").
"""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from asr.decode.beam import BeamOptions, Hypothesis, beam_search
from asr.decode.lm import load_lm
from asr.decode.reference import words_of
from asr.errors import BackendError
from asr.wordpieces import pieces_to_words

Decoder = Callable[[torch.Tensor, torch.Tensor], list[list[Hypothesis]]]
BACKENDS = ("ours", "flashlight", "pyctcdecode")
DEFAULT_OPTIONS = BeamOptions()


def lm_vocabulary(lm_path: str | Path) -> list[str]:
    """The words of an ARPA LM (without <s>, </s>, <unk>), in file order."""
    st = Path(lm_path).stat() if Path(lm_path).is_file() else None
    return list(_vocabulary(str(Path(lm_path).resolve()), st and (st.st_size, st.st_mtime_ns)))


@functools.lru_cache(maxsize=2)
def _vocabulary(path: str, stamp) -> tuple[str, ...]:
    lm = load_lm(path)
    if not hasattr(lm, "words"):
        raise BackendError(f"{path}: the word list of a KenLM binary cannot be read; give a lexicon")
    return tuple(lm.words())


def make_decoder(name: str, tokens: list[str], options: BeamOptions = DEFAULT_OPTIONS,
                 lm_path: str | Path | None = None, lexicon: set[str] | None = None) -> Decoder:
    """A batch decoder from a backend name.

    Args:
        name: "ours", "flashlight" or "pyctcdecode".
        tokens: (V,) token strings; id ``options.blank`` is the blank.
        options: beam width, pruning, alpha, beta, n-best.
        lm_path: ARPA (or KenLM binary) word LM, or None.
        lexicon: allowed words (ours, flashlight; pyctcdecode: its unigrams); None = open vocabulary.

    Returns:
        ``decode(log_probs (B, T, V), lengths (B,)) -> list[list[Hypothesis]]``.
    """
    if name == "ours":
        lm = load_lm(lm_path) if lm_path else None
        return lambda lp, lens: beam_search(lp, lens, options, tokens, lm, lexicon)
    if name == "flashlight":
        return _flashlight(tokens, options, lm_path, lexicon)
    if name == "pyctcdecode":
        return _pyctcdecode(tokens, options, lm_path, lexicon)
    raise BackendError(f"unknown decoder backend {name!r}; choose one of {', '.join(BACKENDS)}")


def _flashlight(tokens, options: BeamOptions, lm_path, lexicon) -> Decoder:
    try:
        from torchaudio.models.decoder import ctc_decoder
    except ImportError as e:
        raise BackendError(f"the flashlight backend needs flashlight-text ({e}); "
                           "pip install flashlight-text") from None
    if " " not in tokens:
        raise BackendError("the flashlight backend supports character vocabularies (with a ' ' token) only")
    # flashlight's lexicon file is whitespace-separated: rename blank and space
    fl_tokens = ["|" if t == " " else t for t in tokens]
    fl_tokens[options.blank] = "<blank>"
    if "|" in tokens or len(set(fl_tokens)) != len(fl_tokens):
        raise BackendError("token names clash after renaming ' ' to '|' for flashlight")
    lexicon_file = None
    words = sorted(lexicon) if lexicon is not None else (lm_vocabulary(lm_path) if lm_path else None)
    tmp = tempfile.TemporaryDirectory(prefix="asr-flashlight-")
    if words is not None:
        known = set(tokens)
        lexicon_file = Path(tmp.name) / "lexicon.txt"
        with open(lexicon_file, "w", encoding="utf-8") as f:
            for w in words:
                if w and all(c in known for c in w):
                    f.write(f"{w}\t{' '.join(w)} |\n")
    dec = ctc_decoder(
        lexicon=str(lexicon_file) if lexicon_file else None,
        tokens=fl_tokens,
        lm=str(lm_path) if lm_path else None,
        nbest=options.nbest,
        beam_size=options.beam_size,
        beam_size_token=options.token_topk or None,
        beam_threshold=options.beam_threshold or 50.0,
        lm_weight=options.lm_weight * math.log(10.0),
        word_score=options.word_bonus if (lm_path or lexicon_file) else 0.0,
        log_add=True,
        blank_token="<blank>",
        sil_token="|",
    )

    def decode(lp, lens):
        lp = torch.as_tensor(lp, dtype=torch.float32).cpu().contiguous()
        lens = torch.as_tensor(lens, dtype=torch.int32).cpu()
        out = []
        for hyps in dec(lp, lens):
            out.append([Hypothesis(h.tokens.tolist(), float(h.score), words=words_of(h.tokens.tolist(), tokens))
                        for h in hyps])
        return out

    decode._keep = (tmp, dec)  # the lexicon file lives as long as the decoder
    return decode


def _pyctcdecode(tokens, options: BeamOptions, lm_path, lexicon) -> Decoder:
    try:
        from pyctcdecode import build_ctcdecoder
    except ImportError:
        raise BackendError("the pyctcdecode backend needs pyctcdecode: "
                           "pip install --no-deps pyctcdecode pygtrie (its numpy<2 pin is too strict)") from None
    import logging

    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)
    labels = ["" if i == options.blank else t for i, t in enumerate(tokens)]
    kwargs = {}
    if lm_path:
        unigrams = sorted(lexicon) if lexicon is not None else lm_vocabulary(lm_path)
        kwargs = {"kenlm_model_path": str(lm_path), "unigrams": unigrams,
                  "alpha": options.lm_weight, "beta": options.word_bonus}
    dec = build_ctcdecoder(labels, **kwargs)
    min_logp = max(options.token_min_logp, -1e3)

    def decode(lp, lens):
        lp = torch.as_tensor(lp, dtype=torch.float32).cpu().numpy()
        out = []
        for b in range(lp.shape[0]):
            beams = dec.decode_beams(np.ascontiguousarray(lp[b, : int(lens[b])]), beam_width=options.beam_size,
                                     token_min_logp=min_logp,
                                     beam_prune_logp=-(options.beam_threshold or 1e3))
            out.append([Hypothesis([], float(bm[-1]), float(bm[-2]), words=pieces_to_words(bm[0]))
                        for bm in beams[: max(1, options.nbest)]])
        return out

    return decode

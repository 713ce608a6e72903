"""Command-line options shared by the subcommands that decode (evaluate, transcribe, serve, ...):
the decoding flags, their overrides of the model's decode config, the alpha/beta tuned by
``asr tune-lm``, and ``--device``. Imports no torch at module level (``--help`` stays fast)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from asr.errors import CLIError

# asr.config.LOOKAHEAD_MODES, spelled out: importing asr.config (yaml) would slow every --help
LOOKAHEAD_CHOICES = ("context", "unigram", "off")


def add_decode_args(p: argparse.ArgumentParser, nbest: bool = False) -> None:
    """The decoding flags; ``nbest``: also ``--nbest N`` (for commands that print alternatives)."""
    p.add_argument("--method", choices=["greedy", "beam"], help="decoder (default: the model's config)")
    p.add_argument("--beam-size", type=int, help="beam width")
    p.add_argument("--lm", dest="lm_path", help="ARPA word n-gram for shallow fusion")
    p.add_argument("--lm-weight", type=float, help="alpha")
    p.add_argument("--word-bonus", type=float, help="beta")
    p.add_argument("--lexicon", help="lexicon file: allowed words (a word per line), or for a phone model "
                   "`word P1 P2 ...` pronunciations added to the checkpoint's lexicon")
    add_lookahead_args(p, default=None)
    if nbest:
        p.add_argument("--nbest", type=int, help="also give the N best hypotheses with their scores "
                       "(beam search; implies --method beam)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available)")


def add_lookahead_args(p: argparse.ArgumentParser, default: str | None) -> None:
    """``--lm-lookahead MODE`` and its short form ``--no-lm-lookahead`` (off)."""
    p.add_argument("--lm-lookahead", choices=LOOKAHEAD_CHOICES, default=default,
                   help="with an LM and a lexicon, score a partial word by the best LM score of the words it "
                   "can still become: given its LM history (context), by unigrams (unigram) or not (off); "
                   "it keeps likely words in a small beam (default: "
                   f"{default or 'the model config, else the tuned weights file'})")
    p.add_argument("--no-lm-lookahead", dest="lm_lookahead", action="store_const", const="off",
                   help="the same as --lm-lookahead off")


def decode_overrides(args) -> dict:
    """The decoding flags given, as ``DecodingOptions`` fields (``model.with_decoding(**them)``).

    ``--lm`` and ``--nbest N`` (N > 1) imply ``--method beam`` unless a method is given.

    Raises:
        UsageError: ``--nbest`` below 1, or above 1 with ``--method greedy`` (one hypothesis).
    """
    keys = ["method", "beam_size", "lm_path", "lm_weight", "word_bonus", "lexicon", "nbest", "lm_lookahead"]
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if out.get("nbest", 1) < 1:
        raise CLIError(f"--nbest must be at least 1, got {out['nbest']}")
    if out.get("nbest", 1) > 1 and out.get("method") == "greedy" and not out.get("lm_path"):
        raise CLIError("--nbest N needs the beam search: greedy decoding finds one hypothesis; "
                       "drop --method greedy")
    if (out.get("lm_path") or out.get("nbest", 1) > 1) and "method" not in out:
        out["method"] = "beam"
    if out.get("lm_path") and getattr(args, "model", None):
        tuned_weights(args.model, out)
    return out


def tuned_weights(model: str, out: dict) -> None:
    """Take alpha/beta not given on the command line from ``asr tune-lm``'s file beside the model."""
    from asr.config import lookahead_mode
    from asr.decode.tune import tuned_path

    path = tuned_path(model)
    if not path.is_file() or ("lm_weight" in out and "word_bonus" in out):
        return
    try:
        tuned = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CLIError(f"{path}: cannot read the tuned LM weights ({e}); delete it or run asr tune-lm again") from None
    if Path(tuned.get("lm_path", "")).resolve() != Path(out["lm_path"]).resolve():
        return  # tuned for another LM
    lexicon = str(Path(out["lexicon"]).resolve()) if out.get("lexicon") else ""
    if tuned.get("lexicon", "") != lexicon:
        return  # tuned with another lexicon (or with none): those weights do not carry over
    # the search the weights were tuned for (older files: true = unigram; no key = before the look-ahead)
    mode = lookahead_mode(tuned.get("lm_lookahead", False))
    if out.get("lm_lookahead", mode) != mode:
        print(f"asr: {path} was tuned with --lm-lookahead {mode}, so its weights are not used with "
              f"--lm-lookahead {out['lm_lookahead']}; tune again (asr tune-lm --lm-lookahead "
              f"{out['lm_lookahead']}) or drop the option", file=sys.stderr)
        return
    try:  # an LM rebuilt since (another threshold or text) keeps its path: its best weights may have moved
        stale = Path(out["lm_path"]).stat().st_mtime > path.stat().st_mtime
    except OSError:
        stale = False
    if stale:  # (at least one of the two weights comes from the file: both given returned above)
        print(f"asr: warning: {out['lm_path']} was written after {path} was tuned; its weights are used, but tune "
              f"again (asr decode --tune-lm) for this LM", file=sys.stderr)
    for key in ("lm_weight", "word_bonus"):
        out.setdefault(key, tuned[key])
    out.setdefault("lm_lookahead", mode)
    print(f"asr: using lm_weight {out['lm_weight']} and word_bonus {out['word_bonus']} with --lm-lookahead "
          f"{out['lm_lookahead']} (tuned: {path})", file=sys.stderr)


"""Order an older phone checkpoint's lexicon most frequent training word first, as training does
since 2026-12-05.

A phone tokenizer's lexicon order is the decoders' preference among homophones; without an LM the
search keeps only the first ("i" rather than "ay" for AY, "you" rather than "u" for Y UW).
Checkpoints trained before 2026-12-05 list their words by spelling. This rewrites the checkpoint
(atomically) with the same words and pronunciations, ordered by their count in the training
transcripts (ties by spelling); the weights are untouched.

    .venv/bin/python tools/order_lexicon.py exp/mini_librispeech/model.pt exp/mini_librispeech/data/train.jsonl

Prints the first words and checks that every lexicon word occurs in the manifest (else the manifest
is not the one the model was trained on: it stops without writing).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import torch

from asr.checkpoint import atomic_torch_save
from asr.data import read_manifest
from asr.phones import most_frequent_first
from asr.text import tokenizer_from_dict


def order_lexicon(ckpt: dict, texts: list[str]) -> list[str]:
    """Reorder ``ckpt["tokenizer"]["lexicon"]`` in place by word count in ``texts``; returns the new order.

    Raises:
        ValueError: not a phone checkpoint, or lexicon words the texts lack.
    """
    tok = ckpt.get("tokenizer") or {}
    if tok.get("kind") != "phone":
        raise ValueError("not a phone model's checkpoint: only phone tokenizers have a lexicon")
    normalize = tokenizer_from_dict(tok).normalize
    counts = Counter(w for t in texts for w in normalize(t).split())
    lex = tok["lexicon"]
    missing = [w for w in lex if w not in counts]
    if missing:
        raise ValueError(f"{len(missing)} lexicon words (e.g. {', '.join(missing[:5])}) are not in the "
                         "transcripts: give the manifest the model was trained on")
    tok["lexicon"] = most_frequent_first(lex, counts)
    return list(tok["lexicon"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="phone model checkpoint (rewritten in place)")
    p.add_argument("manifest", help="the training manifest (its transcripts give the counts)")
    args = p.parse_args(argv)
    ckpt = torch.load(args.model, map_location="cpu", weights_only=False)
    try:
        order = order_lexicon(ckpt, [u.text for u in read_manifest(args.manifest)])
    except ValueError as e:
        print(f"{args.model}: {e}", file=sys.stderr)
        return 1
    atomic_torch_save(ckpt, args.model)
    print(f"{args.model}: {len(order)} words, most frequent first: {' '.join(order[:10])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Compare word LMs (order, lexicon, beam width) for one model on a dev set, side by side.

The acoustic model runs once; for every LM x lexicon x beam setting, the LM weight and word
bonus are tuned on the dev set (grid, then hill-climb: `asr decode --tune-lm`), and the best WER
is printed. The dev set is both the tuning and the scoring set, so every figure carries the
same (optimistic) tuning bias; the comparison between rows is what this is for.

    tools/lm_study.py --model exp/mini_librispeech/model.pt \
        --manifest exp/mini_librispeech/data/dev.jsonl \
        --lm exp/lm/2gram.arpa exp/lm/3gram.arpa exp/lm/4gram.arpa --lexicon exp/lm/words.txt --beam 16 64
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True, help="dev manifest")
    p.add_argument("--lm", nargs="+", required=True, help="ARPA files to compare")
    p.add_argument("--lexicon", help="word list; each LM is then also tried restricted to these words")
    p.add_argument("--beam", type=int, nargs="+", default=[16])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="only the first N utterances")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from asr.data import read_manifest
    from asr.decode import BeamOptions, greedy_search
    from asr.decode.lm import load_lm
    from asr.decode.tune import corpus_wer, dev_log_probs, grid_search
    from asr.metrics import ErrorCounts, char_errors
    from asr.transcribe import load_model

    model = load_model(args.model, "cpu")
    utts = read_manifest(args.manifest, strict=False)[: args.limit or None]
    t0 = time.time()
    batch, lengths, refs = dev_log_probs(model, utts)
    print(f"acoustic model: {len(refs)} utterances in {time.time() - t0:.1f} s")
    tokens = model.tokenizer.token_strings()
    greedy_hyps = [model.tokenizer.decode(ids) for ids in greedy_search(batch, lengths)]
    greedy = corpus_wer(greedy_hyps, refs)
    chars = ErrorCounts()
    for h, r in zip(greedy_hyps, refs):
        chars += char_errors(r, h)
    lexicons = [None]
    if args.lexicon:
        lexicons.append({w.split()[0] for w in Path(args.lexicon).read_text().splitlines() if w.strip()})
    print(f"greedy (no LM): WER {100 * greedy:.2f} %, CER {100 * chars.rate:.2f} %\n")
    print("| LM | lexicon | beam | alpha | beta | dev WER | settings tried | search s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for lm_path in args.lm:
        lm = load_lm(lm_path)
        for lexicon in lexicons:
            for beam in args.beam:
                t0 = time.time()
                res = grid_search(batch, lengths, refs, tokens, lm, lexicon,
                                  BeamOptions(beam_size=beam, num_workers=args.threads), progress=False)
                print(f"| {Path(lm_path).name} | {'yes' if lexicon else 'no'} | {beam} | {res.lm_weight:g} | "
                      f"{res.word_bonus:g} | {100 * res.wer:.2f} % | {len(res.grid)} | {time.time() - t0:.0f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

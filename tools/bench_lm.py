#!/usr/bin/env python3
"""Book-scale LM building: time, peak memory, size and dev perplexity of pruned n-gram models.

Each step runs in its own process (so peak RSS is that step's own): ``asr lm build``'s code
path (stream, count, estimate, prune, write ARPA) for every order x threshold; the unpruned
model of each order, estimated in memory and scored without writing its (large) ARPA; the
dev perplexity and OOV rate of every ARPA; and, on a slice of the text, today's numpy path
against the former Python-dict path (``asr.lm_build.estimate``, the named alternative).

    # the 50 M-word corpus (alone on the machine: it takes several minutes per build)
    flock /tmp/asr-cpu.lock .venv/bin/python tools/bench_lm.py \\
        --text ../shared/data/books_lm/books-lm-norm.txt.xz \\
        --vocab ../shared/data/books_lm/librispeech-vocab.txt --orders 3 4 --prune 1e-8 1e-7 \\
        --out exp/bench_lm

    # a quick check on 150 k sentences (about 2.7 M words)
    .venv/bin/python tools/bench_lm.py --max-lines 150000 --orders 3 --prune 1e-7 --out /tmp/bench_lm

The dev text is the Mini LibriSpeech train-clean-5 transcripts (their books are not in the
book corpus), unless ``--dev`` names a text file.
"""

from __future__ import annotations

import argparse
import glob
import json
import lzma
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BOOKS = ROOT / "../shared/data/books_lm"
TRANS = ROOT / "../shared/data/mini_librispeech/LibriSpeech/train-clean-5/*/*/*.trans.txt"


def usage() -> dict:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": r.ru_utime + r.ru_stime, "peak_rss_gb": r.ru_maxrss / 1e6}


def step(spec: dict) -> dict:
    """Run one measured step in this process; returns its figures (peak RSS includes the ~0.7 GB
    of the imported libraries, torch among them)."""
    from asr.lm_mix import perplexity, read_text

    t0, c0 = time.time(), usage()["cpu_s"]  # after the imports (torch comes with asr.decode)
    out: dict = {}
    kind = spec["kind"]
    if kind == "build":
        from asr.lm_build import build_lm

        out["counts"] = build_lm(spec["text"], spec["arpa"], spec["order"], vocab_path=spec.get("vocab"),
                                 prune=spec["prune"], progress=True)
        out["arpa_mb"] = Path(spec["arpa"]).stat().st_size / 1e6
    elif kind == "unpruned":
        from asr.lm_build import count_text, estimate_tables
        from asr.lm_corpus import read_vocab

        vocab = read_vocab(spec["vocab"]) if spec.get("vocab") else None
        counts, words = count_text([spec["text"]], spec["order"], vocab_words=vocab, progress=True)
        model = estimate_tables(counts, words)
        del counts
        out["counts"] = model.counts()
        out["dev"] = perplexity(model, read_text(spec["dev"]))
    elif kind == "ppl":
        from asr.lm_table import read_arpa

        out["dev"] = perplexity(read_arpa(spec["arpa"]), read_text(spec["dev"]))
    elif kind == "dict":  # the former path: every sentence a Python string, counts in dicts of tuples
        from asr.decode.lm import arpa_text
        from asr.lm_build import estimate
        from asr.lm_corpus import read_sentences

        sentences = [" ".join(w) for w in read_sentences([spec["text"]])]
        model = estimate(sentences, spec["order"])
        Path(spec["arpa"]).write_text(arpa_text(model), encoding="utf-8")
        out["counts"] = {n: len(t) for n, t in model.items()}
        out["arpa_mb"] = Path(spec["arpa"]).stat().st_size / 1e6
    out["wall_s"] = time.time() - t0
    out.update(usage())
    out["cpu_s"] -= c0
    return out


def run(spec: dict) -> dict:
    res = subprocess.run([sys.executable, __file__, "--step", json.dumps(spec)], stdout=subprocess.PIPE, text=True)
    if res.returncode:
        raise SystemExit(f"step {spec['kind']} failed (exit {res.returncode})")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"  {spec['kind']:9s} {json.dumps(r)}", flush=True)
    return r


def head(src: str, lines: int, dst: Path) -> None:
    opener = lzma.open if src.endswith(".xz") else open
    with opener(src, "rt", encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as g:
        for n, line in enumerate(f):
            if n == lines:
                break
            g.write(line)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--step", help=argparse.SUPPRESS)
    p.add_argument("--text", default=str(BOOKS / "books-lm-norm.txt.xz"))
    p.add_argument("--vocab", default=str(BOOKS / "librispeech-vocab.txt"))
    p.add_argument("--dev", help="dev text (default: Mini LibriSpeech train-clean-5 transcripts)")
    p.add_argument("--orders", type=int, nargs="+", default=[3, 4])
    p.add_argument("--prune", type=float, nargs="+", default=[1e-8, 1e-7])
    p.add_argument("--max-lines", type=int, default=0, help="only the first N sentences of --text")
    p.add_argument("--slice-lines", type=int, default=100_000,
                   help="sentences for the numpy-vs-dict comparison (0: skip it)")
    p.add_argument("--no-unpruned", action="store_true", help="skip the unpruned models")
    p.add_argument("--out", default="exp/bench_lm")
    args = p.parse_args()
    if args.step:
        print(json.dumps(step(json.loads(args.step))))
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = args.dev
    if not dev:
        dev = str(out / "dev.txt")
        with open(dev, "w", encoding="utf-8") as f:
            for path in sorted(glob.glob(str(TRANS))):
                f.writelines(line.split(" ", 1)[1] for line in open(path, encoding="utf-8") if " " in line)
    text = args.text
    if args.max_lines:
        text = str(out / "text.txt")
        head(args.text, args.max_lines, Path(text))
    rows = []
    for order in args.orders:
        for t in args.prune:
            arpa = str(out / f"{order}gram-prune{t:g}.arpa")
            print(f"{order}-gram, prune {t:g}", flush=True)
            b = run({"kind": "build", "text": text, "arpa": arpa, "order": order, "vocab": args.vocab, "prune": t})
            d = run({"kind": "ppl", "arpa": arpa, "dev": dev})["dev"]
            rows.append((f"{order}-gram prune {t:g}", b, d))
        if not args.no_unpruned:
            print(f"{order}-gram, unpruned (in memory)", flush=True)
            u = run({"kind": "unpruned", "text": text, "order": order, "vocab": args.vocab, "dev": dev})
            rows.append((f"{order}-gram unpruned", u, u["dev"]))
    if args.slice_lines:
        sl = out / "slice.txt"
        head(text, args.slice_lines, sl)
        print(f"numpy vs dict path on the first {args.slice_lines} sentences (3-gram, open vocabulary)")
        for kind in ("build", "dict"):
            r = run({"kind": kind, "text": str(sl), "arpa": str(out / f"slice-{kind}.arpa"), "order": 3,
                     "prune": 0.0})
            rows.append((f"slice 3-gram {'numpy' if kind == 'build' else 'dicts'}", r, None))

    print(f"\n{'model':24s} {'wall s':>8s} {'cpu s':>8s} {'RSS GB':>7s} {'n-grams':>11s} {'ARPA MB':>8s} "
          f"{'dev ppl':>8s} {'OOV %':>6s}")
    for name, r, d in rows:
        ppl = f"{d['ppl']:8.1f}" if d else f"{'':8s}"
        oov = f"{100 * d['oov_rate']:6.2f}" if d else f"{'':6s}"
        print(f"{name:24s} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['peak_rss_gb']:7.2f} "
              f"{sum(r['counts'].values()):11,d} {r.get('arpa_mb', 0):8.1f} {ppl} {oov}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

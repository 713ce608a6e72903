"""What one dev pass of training costs: the full dev set against a fixed subset (``train.valid_subset``).

Runs ``asr.validation.validate`` (dev loss + greedy error rate, as training does after each epoch) with a
trained model on the whole dev manifest and on ``dev_subset(utts, N)``, each ``--repeats`` times with the
run's wave cache warm after the first pass, and prints seconds and the error rate side by side. Give
several checkpoints of one run to see whether the subset ranks them as the full set does.

  flock /tmp/asr-cpu.lock .venv/bin/python tools/bench_validation.py \\
      --config conf/mini_librispeech_cpu.yaml --manifest exp/mini_librispeech/data/dev.jsonl \\
      --model exp/mini_librispeech/base/model.pt --subset 120          # about 5 min
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr.checkpoint import load_checkpoint  # noqa: E402
from asr.config import load_config  # noqa: E402
from asr.data import read_manifest  # noqa: E402
from asr.runtime import resolve_amp  # noqa: E402
from asr.train_data import make_cache, make_loader  # noqa: E402
from asr.validation import dev_score, dev_subset, validate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the training config (batching, features, cache)")
    p.add_argument("--manifest", required=True, help="the dev manifest")
    p.add_argument("--model", nargs="+", required=True, help="checkpoints (model.pt or epoch files)")
    p.add_argument("--subset", type=int, default=120, help="utterances in the subset (train.valid_subset)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0: all cores")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [f"data.dev_manifest={args.manifest}"])
    utts = read_manifest(args.manifest)
    sets = {"full": utts, f"subset {args.subset}": dev_subset(utts, args.subset)}
    cache = make_cache(cfg)  # as in training: decoded once, then from RAM
    device = torch.device("cpu")
    amp, why = resolve_amp(cfg.train.amp, device)  # as training validates
    print(f"{len(utts)} dev utterances; precision: {why}; {torch.get_num_threads()} threads")
    print("| model | dev set | utterances | seconds per pass | error rate |")
    print("| --- | --- | --- | --- | --- |")
    for path in args.model:
        _, tokenizer, model, _ = load_checkpoint(path)
        for name, us in sets.items():
            loader = make_loader(us, tokenizer, cfg, False, cache=cache)
            times, metrics = [], {}
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                metrics = validate(model, loader, tokenizer, device, cfg, amp)
                times.append(time.perf_counter() - t0)
            metric, rate = dev_score(metrics)
            secs = " / ".join(f"{t:.1f}" for t in times)
            print(f"| {path} | {name} | {len(us)} | {secs} | {metric} {100 * rate:.2f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What one dev pass of training costs: the full dev set against a fixed subset (``train.valid_subset``).

Runs ``asr.validation.validate`` (dev loss + greedy error rate, as training does after each epoch) with a
trained model on the whole dev manifest and on ``dev_subset(utts, N)``, each ``--repeats`` times with the
run's wave cache warm after the first pass, and prints seconds and the error rate side by side. Give
several checkpoints of one run to see whether the subset ranks them as the full set does.

``--kernels native probe`` times each pass once per choice of CPU LSTM kernel for inference batches
below 8 utterances (``asr.model.NATIVE_LSTM_BELOW_BATCH``): ``native`` is the rule until 2026-12-05
(PyTorch's native kernel always), ``probe`` today's (the faster of native and oneDNN, measured once
per layer shape), ``onednn`` never native; and adds one-utterance-at-a-time passes over the first 20
utterances (``asr transcribe`` runs files that way).

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

import asr.model as model_mod  # noqa: E402
from asr.checkpoint import load_checkpoint  # noqa: E402
from asr.config import load_config  # noqa: E402
from asr.data import read_manifest  # noqa: E402
from asr.runtime import resolve_amp  # noqa: E402
from asr.train_data import make_cache, make_loader  # noqa: E402
from asr.validation import dev_score, dev_subset, validate  # noqa: E402

PROBE = model_mod.native_lstm_faster


KERNELS = {"probe": None, "native": True, "onednn": False}  # what native_lstm_faster answers


def use_kernel(rule: str) -> None:
    """Make asr.model pick the native kernel for small inference batches always (native), never
    (onednn), or where its probe measures it faster (probe)."""
    answer = KERNELS[rule]
    model_mod.native_lstm_faster = (PROBE if answer is None else (lambda *shape: answer))


def single_pass(model, utts, tokenizer, cfg, cache) -> float:
    """Seconds of the model on each utterance alone (a batch of one), audio already decoded."""
    loader = make_loader(utts, tokenizer, cfg, False, cache=cache)
    batches = [b for b in loader if b is not None]
    singles = [(b["wavs"][i : i + 1, : b["wav_lens"][i]], b["wav_lens"][i : i + 1])
               for b in batches for i in range(len(b["ids"]))]
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for wav, n in singles:
            model(wav, n)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the training config (batching, features, cache)")
    p.add_argument("--manifest", required=True, help="the dev manifest")
    p.add_argument("--model", nargs="+", required=True, help="checkpoints (model.pt or epoch files)")
    p.add_argument("--subset", type=int, default=120, help="utterances in the subset (train.valid_subset)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0: all cores")
    p.add_argument("--kernels", nargs="+", choices=list(KERNELS), default=["probe"],
                   help="CPU LSTM kernel rules for inference batches below 8 utterances, each timed")
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
    print("| model | dev set | utterances | small-batch LSTM kernel | seconds per pass | error rate |")
    print("| --- | --- | --- | --- | --- | --- |")
    for path in args.model:
        _, tokenizer, model, _ = load_checkpoint(path)
        for name, us in sets.items():
            loader = make_loader(us, tokenizer, cfg, False, cache=cache)
            for rule in args.kernels:
                use_kernel(rule)
                times, metrics = [], {}
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    metrics = validate(model, loader, tokenizer, device, cfg, amp)
                    times.append(time.perf_counter() - t0)
                metric, rate = dev_score(metrics)
                secs = " / ".join(f"{t:.1f}" for t in times)
                print(f"| {path} | {name} | {len(us)} | {rule} | {secs} | {metric} {100 * rate:.2f} % |", flush=True)
        if len(args.kernels) > 1:
            for rule in args.kernels:
                use_kernel(rule)
                secs = " / ".join(f"{single_pass(model, utts[:20], tokenizer, cfg, cache):.1f}"
                                  for _ in range(args.repeats))
                print(f"| {path} | first 20, one at a time | 20 | {rule} | {secs} | |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

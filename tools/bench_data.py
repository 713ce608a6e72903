#!/usr/bin/env python
"""Data pipeline figures on Mini LibriSpeech, each beside its alternative, in one run.

1. import: ``asr data import librispeech`` (headers read by 8 threads) against one thread.
2. padding: the fraction of padded audio in batches capped at ``--max-seconds``:
   duration buckets (asr.data.BucketBatchSampler) against random batches with the same cap.
3. loader: audio-seconds per second the DataLoader delivers (decode + resample + collate),
   with 0 and 1 worker processes, against the model's training throughput (frontend,
   the CPU recipe's BiLSTM, CTC loss, backward, Adam step) on the same batches. The loader keeps up
   when its figure is above the model's.

    flock /tmp/asr-cpu.lock .venv/bin/python tools/bench_data.py         # about 1-2 min, 2 cores
    .venv/bin/python tools/bench_data.py --loader-seconds 300 --train-batches 2  # quicker
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.config import load_config  # noqa: E402
from asr.data import AudioDataset, BucketBatchSampler, collate, padding_fraction  # noqa: E402
from asr.importers import import_librispeech  # noqa: E402
from asr.text import CharTokenizer  # noqa: E402

LIBRI = ROOT.parent / "shared" / "data" / "mini_librispeech" / "LibriSpeech" / "train-clean-5"


def random_batches(durations: list[float], max_seconds: float, max_batch_size: int,
                   seed: int) -> list[list[int]]:
    """The alternative: shuffle everything, cut batches when the padded seconds would pass the cap."""
    order = list(range(len(durations)))
    random.Random(seed).shuffle(order)
    batches, cur, cur_max = [], [], 0.0
    for i in order:
        m = max(cur_max, durations[i])
        if cur and (m * (len(cur) + 1) > max_seconds or len(cur) >= max_batch_size):
            batches.append(cur)
            cur, m = [], durations[i]
        cur.append(i)
        cur_max = m
    return batches + ([cur] if cur else [])


def bench_import(root: Path) -> list:
    print("== import (Mini LibriSpeech train-clean-5, durations from headers)")
    rows = []
    for workers in (8, 1):
        t = time.perf_counter()
        rep = import_librispeech(root, workers=workers, progress=False)
        dt = time.perf_counter() - t
        rows.append((workers, dt, len(rep.utts)))
        print(f"  {workers} thread(s): {len(rep.utts)} files in {dt:.2f} s ({len(rep.utts) / dt:.0f} files/s)")
    return rep.utts


def bench_padding(durs: list[float], max_seconds: float) -> None:
    print(f"== padding fraction, batches capped at {max_seconds:.0f} padded seconds (3 epochs)")
    for name, make in [
        ("duration buckets (10)", lambda e: _bucketed(durs, max_seconds, 10, e)),
        ("duration buckets (20)", lambda e: _bucketed(durs, max_seconds, 20, e)),
        ("random batches", lambda e: random_batches(durs, max_seconds, 64, e)),
    ]:
        fr = [padding_fraction(make(e), durs) for e in range(3)]
        n = len(make(0))
        print(f"  {name:24s} {100 * sum(fr) / 3:5.1f} % padding, {n} batches/epoch")


def _bucketed(durs, max_seconds, buckets, epoch):
    s = BucketBatchSampler(durs, max_seconds, 64, buckets, seed=0)
    s.set_epoch(epoch)
    return list(s)


def bench_loader(utts, tok, max_seconds: float, limit_seconds: float) -> dict[int, float]:
    print(f"== data loader: decode + collate, first {limit_seconds:.0f} s of audio")
    sampler = BucketBatchSampler([u.duration for u in utts], max_seconds, 64, 10, seed=0)
    batches, total = [], 0.0
    for b in sampler:
        batches.append(b)
        total += sum(utts[i].duration for i in b)
        if total >= limit_seconds:
            break
    out = {}
    for workers in (0, 1):
        loader = torch.utils.data.DataLoader(
            AudioDataset(utts, tok, 16000), batch_sampler=batches, collate_fn=collate,
            num_workers=workers, worker_init_fn=lambda _: torch.set_num_threads(1))
        t = time.perf_counter()
        secs = sum(float(b["wav_lens"].sum()) / 16000 for b in loader if b is not None)
        dt = time.perf_counter() - t
        out[workers] = secs / dt
        print(f"  {workers} worker(s): {secs:.0f} audio-s in {dt:.2f} s = {secs / dt:.0f} audio-s/s")
    return out


def bench_training(utts, tok, max_seconds: float, n_batches: int) -> float:
    from asr.checkpoint import build_model

    cfg = load_config(ROOT / "conf" / "mini_librispeech_cpu.yaml")
    print(f"== model training step ({cfg.model.num_layers}x{cfg.model.hidden_size} BiLSTM, "
          f"{cfg.model.subsampling}, batches of {max_seconds:.0f} padded s, {torch.get_num_threads()} threads)")
    torch.manual_seed(0)
    model = build_model(cfg, len(tok))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler = BucketBatchSampler([u.duration for u in utts], max_seconds, 64, 10, seed=1)
    batches = [collate([AudioDataset(utts, tok, 16000)[i] for i in b]) for _, b in zip(range(n_batches + 1), sampler)]
    secs, dt = 0.0, 0.0
    for k, batch in enumerate(batches):
        t = time.perf_counter()
        lp, lens = model(batch["wavs"], batch["wav_lens"])
        loss = torch.nn.functional.ctc_loss(lp.transpose(0, 1), batch["tokens"], lens, batch["token_lens"],
                                            zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k > 0:  # the first step warms up allocators
            dt += time.perf_counter() - t
            secs += float(batch["wav_lens"].sum()) / 16000
    print(f"  {secs:.0f} audio-s in {dt:.2f} s = {secs / dt:.0f} audio-s/s")
    return secs / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=LIBRI)
    ap.add_argument("--max-seconds", type=float, default=120.0, help="padded seconds per batch")
    ap.add_argument("--loader-seconds", type=float, default=1200.0, help="audio to load per loader run")
    ap.add_argument("--train-batches", type=int, default=3, help="timed training steps")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if not args.corpus.is_dir():
        sys.exit(f"bench_data.py: {args.corpus} not found (Mini LibriSpeech train-clean-5)")
    utts = bench_import(args.corpus)
    bench_padding([u.duration for u in utts], args.max_seconds)
    tok = CharTokenizer.train(u.text for u in utts)
    loader = bench_loader(utts, tok, args.max_seconds, args.loader_seconds)
    model = bench_training(utts, tok, args.max_seconds, args.train_batches)
    print("== summary")
    print(f"  data loader {loader[0]:.0f} audio-s/s (0 workers), {loader[1]:.0f} (1 worker); "
          f"training {model:.0f} audio-s/s: the loader is {loader[0] / model:.0f}x faster than training "
          "needs with no worker process")


if __name__ == "__main__":
    main()

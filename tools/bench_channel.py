#!/usr/bin/env python
"""Cost of channel augmentation (asr.channel), in audio-seconds per CPU-second, one thread.

1. each piece alone on real speech: every codec kind of the config (encode + decode), the
   low-pass, high-pass, narrow-band round trip, gain, generated noise;
2. the whole training augmentation of a config (``augment``: speed, channel, noise) over
   ``--utts`` utterances for ``--epochs`` epochs: without the wave cache (each codec draw
   encoded), with it (each codec variant encoded once, at its first draw: epoch 1 pays, later
   epochs reuse), and with the cache filled before training by 1 and by ``--processes``
   worker processes (asr.train_data.fill_wave_cache, what training does by default: decoded
   audio, speed and codec variants; the pass's wall-clock rate, then the training thread's
   rate per epoch);
3. beside it, the training step's own rate when ``--train-rate`` is given (tools/bench_data.py
   or train.log's audio-s/s), so the slowdown reads directly.

    .venv/bin/python tools/bench_channel.py --utts 20 --epochs 3      # ~1-2 min on one core
    .venv/bin/python tools/bench_channel.py -c conf/mini_librispeech_cpu_robust.yaml --utts 200 --epochs 4
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.augment import WaveAugment  # noqa: E402
from asr.channel import apply_gain, highpass, lowpass, narrowband, telephone_line  # noqa: E402
from asr.config import load_config  # noqa: E402
from asr.data import AudioDataset, load_utterance  # noqa: E402
from asr.degrade import degrade, generated_noise  # noqa: E402
from asr.importers import import_librispeech  # noqa: E402
from asr.train_data import fill_wave_cache  # noqa: E402
from asr.wavecache import WaveCache  # noqa: E402

LIBRI = ROOT.parent / "shared" / "data" / "mini_librispeech" / "LibriSpeech" / "train-clean-5"
SR = 16000


def rate(fn, wavs: list[np.ndarray]) -> float:
    """Audio seconds per CPU second of ``fn`` over ``wavs``."""
    t = time.process_time()
    for w in wavs:
        fn(w)
    return sum(w.size for w in wavs) / SR / max(1e-9, time.process_time() - t)


def pieces(aug: WaveAugment, wavs: list[np.ndarray]) -> None:
    print(f"== each piece alone ({sum(w.size for w in wavs) / SR:.0f} s of speech, CPU time, 1 thread)")
    rng = np.random.default_rng(0)
    rows = [(f"codec {k.spec} (encode + decode)", lambda w, k=k: degrade(w, k, rng)) for k in aug.channel.kinds]
    rows += [("low-pass 3.4-7.5 kHz (elliptic, 6th order)", lambda w: lowpass(w, rng.uniform(3400, 7500))),
             ("high-pass 50-300 Hz (Butterworth, 4th order)", lambda w: highpass(w, rng.uniform(50, 300))),
             ("8 kHz round trip", lambda w: narrowband(w, 8000)),
             ("phone line (band-pass, 8 kHz, mu-law)", lambda w: telephone_line(w, (300.0, 3400.0))),
             ("gain + clip + 16-bit", lambda w: apply_gain(w, 6.0)),
             ("generated noise", lambda w: generated_noise(w.size, rng))]
    for name, fn in rows:
        fn(wavs[0][:SR])  # imports (scipy.signal: ~1 s) and filter designs are paid once per run
        print(f"  {name:46s} {rate(fn, wavs):9.0f} audio-s/s")


def pipeline(cfg, utts, epochs: int, use_cache: bool, cache: WaveCache | None = None) -> list[float]:
    """Audio-s/s of the augmentation per epoch (decoding excluded: base waveforms are given);
    ``cache``: a wave cache already holding the codec variants."""
    aug = WaveAugment(cfg.augment, SR)
    lowpass(np.zeros(SR, dtype=np.float32), 4000.0)  # import scipy.signal once, outside the timing
    cache = cache if cache is not None else WaveCache(64.0) if use_cache else None
    base = {u.id: load_utterance(u, SR) for u in utts}
    out = []
    for epoch in range(epochs):
        t, secs = time.process_time(), 0.0
        for u in utts:
            wav = base[u.id]
            rng = np.random.default_rng([zlib.crc32(u.id.encode()), epoch, cfg.train.seed])
            if cache is None:
                res = aug(wav, rng, uid=u.id)
            else:
                key = (u.audio, u.offset, u.duration, SR)
                res = aug(wav, rng, lambda f, w=wav, k=key: cache.get(k + (f,), lambda: aug_speed(w, f)),
                          lambda tag, make, k=key: cache.get(k + tag, make), u.id)
            secs += res.size / SR
        out.append(secs / max(1e-9, time.process_time() - t))
    return out


def before_training(cfg, utts, processes: int) -> tuple[dict, WaveCache]:
    """The wave cache filled before training by ``processes`` worker processes, as training
    does (asr.train_data.fill_wave_cache: decoded audio, speed and codec variants)."""
    cache = WaveCache(64.0)
    ds = AudioDataset(utts, None, SR, augment=WaveAugment(cfg.augment, SR), cache=cache)
    return fill_wave_cache(ds, processes, show=False), cache


def aug_speed(wav: np.ndarray, factor: float) -> np.ndarray:
    from asr.audio import speed_perturb

    return speed_perturb(wav, factor, SR)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "-c", default=str(ROOT / "conf" / "mini_librispeech_cpu_robust.yaml"))
    ap.add_argument("--corpus", type=Path, default=LIBRI)
    ap.add_argument("--utts", type=int, default=20, help="utterances (every k-th of the corpus)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--processes", type=int, default=2, help="worker processes encoding before training")
    ap.add_argument("--train-rate", type=float, default=0.0, help="the training step's audio-s/s, for the ratio")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not args.corpus.is_dir():
        sys.exit(f"bench_channel.py: {args.corpus} not found (Mini LibriSpeech train-clean-5)")
    cfg = load_config(args.config)
    rep = import_librispeech(args.corpus, workers=4, progress=False)
    step = max(1, len(rep.utts) // args.utts)
    utts = rep.utts[::step][: args.utts]
    aug = WaveAugment(cfg.augment, SR)
    print(f"config {args.config}: {aug.channel.describe()}; speed {list(cfg.augment.speed_perturb)}, "
          f"noise p={cfg.augment.noise_prob:g}")
    pieces(aug, [load_utterance(u, SR) for u in utts[:5]])
    print(f"== training augmentation, {len(utts)} utterances ({sum(u.duration for u in utts):.0f} s), "
          f"{args.epochs} epochs, audio-s/s per epoch (CPU time, decoding excluded)")
    rows = [("no cache (every codec draw encoded)", False, None),
            ("data.cache=ram, encoded at first draw", True, None)]
    for n in sorted({1, args.processes}):
        st, cache = before_training(cfg, utts, n)
        print(f"  cache filled before training by {n} process{'es' if n > 1 else ''}: {st['waveforms']} waveforms "
              f"({st['seconds']:.0f} s: audio, speed and codec variants) in {st['wall']:.1f} s wall, "
              f"{st['seconds'] / max(1e-9, st['wall']):.0f} audio-s/s")
        rows.append((f"data.cache=ram, encoded before ({n} proc.)", True, cache))
    for name, use_cache, cache in rows:
        rates = pipeline(cfg, utts, args.epochs, use_cache, cache)
        extra = ""
        if args.train_rate:
            extra = "; training slowed by " + ", ".join(f"{100 * args.train_rate / r:.0f}%" for r in rates)
        print(f"  {name:42s} " + ", ".join(f"{r:.0f}" for r in rates) + extra)


if __name__ == "__main__":
    main()

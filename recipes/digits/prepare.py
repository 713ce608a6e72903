#!/usr/bin/env python3
"""Build the spoken-digit-strings corpus from the Free Spoken Digit Dataset.

Each utterance is 3-7 recordings of one speaker, concatenated with random pauses,
e.g. "three one four one five". Splits follow FSDD's own: recordings with index 0-4
make the test set; index 5-9 make the dev set (held out of FSDD's train split for
checkpoint selection); 10-49 make the training set. No recording is shared between
splits.

Usage:
    python recipes/digits/prepare.py --out exp/digits/data [--fsdd DIR] [--train 2000]
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPLITS = {"test": range(0, 5), "dev": range(5, 10), "train": range(10, 50)}
SR = 8000


def default_fsdd() -> Path:
    return HERE / "fsdd"  # bundled FLAC copy (same recordings as ../shared/data/fsdd)


def index_recordings(root: Path) -> dict[str, dict[tuple[str, int], list[Path]]]:
    """split -> (speaker, digit) -> recordings."""
    out: dict[str, dict] = {s: defaultdict(list) for s in SPLITS}
    files = [p for p in sorted(root.rglob("*")) if p.suffix.lower() in (".wav", ".flac")]
    if not files:
        raise SystemExit(f"prepare.py: no .wav or .flac recordings under {root}")
    for p in files:
        try:
            digit, speaker, idx = p.stem.split("_")
            digit, idx = int(digit), int(idx)
        except ValueError:
            continue
        for split, r in SPLITS.items():
            if idx in r:
                out[split][(speaker, digit)].append(p)
    return out


def trim(wav: np.ndarray, thresh_db: float = -35.0) -> np.ndarray:
    """Cut leading/trailing near-silence so pauses are under our control."""
    frame = 80
    n = len(wav) // frame
    if n == 0:
        return wav
    energy = (wav[: n * frame].reshape(n, frame) ** 2).mean(1)
    ref = energy.max() + 1e-12
    loud = np.where(10 * np.log10(energy / ref + 1e-12) > thresh_db)[0]
    if loud.size == 0:
        return wav
    return wav[max(0, loud[0] - 1) * frame : min(n, loud[-1] + 2) * frame]


def build_split(recs, n_utts: int, rng: random.Random, out_dir: Path, split: str) -> list[dict]:
    speakers = sorted({s for s, _ in recs})
    out_dir.mkdir(parents=True, exist_ok=True)
    cache: dict[Path, np.ndarray] = {}
    lines = []
    for i in range(n_utts):
        spk = speakers[i % len(speakers)]
        digits = [rng.randrange(10) for _ in range(rng.randint(3, 7))]
        parts = [np.zeros(int(SR * rng.uniform(0.1, 0.3)))]
        for d in digits:
            path = rng.choice(recs[(spk, d)])
            if path not in cache:
                wav, sr = sf.read(path, dtype="float32")
                if sr != SR:
                    raise SystemExit(f"{path}: expected {SR} Hz, got {sr}")
                cache[path] = trim(wav)
            parts.append(cache[path])
            parts.append(np.zeros(int(SR * rng.uniform(0.05, 0.4))))
        wav = np.concatenate(parts).astype(np.float32)
        # a little background noise so the pauses are not digital silence
        noise_rng = np.random.default_rng(rng.randrange(2**32))
        wav += noise_rng.standard_normal(wav.size).astype(np.float32) * 10 ** (-55 / 20)
        uid = f"{split}-{spk}-{i:05d}"
        path = out_dir / f"{uid}.flac"
        sf.write(path, np.clip(wav, -1, 1), SR, subtype="PCM_16")
        lines.append({"id": uid, "audio": str(path.resolve()), "duration": round(wav.size / SR, 4),
                      "text": " ".join(WORDS[d] for d in digits), "speaker": spk})
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fsdd", type=Path, default=default_fsdd(), help="folder of FSDD recordings (.wav or .flac)")
    ap.add_argument("--out", type=Path, required=True, help="output folder for audio and manifests")
    ap.add_argument("--train", type=int, default=2000, help="training utterances")
    ap.add_argument("--dev", type=int, default=200, help="dev utterances")
    ap.add_argument("--test", type=int, default=300, help="test utterances")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.fsdd.is_dir():
        raise SystemExit(f"prepare.py: FSDD folder {args.fsdd} does not exist")
    recs = index_recordings(args.fsdd)
    sizes = {"train": args.train, "dev": args.dev, "test": args.test}
    for split, n in sizes.items():
        manifest = args.out / f"{split}.jsonl"
        if manifest.is_file() and sum(1 for _ in open(manifest)) == n:
            print(f"[prepare] {manifest} exists ({n} utterances), skipping")
            continue
        lines = build_split(recs[split], n, random.Random(f"{args.seed}-{split}"), args.out / split, split)
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(x) + "\n" for x in lines))
        tmp.replace(manifest)
        hours = sum(x["duration"] for x in lines) / 3600
        print(f"[prepare] {manifest}: {n} utterances, {hours:.2f} h, "
              f"{len({x['speaker'] for x in lines})} speakers")


if __name__ == "__main__":
    main()

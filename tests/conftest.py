"""Shared fixtures: tiny real audio from the bundled FSDD copy; one torch thread per test process."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT / "recipes" / "digits" / "fsdd"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Several torch processes on two cores spin against each other; tests use one thread.
torch.set_num_threads(1)
torch.set_flush_denormal(True)


def fsdd_file(digit: int, speaker: str = "jackson", index: int = 0) -> Path:
    return FSDD / f"{digit}_{speaker}_{index}.flac"


def make_digit_utterance(path: Path, digits: list[int], speaker: str = "jackson", index: int = 0,
                         sr_out: int = 8000, gap: float = 0.15) -> float:
    """Concatenate real FSDD recordings of ``digits`` into ``path``; returns duration in seconds."""
    parts = [np.zeros(int(0.1 * 8000), dtype=np.float32)]
    for d in digits:
        wav, sr = sf.read(fsdd_file(d, speaker, index), dtype="float32")
        parts += [wav, np.zeros(int(gap * 8000), dtype=np.float32)]
    wav = np.concatenate(parts)
    if sr_out != 8000:
        from asr.audio import resample

        wav = resample(wav, 8000, sr_out)
    sf.write(path, wav, sr_out)
    return wav.size / sr_out


@pytest.fixture
def digits_manifest(tmp_path: Path):
    """Factory: write n real digit-string utterances and a manifest; returns the manifest path."""

    def make(n: int = 8, speaker: str = "jackson", index_range=range(10, 50), seed: int = 0,
             name: str = "train", min_digits: int = 2, max_digits: int = 4) -> Path:
        rng = random.Random(seed)
        out = tmp_path / name
        out.mkdir(exist_ok=True)
        lines = []
        for i in range(n):
            digits = [rng.randrange(10) for _ in range(rng.randint(min_digits, max_digits))]
            p = out / f"{name}-{i:03d}.wav"
            dur = make_digit_utterance(p, digits, speaker, rng.choice(list(index_range)))
            lines.append({"id": f"{name}-{i:03d}", "audio": str(p), "duration": dur,
                          "text": " ".join(WORDS[d] for d in digits), "speaker": speaker})
        m = tmp_path / f"{name}.jsonl"
        m.write_text("".join(json.dumps(x) + "\n" for x in lines))
        return m

    return make

"""The RAM waveform cache: 16-bit audio is kept exactly, each utterance is decoded once per run,
and training with the cache repeats training without it (same batches, same augmentation draws)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_train import config, write_manifest

import asr.data
from asr.train import Trainer
from asr.wavecache import WaveCache


def test_int16_audio_is_kept_exactly_and_made_once():
    cache = WaveCache()
    pcm = (np.random.default_rng(0).integers(-32768, 32768, 1000) / 32768).astype(np.float32)
    calls = []
    for _ in range(3):
        out = cache.get(("a", 1.0), lambda: calls.append(1) or pcm)
        assert out.dtype == np.float32 and np.array_equal(out, pcm)
    assert len(calls) == 1 and cache.hits == 2 and cache.nbytes == 2000
    loud = np.array([0.5, -1.7, 1.2, 1e-3], dtype=np.float32)  # resampling can overshoot 1.0
    first, again = cache.get(("b", 1.1), lambda: loud), cache.get(("b", 1.1), lambda: loud)
    assert np.array_equal(first, again) and np.abs(first - loud).max() < 1.7 / 32767


def test_a_full_cache_stores_nothing_more(caplog):
    cache = WaveCache(max_gb=1500 / 2**30)
    x = np.zeros(500, dtype=np.float32)
    for k in range(3):
        cache.get((k,), lambda: x)
    assert len(cache) == 1 and "cache is full" in caplog.text


def _losses(run_dir) -> list[tuple[int, float, int]]:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["utts"]) for r in recs if "loss" in r]


def test_training_with_the_cache_decodes_once_and_matches_training_without(tmp_path, monkeypatch):
    m = write_manifest(tmp_path, "train", [[1, 2], [3], [4, 5, 6], [7, 8], [9], [0, 1]])
    decodes = []
    real = asr.data.load_audio
    monkeypatch.setattr(asr.data, "load_audio", lambda *a, **k: decodes.append(a[0]) or real(*a, **k))
    runs = {}
    for mode in ("off", "ram"):
        decodes.clear()
        cfg = config(tmp_path / mode, m, f"data.cache={mode}", "data.cache_workers=0",  # at first use
                     "augment.speed_perturb=[0.9,1.0,1.1]",
                     "model.dropout=0.2", "train.epochs=3", "data.max_batch_seconds=4")
        t = Trainer(cfg, resume=False)
        t.fit()
        runs[mode] = (_losses(tmp_path / mode), len(decodes), t.cache)
    (off, n_off, _), (ram, n_ram, cache) = runs["off"], runs["ram"]
    assert n_off == 6 * 4 and n_ram == 6  # CMVN pass + 3 epochs, against once per run
    assert cache.hits > 0 and len(cache) > 6  # speed variants are kept too
    assert [(s, u) for s, _, u in ram] == [(s, u) for s, _, u in off]  # the same batches
    for (_, a, _), (_, b, _) in zip(off, ram):  # 8 kHz audio resampled: only 16-bit rounding differs
        assert b == pytest.approx(a, rel=1e-3)

"""Model selection over several dev sets (train.select_on): per-set metrics, their mean ranks the
epochs, the default is clean dev alone, and bad settings are one-line errors."""

from __future__ import annotations

import json
import logging

import pytest
from test_train import config, write_manifest

from asr.degraded_sets import degrade_manifest
from asr.errors import ConfigError
from asr.train import Trainer


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sel")
    train = write_manifest(root, "train", [[1, 2], [3], [4, 5], [6, 7], [8, 9], [0]])
    dev = write_manifest(root, "dev", [[2, 1], [5, 4], [9, 8]], index0=30)
    degrade_manifest(dev, ["noise:0"], root / "degraded", seed=0, progress=False)
    return root, train, dev, root / "degraded" / "noise_0" / "manifest.jsonl"


def test_epochs_are_ranked_by_the_mean_over_the_listed_sets(sets, tmp_path):
    _, train, dev, noisy = sets
    cfg = config(tmp_path / "run", train, "model.hidden_size=64", "model.dropout=0", "train.epochs=4",
                 "augment.specaugment=false", "train.lr=5e-3", "train.warmup_steps=5", "train.scheduler=constant",
                 "data.max_batch_seconds=20", "train.keep_best=1", f"train.select_on=[dev,{noisy}]", dev_m=dev)
    t = Trainer(cfg, resume=False)
    t.fit()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    for h in history:
        assert h["dev_select_wer"] == pytest.approx((h["dev_wer"] + h["dev_noise_0_wer"]) / 2)
        assert h["dev_noise_0_utts"] == 3 and "dev_noise_0_cer" in h and "dev_noise_0_loss" in h
    assert t.state.best_wer == min(h["dev_select_wer"] for h in history)
    best_epoch = min(history, key=lambda h: h["dev_select_wer"])["epoch"]
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("best-*.pt")] == [f"best-epoch-{best_epoch}.pt"]
    log_text = (tmp_path / "run" / "train.log").read_text()
    assert "selection set noise_0: 3 utterances" in log_text and "selection WER" in log_text
    assert "mean of dev" in log_text and "noise_0" in log_text
    assert any(r.get("dev_noise_0_wer") is not None for r in
               map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()))


def test_the_default_is_clean_dev_alone(sets, tmp_path):
    _, train, dev, _ = sets
    t = Trainer(config(tmp_path / "run", train, "train.epochs=1", dev_m=dev), resume=False)
    assert t.selection.names == ["dev"] and not t.selection.loaders
    metrics = {"dev_wer": 0.5, "dev_cer": 0.2}
    assert t.selection.score(metrics) == ("WER", 0.5) and "dev_select_wer" not in metrics


def test_bad_select_on_settings_are_one_line_errors(sets, tmp_path):
    _, train, dev, _ = sets
    missing = tmp_path / "nowhere" / "manifest.jsonl"
    with pytest.raises(ConfigError, match=f"train.select_on: manifest {missing} does not exist.*asr data degrade"):
        Trainer(config(tmp_path / "a", train, f"train.select_on=[dev,{missing}]", dev_m=dev), resume=False)
    with pytest.raises(ConfigError, match="lists dev but data.dev_manifest is not set"):
        Trainer(config(tmp_path / "b", train, f"train.select_on=[dev,{dev}]"), resume=False)


def test_a_set_with_no_readable_utterance_does_not_score_zero(sets, tmp_path):
    _, train, dev, noisy = sets
    t = Trainer(config(tmp_path / "run", train, "train.epochs=1", f"train.select_on=[dev,{noisy}]", dev_m=dev),
                resume=False)
    # every file of the set missing: validate() scores no utterance, whose error rate reads 0 %
    metrics = {"dev_wer": 0.5, "dev_cer": 0.2, "dev_noise_0_wer": 0.0, "dev_noise_0_cer": 0.0,
               "dev_noise_0_utts": 0}
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("asr.train").addHandler(handler)  # the run log does not propagate to the root
    try:
        assert t.selection.score(metrics) == ("WER", 0.5)
    finally:
        logging.getLogger("asr.train").removeHandler(handler)
    assert any("selection set noise_0: no utterance could be scored" in m for m in seen)

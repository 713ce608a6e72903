"""Checkpoints: self-describing round trip, atomic writes, clear errors, averaging, pruning."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from test_train import config, write_manifest

from asr.checkpoint import (
    CheckpointError,
    average_checkpoints,
    build_model,
    load_checkpoint,
    read_checkpoint,
    retain_checkpoints,
    save_checkpoint,
    write_final_model,
)
from asr.config import Config, load_config
from asr.text import CharTokenizer
from asr.train import train

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _model(seed: int, *over: str):
    torch.manual_seed(seed)
    cfg = load_config(None, ["model.num_layers=1", "model.hidden_size=8", "feature.n_mels=10",
                             "model.subsampling=conv2", "model.conv_channels=2", *over])
    tok = CharTokenizer("abc ")
    model = build_model(cfg, len(tok))
    with torch.no_grad():
        model.frontend.set_cmvn(torch.randn(10), torch.rand(10) + 0.5)
    return cfg, tok, model.eval()


def test_round_trip_rebuilds_the_same_model_from_the_file_alone(tmp_path):
    cfg, tok, model = _model(0, "model.rnn_type=gru", "model.layer_norm=true")
    path = tmp_path / "m.pt"
    save_checkpoint(path, cfg, tok, model, state={"step": 7})
    cfg2, tok2, model2, obj = load_checkpoint(path)
    assert cfg2 == cfg and tok2.to_dict() == tok.to_dict() and obj["state"]["step"] == 7
    wavs, lens = torch.randn(2, 16000), torch.tensor([16000, 9000])
    with torch.no_grad():
        torch.testing.assert_close(model(wavs, lens)[0], model2(wavs, lens)[0], rtol=0, atol=0)


def test_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    cfg, tok, model = _model(0)
    path = tmp_path / "last.pt"
    save_checkpoint(path, cfg, tok, model, state={"step": 1})

    def broken_save(obj, f):
        f.write(b"partial garbage")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="No space left"):
        save_checkpoint(path, cfg, tok, model, state={"step": 2})
    monkeypatch.undo()
    assert read_checkpoint(path)["state"]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    cfg, tok, model = _model(0)
    path = tmp_path / "m.pt"
    save_checkpoint(path, cfg, tok, model)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(cut)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not an asr checkpoint"):
        read_checkpoint(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")


def _three_checkpoints(tmp_path, prefix: str) -> list:
    """Checkpoints <prefix>1.pt .. <prefix>3.pt of the same config with different weights."""
    paths = []
    for seed in (1, 2, 3):
        cfg, tok, model = _model(seed)
        paths.append(tmp_path / f"{prefix}{seed}.pt")
        save_checkpoint(paths[-1], cfg, tok, model)
    return paths


def test_average_is_the_mean_of_the_weights(tmp_path):
    paths = _three_checkpoints(tmp_path, "c")
    average_checkpoints(paths, tmp_path / "avg.pt")
    objs = [read_checkpoint(p)["model"] for p in paths]
    avg = read_checkpoint(tmp_path / "avg.pt")
    for k, v in avg["model"].items():
        torch.testing.assert_close(v, (objs[0][k] + objs[1][k] + objs[2][k]) / 3)
    assert avg["optimizer"] is None and avg["state"]["averaged_from"] == [str(p) for p in paths]
    load_checkpoint(tmp_path / "avg.pt")  # loadable as a model


def test_asr_average_refuses_checkpoints_of_different_models(tmp_path):
    cfg, tok, model = _model(0)
    save_checkpoint(tmp_path / "a.pt", cfg, tok, model)
    cfg, tok, model = _model(0, "model.hidden_size=12")
    save_checkpoint(tmp_path / "b.pt", cfg, tok, model)
    r = subprocess.run([sys.executable, "-m", "asr", "average", str(tmp_path / "a.pt"),
                        str(tmp_path / "b.pt"), "-o", str(tmp_path / "avg.pt")],
                       env=ENV, cwd=ROOT, capture_output=True, timeout=120)
    err = r.stderr.decode()
    assert r.returncode != 0 and err.startswith("asr: error:") and "b.pt" in err
    assert "Traceback" not in err and not (tmp_path / "avg.pt").exists()


def test_training_keeps_the_last_n_and_best_n_and_averages_the_best(tmp_path):
    m = write_manifest(tmp_path, "train", [[1, 2], [3, 4], [5]])
    cfg = config(tmp_path / "run", m, "train.epochs=4", "train.keep_last=2", "train.keep_best=2",
                 "train.average_best=2", "train.lr=5e-3", dev_m=m)
    out = train(cfg, resume=False)
    ck = tmp_path / "run" / "checkpoints"
    names = sorted(p.name for p in ck.glob("*.pt"))
    assert [n for n in names if n.startswith("epoch-")] == ["epoch-3.pt", "epoch-4.pt"]
    best = [n for n in names if n.startswith("best-")]
    assert len(best) == 2 and "last.pt" in names
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    wers = sorted((h["dev_wer"], h["epoch"]) for h in history)[:2]  # ties: the earlier epoch wins
    assert sorted(best) == sorted(f"best-epoch-{e}.pt" for _, e in wers)
    assert read_checkpoint(out)["state"]["averaged_from"] == [str(ck / f"best-epoch-{e}.pt") for _, e in wers]


def test_retention_keeps_the_best_n_by_wer_and_the_last_n_epochs(tmp_path):
    cfg, tok, model = _model(0)
    best = []
    for epoch, wer in [(1, 0.9), (2, 0.5), (3, 0.7), (4, 0.5), (5, 0.8)]:
        save_checkpoint(tmp_path / f"epoch-{epoch}.pt", cfg, tok, model)
        best = retain_checkpoints(tmp_path, epoch, wer, best, keep_best=2, keep_last=2)
    # 0.5 twice: epoch 2 came first and ranks above epoch 4; epochs 1, 3 and 5 are not kept as best
    assert best == [[0.5, str(tmp_path / "best-epoch-2.pt")], [0.5, str(tmp_path / "best-epoch-4.pt")]]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == [
        "best-epoch-2.pt", "best-epoch-4.pt", "epoch-4.pt", "epoch-5.pt"]
    # without a dev set nothing ranks; keep_last=0 keeps no epoch files
    save_checkpoint(tmp_path / "epoch-6.pt", cfg, tok, model)
    assert retain_checkpoints(tmp_path, 6, None, best, keep_best=2, keep_last=0) == best
    assert not list(tmp_path.glob("epoch-*.pt"))


def test_write_final_model_averages_the_best_or_copies_the_best_or_last(tmp_path):
    paths = _three_checkpoints(tmp_path, "best-epoch-")
    save_checkpoint(tmp_path / "last.pt", *_model(3))
    best = [[0.3, str(paths[2])], [0.4, str(paths[0])], [0.6, str(paths[1])]]
    out = tmp_path / "model.pt"
    assert "average of the 2 best checkpoints by dev WER" in write_final_model(tmp_path, best, 2, out)
    assert read_checkpoint(out)["state"]["averaged_from"] == [str(paths[2]), str(paths[0])]
    expect = (read_checkpoint(paths[2])["model"]["head.weight"].double()
              + read_checkpoint(paths[0])["model"]["head.weight"].double()) / 2
    assert torch.allclose(read_checkpoint(out)["model"]["head.weight"].double(), expect, atol=1e-6)
    paths[2].unlink()  # a best file that went missing is passed over
    # a phone run's error rate is a PER, and the description says so
    assert write_final_model(tmp_path, best, 1, out, "PER") == f"best checkpoint {paths[0]} (dev PER 40.00%)"
    assert torch.equal(read_checkpoint(out)["model"]["head.weight"], read_checkpoint(paths[0])["model"]["head.weight"])
    assert "last checkpoint" in write_final_model(tmp_path, [], 3, out)
    assert torch.equal(read_checkpoint(out)["model"]["head.weight"],
                       read_checkpoint(tmp_path / "last.pt")["model"]["head.weight"])


def test_asr_average_of_a_run_folder_takes_its_best_checkpoints(tmp_path):
    m = write_manifest(tmp_path, "train", [[1, 2], [3]])
    train(config(tmp_path / "run", m, "train.epochs=3", "train.keep_best=2", dev_m=m), resume=False)
    r = subprocess.run([sys.executable, "-m", "asr", "average", str(tmp_path / "run"), "--best", "2",
                        "-o", str(tmp_path / "avg.pt")], env=ENV, cwd=ROOT, capture_output=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    src = read_checkpoint(tmp_path / "avg.pt")["state"]["averaged_from"]
    assert len(src) == 2 and all("best-epoch-" in s for s in src)


def test_the_old_name_average_last_is_read_as_average_best_with_a_warning(tmp_path):
    """train.average_last (which averaged the best checkpoints) is now train.average_best; configs,
    overrides and checkpoints that use the old name still load."""
    from asr.config import ConfigError, apply_overrides, from_dict

    old = tmp_path / "old.yaml"
    old.write_text("train:\n  average_last: 3\n")
    with pytest.warns(FutureWarning, match="train.average_last is now called train.average_best"):
        assert load_config(old).train.average_best == 3
    with pytest.warns(FutureWarning, match="average_last"):
        assert apply_overrides(Config(), ["train.average_last=4"]).train.average_best == 4
    cfg, tok, model = _model(0)
    save_checkpoint(tmp_path / "a.pt", cfg, tok, model)
    obj = read_checkpoint(tmp_path / "a.pt")
    obj["config"]["train"]["average_last"] = obj["config"]["train"].pop("average_best")
    with pytest.warns(FutureWarning, match="average_last"):
        assert from_dict(Config, obj["config"]).train.average_best == cfg.train.average_best
    # from the command line: one `asr: warning:` line, then the run goes on (here to the missing manifest)
    r = subprocess.run([sys.executable, "-m", "asr", "train", "-c", str(old), f"run_dir={tmp_path / 'run'}"],
                       env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "data.train_manifest is not set" in r.stderr, r.stderr
    assert f"asr: warning: {old}: train.average_last is now called train.average_best" in r.stderr.splitlines()[0]
    assert "Traceback" not in r.stderr and "FutureWarning" not in r.stderr
    both = tmp_path / "both.yaml"
    both.write_text("train:\n  average_last: 3\n  average_best: 2\n")
    with pytest.raises(ConfigError, match="both train.average_last and train.average_best"):
        load_config(both)

"""Config: YAML + dotted overrides, typo and range errors that say what is valid, round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from asr.config import Config, ConfigError, load_config, save_config, to_dict

ROOT = Path(__file__).resolve().parents[1]


def test_yaml_and_overrides_are_applied_and_typed():
    cfg = load_config(ROOT / "conf" / "digits.yaml",
                      ["train.lr=3e-4", "model.bidirectional=false", "augment.speed_perturb=[0.9, 1.1]"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.model.bidirectional is False
    assert cfg.augment.speed_perturb == (0.9, 1.1)
    assert cfg.model.hidden_size == 160  # from the YAML
    assert cfg.train.accum_steps == 1  # a default the YAML does not set


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().train.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("override,needle", [
    ("train.lrr=1", "valid keys are: epochs, optimizer, lr"),
    ("modle.hidden_size=3", "valid keys are: run_dir, feature"),
    ("model=3", "is a section"),
    ("train.lr", "section.key=value"),
    ("train.epochs=2.5", "expected an integer"),
    ("model.rnn_type=lsmt", "lstm, gru, lstm_peephole"),
    ("model.subsampling=conv3", "stack2, stack3, stack4, conv2, conv4"),
    ("train.scheduler=linear", "constant, cosine, noam, plateau"),
    ("train.amp=fp8", "auto, off, bf16, fp16"),
    ("model.dropout=1.5", "model.dropout must be"),
    ("train.accum_steps=0", "train.accum_steps must be >= 1"),
])
def test_bad_overrides_name_the_problem(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert needle in str(e.value)


def test_unknown_key_in_yaml_lists_valid_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  hiden_size: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "hiden_size" in str(e.value) and "hidden_size" in str(e.value) and str(p) in str(e.value)


def test_projection_needs_lstm_and_must_be_smaller():
    with pytest.raises(ConfigError, match="only supported with rnn_type=lstm"):
        load_config(None, ["model.rnn_type=gru", "model.proj_size=16"])
    with pytest.raises(ConfigError, match="below hidden_size"):
        load_config(None, ["model.hidden_size=16", "model.proj_size=16"])
    assert load_config(None, ["model.proj_size=64"]).model.proj_size == 64


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_config(ROOT / "conf" / "digits.yaml", ["augment.noise_snr_db=[5, 15]", "train.seed=7"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert to_dict(again)["augment"]["noise_snr_db"] == [5.0, 15.0]


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "conf").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    """Each conf/*.yaml is valid (unknown keys and bad values raise ConfigError) and survives save/load."""
    cfg = load_config(path)
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_recipe_fine_tuning_config_extracts_the_features_of_the_base_config():
    """run.sh stage 3 fine-tunes the stage-2 model with conf/mini_librispeech_cpu_robust_ft.yaml, and
    ``train.init_from`` refuses a checkpoint whose feature settings differ: the two must agree, or the
    default recipe stops after two hours of stage 2."""
    conf = Path(__file__).resolve().parents[1] / "conf"
    base = load_config(conf / "mini_librispeech_cpu.yaml")
    ft = load_config(conf / "mini_librispeech_cpu_robust_ft.yaml")
    assert ft.feature == base.feature
    assert (ft.model, ft.tokenizer) == (base.model, base.tokenizer)


def test_curriculum_config_is_the_cpu_model_with_stage_3s_channels_from_a_later_epoch():
    """conf/mini_librispeech_cpu_curriculum.yaml is the one-stage form of the two-stage recipe: the CPU
    config's features, model and units, stage 3's channel augmentation and selection sets, channels from
    an epoch inside the run."""
    conf = Path(__file__).resolve().parents[1] / "conf"
    base = load_config(conf / "mini_librispeech_cpu.yaml")
    ft = load_config(conf / "mini_librispeech_cpu_robust_ft.yaml")
    cur = load_config(conf / "mini_librispeech_cpu_curriculum.yaml")
    assert (cur.feature, cur.model, cur.tokenizer) == (base.feature, base.model, base.tokenizer)
    assert cur.augment.channel == ft.augment.channel and cur.augment.channel.codec_prob > 0
    assert (cur.augment.noise_prob, cur.augment.noise_snr_db) == (ft.augment.noise_prob, ft.augment.noise_snr_db)
    assert 1 < cur.augment.channel_from_epoch <= cur.train.epochs and base.augment.channel_from_epoch == 1
    assert [s.split("degraded/")[-1] for s in cur.train.select_on] == [s.split("degraded/")[-1] for s in ft.train.select_on]

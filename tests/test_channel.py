"""Channel augmentation (asr.channel through asr.augment.WaveAugment): seeded and exact with or
without the wave cache, codec variants band-limited and encoded once per run, filters measured,
off at evaluation, a tiny training learns with it, bad codecs and bad noise files handled."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import MINI_LIBRISPEECH, ROOT, shared_data
from test_train import config, write_manifest

import asr.channel
from asr.audio import load_audio
from asr.augment import WaveAugment
from asr.channel import apply_gain, highpass, lowpass, mulaw, narrowband, telephone_line
from asr.config import AugmentConfig, ChannelAugmentConfig, load_config
from asr.degrade import check_writable
from asr.errors import ConfigError
from asr.train import Trainer
from asr.train_data import fill_wave_cache

SR = 16000
UTT = ("1088", "134315", "1088-134315-0000.opus")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """4 s of real full-band (16 kHz) read speech."""
    return load_audio(shared_data(*MINI_LIBRISPEECH, *UTT))[SR : 5 * SR]


def band_db(wav: np.ndarray, lo: float, hi: float, share: bool = True) -> float:
    """Energy between lo and hi Hz in dB: as a share of the total, or absolute."""
    power = np.abs(np.fft.rfft(wav.astype(np.float64) * np.hanning(wav.size))) ** 2
    f = np.fft.rfftfreq(wav.size, 1 / SR)
    return 10 * np.log10(power[(f >= lo) & (f < hi)].sum() / (power.sum() if share else 1.0) + 1e-30)


def everything(**kw) -> AugmentConfig:
    """Every channel stage likely, speed perturbation and noise too."""
    ch = dict(codec_prob=0.7, codecs=("mp3:24", "vorbis:0"), narrowband_prob=0.3, lowpass_prob=0.5,
              highpass_prob=0.5, gain_prob=0.5)
    ch.update(kw)
    return AugmentConfig(speed_perturb=(0.9, 1.0, 1.1), noise_prob=0.3, channel=ChannelAugmentConfig(**ch))


def memo():
    """A ``cached(tag, make)`` over a dict, as AudioDataset passes the wave cache; counts makes."""
    store, made = {}, []

    def cached(tag, make):
        if tag not in store:
            made.append(tag)
            store[tag] = make()
        return store[tag]

    return cached, made


def test_off_by_default_and_seeded(speech):
    assert not WaveAugment(AugmentConfig(), SR).channel.active
    aug = WaveAugment(everything(), SR)
    cached, made = memo()
    outs = []
    for epoch in range(8):
        a = aug(speech, np.random.default_rng([5, epoch]), uid="u5")
        b = aug(speech, np.random.default_rng([5, epoch]), cached=cached, uid="u5")
        c = aug(speech, np.random.default_rng([5, epoch]), cached=cached, uid="u5")  # from the cache
        assert np.array_equal(a, b) and np.array_equal(b, c)  # the cache changes nothing
        outs.append(a)
    assert len({o.tobytes() for o in outs}) == 8  # each epoch draws another channel
    assert 1 <= len(made) <= 2  # at most codec_variants encodings of the utterance, whatever the epochs
    draws = [aug.channel.draw(np.random.default_rng([5, e])) for e in range(200)]
    assert 0.6 < np.mean([d.codec_variant is not None for d in draws]) < 0.8
    assert {d.codec_variant for d in draws} == {None, 0, 1}
    lows = [d.lowpass_hz for d in draws if d.lowpass_hz is not None]
    assert 3400 <= min(lows) and max(lows) <= 7500 and 0.4 < len(lows) / 200 < 0.6


def test_channels_from_a_later_epoch_speed_only_before(speech):
    """augment.channel_from_epoch: before it (epochs counted from 1) a draw is the speed perturbation
    alone, the same as a config without channels or noise; from it on, the full augmentation."""
    late = WaveAugment(dataclasses.replace(everything(), noise_prob=1.0, channel_from_epoch=3), SR)
    speed_only = WaveAugment(AugmentConfig(speed_perturb=(0.9, 1.0, 1.1)), SR)
    full = WaveAugment(dataclasses.replace(late.cfg, channel_from_epoch=1), SR)
    for epoch in range(4):
        rng = lambda e=epoch: np.random.default_rng([7, e])  # noqa: E731
        out = late(speech, rng(), uid="u7", epoch=epoch)
        if epoch < 2:
            assert np.array_equal(out, speed_only(speech, rng(), uid="u7", epoch=epoch))
        else:
            assert np.array_equal(out, full(speech, rng(), uid="u7", epoch=epoch))
            assert not np.array_equal(out, speed_only(speech, rng(), uid="u7", epoch=epoch))  # noise at p=1
    with pytest.raises(ConfigError, match="channel_from_epoch"):
        AugmentConfig(channel_from_epoch=0)


def test_room_is_drawn_seeded_and_applied(speech):
    cfg = ChannelAugmentConfig(reverb_prob=0.5, reverb_rt60=(0.3, 0.9), reverb_drr_db=(0.0, 6.0))
    aug = WaveAugment(AugmentConfig(channel=cfg), SR)
    assert aug.channel.active and "room RT60 0.3-0.9 s, DRR 0-6 dB p=0.5" in aug.channel.describe()
    draws = [aug.channel.draw(np.random.default_rng([3, e])) for e in range(200)]
    rooms = [d.reverb for d in draws if d.reverb is not None]
    assert 0.4 < len(rooms) / 200 < 0.6
    assert all(0.3 <= rt <= 0.9 and 0 <= drr <= 6 for rt, drr, _ in rooms) and len({r[2] for r in rooms}) == len(rooms)
    e = next(e for e, d in enumerate(draws) if d.reverb is not None)
    out = aug(speech, np.random.default_rng([3, e]))
    assert out.shape == speech.shape and np.array_equal(out, aug(speech, np.random.default_rng([3, e])))
    assert 0.2 < np.corrcoef(out, speech)[0, 1] < 0.95  # the room smears the waveform, the direct sound stays
    # a config without a room draws exactly what it drew before rooms existed
    plain = WaveAugment(everything(), SR)
    roomy = WaveAugment(everything(reverb_prob=1e-9), SR)
    a, b = plain.channel.draw(np.random.default_rng(7)), roomy.channel.draw(np.random.default_rng(7))
    assert a == dataclasses.replace(b, reverb=None)


def test_phone_line_is_one_draw_band_8khz_and_mulaw(speech):
    """augment.channel.telephone_prob: the whole 300-3400 Hz line in one draw, measured on real speech."""
    line = telephone_line(speech, (300.0, 3400.0), 8000, SR)
    assert line.shape == speech.shape and line.dtype == np.float32
    assert band_db(line, 20, 150, share=False) < band_db(speech, 20, 150, share=False) - 25  # the handset's low cut
    assert band_db(line, 3900, 8000, share=False) < band_db(speech, 3900, 8000, share=False) - 40  # 8 kHz, steep
    assert abs(band_db(line, 600, 3000, share=False) - band_db(speech, 600, 3000, share=False)) < 1.0  # speech kept
    levels = mulaw(np.linspace(-1, 1, 20001, dtype=np.float32))
    assert len(np.unique(levels)) == 256 and levels.min() == -1.0 and levels.max() == 1.0  # G.711: 8 bits
    err = mulaw(speech) - speech  # companding: about 38 dB SNR at any level
    assert 30 < 10 * np.log10(np.mean(speech**2) / np.mean(err**2)) < 45
    cfg = ChannelAugmentConfig(telephone_prob=0.5)
    aug = WaveAugment(AugmentConfig(channel=cfg), SR)
    assert aug.channel.active and "phone line 200-400 to 3000-3600 Hz, 8000 Hz mu-law p=0.5" in aug.channel.describe()
    draws = [aug.channel.draw(np.random.default_rng([4, e])) for e in range(200)]
    lines = [d.telephone for d in draws if d.telephone is not None]
    assert 0.4 < len(lines) / 200 < 0.6 and all(200 <= lo <= 400 and 3000 <= hi <= 3600 for lo, hi in lines)
    e = next(e for e, d in enumerate(draws) if d.telephone is not None)
    out = aug(speech, np.random.default_rng([4, e]))
    assert np.array_equal(out, telephone_line(speech, draws[e].telephone, 8000, SR))
    # a config without phone lines draws exactly what it drew before they existed
    a = WaveAugment(everything(reverb_prob=0.5), SR).channel.draw(np.random.default_rng(9))
    b = WaveAugment(everything(reverb_prob=0.5, telephone_prob=1e-9), SR).channel.draw(np.random.default_rng(9))
    assert a == dataclasses.replace(b, telephone=None)


def test_codec_variant_is_band_limited(speech):
    aug = WaveAugment(AugmentConfig(channel=ChannelAugmentConfig(codec_prob=1.0, codecs=("mp3:24",),
                                                                 codec_variants=1)), SR)
    out = aug(speech, np.random.default_rng(0), uid="x")
    assert band_db(speech, 6500, 8000) > -45  # the speech has energy up there ...
    assert band_db(out, 6500, 8000) < band_db(speech, 6500, 8000) - 30  # ... the MP3 encoder removed it
    assert abs(band_db(out, 300, 3400) - band_db(speech, 300, 3400)) < 0.5  # the speech band is kept


def test_filters_measured(speech):
    low = lowpass(speech, 4000, SR)
    assert band_db(low, 4600, 8000) < band_db(speech, 4600, 8000) - 40
    assert abs(band_db(low, 300, 3400) - band_db(speech, 300, 3400)) < 0.5
    assert lowpass(speech, 7900, SR) is speech  # at Nyquist: nothing to cut
    high = highpass(speech, 300, SR)
    assert band_db(high, 20, 120, share=False) < band_db(speech, 20, 120, share=False) - 30
    assert abs(band_db(high, 1000, 4000, share=False) - band_db(speech, 1000, 4000, share=False)) < 0.5
    nb = narrowband(speech, 8000, SR)
    assert nb.shape == speech.shape and band_db(nb, 4200, 8000) < band_db(speech, 4200, 8000) - 40
    loud = apply_gain(speech, 40.0)
    assert np.abs(loud).max() <= 1.0 and np.mean(np.abs(loud) >= 0.999) > 0.01  # a clipping recorder
    quiet = apply_gain(speech, -30.0)
    assert np.allclose(quiet * 32767, np.rint(quiet * 32767), atol=1e-3)  # 16-bit samples


def test_training_encodes_each_variant_once_with_the_cache(tmp_path, monkeypatch):
    """data.cache=ram: the codec runs once per (utterance, variant), not per draw; a resumed run
    (a new cache, filled from a later epoch on) builds exactly the same audio; without the cache
    the draws are the same and the audio differs only through the cache's 16-bit rounding."""
    m = write_manifest(tmp_path, "train", [[1, 2], [3, 4], [5, 6], [7, 8]])
    calls = []
    real = asr.channel.degrade
    monkeypatch.setattr(asr.channel, "degrade", lambda *a, **k: calls.append(a[1].spec) or real(*a, **k))
    chan = ["augment.channel.codec_prob=0.8", "augment.channel.codecs=[mp3:24,opus:12,vorbis:0]",
            "augment.channel.codec_variants=2", "augment.channel.lowpass_prob=0.5",
            "data.cache_workers=0"]  # each variant at its first draw (the next test: before training)
    items = {}
    for mode, epochs in (("ram", range(6)), ("resumed", range(3, 6)), ("off", range(6))):
        calls.clear()
        t = Trainer(config(tmp_path / mode, m, f"data.cache={'off' if mode == 'off' else 'ram'}", *chan),
                    resume=False)
        ds = t.train_loader.dataset
        items[mode] = {}
        for epoch in epochs:
            ds.epoch = epoch
            items[mode].update({(epoch, i): ds[i]["wav"].numpy() for i in range(len(ds))})
        if mode == "ram":
            assert 4 <= len(calls) <= 8  # 4 utterances x at most 2 variants, over 6 epochs
            assert sum(k[-3] == "codec" for k in t.cache._store) == len(calls)
        elif mode == "off":
            assert len(calls) > 8  # every draw
    for key, b in items["resumed"].items():
        assert np.array_equal(items["ram"][key], b)
    for key, a in items["ram"].items():  # the same draws; a low-rate codec (Opus's SILK) may turn
        b = items["off"][key]  # -94 dB of input rounding into another waveform of the same spectrum
        assert a.shape == b.shape
        for lo, hi in ((0, 1000), (1000, 3000), (3000, 8000)):
            assert abs(band_db(a, lo, hi, share=False) - band_db(b, lo, hi, share=False)) < 3.0, (key, lo)


def test_the_cache_filled_before_training_by_worker_processes_gives_the_same_audio(tmp_path, monkeypatch):
    """data.cache_workers: before epoch 1, worker processes put every utterance's decoded audio,
    speed variants and codec variants in the cache (the training process decodes, resamples and
    encodes nothing), and the CMVN statistics and each epoch's augmented audio are exactly those
    made at first use; an unreadable file is reported and skipped by the pass and by training."""
    import asr.data

    m = write_manifest(tmp_path, "train", [[1, 2], [3, 4], [5, 6], [7, 8]])
    lines = [json.loads(x) for x in m.read_text().splitlines()]
    lines.append({**lines[0], "id": "broken", "audio": str(tmp_path / "missing.flac")})
    m.write_text("".join(json.dumps(x) + "\n" for x in lines))
    chan = ["data.cache=ram", "augment.speed_perturb=[0.9,1.0,1.1]", "augment.channel.codec_prob=0.8",
            "augment.channel.codecs=[mp3:24,opus:12,vorbis:0]", "augment.channel.codec_variants=2",
            "augment.channel.lowpass_prob=0.5"]
    items, cmvn = {}, {}
    real = {"degrade": asr.channel.degrade, "speed": asr.data.speed_perturb, "load": asr.data.load_audio}
    for n in (0, 2):
        made: list[str] = []
        monkeypatch.setattr(asr.channel, "degrade", lambda *a, made=made, **k: made.append("codec") or real["degrade"](*a, **k))
        monkeypatch.setattr(asr.data, "speed_perturb", lambda *a, made=made, **k: made.append("speed") or real["speed"](*a, **k))
        monkeypatch.setattr(asr.data, "load_audio", lambda *a, made=made, **k: made.append(f"load {a[0]}") or real["load"](*a, **k))
        t = Trainer(config(tmp_path / f"p{n}", m, *chan, f"data.cache_workers={n}"), resume=False)
        log_text = (tmp_path / f"p{n}" / "train.log").read_text()
        cmvn[n] = [b.clone() for b in t.model.frontend.buffers()]
        ds = t.train_loader.dataset
        assert len(ds) == 5
        items[n] = {}
        for epoch in range(4):
            ds.epoch = epoch
            items[n].update({(epoch, i): ds[i] for i in range(len(ds))})
        if n:  # 4 readable utterances: audio + 2 speeds + 2 codec variants each, before any draw
            assert len(t.cache) == 4 * 5
            # nothing decoded (but the broken file, by the CMVN pass and the draws), resampled or encoded here
            assert made and all(x.startswith("load") and x.endswith("missing.flac") for x in made), made
            assert "wave cache: 20 waveforms of 4 utterances" in log_text
            assert "broken" in log_text.split("wave cache:")[1] and "1 not made" in log_text
            again = fill_wave_cache(ds, 1, show=False)  # a second pass: only the broken file is tried
            assert again["waveforms"] == 0 and again["failed"] == 1 and len(t.cache) == 4 * 5
        else:
            assert "codec" in made and "speed" in made and sum(x.startswith("load") for x in made) > 4
        assert items[n][(0, 4)] is None  # the unreadable utterance is skipped by training too
    for a, b in zip(cmvn[0], cmvn[2]):
        assert torch.equal(a, b)
    for key, a in items[0].items():
        b = items[2][key]
        assert (a is None) == (b is None)
        if a is not None:
            assert np.array_equal(a["wav"].numpy(), b["wav"].numpy()), key


def test_eval_path_is_untouched(tmp_path):
    m = write_manifest(tmp_path, "train", [[1, 2], [3, 4], [5]])
    dev = write_manifest(tmp_path, "dev", [[2, 1], [4, 3]], index0=30)
    chan = [f"augment.channel.{k}=1.0" for k in ("codec_prob", "narrowband_prob", "lowpass_prob",
                                                 "highpass_prob", "gain_prob")]
    plain = Trainer(config(tmp_path / "plain", m, "train.epochs=1", dev_m=dev), resume=False)
    robust = Trainer(config(tmp_path / "robust", m, "train.epochs=1", *chan, dev_m=dev), resume=False)
    assert robust.train_loader.dataset.augment.channel.active
    assert robust.validator.loader.dataset.augment is None
    for i in range(2):
        assert np.array_equal(plain.validator.loader.dataset[i]["wav"], robust.validator.loader.dataset[i]["wav"])
    assert plain.validate() == robust.validate()  # same init, same CMVN, same dev audio


def test_tiny_training_with_channel_augmentation_learns(tmp_path):
    m = write_manifest(tmp_path, "train", [[1, 2], [3], [4, 5], [6, 7], [8, 9], [0]])
    cfg = config(tmp_path / "run", m, "model.hidden_size=64", "model.dropout=0", "train.epochs=25",
                 "augment.specaugment=false", "train.lr=5e-3", "train.warmup_steps=5", "train.scheduler=constant",
                 "data.max_batch_seconds=20", "data.cache=ram", "augment.channel.codec_prob=0.5",
                 "augment.channel.codecs=[mp3:16,opus:8]", "augment.channel.lowpass_prob=0.5",
                 "augment.channel.lowpass_hz=[2500,3500]", "augment.channel.highpass_prob=0.5",
                 "augment.channel.gain_prob=0.5", "augment.channel.telephone_prob=0.3")
    Trainer(cfg, resume=False).fit()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["train_loss"] < 0.3 * history[0]["train_loss"], [h["train_loss"] for h in history]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "channel augmentation: codec p=0.5" in log and "phone line 200-400 to 3000-3600 Hz" in log
    assert "skipping utterance" not in log  # every draw (phone lines included) ran; a failing one is skipped


@pytest.mark.parametrize("codecs,msg", [(("mp3:24", "phone"), "'phone' is not a codec"),
                                        (("mp3:30",), "kind 'mp3:30'")])
def test_bad_codec_kinds_are_config_errors(codecs, msg):
    with pytest.raises(ConfigError, match=msg):
        WaveAugment(AugmentConfig(channel=ChannelAugmentConfig(codec_prob=0.5, codecs=codecs)), SR)


def test_a_codec_this_machine_cannot_write_names_the_kind_and_the_fix(tmp_path, monkeypatch, capsys):
    from asr.cli import main

    real = sf.available_subtypes
    monkeypatch.setattr(sf, "available_subtypes", lambda fmt=None: {k: v for k, v in real(fmt).items()
                                                                    if k != "OPUS"})
    m = write_manifest(tmp_path, "train", [[1, 2]])
    check_writable.cache_clear()
    try:
        rc = main(["train", "-c", str(ROOT / "conf" / "digits.yaml"), f"run_dir={tmp_path / 'run'}", f"data.train_manifest={m}",
                   "data.dev_manifest=", "augment.channel.codec_prob=0.5", "augment.channel.codecs=[mp3:24,opus:12]"])
    finally:
        check_writable.cache_clear()
    err = capsys.readouterr().err
    assert rc == 2 and "augment.channel.codecs" in err and "kind opus:12" in err and "pip install" in err
    assert err.count("\n") == 1


def test_bad_channel_settings_are_rejected():
    for over, msg in [("augment.channel.lowpass_prob=1.5", "lowpass_prob"),
                      ("augment.channel.lowpass_hz=[5000,4000]", "low <= high"),
                      ("augment.channel.codec_variants=0", "codec_variants"),
                      ("augment.channel.codecs=[]", "needs augment.channel.codecs"),
                      ("augment.channel.telephone_high_hz=[3000,4500]", "narrowband_rate / 2 = 4000"),
                      ("augment.channel.telephone_prob=2", "telephone_prob")]:
        with pytest.raises(ConfigError, match=msg):
            load_config(None, ["augment.channel.codec_prob=0.5", "augment.channel.telephone_prob=0.5", over])


def test_empty_and_corrupt_noise_files_are_reported_and_skipped(tmp_path, speech, caplog):
    good, empty, corrupt, nan = (tmp_path / n for n in ("hum.flac", "empty.wav", "corrupt.wav", "nan.wav"))
    sf.write(good, 0.1 * np.sin(2 * np.pi * 1000 * np.arange(SR) / SR).astype(np.float32), SR)
    empty.write_bytes(b"")
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    sf.write(nan, np.full(SR, np.nan, dtype=np.float32), SR, subtype="FLOAT")  # a header, then bad samples
    cfg = AugmentConfig(noise_prob=1.0, noise_snr_db=(10.0, 10.0))
    with caplog.at_level(logging.WARNING, logger="asr.augment"):
        aug = WaveAugment(cfg, SR, noise_files=[str(good), str(empty), str(corrupt), str(nan)])
    assert aug.noise_files == [str(good), str(nan)]
    assert "empty.wav" in caplog.text and "corrupt.wav" in caplog.text
    fresh = WaveAugment(cfg, SR, noise_files=[str(good), str(nan)])
    outs = [aug(speech, np.random.default_rng([1, e])) for e in range(12)]  # meets nan.wav: reported
    assert "nan.wav" in caplog.text and all(np.isfinite(o).all() for o in outs)
    # a fresh instance (a resumed run) that has not met the bad file mixes the same noise
    for e in (11, 3, 7):
        assert np.array_equal(fresh(speech, np.random.default_rng([1, e])), outs[e])


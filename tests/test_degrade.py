"""Degraded dev sets: each kind measured on real speech, seeding, manifests, caching, bad input."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import MINI_LIBRISPEECH, fsdd_file, shared_data

from asr.audio import load_audio
from asr.cli import main
from asr.data import read_manifest
from asr.datatools import validate_manifest
from asr.degrade import (
    DegradeError,
    check_writable,
    degrade,
    encode,
    parse_kind,
    rms_dbfs,
    snr_db,
    telephone,
)
from asr.degraded_sets import degrade_manifest
from asr.room import room_impulse_response

SR = 16000
MINI = shared_data(*MINI_LIBRISPEECH)
UTTS = ["1088/134315/1088-134315-0000", "118/47824/118-47824-0000", "163/122947/163-122947-0000"]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """6 s of real full-band (16 kHz) read speech."""
    return load_audio(MINI / f"{UTTS[0]}.opus")[: 6 * SR]


def band_db(wav: np.ndarray, lo: float, hi: float) -> float:
    """Share of the energy between lo and hi Hz, in dB (Hann window: clips cut mid-speech do not
    leak across the spectrum)."""
    power = np.abs(np.fft.rfft(wav.astype(np.float64) * np.hanning(wav.size))) ** 2
    f = np.fft.rfftfreq(wav.size, 1 / SR)
    return 10 * np.log10(power[(f >= lo) & (f < hi)].sum() / power.sum() + 1e-30)


def gain_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR of ``noisy`` against ``clean`` after fitting the gain (a mixture may be scaled down)."""
    g = float(np.dot(noisy, clean) / np.dot(clean, clean))
    return snr_db(g * clean, noisy)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """A manifest of three 3-second clips of real Mini LibriSpeech recordings (FLAC)."""
    d = tmp_path_factory.mktemp("clean")
    lines = []
    for i, rel in enumerate(UTTS):
        wav = load_audio(MINI / f"{rel}.opus")[SR : 4 * SR]
        p = d / f"clip{i}.flac"
        sf.write(p, wav, SR)
        lines.append({"id": Path(rel).name, "audio": str(p), "duration": 3.0, "text": f"words {i}",
                      "speaker": rel.split("/")[0]})
    m = d / "dev.jsonl"
    m.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return m


@pytest.fixture(scope="module")
def built(clips, tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("degraded")
    lines = degrade_manifest(clips, ["mp3:24", "mp3:40", "opus:12", "phone", "noise:10", "level:-30"], out,
                             seed=0, workers=2, progress=False)
    return out, lines


# ---------------------------------------------------------------- each kind, measured


@pytest.mark.parametrize("kbps,cutoff", [(24, 6000), (40, 7600)])
def test_mp3_constant_bit_rate_and_low_pass(speech, kbps, cutoff):
    data = encode(speech, parse_kind(f"mp3:{kbps}"))
    assert len(data) * 8 / (speech.size / SR) / 1000 == pytest.approx(kbps, rel=0.05)
    out = degrade(speech, parse_kind(f"mp3:{kbps}"), np.random.default_rng(0))
    assert band_db(speech, cutoff, 8000) > -45  # the speech has energy there ...
    assert band_db(out, cutoff, 8000) < min(-70, band_db(speech, cutoff, 8000) - 30)  # ... the low-pass removed it
    assert abs(band_db(out, 300, 3400) - band_db(speech, 300, 3400)) < 0.5  # the speech band is kept


def test_vorbis_quality_kind(speech):
    rates = []
    for q in (0, 4):
        kind = parse_kind(f"vorbis:{q}")
        assert kind.codec and kind.suffix == ".ogg" and kind.folder == f"vorbis_{q}"
        data = encode(speech, kind)
        out, sr = sf.read(io.BytesIO(data), dtype="float32")
        assert sr == SR and out.size == speech.size
        assert abs(band_db(out, 300, 3400) - band_db(speech, 300, 3400)) < 0.5
        rates.append(len(data) * 8 / (speech.size / SR) / 1000)
    assert 20 < rates[0] < 40 < rates[1] < 70  # quality 0 is ~27 kbit/s on 16 kHz speech; q4 more
    with pytest.raises(DegradeError, match="Vorbis quality must be 0-10"):
        parse_kind("vorbis:11")


def test_opus_bit_rate(speech):
    data = encode(speech, parse_kind("opus:12"))
    assert 11 <= len(data) * 8 / (speech.size / SR) / 1000 <= 14  # 12 kbit/s plus the Ogg headers
    out, sr = sf.read(io.BytesIO(data), dtype="float32")
    assert sr == SR and out.size == speech.size


def test_telephone_band_is_300_to_3400_hz(speech):
    out = telephone(speech)
    assert out.shape == speech.shape and out.dtype == np.float32
    assert band_db(speech, 0, 250) > -20 and band_db(speech, 3550, 8000) > -40
    assert band_db(out, 0, 250) < -50
    assert band_db(out, 3550, 8000) < -50
    assert band_db(out, 300, 3400) > -0.1


def test_level_and_noise_kinds(speech):
    rng = np.random.default_rng(0)
    assert rms_dbfs(degrade(speech, parse_kind("level:-30"), rng)) == pytest.approx(-30, abs=0.01)
    for snr in (0, 10, 20):
        out = degrade(speech, parse_kind(f"noise:{snr}"), rng)
        assert out.shape == speech.shape
        assert gain_snr(speech, out) == pytest.approx(snr, abs=0.2)


def quiet_floor_db(wav: np.ndarray) -> float:
    """Energy of the quietest 10 % of 20 ms frames (the pauses), in dB relative to the mean."""
    f = wav[: wav.size // 320 * 320].reshape(-1, 320).astype(np.float64)
    energy = 10 * np.log10((f**2).mean(1) + 1e-12)
    return float(np.percentile(energy, 10) - 10 * np.log10((f**2).mean()))


def test_room_impulse_response_has_its_rt60_and_drr():
    for rt60, drr in ((0.3, 0.0), (0.8, 6.0)):
        rir = room_impulse_response(rt60, drr, np.random.default_rng(0)).astype(np.float64)
        energy = rir**2
        assert rir[0] == 1.0 and 10 * np.log10(energy[0] / energy[1:].sum()) == pytest.approx(drr, abs=0.01)
        # Schroeder backward integration, T20 (-5 to -25 dB) extrapolated to 60 dB, as ISO 3382 measures
        decay = np.cumsum(energy[1:][::-1])[::-1]
        decay_db = 10 * np.log10(decay / decay[0])
        t5, t25 = np.argmax(decay_db < -5) / SR, np.argmax(decay_db < -25) / SR
        assert 3 * (t25 - t5) == pytest.approx(rt60, rel=0.1)


def test_reverb_kind_fills_the_pauses_and_keeps_the_level(speech):
    floors = []
    for rt60 in (0.3, 1.0):
        out = degrade(speech, parse_kind(f"reverb:{rt60}"), np.random.default_rng(1))
        assert out.shape == speech.shape and out.dtype == np.float32
        assert rms_dbfs(out) == pytest.approx(rms_dbfs(speech), abs=0.05)
        assert np.array_equal(out, degrade(speech, parse_kind(f"reverb:{rt60}"), np.random.default_rng(1)))
        floors.append(quiet_floor_db(out))
    # the tail of each sound runs into the next pause: a longer room fills the pauses more
    assert quiet_floor_db(speech) + 3 < floors[0] < floors[1] - 3


def test_built_sets_have_the_measured_properties(clips, built):
    out, lines = built
    kinds = ["mp3:24", "mp3:40", "opus:12", "phone", "noise:10", "level:-30"]
    assert [x.split(": ")[0] for x in lines] == kinds
    assert all("3 utterances" in x for x in lines)
    assert all(("kbit/s measured (file size)" in x) == (x[:3] in ("mp3", "opu")) for x in lines)
    clean = {u.id: load_audio(u.audio) for u in read_manifest(clips)}
    for u in read_manifest(out / "level_-30" / "manifest.jsonl"):
        assert rms_dbfs(load_audio(u.audio)) == pytest.approx(-30, abs=0.1)  # after 16-bit FLAC
    for u in read_manifest(out / "noise_10" / "manifest.jsonl"):
        assert gain_snr(clean[u.id], load_audio(u.audio)) == pytest.approx(10, abs=0.5)
    for u in read_manifest(out / "phone" / "manifest.jsonl"):
        wav = load_audio(u.audio)
        assert band_db(wav, 0, 250) < -50 and band_db(wav, 3550, 8000) < -50


def test_manifests_keep_ids_texts_speakers_and_true_durations(clips, built):
    out, _ = built
    src = read_manifest(clips)
    for folder, suffix in [("mp3_24", ".mp3"), ("mp3_40", ".mp3"), ("opus_12", ".opus"), ("phone", ".flac"),
                           ("noise_10", ".flac"), ("level_-30", ".flac")]:
        m = out / folder / "manifest.jsonl"
        got = read_manifest(m)
        assert [(u.id, u.text, u.speaker) for u in got] == [(u.id, u.text, u.speaker) for u in src]
        assert all(Path(u.audio).parent == out / folder and u.audio.endswith(suffix) for u in got)
        assert all(sf.info(u.audio).samplerate == SR for u in got)
        n, problems = validate_manifest(m, decode=True, tolerance=0.002, progress=False)
        assert n == 3 and problems == []
    # LAME at 24 kbit/s writes no gapless header: the decoder's delay lengthens the file, and
    # the manifest says so
    assert all(u.duration > 3.05 for u in read_manifest(out / "mp3_24" / "manifest.jsonl"))
    assert not list(out.rglob("*.tmp"))
    mask = os.umask(0)
    os.umask(mask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~mask for p in out.rglob("*") if p.is_file())


# ---------------------------------------------------------------- seeds, workers, cache


def test_same_seed_same_audio_whatever_the_workers(clips, built, tmp_path):
    out, _ = built
    kinds = ["opus:12", "noise:10"]
    degrade_manifest(clips, kinds, tmp_path / "a", seed=0, workers=1, progress=False)
    degrade_manifest(clips, ["noise:10"], tmp_path / "b", seed=1, workers=1, progress=False)
    for folder in ("opus_12", "noise_10"):
        for a, b in zip(read_manifest(out / folder / "manifest.jsonl"),
                        read_manifest(tmp_path / "a" / folder / "manifest.jsonl")):
            assert np.array_equal(load_audio(a.audio), load_audio(b.audio))
    a = load_audio(read_manifest(out / "noise_10" / "manifest.jsonl")[0].audio)
    b = load_audio(read_manifest(tmp_path / "b" / "noise_10" / "manifest.jsonl")[0].audio)
    assert not np.allclose(a, b, atol=1e-3)  # another seed, other noise


def test_built_kinds_are_cached_until_input_or_settings_change(clips, tmp_path):
    m = tmp_path / "dev.jsonl"
    m.write_text(clips.read_text())
    out = tmp_path / "deg"
    assert degrade_manifest(m, ["level:-20"], out, progress=False)[0].startswith("level:-20: 3 utterances")
    f = out / "level_-20" / "manifest.jsonl"
    stamp = f.stat().st_mtime_ns
    assert degrade_manifest(m, ["level:-20"], out, progress=False) == [f"level:-20: cached, {f}"]
    assert f.stat().st_mtime_ns == stamp
    os.utime(m, ns=(f.stat().st_mtime_ns + 10**9,) * 2)  # touched (copied), same content: kept
    assert degrade_manifest(m, ["level:-20"], out, progress=False) == [f"level:-20: cached, {f}"]
    moved = tmp_path / "moved"  # the exp folder moved: its sets are still the sets of that manifest
    out.rename(moved)
    m.rename(tmp_path / "dev2.jsonl")
    f2 = moved / "level_-20" / "manifest.jsonl"
    assert degrade_manifest(tmp_path / "dev2.jsonl", ["level:-20"], moved, progress=False) == \
        [f"level:-20: cached, {f2}"]
    (tmp_path / "dev2.jsonl").write_text("".join(clips.read_text().splitlines(True)[:2]))  # other content
    assert degrade_manifest(tmp_path / "dev2.jsonl", ["level:-20"], moved, progress=False)[0].startswith(
        "level:-20: 2 utterances")
    assert degrade_manifest(tmp_path / "dev2.jsonl", ["level:-20"], moved, seed=3, progress=False)[0].startswith(
        "level:-20: 2 utterances")  # another seed: rebuilt


# ---------------------------------------------------------------- noise files and bad input


def test_noise_dir_with_empty_and_corrupt_files(clips, tmp_path, caplog):
    noise = tmp_path / "noise"
    noise.mkdir()
    babble = np.concatenate([load_audio(fsdd_file(d, "george", 3), SR) for d in range(10)])
    sf.write(noise / "babble.flac", babble, SR)
    (noise / "empty.wav").write_bytes(b"")
    (noise / "corrupt.flac").write_bytes(b"fLaC" + os.urandom(400))
    with caplog.at_level(logging.WARNING, logger="asr.degrade"):
        lines = degrade_manifest(clips, ["noise:5"], tmp_path / "out", noise_dir=noise, progress=False)
    assert "3 utterances" in lines[0]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "empty.wav" in warned and "corrupt.flac" in warned
    clean = {u.id: load_audio(u.audio) for u in read_manifest(clips)}
    stamp = json.loads((tmp_path / "out" / "noise_5" / "degrade.json").read_text())
    assert stamp["noise_files"] == [str(noise / "babble.flac")]
    for u in read_manifest(tmp_path / "out" / "noise_5" / "manifest.jsonl"):
        assert gain_snr(clean[u.id], load_audio(u.audio)) == pytest.approx(5, abs=0.5)
    (noise / "babble.flac").unlink()
    with pytest.raises(DegradeError, match="no usable noise audio"):
        degrade_manifest(clips, ["noise:5"], tmp_path / "out2", noise_dir=noise, progress=False)


@pytest.mark.parametrize("spec,msg", [("mp4:24", "unknown kind"), ("mp3:30", "bit rates 8, 16, 24"),
                                      ("opus:2", "6-256"), ("noise", "needs a number"),
                                      ("level:+3", "at most 0 dBFS"), ("phone:8", "no value"),
                                      ("reverb:9", "RT60 must be 0.05-3 s")])
def test_bad_kinds_are_one_line_errors(clips, tmp_path, capsys, spec, msg):
    assert main(["data", "degrade", str(clips), "--kind", spec, "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asr: error: ") and msg in err and err.count("\n") == 1


def test_codec_this_machine_cannot_write_names_the_kind_and_the_fix(clips, tmp_path, capsys, monkeypatch):
    real = sf.available_subtypes
    monkeypatch.setattr(sf, "available_subtypes",
                        lambda fmt=None: {k: v for k, v in real(fmt).items() if k != "MPEG_LAYER_III"})
    check_writable.cache_clear()
    try:
        rc = main(["data", "degrade", str(clips), "--kind", "phone", "--kind", "mp3:24", "-o", str(tmp_path / "o")])
    finally:
        check_writable.cache_clear()
    err = capsys.readouterr().err
    assert rc == 2 and "kind mp3:24" in err and "pip install" in err and err.count("\n") == 1
    assert not (tmp_path / "o" / "phone").exists()  # checked before any work


def test_unreadable_utterance_is_reported_and_skipped(clips, tmp_path, caplog):
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"not audio at all")
    m = tmp_path / "dev.jsonl"
    m.write_text(clips.read_text() + json.dumps({"id": "broken", "audio": str(bad), "duration": 1.0,
                                                 "text": "x"}) + "\n")
    with caplog.at_level(logging.WARNING, logger="asr.degrade"):
        lines = degrade_manifest(m, ["phone"], tmp_path / "out", progress=False)
    assert "3 utterances" in lines[0] and "1 skipped" in lines[0]
    assert any("broken" in r.getMessage() and "bad.flac" in r.getMessage() for r in caplog.records)
    assert [u.id for u in read_manifest(tmp_path / "out" / "phone" / "manifest.jsonl")] == [
        u.id for u in read_manifest(clips)]


def test_cli_end_to_end(clips, tmp_path, capsys):
    assert main(["data", "degrade", str(clips), "--kind", "mp3:24", "--kind", "level:-30", "-o",
                 str(tmp_path), "--seed", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("mp3:24: 3 utterances") and "kbit/s measured" in out[0]
    assert out[1] == f"level:-30: 3 utterances, 0.00 h -> {tmp_path / 'level_-30' / 'manifest.jsonl'}"


def test_robustness_table_from_reports(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("robustness_table", Path(__file__).parents[1] / "tools"
                                                  / "robustness_table.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for name, wer, cer in [("eval-dev-greedy", 0.50, 0.20), ("eval-dev-mp3_24-greedy", 0.60, 0.30),
                           ("eval-dev-beam-lm", 0.40, 0.16)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps({"summary": {"wer": wer, "cer": cer}}))
    out = tmp_path / "robustness.md"
    assert tool.main([str(tmp_path), "--kinds", "mp3:24", "phone", "--modes", "greedy", "beam-lm",
                      "-o", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert rows[2] == "| clean | 50.00 | 1.00 | 20.00 | 1.00 | 40.00 | 1.00 | 16.00 | 1.00 |"
    assert rows[3] == "| mp3:24 | 60.00 | 1.20 | 30.00 | 1.50 | - | - | - | - |"
    assert rows[4] == "| phone | - | - | - | - | - | - | - | - |"
    assert capsys.readouterr().out == out.read_text()
    (tmp_path / "eval-dev-greedy" / "report.json").unlink()  # no clean report: no ratio, a warning
    assert tool.main([str(tmp_path), "--kinds", "mp3_24", "-o", str(out)]) == 0
    assert out.read_text().splitlines()[3] == "| mp3:24 | 60.00 | - | 30.00 | - |"
    assert "warning: no clean report" in capsys.readouterr().err
    # a phone model's reports carry its PER: it comes first, with its ratio
    for name, per in [("eval-dev-greedy", 0.30), ("eval-dev-mp3_24-greedy", 0.45)]:
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "report.json").write_text(json.dumps({"summary": {"wer": 0.5, "cer": 0.2, "per": per}}))
    assert tool.main([str(tmp_path), "--kinds", "mp3_24", "-o", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "| dev set | greedy PER % | x clean | greedy WER % | x clean | greedy CER % | x clean |"
    assert rows[3] == "| mp3:24 | 45.00 | 1.50 | 50.00 | 1.00 | 20.00 | 1.00 |"
    assert "Phones each set costs most" not in out.read_text()  # no per-phone errors in these reports
    # with per-phone errors (asr.evaluate's phone_units): the phones the set costs most, most first
    units = {"eval-dev-greedy": {"S": (10, 1, 0), "N": (10, 2, 0), "AA": (10, 3, 1)},
             "eval-dev-mp3_24-greedy": {"S": (10, 5, 2), "N": (10, 3, 1), "AA": (10, 2, 1)}}
    for name, u in units.items():
        rep = json.loads((tmp_path / name / "report.json").read_text())
        rep["phone_units"] = [{"phone": p, "ref": n, "sub": s, "del": d, "ins": 0, "rate": (s + d) / n}
                              for p, (n, s, d) in u.items()]
        (tmp_path / name / "report.json").write_text(json.dumps(rep))
    assert tool.main([str(tmp_path), "--kinds", "mp3_24", "-o", str(out)]) == 0
    text = out.read_text()
    # S: 1 -> 7 errors (+6), N: 2 -> 4 (+2), AA: 4 -> 3 (fewer: not listed); shares of the 8 extra
    assert "| mp3:24 | S 10 -> 70 % (75 %), N 20 -> 40 % (25 %) |" in text
    # the recipe's beam-lm clean row is stage 4's book-LM report, named with --clean MODE=FOLDER
    for name, wer in [("eval-dev-beam-booklm-lex", 0.25), ("eval-dev-mp3_24-beam-lm", 0.30)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps({"summary": {"wer": wer, "cer": 0.1}}))
    assert tool.main([str(tmp_path), "--kinds", "mp3_24", "--modes", "beam-lm", "--clean",
                      "beam-lm=eval-dev-beam-booklm-lex", "-o", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert rows[2] == "| clean | 25.00 | 1.00 | 10.00 | 1.00 |"  # not eval-dev-beam-lm's 40 %
    assert rows[3] == "| mp3:24 | 30.00 | 1.20 | 10.00 | 1.00 |"
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path), "--kinds", "mp3_24", "--clean", "beam-lm"])
    assert "expected MODE=FOLDER" in capsys.readouterr().err


def test_two_runs_on_one_folder_at_once(clips, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def run(_):
        return degrade_manifest(clips, ["noise:20", "phone"], tmp_path, workers=2, force=True, progress=False)

    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(run, range(2)))
    assert results[0] == results[1]
    for folder in ("noise_20", "phone"):
        n, problems = validate_manifest(tmp_path / folder / "manifest.jsonl", decode=True, tolerance=0.002,
                                        progress=False)
        assert n == 3 and problems == []
    assert not list(tmp_path.rglob("*.tmp"))


def test_sets_built_into_a_relative_folder_read_from_anywhere(clips, tmp_path, monkeypatch):
    # the recipe builds them as exp/<run>/data/degraded from the repository root; training and
    # evaluation read them back through manifests that resolve paths against their own folder
    monkeypatch.chdir(tmp_path)
    degrade_manifest(clips, ["level:-30"], Path("exp/data/degraded"), progress=False)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    utts = read_manifest(tmp_path / "exp/data/degraded/level_-30/manifest.jsonl")
    assert len(utts) == 3 and all(Path(u.audio).is_file() for u in utts)
    assert all(Path(u.audio).parent == tmp_path / "exp/data/degraded/level_-30" for u in utts)

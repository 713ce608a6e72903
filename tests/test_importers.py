"""Importers (LibriSpeech, Kaldi, folder) and speaker-disjoint splits, on small real corpora."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
from conftest import FSDD, MINI_LIBRISPEECH, fsdd_file, shared_data

from asr.cli import main
from asr.data import Utterance, read_manifest
from asr.importers import (
    CorpusError,
    import_folder,
    import_kaldi,
    import_librispeech,
    split_by_speaker,
)


def _libri_tree(root: Path) -> dict[str, float]:
    """A LibriSpeech-layout folder of real FSDD audio in three formats, plus broken entries.

    Returns the expected durations of the good utterances.
    """
    expected = {}
    plan = [("11", "100", "jackson", ".flac"), ("11", "101", "jackson", ".wav"),
            ("22", "200", "george", ".ogg")]
    for spk, chap, fsdd_spk, ext in plan:
        d = root / "train-x" / spk / chap
        d.mkdir(parents=True)
        lines = []
        for k in range(2):
            uid = f"{spk}-{chap}-{k:04d}"
            wav, sr = sf.read(fsdd_file(k, fsdd_spk, 3), dtype="float32")
            sf.write(d / f"{uid}{ext}", wav, sr)
            expected[uid] = len(wav) / sr
            lines.append(f"{uid} WORD {k}")
        lines.append(f"{spk}-{chap}-0098 MISSING AUDIO")  # no file at all
        (d / f"{spk}-{chap}-0099.flac").write_bytes(b"\x00not audio" * 50)  # corrupt
        lines.append(f"{spk}-{chap}-0099 CORRUPT AUDIO")
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    return expected


def test_librispeech_layout_reads_any_format_and_reports_bad_files(tmp_path):
    expected = _libri_tree(tmp_path)
    rep = import_librispeech(tmp_path, workers=2, progress=False)
    got = {u.id: u for u in rep.utts}
    assert set(got) == set(expected)
    for uid, dur in expected.items():
        assert got[uid].duration == pytest.approx(dur, abs=1e-3)
        assert got[uid].speaker == uid.split("-")[0]
        assert Path(got[uid].audio).is_file()
    assert got["11-100-0001"].text == "WORD 1"
    skipped = dict(rep.skipped)
    assert set(skipped) == {f"{s}-{c}-{k}" for s, c in [("11", "100"), ("11", "101"), ("22", "200")]
                            for k in ("0098", "0099")}
    assert "no audio file" in skipped["11-100-0098"]
    assert "cannot read" in skipped["11-100-0099"]


def test_librispeech_rejects_a_folder_without_transcripts(tmp_path):
    with pytest.raises(CorpusError, match="trans.txt"):
        import_librispeech(tmp_path, progress=False)


def test_kaldi_data_dir_with_segments(tmp_path):
    rec = tmp_path / "audio" / "rec1.flac"
    rec.parent.mkdir()
    wav, sr = sf.read(fsdd_file(7, "theo", 1), dtype="float32")
    sf.write(rec, wav, sr)
    total = len(wav) / sr
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    # relative to the recipe folder (two levels above data/train), as Kaldi writes them
    (d / "wav.scp").write_text(f"rec1 audio/rec1.flac\nrecmissing {tmp_path / 'nope.wav'}\n")
    (d / "segments").write_text(f"u1 rec1 0.00 0.10\nu2 rec1 0.10 {total:.3f}\n"
                                f"u3 recmissing 0 1\nu4 rec1 0.2 {total + 5:.3f}\n")
    (d / "text").write_text("u1 seven a\nu2 seven b\nu3 gone\nu4 too long\n")
    (d / "utt2spk").write_text("u1 theo\nu2 theo\nu3 x\nu4 theo\n")
    rep = import_kaldi(d, workers=1, progress=False)
    assert [u.id for u in rep.utts] == ["u1", "u2"]
    u1, u2 = rep.utts
    assert (u1.offset, u1.duration, u1.speaker, u1.text) == (0.0, 0.1, "theo", "seven a")
    assert u1.audio == str(rec.resolve()) and u1.segment
    assert u2.offset == pytest.approx(0.1) and u2.duration == pytest.approx(total - 0.1, abs=2e-3)
    assert {uid for uid, _ in rep.skipped} == {"u3", "u4"}


def test_kaldi_rejects_piped_wav_scp(tmp_path):
    (tmp_path / "wav.scp").write_text("r1 sox a.wav -t wav - |\n")
    (tmp_path / "text").write_text("r1 hello\n")
    with pytest.raises(CorpusError, match="piped command"):
        import_kaldi(tmp_path, progress=False)


def test_folder_of_audio_with_txt_transcripts(tmp_path):
    for spk in ("nicolas", "yweweler"):
        (tmp_path / spk).mkdir()
        for k in range(2):
            shutil.copy(fsdd_file(k + 4, spk, 0), tmp_path / spk / f"{k}.flac")
            (tmp_path / spk / f"{k}.txt").write_text(f"digit\n{k + 4}\n")
    (tmp_path / "nicolas" / "2.flac").write_bytes(b"")  # empty file with a transcript
    (tmp_path / "nicolas" / "2.txt").write_text("empty")
    shutil.copy(fsdd_file(1, "nicolas", 0), tmp_path / "nicolas" / "3.flac")  # no transcript
    rep = import_folder(tmp_path, workers=2, progress=False)
    assert sorted(u.id for u in rep.utts) == ["nicolas-0", "nicolas-1", "yweweler-0", "yweweler-1"]
    assert {u.speaker for u in rep.utts} == {"nicolas", "yweweler"}
    assert next(u for u in rep.utts if u.id == "nicolas-1").text == "digit 5"
    assert {uid for uid, _ in rep.skipped} == {"nicolas-2", "nicolas-3"}


def test_folder_speaker_pattern_on_fsdd_names(tmp_path, capsys):
    for name in ("3_theo_1", "4_george_2", "5_theo_3"):
        shutil.copy(FSDD / f"{name}.flac", tmp_path / f"{name}.flac")
        (tmp_path / f"{name}.txt").write_text(name[0])
    (tmp_path / "odd.flac").write_bytes((FSDD / "3_theo_1.flac").read_bytes())
    (tmp_path / "odd.txt").write_text("3")
    rep = import_folder(tmp_path, progress=False, speaker_pattern=r"^\d+_([a-z]+)_")
    assert {u.id: u.speaker for u in rep.utts} == {"3_theo_1": "theo", "4_george_2": "george",
                                                   "5_theo_3": "theo"}
    assert [uid for uid, _ in rep.skipped] == ["odd"]
    with pytest.raises(CorpusError, match="group"):
        import_folder(tmp_path, progress=False, speaker_pattern=r"^\d+_")
    out = tmp_path / "m.jsonl"
    assert main(["data", "import", "folder", str(tmp_path), "-o", str(out),
                 "--speaker-pattern", "(["]) == 2
    assert "not a regular expression" in capsys.readouterr().err


def _utts(n_speakers: int = 10, per: int = 5) -> list[Utterance]:
    return [Utterance(f"s{s}-{i}", f"/x/s{s}-{i}.wav", 1.0 + s + i / 10, "t", f"s{s}")
            for s in range(n_speakers) for i in range(per)]


def test_split_by_named_speakers_is_disjoint_and_keeps_order():
    utts = _utts()
    train, dev = split_by_speaker(utts, ["s1", "s7"])
    assert {u.speaker for u in dev} == {"s1", "s7"}
    assert not {u.speaker for u in train} & {u.speaker for u in dev}
    assert len(train) + len(dev) == len(utts)
    assert [u.id for u in dev] == [u.id for u in utts if u.speaker in ("s1", "s7")]


def test_random_split_is_seeded_disjoint_and_near_the_fraction():
    utts = _utts()
    a = split_by_speaker(utts, dev_fraction=0.2, seed=5)
    b = split_by_speaker(utts, dev_fraction=0.2, seed=5)
    assert [u.id for u in a[1]] == [u.id for u in b[1]]
    assert not {u.speaker for u in a[0]} & {u.speaker for u in a[1]}
    total = sum(u.duration for u in utts)
    dev_share = sum(u.duration for u in a[1]) / total
    assert 0.2 <= dev_share < 0.2 + max(u.duration for u in utts) * 5 / total
    seeds = {tuple(sorted({u.speaker for u in split_by_speaker(utts, None, 0.2, s)[1]})) for s in range(6)}
    assert len(seeds) > 1  # the seed matters


def test_split_errors_name_the_problem():
    with pytest.raises(CorpusError, match="s99"):
        split_by_speaker(_utts(), ["s99"])
    with pytest.raises(CorpusError, match="no speaker"):
        split_by_speaker([Utterance("a", "/a.wav", 1.0)], dev_fraction=0.5)


def test_cli_import_and_split(tmp_path, capsys):
    _libri_tree(tmp_path / "corpus")
    m = tmp_path / "all.jsonl"
    assert main(["data", "import", "librispeech", str(tmp_path / "corpus"), "-o", str(m)]) == 0
    assert len(read_manifest(m)) == 6
    tr, dv = tmp_path / "tr.jsonl", tmp_path / "dv.jsonl"
    assert main(["data", "split", str(m), "--dev-speakers", "22", "-o", str(tr), str(dv)]) == 0
    assert {json.loads(x)["speaker"] for x in dv.read_text().splitlines()} == {"22"}
    assert len(read_manifest(tr)) == 4
    assert main(["data", "split", str(m), "--dev-speakers", "5", "-o", str(tr), str(dv)]) == 1
    assert "asr: error:" in capsys.readouterr().err


def test_mini_librispeech_imports_completely(tmp_path):
    rep = import_librispeech(shared_data(*MINI_LIBRISPEECH), workers=4, progress=False)
    assert len(rep.utts) == 1519 and not rep.skipped
    assert len({u.speaker for u in rep.utts}) == 28
    assert sum(u.duration for u in rep.utts) / 3600 == pytest.approx(5.31, abs=0.01)
    train, dev = split_by_speaker(rep.utts, ["1088", "1898", "118", "163"])
    assert len(dev) + len(train) == 1519 and {u.speaker for u in dev} == {"1088", "1898", "118", "163"}

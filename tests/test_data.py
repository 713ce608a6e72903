"""Manifests, the dataset with broken files, batching, validation and stats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import MINI_LIBRISPEECH, fsdd_file, shared_data
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from asr.cli import main
from asr.data import (
    AudioDataset,
    BucketBatchSampler,
    ManifestError,
    Utterance,
    collate,
    filter_by_duration,
    load_utterance,
    padding_fraction,
    read_manifest,
    write_manifest,
)
from asr.datatools import manifest_stats, validate_manifest
from asr.text import CharTokenizer


def _good(tmp_path: Path, n: int = 4) -> list[Utterance]:
    out = []
    for i in range(n):
        p = tmp_path / f"good{i}.flac"
        wav, sr = sf.read(fsdd_file(i, "george", 8), dtype="float32")
        sf.write(p, wav, sr)
        out.append(Utterance(f"good{i}", str(p), len(wav) / sr, f"digit {i}", "george"))
    return out


def _broken(tmp_path: Path) -> list[Utterance]:
    """Real broken files: missing, empty (0 bytes), corrupt bytes, a WAV with zero samples."""
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.flac").write_bytes(b"fLaC\x00\x00\x00\x22" + bytes(range(200)))
    sf.write(tmp_path / "zero.wav", np.zeros(0, dtype=np.float32), 8000)
    return [Utterance("missing", str(tmp_path / "nope.wav"), 1.0, "digit"),
            Utterance("empty", str(tmp_path / "empty.wav"), 1.0, "digit"),
            Utterance("corrupt", str(tmp_path / "corrupt.flac"), 1.0, "digit"),
            Utterance("zero", str(tmp_path / "zero.wav"), 1.0, "digit")]


# ------------------------------------------------------------------ manifests


def test_manifest_roundtrip_nemo_names_relative_paths_and_segments(tmp_path):
    (tmp_path / "a").mkdir()
    lines = [
        {"id": "u1", "audio": "a/x.wav", "duration": 1.5, "text": "hi", "speaker": "s"},
        {"audio_filepath": "/abs/y.flac", "duration": 2, "text": "nemo"},  # NeMo style, no id
        {"id": "u3", "audio": "/abs/z.flac", "duration": 1.0, "offset": 0, "text": ""},
        {"id": "u4", "audio": "/abs/z.flac", "duration": 1.0, "offset": 3.25, "text": "seg"},
    ]
    m = tmp_path / "m.jsonl"
    m.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    utts = read_manifest(m)
    assert [u.id for u in utts] == ["u1", "y", "u3", "u4"]
    assert utts[0].audio == str(tmp_path / "a" / "x.wav")
    assert utts[1].audio == "/abs/y.flac" and utts[1].duration == 2.0
    assert utts[2].segment and utts[2].offset == 0.0 and not utts[0].segment
    assert utts[3].offset == 3.25
    out = tmp_path / "out.jsonl"
    write_manifest(utts, out)
    assert read_manifest(out) == utts
    assert "offset" not in json.loads(out.read_text().splitlines()[0])
    assert json.loads(out.read_text().splitlines()[2])["offset"] == 0.0  # a segment keeps it


@pytest.mark.parametrize("line,why", [
    ("{not json", "not valid JSON"),
    ('["a"]', "JSON object"),
    ('{"duration": 1}', "missing 'audio'"),
    ('{"audio": "x.wav"}', "missing 'duration'"),
    ('{"audio": "x.wav", "duration": "long"}', "must be numbers"),
    ('{"audio": "x.wav", "duration": 1, "text": 5}', "'text' must be a string"),
])
def test_bad_manifest_lines_name_file_and_line(tmp_path, line, why):
    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "ok", "audio": "a.wav", "duration": 1}\n' + line + "\n")
    with pytest.raises(ManifestError, match=f"m.jsonl:2: .*{why}"):
        read_manifest(m)
    assert [u.id for u in read_manifest(m, strict=False)] == ["ok"]


def test_filter_by_duration():
    utts = [Utterance(str(i), "/x", d) for i, d in enumerate([0.01, 1.0, 5.0, 40.0])]
    assert [u.id for u in filter_by_duration(utts, 0.05, 30)] == ["1", "2"]


def test_load_utterance_reads_only_its_segment_even_at_offset_zero(tmp_path):
    wav, sr = sf.read(fsdd_file(5, "lucas", 9), dtype="float32")
    p = tmp_path / "rec.wav"
    sf.write(p, np.concatenate([wav, wav, wav]), sr)
    seg0 = load_utterance(Utterance("a", str(p), len(wav) / sr, segment=True), sr)
    seg1 = load_utterance(Utterance("b", str(p), len(wav) / sr, offset=len(wav) / sr, segment=True), sr)
    assert seg0.size == len(wav) and seg1.size == len(wav)
    np.testing.assert_allclose(seg1, wav, atol=1e-4)


# ------------------------------------------------------------------ dataset and bad input


def test_dataset_skips_counts_and_names_broken_files(tmp_path, caplog):
    good, bad = _good(tmp_path), _broken(tmp_path)
    utts = [good[0], bad[0], good[1], bad[1], bad[2], good[2], bad[3], good[3]]
    tok = CharTokenizer.train([u.text for u in good])
    ds = AudioDataset(utts, tok, 16000)
    items = [ds[i] for i in range(len(ds))]
    assert [x is None for x in items] == [False, True, False, True, True, False, True, False]
    assert {uid for uid, _ in ds.failures} == {"missing", "empty", "corrupt", "zero"}
    assert ds.num_failed == 4
    for uid in ("missing", "empty", "corrupt", "zero"):
        assert uid in caplog.text
    caplog.clear()
    assert ds[1] is None and ds.num_failed == 5  # fails again (next epoch): counted, not named again
    assert "skipping utterance" not in caplog.text
    batch = collate(items)
    assert batch["skipped"] == 4 and batch["ids"] == ["good0", "good1", "good2", "good3"]
    assert collate([items[1], items[3]]) is None  # every item bad


def test_an_epoch_with_broken_files_completes_with_workers(tmp_path):
    good, bad = _good(tmp_path), _broken(tmp_path)
    utts = good + bad + good[:2]  # 10 items, 4 bad
    ds = AudioDataset(utts, CharTokenizer.train(["digit 0123"]), 16000)
    sampler = BucketBatchSampler([u.duration for u in utts], max_seconds=2.0, num_buckets=2, seed=1)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=2)
    seen, skipped, empty_batches = [], 0, 0
    for batch in loader:
        if batch is None:
            empty_batches += 1
            continue
        skipped += batch["skipped"]
        seen += batch["ids"]
    assert sorted(seen) == sorted(u.id for u in good + good[:2])
    is_bad = [i >= len(good) and i < len(good) + len(bad) for i in range(len(utts))]
    plan = list(sampler)
    assert skipped == sum(sum(is_bad[i] for i in b) for b in plan if not all(is_bad[i] for i in b))
    assert empty_batches == sum(all(is_bad[i] for i in b) for b in plan)
    assert ds.num_failed == 4  # counted in the worker processes, read in this one


def test_collate_pads_and_keeps_lengths():
    items = [{"id": "a", "wav": torch.ones(5), "tokens": torch.tensor([1, 2])},
             {"id": "b", "wav": torch.ones(3) * 2, "tokens": torch.tensor([3, 4, 5])}]
    b = collate(items)
    assert b["wavs"].tolist() == [[1, 1, 1, 1, 1], [2, 2, 2, 0, 0]]
    assert b["wav_lens"].tolist() == [5, 3] and b["token_lens"].tolist() == [2, 3]
    assert b["tokens"].tolist() == [[1, 2, 0], [3, 4, 5]] and b["skipped"] == 0


def test_augmentation_is_seeded_per_utterance_and_epoch(tmp_path):
    good = _good(tmp_path, 1)
    noise = lambda w, rng, uid, epoch: w + rng.standard_normal(w.size).astype(np.float32)  # noqa: E731
    ds = AudioDataset(good, None, 16000, augment=noise)
    a, b = ds[0]["wav"], ds[0]["wav"]
    ds.epoch = 1
    c = ds[0]["wav"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    clean = AudioDataset(good, None, 16000)[0]["wav"]  # evaluation: no augment
    assert torch.equal(clean, torch.from_numpy(load_utterance(good[0], 16000)))


# ------------------------------------------------------------------ batching


def _durations(n: int = 300, seed: int = 0) -> list[float]:
    return list(np.random.default_rng(seed).uniform(1.0, 17.0, n))


def test_sampler_covers_every_item_once_within_the_cap():
    d = _durations()
    s = BucketBatchSampler(d, max_seconds=60.0, max_batch_size=16, num_buckets=8, seed=3)
    batches = list(s)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(d)))
    for b in batches:
        assert len(b) <= 16
        assert max(d[i] for i in b) * len(b) <= 60.0 or len(b) == 1
    assert padding_fraction(batches, d) < 0.10


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.1, 30.0), min_size=1, max_size=120), st.floats(1.0, 200.0),
       st.integers(1, 20), st.integers(1, 4), st.integers(0, 3))
def test_sampler_properties(durs, max_s, buckets, replicas, epoch):
    ranks = []
    for r in range(replicas):
        s = BucketBatchSampler(durs, max_s, 16, buckets, seed=1, num_replicas=replicas, rank=r)
        s.set_epoch(epoch)
        ranks.append(list(s))
        assert len(s) == len(ranks[-1])
    assert len({len(b) for b in ranks}) == 1
    flat = [i for r in ranks for b in r for i in b]
    assert set(flat) == set(range(len(durs)))
    if replicas == 1:
        assert sorted(flat) == list(range(len(durs)))  # each exactly once
    for b in (b for r in ranks for b in r):
        assert len(b) <= 16 and (len(b) == 1 or max(durs[i] for i in b) * len(b) <= max_s)


def test_sampler_is_seeded_differs_by_epoch_and_resumes_mid_epoch():
    d = _durations()
    a, b = BucketBatchSampler(d, 60.0, seed=3), BucketBatchSampler(d, 60.0, seed=3)
    assert list(a) == list(b)
    e0 = list(a)
    a.set_epoch(1)
    e1 = list(a)
    assert e0 != e1 and sorted(map(sorted, e0)) != sorted(map(sorted, e1))
    a.set_epoch(1, start_batch=5)
    assert list(a) == e1[5:] and len(a) == len(e1) - 5
    fixed = BucketBatchSampler(d, 60.0, shuffle=False)
    assert list(fixed) == list(BucketBatchSampler(d, 60.0, shuffle=False, seed=99))


def test_sampler_shards_for_ddp():
    d = _durations(101)
    ranks = [list(BucketBatchSampler(d, 40.0, seed=2, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1  # every rank runs the same number of steps
    full = list(BucketBatchSampler(d, 40.0, seed=2))
    covered = {i for r in ranks for b in r for i in b}
    assert covered == set(range(101))
    assert sum(len(r) for r in ranks) - len(full) < 3  # at most num_replicas-1 repeated batches


def test_padding_under_ten_percent_on_mini_librispeech():
    from asr.importers import import_librispeech

    utts = import_librispeech(shared_data(*MINI_LIBRISPEECH), progress=False).utts
    d = [u.duration for u in utts]
    for max_s in (60.0, 120.0, 300.0):
        s = BucketBatchSampler(d, max_s, num_buckets=10, seed=0)
        assert padding_fraction(list(s), d) < 0.10


# ------------------------------------------------------------------ validate and stats


def test_validate_reports_each_problem_with_line_and_id(tmp_path):
    good, bad = _good(tmp_path), _broken(tmp_path)
    wrong = Utterance("wrong-dur", good[1].audio, good[1].duration + 2.0, "digit 1")
    weird = Utterance("weird-text", good[2].audio, good[2].duration, "digit ζ")
    dup = Utterance("good0", good[3].audio, good[3].duration, "digit 3")
    silent = Utterance("no-text", good[3].audio, good[3].duration, " ")
    seg = Utterance("seg", good[0].audio, 0.3, "digit 0", offset=0.0, segment=True)
    m = tmp_path / "m.jsonl"
    write_manifest([good[0], *bad, wrong, weird, dup, silent, seg], m)
    with open(m, "a") as f:
        f.write("{broken json\n")
    tok = CharTokenizer.train(["digit 0123456789"])
    n, problems = validate_manifest(m, tok, progress=False)
    assert n == 11
    got = {(p.line, p.id, p.kind) for p in problems}
    assert got == {
        (2, "missing", "missing-audio"), (3, "empty", "empty-audio"),
        (4, "corrupt", "unreadable-audio"), (5, "zero", "empty-audio"),
        (6, "wrong-dur", "duration-mismatch"), (7, "weird-text", "unencodable-text"),
        (8, "good0", "duplicate-id"), (9, "no-text", "empty-text"), (11, "", "bad-line"),
    }
    assert "ζ" in next(p.message for p in problems if p.kind == "unencodable-text")


def test_validate_decode_finds_a_truncated_file(tmp_path):
    good = _good(tmp_path, 1)[0]
    data = Path(good.audio).read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])  # header intact, half the frames gone
    m = tmp_path / "m.jsonl"
    write_manifest([Utterance("cut", str(cut), good.duration, "x")], m)
    _, shallow = validate_manifest(m, progress=False)
    _, deep = validate_manifest(m, decode=True, progress=False)
    assert not shallow  # the header alone looks fine
    assert [p.kind for p in deep] in (["duration-mismatch"], ["unreadable-audio"])


def test_cli_validate_exit_codes_and_stats(tmp_path, capsys):
    good = _good(tmp_path)
    ok, bad = tmp_path / "ok.jsonl", tmp_path / "bad.jsonl"
    write_manifest(good, ok)
    write_manifest(good + _broken(tmp_path), bad)
    assert main(["data", "validate", str(ok)]) == 0
    assert main(["data", "validate", str(bad)]) == 1
    out = capsys.readouterr()
    assert f"{bad}:5: missing: missing-audio" in out.out
    assert "4 problems" in out.err
    assert main(["data", "stats", str(ok)]) == 0
    text = capsys.readouterr().out
    assert "utterances  4" in text and "speakers    1" in text
    assert main(["data", "validate", str(tmp_path / "none.jsonl")]) == 1


def test_stats_histogram_counts_every_utterance():
    utts = [Utterance(str(i), "/x", d, "a b", f"s{i % 3}") for i, d in enumerate([0.5, 1.5, 1.7, 9.9])]
    text = manifest_stats(utts, bins=5)
    assert "utterances  4" in text and "speakers    3" in text and "words       8" in text
    counts = [int(line.split()[1]) for line in text.splitlines()[6:]]
    assert counts == [3, 0, 0, 0, 1]  # 0-2, 2-4, 4-6, 6-8, 8-10 s


def test_a_moved_corpus_with_relative_paths_still_validates(tmp_path):
    """Relative paths resolve against the manifest's folder, so a corpus folder can move."""
    (tmp_path / "c").mkdir()
    good = _good(tmp_path / "c", 2)
    m = tmp_path / "c" / "m.jsonl"
    m.write_text("".join(json.dumps({"id": u.id, "audio": Path(u.audio).name, "duration": u.duration,
                                     "text": u.text}) + "\n" for u in good))
    shutil.move(tmp_path / "c", tmp_path / "moved")
    utts = read_manifest(tmp_path / "moved" / "m.jsonl")
    assert all(Path(u.audio).is_file() for u in utts)
    _, problems = validate_manifest(tmp_path / "moved" / "m.jsonl", progress=False)
    assert not problems


def test_training_survives_broken_files_in_the_manifest(tmp_path):
    """A corrupt, missing, empty and zero-length file among good ones: the run finishes."""
    from asr.config import load_config
    from asr.train import train

    good, bad = _good(tmp_path, 6), _broken(tmp_path)
    m = tmp_path / "train.jsonl"
    write_manifest(good[:3] + bad + good[3:], m)
    cfg = load_config(None, [
        f"run_dir={tmp_path / 'run'}", f"data.train_manifest={m}", "train.epochs=2",
        "model.num_layers=1", "model.hidden_size=32", "feature.n_mels=40", "train.threads=1",
        "data.max_batch_seconds=3", "train.warmup_steps=1", "augment.specaugment=false",
    ])
    out = train(cfg, resume=False)
    assert out.is_file()
    log = (tmp_path / "run" / "train.log").read_text()
    for uid in ("missing", "empty", "corrupt", "zero"):
        assert f"skipping utterance {uid} " in log, uid

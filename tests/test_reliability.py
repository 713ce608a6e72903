"""Reliability: bad input, faults and untrusted files never crash a job or lose work.

1. A bad-input corpus made here (truncated FLAC/Opus, zero bytes, text named .wav, NaN/inf,
   10 ms, an hour of silence, 8/48 kHz, 6 channels, a 10,000-character transcript,
   characters outside the vocabulary, a line that is not JSON, non-UTF-8 bytes, a missing
   path) through `asr data validate`, `asr train`, `asr evaluate` and `asr transcribe`:
   a clear error naming the file or line, skip-and-count where a batch job goes on, no hang.
2. Faults: SIGKILL during a checkpoint write, a full disk or unwritable folder, corrupt
   checkpoints. (SIGKILL mid-epoch then exact resume is in test_train.py.)
3. Untrusted files: a malicious pickle is refused without running; manifest ids cannot
   make a report write outside its folder.
4. Numerics: a non-finite loss skips the update with a log line naming the utterances, and
   N in a row stop the run with a clear message.
5. Property tests that test_text/test_metrics/test_decode do not already cover.

``BAD_INPUTS`` is the behaviour table (tools/bad_input_table.py prints it); the tests check
every cell of it.
"""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT, TINY_OVERRIDES, WORDS, make_digit_utterance, write_digits_manifest
from hypothesis import given, settings
from hypothesis import strategies as st

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
HOUR = 3600.0

# Runs the CLI and reports the process's peak memory, so a test can bound it.
_RUN_WITH_RSS = (
    "import resource, sys\n"
    "from asr.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def asr_cli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``asr ARGS`` in a subprocess; a hang fails the test (TimeoutExpired) instead of CI."""
    return subprocess.run([sys.executable, "-c", _RUN_WITH_RSS, *map(str, args)], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=timeout)


def max_rss_mb(r: subprocess.CompletedProcess) -> float:
    line = next(x for x in r.stderr.splitlines() if x.startswith("MAXRSS_KB"))
    return int(line.split()[1]) / 1024


def run_cli(argv: list, capsys) -> tuple[int, str, str]:
    """``asr.cli.main`` in this process (no torch import cost); (exit code, stdout, stderr)."""
    from asr.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(err: str, *names: str) -> None:
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("asr: error:")]
    assert len(lines) == 1, err
    for n in names:
        assert n in lines[0], (n, lines[0])


# ---------------------------------------------------------------- the bad-input corpus

# item -> expected behaviour of each command (the table in the issue note):
#   validate: the problem kind reported on the item's line (None: a valid line)
#   train:    "load-skip" (logged by id and counted per epoch), "filtered" (logged with a
#             count before training), "line-skip" (logged with file:line), "used"
#   evaluate: "failed" (logged, listed in the report's failed section), "scored",
#             "line-skip" (logged with file:line, counted in the summary and report)
#   transcribe: "error" (one line naming the file, the other inputs go on), "text", None (n/a)
BAD_INPUTS = {
    "truncated FLAC": dict(validate="unreadable-audio", train="load-skip", evaluate="failed", transcribe="error"),
    "truncated Opus": dict(validate="unreadable-audio", train="load-skip", evaluate="failed", transcribe="error"),
    "zero-byte file": dict(validate="empty-audio", train="load-skip", evaluate="failed", transcribe="error"),
    "text renamed .wav": dict(validate="unreadable-audio", train="load-skip", evaluate="failed",
                              transcribe="error"),
    "NaN/inf samples": dict(validate="unreadable-audio", train="load-skip", evaluate="failed", transcribe="error"),
    "10 ms of audio": dict(validate="text-too-long", train="filtered", evaluate="scored", transcribe="text"),
    "1 h of silence": dict(validate=None, train="filtered", evaluate="scored", transcribe="text"),
    "8 kHz": dict(validate=None, train="used", evaluate="scored", transcribe="text"),
    "48 kHz": dict(validate=None, train="used", evaluate="scored", transcribe="text"),
    "6 channels": dict(validate=None, train="used", evaluate="scored", transcribe="text"),
    "10,000-char transcript": dict(validate="text-too-long", train="filtered", evaluate="scored",
                                   transcribe=None),
    "chars outside vocab": dict(validate="unencodable-text", train="used", evaluate="scored", transcribe=None),
    "missing path": dict(validate="missing-audio", train="load-skip", evaluate="failed", transcribe="error"),
    "line not JSON": dict(validate="bad-line", train="line-skip", evaluate="line-skip", transcribe=None),
    "non-UTF-8 line": dict(validate="bad-line", train="line-skip", evaluate="line-skip", transcribe=None),
}


def uid(name: str) -> str:
    return "bad-" + "".join(c if c.isalnum() else "_" for c in name)


def build_bad_corpus(d: Path, hour: bool = True) -> dict:
    """Write the bad inputs under ``d``.

    Returns:
        {item name: {"audio": path, "text": str, "duration": float, "line": bytes}}; the two
        manifest-level items carry only their raw ``line``.
    """
    d.mkdir(parents=True, exist_ok=True)
    from asr.audio import resample

    good = d / "good.wav"
    dur = make_digit_utterance(good, [1, 2], index=7)
    wav, _ = sf.read(good, dtype="float32")
    items: dict[str, dict] = {}

    def add(name, path, text, duration):
        items[name] = {"audio": path, "text": text, "duration": duration}

    p = d / "truncated.flac"
    sf.write(p, wav, 8000)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])  # the header promises more frames
    add("truncated FLAC", p, "one two", dur)
    p = d / "truncated.opus"
    sf.write(p, resample(wav, 8000, 48000), 48000, format="OGG", subtype="OPUS")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    add("truncated Opus", p, "one two", dur)
    p = d / "empty.wav"
    p.write_bytes(b"")
    add("zero-byte file", p, "one", 1.0)
    p = d / "text.wav"
    p.write_text("this is a text file, not audio\n" * 10)
    add("text renamed .wav", p, "one", 1.0)
    p = d / "nan.wav"
    x = wav.copy()
    x[100], x[200] = np.nan, np.inf
    sf.write(p, x, 8000, subtype="FLOAT")
    add("NaN/inf samples", p, "one two", dur)
    p = d / "10ms.wav"
    sf.write(p, wav[:80], 8000)
    add("10 ms of audio", p, "one", 0.01)
    if hour:
        p = d / "silence_1h.wav"  # 8 kHz 16-bit: 58 MB, written in a second
        with sf.SoundFile(p, "w", 8000, 1, subtype="PCM_16") as f:
            minute = np.zeros(8000 * 60, dtype=np.int16)
            for _ in range(60):
                f.write(minute)
        add("1 h of silence", p, "one", HOUR)
    p = d / "8k.wav"
    add("8 kHz", p, "three four", make_digit_utterance(p, [3, 4], index=8))
    p = d / "48k.wav"
    add("48 kHz", p, "five six", make_digit_utterance(p, [5, 6], index=9, sr_out=48000))
    p = d / "6ch.wav"
    w8, _ = sf.read(d / "8k.wav", dtype="float32")
    sf.write(p, np.stack([w8 * (0.5 + 0.1 * c) for c in range(6)], axis=1), 8000)
    add("6 channels", p, "three four", items["8 kHz"]["duration"])
    add("10,000-char transcript", good, ("one two " * 1250)[:10000], dur)
    add("chars outside vocab", good, "one tw€ ñ 二", dur)
    add("missing path", d / "does_not_exist.wav", "one", 1.0)
    for name, it in items.items():
        it["line"] = json.dumps({"id": uid(name), "audio": str(it["audio"]), "duration": it["duration"],
                                 "text": it["text"], "speaker": "bad"}).encode()
    items["line not JSON"] = {"line": b'{"id": "cut-off", "audio": "x.wav", "dura'}
    items["non-UTF-8 line"] = {"line": b'{"id": "latin-1", "audio": "x.wav", "duration": 1, "text": "caf\xe9"}'}
    return items


def write_bad_manifest(path: Path, items: dict, names=None, prefix: bytes = b"") -> dict[str, int]:
    """Manifest of the chosen items after ``prefix`` lines; returns {item: 1-based line}."""
    lines, where = [x for x in prefix.splitlines() if x.strip()], {}
    for name in names or items:
        lines.append(items[name]["line"])
        where[name] = len(lines)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return where


@pytest.fixture(scope="session")
def bad_corpus(tmp_path_factory) -> dict:
    return build_bad_corpus(tmp_path_factory.mktemp("bad_corpus"))


def test_the_table_covers_every_item(bad_corpus):
    assert set(BAD_INPUTS) == set(bad_corpus)


def test_validate_names_each_bad_line_and_its_problem(bad_corpus, tiny_digits_model, tmp_path):
    m = tmp_path / "bad.jsonl"
    where = write_bad_manifest(m, bad_corpus)
    r = asr_cli("data", "validate", m, "--model", tiny_digits_model, "--decode", timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    found: dict[int, list[str]] = {}
    for line in r.stdout.splitlines():  # MANIFEST:LINE: ID: KIND: message
        head, n, rest = line.split(":", 2)
        assert head == str(m), line
        found.setdefault(int(n), []).append(rest.split(": ")[1])
    for name, want in BAD_INPUTS.items():
        got = found.get(where[name], [])
        assert got == ([want["validate"]] if want["validate"] else []), (name, got)
    assert f"{len(where)} lines, {sum(map(len, found.values()))} problems" in r.stderr
    # the problem messages name the file
    for name in ("truncated FLAC", "zero-byte file", "missing path", "NaN/inf samples"):
        assert str(bad_corpus[name]["audio"]) in r.stdout


def test_evaluate_skips_and_counts_bad_items(bad_corpus, tiny_digits_model, tmp_path, capsys):
    names = [n for n in BAD_INPUTS if n != "1 h of silence"]  # the hour: see the transcribe test
    m = tmp_path / "bad.jsonl"
    where = write_bad_manifest(m, bad_corpus, names)
    out = tmp_path / "eval"
    rc, stdout, _ = run_cli(["evaluate", "-m", tiny_digits_model, "--manifest", m, "--out", out], capsys)
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    failed = {f["id"]: f["reason"] for f in rep["failed"]}
    scored = {u["id"]: u for u in rep["utterances"]}
    skipped = rep["meta"]["manifest_file"]["lines_skipped"]
    for name in names:
        want = BAD_INPUTS[name]["evaluate"]
        if want == "failed":
            assert uid(name) in failed and str(bad_corpus[name]["audio"]) in failed[uid(name)], name
        elif want == "scored":
            assert uid(name) in scored, name
        else:
            assert any(f"{m}:{where[name]}:" in s for s in skipped), (name, skipped)
    n_failed = sum(BAD_INPUTS[n]["evaluate"] == "failed" for n in names)
    assert f"{n_failed} failed, 2 manifest lines skipped" in stdout
    # the readable resampled/downmixed inputs are transcribed right
    for name in ("8 kHz", "48 kHz", "6 channels"):
        assert scored[uid(name)]["hyp"] == bad_corpus[name]["text"], scored[uid(name)]


def test_transcribe_reports_each_bad_file_and_goes_on_and_an_hour_is_bounded(bad_corpus, tiny_digits_model):
    names = [n for n in BAD_INPUTS if BAD_INPUTS[n]["transcribe"]]
    paths = [bad_corpus[n]["audio"] for n in names]
    t0 = time.time()
    r = asr_cli("transcribe", "-q", "-m", tiny_digits_model, *paths, timeout=180)
    took = time.time() - t0
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    errors = [x for x in r.stderr.splitlines() if x.startswith("asr: error:")]
    texts = dict(x.split("\t", 1) for x in r.stdout.splitlines())
    for name, p in zip(names, paths):
        if BAD_INPUTS[name]["transcribe"] == "error":
            assert sum(x.startswith(f"asr: error: {p}: ") for x in errors) == 1, (name, errors)
            assert str(p) not in texts
        else:
            assert str(p) in texts, (name, r.stdout)
    n_err = sum(BAD_INPUTS[n]["transcribe"] == "error" for n in names)
    assert f"asr: {n_err} of {len(paths)} inputs failed" in r.stderr
    for name in ("8 kHz", "48 kHz", "6 channels"):
        assert texts[str(bad_corpus[name]["audio"])] == bad_corpus[name]["text"]
    # An hour is cut into segments and streamed: memory stays bounded (the hour at 16 kHz
    # is 230 MB of float32 alone; decoding it in one piece needed 3 GB).
    assert max_rss_mb(r) < 2048, max_rss_mb(r)  # the 2 GB goal of issue 6
    assert took < 150


def test_evaluate_streams_a_recording_longer_than_a_segment(tiny_digits_model, tmp_path):
    """The hour of silence is evaluated like this (measured: 11 s, 0.86 GB peak instead of 3.2 GB)."""
    import dataclasses

    from asr.data import Utterance
    from asr.evaluate import evaluate
    from asr.transcribe import load_model

    model = load_model(tiny_digits_model)
    wav = tmp_path / "long.wav"
    digits = [3, 1, 4, 1, 5, 9, 2, 6]
    dur = make_digit_utterance(wav, digits, index=11, gap=0.4)
    utt = Utterance("long", str(wav), dur, " ".join(WORDS[d] for d in digits))
    whole = evaluate(model, [utt], progress=False)
    model.segment_opts = dataclasses.replace(model.segment_opts, max_seconds=2.0, search_seconds=0.6)
    sizes = []
    real = model.transcribe_batch
    model.transcribe_batch = lambda wavs, *a, **k: sizes.extend(w.size for w in wavs) or real(wavs, *a, **k)
    cut = evaluate(model, [utt], progress=False)
    assert dur > 4.0 and len(sizes) >= 3 and max(sizes) <= 2.0 * model.sample_rate, (dur, sizes)
    assert [u.id for u in cut.utts] == ["long"] and cut.words.ref == len(digits)
    assert abs(cut.audio_seconds - whole.audio_seconds) < 0.01
    assert cut.words.errors <= whole.words.errors + 1, (cut.utts[0].hyp, whole.utts[0].hyp)
    # a long segment of a file (offset 0 included) decodes only its own frames
    seg = Utterance("seg", str(wav), 3.0, "three one four", offset=0.0, segment=True)
    res = evaluate(model, [seg], progress=False)
    assert [u.id for u in res.utts] == ["seg"] and abs(res.audio_seconds - 3.0) < 0.01, res.audio_seconds


def test_train_skips_and_counts_bad_items_and_finishes(bad_corpus, tmp_path, capsys):
    good = write_digits_manifest(tmp_path, 6, "train", seed=1)
    m = tmp_path / "mixed.jsonl"
    where = write_bad_manifest(m, bad_corpus, prefix=good.read_bytes())
    run = tmp_path / "run"
    rc, stdout, err = run_cli(["train", "-c", ROOT / "conf" / "digits.yaml", *TINY_OVERRIDES,
                               f"run_dir={run}", f"data.train_manifest={m}", "data.dev_manifest=",
                               "train.epochs=2", "--no-resume"], capsys)
    assert rc == 0, err
    assert (run / "model.pt").is_file()
    history = json.loads((run / "history.json").read_text())
    n_load = sum(v["train"] == "load-skip" for v in BAD_INPUTS.values())
    assert [h["failed_utts"] for h in history] == [n_load, n_load]
    log = (run / "train.log").read_text()
    for name, want in BAD_INPUTS.items():
        if want["train"] == "load-skip":
            # named once although it failed in both epochs
            assert log.count(f"skipping utterance {uid(name)} ({bad_corpus[name]['audio']})") == 1, name
        elif want["train"] == "line-skip":
            assert f"skipping {m}:{where[name]}:" in log, name
    assert f"epoch 1: skipped {n_load} utterances whose audio could not be loaded" in log
    assert "skipped 2 utterances outside 0.05-30.0 s" in log  # 10 ms and the hour
    assert "skipped 1 utterances with empty text or more CTC targets than output frames" in log
    kept = sum(v["train"] in ("load-skip", "used") for v in BAD_INPUTS.values())
    assert f"data: {6 + kept} training utterances" in log


# ---------------------------------------------------------------- faults


def _save_forever(path: str, start: int) -> None:
    from asr.checkpoint import atomic_torch_save

    i = start
    while True:  # 8 MB a checkpoint: most of the time is spent inside a write
        atomic_torch_save({"format_version": 1, "i": i, "w": torch.full((2_000_000,), float(i))}, path)
        i += 1


def test_sigkill_during_checkpoint_writes_always_leaves_a_loadable_checkpoint(tmp_path):
    from asr.checkpoint import atomic_torch_save, read_checkpoint

    path = tmp_path / "last.pt"
    ctx = mp.get_context("fork")  # torch is already imported: no start-up cost per kill
    rng = random.Random(0)
    last, interrupted = -1, 0
    for _ in range(5):
        proc = ctx.Process(target=_save_forever, args=(str(path), last + 1), daemon=True)
        proc.start()
        deadline = time.time() + 30
        while not path.is_file() or (last >= 0 and read_checkpoint(path)["i"] <= last):
            assert time.time() < deadline, "the writer made no progress"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15))
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.join()
        obj = read_checkpoint(path)  # previous or new, never torn
        assert obj["i"] > last and bool((obj["w"] == obj["i"]).all())
        last = obj["i"]
        interrupted += bool(list(tmp_path.glob(".last.pt.*.tmp")))
    assert interrupted >= 1, "no kill landed inside a write; the test proved nothing"
    # A temp file is never mistaken for a checkpoint, and the next save removes the leftovers.
    assert sorted(tmp_path.glob("*.pt")) == [path]
    atomic_torch_save({"format_version": 1, "i": -1}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def _tiny_train_args(tmp_path: Path, n: int = 3, *extra: str) -> list:
    m = write_digits_manifest(tmp_path, n, "train", seed=2, max_digits=2)
    return ["train", "-c", ROOT / "conf" / "digits.yaml", *TINY_OVERRIDES, f"run_dir={tmp_path / 'run'}",
            f"data.train_manifest={m}", "data.dev_manifest=", "train.epochs=1", *extra, "--no-resume"]


def test_full_disk_while_saving_a_checkpoint_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import asr.checkpoint

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(asr.checkpoint.os, "replace", full)
    rc, _, err = run_cli(_tiny_train_args(tmp_path), capsys)
    assert rc == 1
    assert_one_line_error(err, "cannot write checkpoint", str(tmp_path / "run" / "checkpoints"),
                          "No space left on device")
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))  # the temp file is gone


def test_unwritable_output_folders_are_clear_errors(tiny_digits_model, tmp_path, monkeypatch, capsys):
    # Tests run as root, so chmod cannot make a folder read-only: use a path through a file.
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    m = write_digits_manifest(tmp_path, 2, "test", seed=4)
    rc, _, err = run_cli(["evaluate", "-m", tiny_digits_model, "--manifest", m, "--out", blocker / "ev"], capsys)
    assert rc == 1
    assert_one_line_error(err, "cannot write the report into", str(blocker / "ev"))
    rc, _, err = run_cli(_tiny_train_args(tmp_path, 2, f"run_dir={blocker / 'run'}"), capsys)
    assert rc == 1
    assert_one_line_error(err, str(blocker / "run"), "Not a directory")
    wav = tmp_path / "test" / "test-000.wav"
    rc, _, err = run_cli(["transcribe", "-m", tiny_digits_model, wav, "--output-dir", blocker / "tx"], capsys)
    assert rc == 1
    assert_one_line_error(err, str(blocker / "tx"))
    rc, _, err = run_cli(["average", tiny_digits_model, tiny_digits_model, "--out", blocker / "avg.pt"],
                         capsys)
    assert rc == 1
    assert_one_line_error(err, "cannot write checkpoint", str(blocker / "avg.pt"))

    # A full disk while writing the report.
    real_write = Path.write_text

    def full(self, *a, **k):
        if self.name.startswith("report."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    rc, _, err = run_cli(["evaluate", "-m", tiny_digits_model, "--manifest", m, "--out", tmp_path / "ev"],
                         capsys)
    assert rc == 1
    assert_one_line_error(err, str(tmp_path / "ev"), "No space left on device")


def test_corrupt_or_truncated_checkpoints_are_clear_errors(tiny_digits_model, tmp_path, capsys):
    from asr.checkpoint import CheckpointError, load_checkpoint

    src = Path(tiny_digits_model).read_bytes()
    rng = random.Random(0)
    bad = tmp_path / "bad.pt"
    outcomes = {"refused": 0, "loaded": 0}
    for i in range(30):
        b = bytearray(src)
        if i % 2:
            b = b[: rng.randrange(len(b))]  # truncated
        else:
            for _ in range(8):  # bytes flipped
                b[rng.randrange(len(b))] ^= 0xFF
        bad.write_bytes(bytes(b))
        try:
            load_checkpoint(bad)
            outcomes["loaded"] += 1
        except CheckpointError as e:
            assert str(bad) in str(e) and "corrupt" in str(e)
            outcomes["refused"] += 1
    # every one, flipped bytes in the weights too: the zip CRCs are checked before loading
    assert outcomes == {"refused": 30, "loaded": 0}, outcomes
    bad.write_bytes(src[: len(src) // 2])
    rc, _, err = run_cli(["transcribe", "-m", bad, tmp_path / "x.wav"], capsys)
    assert rc == 1
    assert_one_line_error(err, str(bad), "truncated or corrupt")


# ---------------------------------------------------------------- untrusted files


class _Payload:
    """Unpickling this calls open(marker, "w"): a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_pickle_is_refused_and_never_runs(tiny_digits_model, tmp_path, capsys):
    from asr.checkpoint import CheckpointError, load_checkpoint, read_checkpoint

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    obj = read_checkpoint(tiny_digits_model)
    obj["state"] = {"note": _Payload(marker)}  # a real checkpoint with a payload inside
    torch.save(obj, evil)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(evil)
    wav = tmp_path / "a.wav"
    make_digit_utterance(wav, [1])
    for argv in (["transcribe", "-m", evil, wav], ["data", "validate", wav, "--model", evil],
                 ["average", evil, tiny_digits_model, "--out", tmp_path / "avg.pt"]):
        rc, _, err = run_cli(argv, capsys)
        assert rc == 1
        assert_one_line_error(err, str(evil), "refused to load")
    # Dressed up as a TorchScript export (a code/ folder in the zip): torch.jit.load refuses it.
    import zipfile

    from asr.export import ExportError
    from asr.transcribe import load_model

    disguised = tmp_path / "evil.ts"
    disguised.write_bytes(evil.read_bytes())
    with zipfile.ZipFile(disguised, "a") as z:
        z.writestr("evil/code/__torch__.py", "def f(): pass\n")
    with pytest.raises((ExportError, CheckpointError)):
        load_model(disguised)
    assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_manifest_ids_cannot_make_a_report_write_outside_its_folder(tiny_digits_model, tmp_path, capsys):
    wav = tmp_path / "data" / "a.wav"
    wav.parent.mkdir()
    dur = make_digit_utterance(wav, [2, 5])
    ids = ["../../evil", "/tmp/evil-abs", "..\\..\\evil", "x/../../../evil.html", "<script>alert(1)</script>"]
    m = tmp_path / "data" / "m.jsonl"
    m.write_text("".join(json.dumps({"id": i, "audio": "a.wav", "duration": dur, "text": "two five"}) + "\n"
                         for i in ids))
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "runs" / "r1" / "eval"
    rc, _, _ = run_cli(["evaluate", "-m", tiny_digits_model, "--manifest", m, "--out", out], capsys)
    assert rc == 0
    created = {p for p in tmp_path.rglob("*")} - before
    assert {p.relative_to(tmp_path).as_posix() for p in created} == {
        "runs", "runs/r1", "runs/r1/eval", "runs/r1/eval/report.json", "runs/r1/eval/report.md",
        "runs/r1/eval/report.html"}
    assert not Path("/tmp/evil-abs").exists()
    rep = json.loads((out / "report.json").read_text())
    assert sorted(u["id"] for u in rep["utterances"]) == sorted(ids)
    assert "<script>alert" not in (out / "report.html").read_text()


# ---------------------------------------------------------------- numerics


def _poison(monkeypatch, bad_ids: set[str] | None):
    """Make the training loss NaN for batches holding one of ``bad_ids`` (None: every batch)."""
    import asr.update

    real = asr.update.compute_loss

    def compute_loss(model, ctc_module, batch, *a, **k):
        loss, log_probs, out_lens = real(model, ctc_module, batch, *a, **k)
        if model.training and (bad_ids is None or bad_ids & set(batch["ids"])):
            loss = loss * float("nan")
        return loss, log_probs, out_lens

    monkeypatch.setattr(asr.update, "compute_loss", compute_loss)


def test_a_nan_loss_skips_the_update_and_names_the_utterance(tmp_path, monkeypatch):
    from asr.checkpoint import read_checkpoint
    from asr.cli import main

    _poison(monkeypatch, {"train-001"})
    args = _tiny_train_args(tmp_path, 4, "data.max_batch_size=1", "train.epochs=2")
    assert main([str(a) for a in args]) == 0
    log = (tmp_path / "run" / "train.log").read_text()
    skips = [x for x in log.splitlines() if "non-finite loss or gradient" in x]
    assert len(skips) == 2 and all("(utterances train-001); update skipped" in x for x in skips), skips
    ck = read_checkpoint(tmp_path / "run" / "model.pt")
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert all(np.isfinite(h["train_loss"]) for h in history)
    assert ck["state"]["train_state"]["step"] == 8  # every batch is an update, the bad ones skipped


def test_n_non_finite_updates_in_a_row_stop_the_run_clearly(tmp_path, monkeypatch, capsys):
    _poison(monkeypatch, None)
    rc, _, err = run_cli(_tiny_train_args(tmp_path, 6, "data.max_batch_size=1", "train.max_bad_steps=3"),
                         capsys)
    assert rc == 1  # a failure, not a usage error (asr.errors)
    assert_one_line_error(err, "3 consecutive non-finite updates: stopping")
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("non-finite loss or gradient") == 3  # it stopped at the third, not later


# ---------------------------------------------------------------- property tests (gaps only)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=5))
def test_char_tokenizer_round_trips_any_unicode_after_normalisation(texts):
    from asr.text import CharTokenizer, normalize_text, tokenizer_from_dict

    tok = CharTokenizer.train(texts)
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))  # as stored in a checkpoint
    for t in texts:
        ids = tok.encode(t)
        assert tok.decode(ids) == normalize_text(t)
        assert again.encode(t) == ids
        assert all(0 < i < len(tok) for i in ids)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), T=st.integers(1, 30), V=st.integers(2, 6), pad=st.integers(0, 5))
def test_greedy_collapses_the_best_path_and_ignores_padding(seed, T, V, pad):
    from asr.decode import greedy_search

    g = torch.Generator().manual_seed(seed)
    lp = torch.randn(1, T + pad, V, generator=g).log_softmax(-1)
    (ids,) = greedy_search(lp, torch.tensor([T]))
    best = lp[0, :T].argmax(-1).tolist()
    want = [b for i, b in enumerate(best) if b != 0 and (i == 0 or best[i - 1] != b)]
    assert ids == want
    noisy = lp.clone()
    noisy[0, T:] = torch.randn(pad, V, generator=g).log_softmax(-1)
    assert greedy_search(noisy, torch.tensor([T])) == [ids]
    assert 0 not in ids and len(ids) <= T


@pytest.mark.parametrize("fields", ['"duration": NaN', '"duration": Infinity', '"duration": 1, "offset": -2',
                                    '"duration": "1.0s"'])
def test_non_finite_or_negative_times_in_a_manifest_are_bad_lines(tmp_path, fields):
    from asr.data import ManifestError, read_manifest
    from asr.datatools import validate_manifest

    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "a", "audio": "a.wav", ' + fields + ', "text": "one"}\n')
    with pytest.raises(ManifestError, match=f"{m}:1: 'duration' and 'offset' must be"):
        read_manifest(m)
    assert read_manifest(m, strict=False) == []
    _, problems = validate_manifest(m, check_audio=False, progress=False)
    assert [(p.line, p.kind) for p in problems] == [(1, "bad-line")]

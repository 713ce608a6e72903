"""Print the bad-input behaviour table: each bad input x `asr data validate | train | evaluate |
transcribe` -> what the command did, observed by running it (not copied from the tests).

The corpus is the one tests/test_reliability.py builds (truncated FLAC/Opus, zero bytes, a text
file named .wav, NaN/inf, 10 ms, an hour of silence, 8/48 kHz, 6 channels, a 10,000-character
transcript, characters outside the vocabulary, a line that is not JSON, non-UTF-8 bytes, a
missing path).

    flock /tmp/asr-cpu.lock .venv/bin/python tools/bad_input_table.py --model exp/digits/model.pt

Takes about a minute on one CPU thread (the hour of silence is transcribed and evaluated).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def short(msg: str, n: int = 48) -> str:
    msg = msg.split(": ", 1)[-1] if msg.startswith("/") else msg
    return msg if len(msg) <= n else msg[: n - 1] + "…"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a digits checkpoint (any asr model works)")
    ap.add_argument("--no-hour", action="store_true", help="leave out the hour of silence")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from conftest import TINY_OVERRIDES, write_digits_manifest
    from test_reliability import build_bad_corpus, uid, write_bad_manifest

    from asr.cli import main as asr_main
    from asr.datatools import validate_manifest
    from asr.transcribe import load_model

    tmp = Path(tempfile.mkdtemp(prefix="bad_inputs_"))
    items = build_bad_corpus(tmp / "corpus", hour=not args.no_hour)
    m = tmp / "bad.jsonl"
    where = write_bad_manifest(m, items)
    cells: dict[str, dict[str, str]] = {n: {} for n in items}

    # validate (with the model's tokenizer, decoding the audio)
    tok = load_model(args.model).tokenizer
    _, problems = validate_manifest(m, tok, decode=True, progress=False)
    for name, line in where.items():
        kinds = [p.kind for p in problems if p.line == line]
        cells[name]["validate"] = f"line {line}: {', '.join(kinds)}" if kinds else "ok"

    quiet = contextlib.redirect_stderr(io.StringIO())
    # evaluate
    t0 = time.time()
    with quiet, contextlib.redirect_stdout(io.StringIO()):
        rc = asr_main(["evaluate", "-m", args.model, "--manifest", str(m), "--out", str(tmp / "eval")])
    ev_s = time.time() - t0
    rep = json.loads((tmp / "eval" / "report.json").read_text())
    failed = {f["id"]: f["reason"] for f in rep["failed"]}
    scored = {u["id"]: u for u in rep["utterances"]}
    skipped = rep["meta"]["manifest_file"]["lines_skipped"]
    for name, line in where.items():
        if uid(name) in failed:
            cell = f"skipped+counted: {short(failed[uid(name)])}"
        elif uid(name) in scored:
            u = scored[uid(name)]
            cell = f"scored (WER {100 * u['wer']['rate']:.0f}%)"
        elif any(f"{m}:{line}:" in s for s in skipped):
            cell = "line skipped+counted"
        else:
            cell = "MISSING"
        cells[name]["evaluate"] = cell

    # transcribe (a subprocess, as users run it; all files in one call)
    audio = {n: it["audio"] for n, it in items.items() if "audio" in it and n != "10,000-char transcript"
             and n != "chars outside vocab"}
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "asr", "transcribe", "-q", "-m", args.model,
                        *map(str, audio.values())], capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    tx_s = time.time() - t0
    texts = dict(x.split("\t", 1) for x in r.stdout.splitlines() if "\t" in x)
    for name in items:
        if name not in audio:
            cells[name]["transcribe"] = "n/a"
            continue
        p = str(audio[name])
        err = next((x for x in r.stderr.splitlines() if x.startswith(f"asr: error: {p}:")), None)
        cells[name]["transcribe"] = (f"error: {short(err[len(f'asr: error: {p}: '):])}" if err else
                                     f"text: {texts.get(p, '')[:20]!r}")

    # train (tiny model, 1 epoch: 6 good utterances + every bad line)
    good = write_digits_manifest(tmp / "good", 6, "train")
    mixed = tmp / "mixed.jsonl"
    where_t = write_bad_manifest(mixed, items, prefix=good.read_bytes())
    run = tmp / "run"
    with quiet, contextlib.redirect_stdout(io.StringIO()):
        rc = asr_main(["train", "-c", str(ROOT / "conf" / "digits.yaml"), *TINY_OVERRIDES, f"run_dir={run}",
                       f"data.train_manifest={mixed}", "data.dev_manifest=", "train.epochs=1", "--no-resume"])
    log = (run / "train.log").read_text()
    for name, line in where_t.items():
        u = uid(name)
        if f"skipping utterance {u} " in log:
            cell = "load failed: skipped, logged by id, counted"
        elif f"skipping {mixed}:{line}:" in log:
            cell = "line skipped, logged with file:line"
        elif any("skipped" in x and "utterances" in x and u in x for x in log.splitlines()):
            cell = "filtered before training (logged with count)"
        else:
            cell = "used"
        cells[name]["train"] = cell

    cols = ["validate", "train", "evaluate", "transcribe"]
    print("| input | " + " | ".join(f"`asr {'data validate' if c == 'validate' else c}`" for c in cols) + " |")
    print("|" + " --- |" * (len(cols) + 1))
    for name in items:
        print(f"| {name} | " + " | ".join(cells[name][c] for c in cols) + " |")
    print(f"\ntrain exit code {rc}; evaluate {ev_s:.1f} s; transcribe (all files, one process) {tx_s:.1f} s, "
          f"exit code {r.returncode}")
    print("(filtered-before-training kinds are logged once per kind, with a count and example ids)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

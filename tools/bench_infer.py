"""Inference benchmark: real-time factor, float32 against int8 (and TorchScript/ONNX), and peak
memory of `asr transcribe` on an hour-long recording.

    flock /tmp/asr-cpu.lock .venv/bin/python tools/bench_infer.py \\
        --model exp/mini_librispeech/model.pt --manifest exp/mini_librispeech/data/dev.jsonl \\
        --lm exp/mini_librispeech/lm/3gram.arpa --threads 2 --limit 100 --json bench_infer.json

Three parts, each printed as a table:

1. Per variant of the model (float32 checkpoint, int8 = dynamic quantisation of the LSTM and
   linear layers, the same two exported to TorchScript, optionally ONNX): seconds of the
   acoustic model (one utterance at a time, as `asr transcribe` runs files), seconds of greedy
   and of beam search + LM decoding, the real-time factors (seconds of compute per second of
   audio) and WER. Audio is decoded once up front and not timed here.
2. `asr transcribe` end to end, as a user runs it: one process for all files (model loading,
   audio decoding and start-up included), beam search + LM.
3. An hour-long recording (the manifest's utterances concatenated, written as a 16 kHz WAV):
   peak resident memory (ru_maxrss of the `asr transcribe` process) and its real-time factor.
   Goal: under 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.audio import load_audio  # noqa: E402
from asr.data import read_manifest  # noqa: E402
from asr.metrics import ErrorCounts, word_errors  # noqa: E402
from asr.transcribe import load_model  # noqa: E402


def wer_of(refs: list[str], hyps: list[str]) -> float:
    total = ErrorCounts()
    for r, h in zip(refs, hyps):
        total += word_errors(r, h)
    return total.rate


def greedy_rate(model, refs: list[str], greedy: list) -> float:
    """WER of the greedy transcripts; for a phone model (its greedy output is phones, not words)
    the PER of their ``phones`` against the reference's pronunciation, as ``asr evaluate`` scores it."""
    if getattr(model, "is_phone", False):
        return wer_of([model._phones(model.tokenizer.encode(r)) for r in refs], [t.phones for t in greedy])
    return wer_of(refs, [t.text for t in greedy])


def time_variant(name: str, model, wavs: list[np.ndarray], refs: list[str], audio_s: float,
                 lm: str, beam: int, lm_weight: float | None, word_bonus: float | None,
                 repeats: int = 2) -> dict:
    """Acoustic model and decoders of one model variant on pre-loaded audio."""
    t_am = float("inf")
    with torch.no_grad():
        model.log_probs([wavs[0]])  # warm-up (allocations, oneDNN kernels)
        for _ in range(repeats):  # the fastest of a few passes: other processes share the cores
            t0 = time.perf_counter()
            outs = [model.log_probs([w]) for w in wavs]
            t_am = min(t_am, time.perf_counter() - t0)
    model = model.with_decoding(method="greedy", lm_path="")
    t0 = time.perf_counter()
    greedy = [model.decode(lp, lens)[0] for lp, lens in outs]
    t_greedy = time.perf_counter() - t0
    row = {"variant": name, "am_s": t_am, "greedy_s": t_greedy, "rtf_greedy": (t_am + t_greedy) / audio_s,
           "wer_greedy": greedy_rate(model, refs, greedy)}
    if lm:
        opts = {"method": "beam", "lm_path": lm, "beam_size": beam}
        if lm_weight is not None:
            opts["lm_weight"] = lm_weight
        if word_bonus is not None:
            opts["word_bonus"] = word_bonus
        model = model.with_decoding(**opts)
        model.decode(*outs[0])  # loads the LM (not timed: once per process)
        t_beam = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            beam_hyps = [model.decode(lp, lens)[0].text for lp, lens in outs]
            t_beam = min(t_beam, time.perf_counter() - t0)
        row.update(beam_lm_s=t_beam, rtf_beam_lm=(t_am + t_beam) / audio_s, wer_beam_lm=wer_of(refs, beam_hyps))
    unit = "PER" if getattr(model, "is_phone", False) else "WER"
    print(f"  {name}: acoustic model {t_am:.2f} s, greedy {unit} {100 * row['wer_greedy']:.2f}%"
          + (f", beam+LM WER {100 * row['wer_beam_lm']:.2f}% in {row['beam_lm_s']:.2f} s" if lm else ""),
          file=sys.stderr)
    return row


# Linux keeps a process's peak RSS across fork+exec, so a child started from this (large)
# process would report at least our own size. A small launcher starts the command instead and
# reports its child's peak (RUSAGE_CHILDREN) on the last line of standard error.
LAUNCHER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
            "print('maxrss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(rc)")


def run_measured(cmd: list[str], threads: int, stdout_path: Path | None = None) -> tuple[float, int, int, str]:
    """(wall seconds, peak RSS in bytes, exit code, stderr tail) of a command."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with open(stdout_path or os.devnull, "wb") as out:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], cwd=ROOT, env=env, stdout=out,
                           stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
    err = r.stderr.decode(errors="replace").rstrip().splitlines()
    rss = int(err[-1].split()[1]) * 1024 if err and err[-1].startswith("maxrss_kb") else 0
    return wall, rss, r.returncode, "\n".join(err[-5:-1])


def long_recording(utts, sr: int, minutes: float, path: Path) -> float:
    """Concatenate the utterances (cycling, 0.3 s pauses) into one WAV of ``minutes``; returns seconds."""
    target = int(minutes * 60 * sr)
    pause = np.zeros(int(0.3 * sr), dtype=np.float32)
    done = 0
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        while done < target:
            for u in utts:
                piece = np.concatenate([load_audio(u.audio, sr), pause])[: target - done]
                f.write(piece)
                done += piece.size
                if done >= target:
                    break
    return done / sr


def fmt_table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in cols) + " |"
    sep = "| " + " | ".join("---" for _ in cols) + " |"
    body = []
    for r in rows:
        cells = []
        for key, _, f in cols:
            v = r.get(key)
            cells.append("-" if v is None else (f.format(v) if f else str(v)))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep] + body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint (model.pt)")
    ap.add_argument("--manifest", required=True, help="held-out manifest with references")
    ap.add_argument("--lm", default="", help="ARPA LM for beam search (omit: greedy only)")
    ap.add_argument("--lm-weight", type=float, help="alpha (default: the model's decode config)")
    ap.add_argument("--word-bonus", type=float, help="beta (default: the model's decode config)")
    ap.add_argument("--beam-size", type=int, default=8)
    ap.add_argument("--limit", type=int, default=100, help="utterances used in parts 1 and 2")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the goal is for 2 cores)")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes per variant in part 1 (fastest kept)")
    ap.add_argument("--onnx", action="store_true", help="also time an ONNX export (slow to export)")
    ap.add_argument("--long-minutes", type=float, default=60.0, help="length of the long recording; 0 skips part 3")
    ap.add_argument("--json", help="write all figures here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    utts = read_manifest(args.manifest)[: args.limit]
    base = load_model(args.model)
    sr = base.sample_rate
    wavs = [load_audio(u.audio, sr, u.offset, u.duration if u.offset else None) for u in utts]
    refs = [base.tokenizer.normalize(u.text) for u in utts]
    audio_s = sum(w.size for w in wavs) / sr
    print(f"{len(utts)} utterances, {audio_s / 60:.1f} min of audio, {args.threads} threads; model {args.model}",
          file=sys.stderr)

    results: dict = {"model": str(args.model), "manifest": str(args.manifest), "lm": args.lm,
                     "utterances": len(utts), "audio_seconds": audio_s, "threads": args.threads}
    from asr.export import export_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        variants = [("float32 checkpoint", lambda: base), ("int8 checkpoint", lambda: load_model(args.model, quantize="int8"))]
        export_model(args.model, Path(tmp) / "m.ts", "torchscript")
        export_model(args.model, Path(tmp) / "m8.ts", "torchscript", quantize="int8")
        variants += [("float32 TorchScript", lambda: load_model(Path(tmp) / "m.ts")),
                     ("int8 TorchScript", lambda: load_model(Path(tmp) / "m8.ts"))]
        if args.onnx:
            export_model(args.model, Path(tmp) / "m.onnx", "onnx")
            variants.append(("float32 ONNX (frontend in torch)", lambda: load_model(Path(tmp) / "m.onnx")))
        for name, make in variants:
            lm = args.lm if name in ("float32 checkpoint", "int8 checkpoint") else ""
            rows.append(time_variant(name, make(), wavs, refs, audio_s, lm, args.beam_size,
                                     args.lm_weight, args.word_bonus, args.repeats))
    ref_am = rows[0]["am_s"]
    for r in rows:
        r["am_speedup"] = ref_am / r["am_s"]
        r["wer_greedy_change"] = r["wer_greedy"] - rows[0]["wer_greedy"]
    results["variants"] = rows
    unit = results["greedy_metric"] = "PER" if getattr(base, "is_phone", False) else "WER"  # of wer_greedy
    print("\n## 1. Acoustic model and decoding per variant (audio pre-loaded)\n")
    print(fmt_table(rows, [
        ("variant", "variant", ""), ("am_s", "acoustic model s", "{:.2f}"), ("am_speedup", "speed-up", "{:.2f}x"),
        ("rtf_greedy", "RTF greedy", "{:.4f}"), ("wer_greedy", f"{unit} greedy", "{:.2%}"),
        ("wer_greedy_change", f"{unit} change", "{:+.2%}"),
        ("rtf_beam_lm", "RTF beam+LM", "{:.4f}"), ("wer_beam_lm", "WER beam+LM", "{:.2%}")]))

    # 2. `asr transcribe` end to end on the files themselves
    files = [u.audio for u in utts if not u.offset]
    file_s = sum(sf.info(f).duration for f in files)
    e2e = []
    for label, extra in [("float32, greedy", ["--method", "greedy"]),
                         ("float32, beam+LM", ["--method", "beam", "--beam-size", str(args.beam_size), "--lm", args.lm]),
                         ("int8, beam+LM", ["--quantize", "int8", "--method", "beam", "--beam-size",
                                            str(args.beam_size), "--lm", args.lm])]:
        if "--lm" in extra and not args.lm:
            continue
        if args.lm_weight is not None and "--lm" in extra:
            extra += ["--lm-weight", str(args.lm_weight)]
        if args.word_bonus is not None and "--lm" in extra:
            extra += ["--word-bonus", str(args.word_bonus)]
        cmd = [sys.executable, "-m", "asr", "transcribe", "-m", str(args.model), "-q", *extra, *files]
        wall, rss, rc, err = run_measured(cmd, args.threads)
        if rc != 0:
            print(f"asr transcribe failed ({rc}): {err}", file=sys.stderr)
        e2e.append({"run": label, "files": len(files), "audio_s": file_s, "wall_s": wall, "rtf": wall / file_s,
                    "peak_rss_mb": rss / 2**20})
    _, base_rss, _, _ = run_measured([sys.executable, "-c", "import torch, asr.transcribe"], args.threads)
    e2e.append({"run": "(python -c 'import torch, asr': the floor)", "peak_rss_mb": base_rss / 2**20})
    results["transcribe"] = e2e
    print(f"\n## 2. `asr transcribe` end to end ({len(files)} files, {file_s / 60:.1f} min, one process, "
          f"start-up and model loading included)\n")
    print(fmt_table(e2e, [("run", "run", ""), ("wall_s", "wall s", "{:.1f}"), ("rtf", "RTF", "{:.4f}"),
                          ("peak_rss_mb", "peak RSS MB", "{:.0f}")]))

    # 3. an hour-long recording
    if args.long_minutes > 0:
        long_rows = []
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "long.wav"
            secs = long_recording(read_manifest(args.manifest), sr, args.long_minutes, p)
            runs = [("float32, greedy", ["--method", "greedy"])]
            if args.lm:
                runs.append(("float32, beam+LM", ["--method", "beam", "--beam-size", str(args.beam_size), "--lm", args.lm]))
            for label, extra in runs:
                cmd = [sys.executable, "-m", "asr", "transcribe", "-m", str(args.model), "-q", "-f", "json", *extra, str(p)]
                wall, rss, rc, err = run_measured(cmd, args.threads, Path(tmp) / "out.json")
                if rc != 0:
                    print(f"asr transcribe failed ({rc}): {err}", file=sys.stderr)
                    words, last_end = 0, 0.0
                else:
                    out = json.loads((Path(tmp) / "out.json").read_text())
                    words, last_end = len(out["words"]), out["words"][-1]["end"] if out["words"] else 0.0
                long_rows.append({"run": label, "audio_min": secs / 60, "wall_s": wall, "rtf": wall / secs,
                                  "peak_rss_mb": rss / 2**20, "words": words, "last_word_end_min": last_end / 60,
                                  "ok": rc == 0})
        results["long"] = long_rows
        print(f"\n## 3. One {secs / 60:.0f}-minute recording (`asr transcribe -f json`, word times included)\n")
        print(fmt_table(long_rows, [("run", "run", ""), ("wall_s", "wall s", "{:.0f}"), ("rtf", "RTF", "{:.4f}"),
                                    ("peak_rss_mb", "peak RSS MB", "{:.0f}"), ("words", "words", ""),
                                    ("last_word_end_min", "last word ends (min)", "{:.1f}")]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load test of `asr serve`: batching on against batching off, in one run, on loopback.

For each mode it starts `asr serve` on a free 127.0.0.1 port, sends one warm-up request, then
--requests requests from --concurrency client threads (a bounded load generator: each thread
sends its next request when the last one is answered), and reports throughput (audio seconds
transcribed per wall second), p50/p95 latency, the server's peak RSS (VmHWM) and its mean
batch size (from /health).

    .venv/bin/python tools/bench_serve.py -m exp/digits/model.pt --concurrency 8 --requests 96
    .venv/bin/python tools/bench_serve.py -m model.pt --audio some/folder --json bench_serve.json

Without --audio it builds digit strings (2-6 digits, 1.5-5 s) from the bundled FSDD recordings.
Run it alone on the machine: server and clients share the cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT / "recipes" / "digits" / "fsdd"


def digit_utterances(n: int, seed: int = 0) -> list[tuple[str, bytes, float]]:
    """n (name, FLAC bytes, seconds) digit strings from the bundled FSDD recordings."""
    rng = random.Random(seed)
    files = sorted(FSDD.glob("*.flac"))
    out = []
    for i in range(n):
        parts = [np.zeros(800, dtype=np.float32)]
        for f in rng.sample(files, rng.randint(2, 6)):
            wav, sr = sf.read(f, dtype="float32")
            parts += [wav, np.zeros(1200, dtype=np.float32)]
        wav = np.concatenate(parts)
        buf = io.BytesIO()
        sf.write(buf, wav, 8000, format="FLAC")
        out.append((f"digits-{i:03d}.flac", buf.getvalue(), wav.size / 8000))
    return out


def folder_audio(path: Path, n: int) -> list[tuple[str, bytes, float]]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in
                                                  (".wav", ".flac", ".ogg", ".opus", ".mp3"))
    if not files:
        sys.exit(f"bench_serve: no audio files in {path}")
    return [(f.name, f.read_bytes(), sf.info(str(f)).duration) for f in files[:n]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, name: str, data: bytes, timeout: float = 600) -> tuple[int, float]:
    """One multipart transcription request: (HTTP status, seconds)."""
    b = uuid.uuid4().hex
    body = (f'--{b}\r\nContent-Disposition: form-data; name="response_format"\r\n\r\njson\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    req = urllib.request.Request(url, body, {"Content-Type": f"multipart/form-data; boundary={b}"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except OSError:
        status = 0
    return status, time.perf_counter() - t0


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_mode(args, batching: bool, audio: list[tuple[str, bytes, float]]) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "asr", "serve", "-m", args.model, "--host", "127.0.0.1", "--port", str(port),
           "--threads", str(args.threads), "--max-batch", str(args.max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--max-queue", str(max(64, 2 * args.concurrency)),
           "--log-level", "warning"] + ([] if batching else ["--no-batching"]) + args.serve_args
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    try:
        end = time.time() + 300
        while True:
            if proc.poll() is not None:
                sys.exit(f"bench_serve: asr serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                get_json(base + "/health")
                break
            except OSError:
                if time.time() > end:
                    sys.exit("bench_serve: the server did not start in 300 s")
                time.sleep(0.3)
        url = base + "/v1/audio/transcriptions"
        post(url, *audio[0][:2])  # warm-up: first-call allocations are not timed
        jobs = [audio[i % len(audio)] for i in range(args.requests)]
        lock = threading.Lock()
        lat: list[float] = []
        failed = 0
        bar = tqdm(total=len(jobs), desc="batching on " if batching else "batching off", unit="req")

        def client() -> None:
            nonlocal failed
            while True:
                with lock:
                    if not jobs:
                        return
                    name, data, _ = jobs.pop()
                status, secs = post(url, name, data)
                with lock:
                    lat.append(secs)
                    failed += status != 200
                    bar.update()

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        bar.close()
        stats = get_json(base + "/health")["batching"]
        audio_s = sum(audio[i % len(audio)][2] for i in range(args.requests))
        q = statistics.quantiles(lat, n=20) if len(lat) >= 2 else lat * 19
        return {"mode": "on" if batching else "off", "requests": args.requests, "failed": failed,
                "concurrency": args.concurrency, "audio_seconds": round(audio_s, 1), "wall_seconds": round(wall, 2),
                "audio_s_per_s": round(audio_s / wall, 1), "p50_s": round(statistics.median(lat), 3),
                "p95_s": round(q[18], 3), "peak_rss_mb": round(peak_rss_mb(proc.pid)),
                "mean_batch": stats["mean_batch_size"], "model_calls": stats["model_calls"]}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", "-m", default="exp/digits/model.pt")
    ap.add_argument("--audio", type=Path, help="a file or folder of recordings (default: FSDD digit strings)")
    ap.add_argument("--requests", type=int, default=96, help="requests per mode")
    ap.add_argument("--concurrency", type=int, default=8, help="client threads sending at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=50.0)
    ap.add_argument("--modes", default="on,off", help="on, off or on,off")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("serve_args", nargs="*", help="more `asr serve` options after --, e.g. -- --method beam")
    args = ap.parse_args()
    if not Path(args.model).is_file():
        sys.exit(f"bench_serve: {args.model}: no such model (make demo writes exp/digits/model.pt)")
    audio = folder_audio(args.audio, args.requests) if args.audio else digit_utterances(min(args.requests, 64))
    rows = [run_mode(args, m == "on", audio) for m in args.modes.split(",")]
    cols = ["mode", "requests", "failed", "concurrency", "audio_seconds", "wall_seconds", "audio_s_per_s",
            "p50_s", "p95_s", "peak_rss_mb", "mean_batch"]
    print("| batching | " + " | ".join(cols[1:]) + " |")
    print("|" + " --- |" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

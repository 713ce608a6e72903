"""Shared fixtures: tiny real audio from the bundled FSDD copy; one torch thread per test process."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT / "recipes" / "digits" / "fsdd"
# The shared speech data sits at ../shared from the project root, for every developer and CI
# (../shared/data/README.md); tests read it there and fail, never skip, without it.
SHARED = ROOT.parent / "shared"
MINI_LIBRISPEECH = ("data", "mini_librispeech", "LibriSpeech", "train-clean-5")
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Several torch processes on two cores spin against each other; tests use one thread.
torch.set_num_threads(1)
torch.set_flush_denormal(True)


def shared_data(*parts: str) -> Path:
    """A path under ../shared; a missing one fails the test with what to do."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path} is missing: the shared data must be at ../shared from the project root "
                    f"({ROOT}); see ../shared/data/README.md", pytrace=False)
    return path


def fsdd_file(digit: int, speaker: str = "jackson", index: int = 0) -> Path:
    return FSDD / f"{digit}_{speaker}_{index}.flac"


def make_digit_utterance(path: Path, digits: list[int], speaker: str = "jackson", index: int = 0,
                         sr_out: int = 8000, gap: float = 0.15) -> float:
    """Concatenate real FSDD recordings of ``digits`` into ``path``; returns duration in seconds."""
    parts = [np.zeros(int(0.1 * 8000), dtype=np.float32)]
    for d in digits:
        wav, sr = sf.read(fsdd_file(d, speaker, index), dtype="float32")
        parts += [wav, np.zeros(int(gap * 8000), dtype=np.float32)]
    wav = np.concatenate(parts)
    if sr_out != 8000:
        from asr.audio import resample

        wav = resample(wav, 8000, sr_out)
    sf.write(path, wav, sr_out)
    return wav.size / sr_out


@pytest.fixture
def digits_manifest(tmp_path: Path):
    """Factory: write n real digit-string utterances and a manifest; returns the manifest path."""

    def make(n: int = 8, speaker: str = "jackson", index_range=range(10, 50), seed: int = 0,
             name: str = "train", min_digits: int = 2, max_digits: int = 4) -> Path:
        return write_digits_manifest(tmp_path, n, name, (speaker,), index_range, seed,
                                     min_digits, max_digits)

    return make


def write_digits_manifest(out: Path, n: int, name: str = "train", speakers=("jackson",),
                          index_range=range(10, 50), seed: int = 0, min_digits: int = 2,
                          max_digits: int = 4) -> Path:
    """Write ``n`` real digit-string utterances under ``out`` and their manifest; returns its path."""
    rng = random.Random(seed)
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        spk = speakers[i % len(speakers)]
        digits = [rng.randrange(10) for _ in range(rng.randint(min_digits, max_digits))]
        p = d / f"{name}-{i:03d}.wav"
        dur = make_digit_utterance(p, digits, spk, rng.choice(list(index_range)))
        lines.append({"id": f"{name}-{i:03d}", "audio": str(p), "duration": dur,
                      "text": " ".join(WORDS[x] for x in digits), "speaker": spk})
    m = out / f"{name}.jsonl"
    m.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return m


TINY_OVERRIDES = [
    "feature.n_mels=40", "feature.f_max=4000", "model.num_layers=2", "model.hidden_size=96",
    "model.subsampling=stack3", "model.dropout=0.0", "augment.specaugment=false",
    "data.max_batch_seconds=30", "train.lr=3e-3", "train.warmup_steps=10", "train.threads=1",
    "train.scheduler=constant", "train.log_every=1000",
]


@pytest.fixture(scope="session")
def tiny_digits_model(tmp_path_factory) -> Path:
    """A small digits model trained once per test session on real FSDD audio (speaker jackson).

    It transcribes its own training utterances correctly (the fixture checks that), which makes
    it a real model for transcription, export and level-invariance tests. Returns model.pt.
    """
    from asr.config import load_config
    from asr.train import train
    from asr.transcribe import load_model

    root = tmp_path_factory.mktemp("tiny_digits")
    # 60 utterances x 60 epochs: ~15 s on one thread, and right on (nearly) all of them.
    train_m = write_digits_manifest(root, 60, "train", seed=0, index_range=range(5, 50),
                                    min_digits=1, max_digits=3)
    cfg = load_config(ROOT / "conf" / "digits.yaml", TINY_OVERRIDES + [
        f"run_dir={root / 'run'}", f"data.train_manifest={train_m}", "data.dev_manifest=",
        "train.epochs=60", "train.patience=0", "data.max_batch_seconds=20",
    ])
    path = train(cfg, resume=False)
    model = load_model(path)
    lines = [json.loads(x) for x in train_m.read_text().splitlines()]
    right = sum(model.transcribe(x["audio"]).text == x["text"] for x in lines)
    assert right >= 55, f"tiny digits model only got {right}/60 training utterances right"
    return path


def chromium(profile: Path):
    """A headless system Chromium through selenium, or a skip (a failure under CI=true: CI must run it).

    Page tests (asr serve's page, report.html) call it with a fresh profile folder and quit it;
    ``get_log("browser")`` returns the page's console messages."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [n for n, v in (("chromium", browser), ("chromedriver", driver)) if not v]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install '.[dev]')")
    if missing:
        msg = f"the page test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; tools/install.sh installs them when run as root")
        pytest.skip(msg)
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not try to download a browser
    o = webdriver.ChromeOptions()
    o.binary_location = browser
    o.add_argument(f"--user-data-dir={profile}")
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"):  # a test microphone
        o.add_argument(arg)
    return webdriver.Chrome(options=o, service=Service(driver))


def write_video(path: Path, wav: np.ndarray, sr: int, kbps: int = 64) -> None:
    """An MP4 as a phone films it: a (tiny) video stream first, the sound as AAC second (PyAV)."""
    import av

    with av.open(str(path), "w") as c:
        video = c.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = c.add_stream("aac", rate=sr, layout="mono")
        audio.bit_rate = kbps * 1000
        for i in range(int(wav.size / sr * 10) + 1):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (i * 7) % 255, np.uint8), format="rgb24")
            frame.pts = i
            for p in video.encode(frame):
                c.mux(p)
        for p in video.encode(None):
            c.mux(p)
        frame = av.AudioFrame.from_ndarray(wav[None, :].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = sr, 0
        for p in audio.encode(frame):
            c.mux(p)
        for p in audio.encode(None):
            c.mux(p)

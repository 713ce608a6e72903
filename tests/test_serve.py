"""`asr serve`: the OpenAI client against a real server on a free loopback port, every error
path (and the server still serving after them), word times in verbose_json/srt/vtt, batching of
concurrent requests, the bounded queue (503 + Retry-After), the request timeout (504)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, chromium, make_digit_utterance, write_video

pytest.importorskip("fastapi", reason="asr serve needs the serve extra: pip install '.[serve]'")
pytest.importorskip("multipart", reason="asr serve needs the serve extra: pip install '.[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="asr serve needs the serve extra: pip install '.[serve]'")
openai = pytest.importorskip("openai", reason="the API tests use the official client: pip install '.[dev]'")

MAX_UPLOAD_MB = 1
MAX_AUDIO_S = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, seconds: float = 600) -> dict:
    # a ceiling only (a busy 2-core machine can take minutes to import torch); a server that
    # exits is reported at once
    end = time.time() + seconds
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"asr serve exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                return json.loads(r.read())
        except (OSError, urllib.error.URLError):
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not come up in {seconds} s")


def post(url: str, fields: list[tuple[str, str]], files: list[tuple[str, str, bytes, str]] = (),
         timeout: float = 120) -> tuple[int, dict, bytes]:
    """A multipart POST with the standard library: (status, headers, body)."""
    b = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{b}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data, ctype in files:
        out.write(f'--{b}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    out.write(f"--{b}--\r\n".encode())
    req = urllib.request.Request(url, out.getvalue(), {"Content-Type": f"multipart/form-data; boundary={b}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def client(url: str):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(tiny_digits_model):
    from asr.transcribe import load_model

    return load_model(tiny_digits_model)


@pytest.fixture(scope="module")
def server(tiny_digits_model):
    """`asr serve` as a user runs it, on a free loopback port, with small limits."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "asr", "serve", "-m", str(tiny_digits_model), "--port", str(port),
         "--name", "digits", "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-audio-seconds", str(MAX_AUDIO_S),
         "--threads", "1", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def digits_wav(tmp_path_factory) -> tuple[Path, str]:
    """A real three-digit utterance (FSDD recordings of speaker jackson) and its transcript."""
    p = tmp_path_factory.mktemp("serve") / "digits.wav"
    make_digit_utterance(p, [3, 1, 4], index=7)
    return p, "three one four"


def test_openai_client_json_text_models(server, model, digits_wav):
    path, _ = digits_wav
    c = client(server)
    assert [m.id for m in c.models.list().data] == ["digits"]
    expected = model.transcribe(str(path)).text
    assert expected  # the tiny model recognises something
    with open(path, "rb") as f:
        r = c.audio.transcriptions.create(file=f, model="digits")
    assert r.text == expected
    assert r.usage.seconds == pytest.approx(sf.info(str(path)).duration, abs=0.01)
    text = c.audio.transcriptions.create(file=("a.wav", path.read_bytes()), model="digits", response_format="text")
    assert text.strip() == expected


def test_a_phone_video_upload_is_transcribed_from_its_sound_track(server, model, digits_wav, tmp_path):
    """An MP4 (video stream first, AAC sound second) as a phone sends it: read through FFmpeg."""
    path, _ = digits_wav
    wav, sr = sf.read(path, dtype="float32")
    video = tmp_path / "clip.mp4"
    write_video(video, wav, sr)
    expected = model.transcribe(str(path)).text
    r = client(server).audio.transcriptions.create(file=("clip.mp4", video.read_bytes(), "video/mp4"),
                                                   model="digits", response_format="verbose_json")
    assert r.text == expected
    assert r.duration == pytest.approx(wav.size / sr, abs=0.01)


def test_word_times_in_verbose_json_srt_vtt(server, model, digits_wav):
    from asr.subtitles import render

    path, _ = digits_wav
    ref = model.transcribe(str(path), timestamps=True)
    assert ref.words, "the tiny model found no words"
    c = client(server)
    v = c.audio.transcriptions.create(file=("d.wav", path.read_bytes()), model="digits",
                                      response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert v.text == ref.text and v.language == "en"
    assert [(w.word, w.start, w.end) for w in v.words] == [(w["word"], w["start"], w["end"]) for w in ref.words]
    assert all(0 <= w.start < w.end <= v.duration + 1e-6 for w in v.words)
    assert " ".join(s.text for s in v.segments) == ref.text
    assert v.segments[0].start == ref.words[0]["start"] and v.segments[-1].end == ref.words[-1]["end"]
    only_words = c.audio.transcriptions.create(file=("d.wav", path.read_bytes()), model="digits",
                                               response_format="verbose_json", timestamp_granularities=["word"])
    assert only_words.segments is None and len(only_words.words) == len(ref.words)
    for fmt in ("srt", "vtt"):
        sub = c.audio.transcriptions.create(file=("d.wav", path.read_bytes()), model="digits", response_format=fmt)
        assert sub == render(ref.words, fmt)
        assert "-->" in sub and ref.words[0]["word"] in sub
    assert c.audio.transcriptions.create(file=("d.wav", path.read_bytes()), model="digits",
                                         response_format="srt").startswith("1\n00:00:0")


def _error(status: int, headers: dict, body: bytes, expect_status: int, code: str | None) -> dict:
    assert status == expect_status, body
    assert {k.lower(): v for k, v in headers.items()}["content-type"].startswith("application/json")
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code
    assert err["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert "Traceback" not in err["message"] and err["message"]
    return err


def test_every_bad_request_is_an_openai_error_and_the_server_keeps_serving(server, digits_wav, tmp_path):
    path, _ = digits_wav
    url = server + "/v1/audio/transcriptions"
    good = ("file", "d.wav", path.read_bytes(), "audio/wav")
    long_wav = tmp_path / "long.flac"
    sf.write(long_wav, np.zeros(8000 * (MAX_AUDIO_S + 5), dtype=np.float32), 8000)
    noise = np.random.default_rng(0).standard_normal(16000 * 40).astype(np.float32) * 0.1
    big = io.BytesIO()
    sf.write(big, noise, 16000, format="WAV", subtype="FLOAT")  # 2.5 MB > 1 MB limit
    cases = [
        ([], [("file", "empty.wav", b"", "audio/wav")], 400, "empty_file", "empty"),
        ([], [("file", "bad.wav", b"RIFF\x00\x01garbage" * 50, "audio/wav")], 400, "invalid_audio", "bad.wav"),
        ([], [("file", "notes.txt", b"hello, not audio\n" * 20, "text/plain")], 415, "unsupported_file_type",
         "notes.txt"),
        ([], [("file", "pic.png", b"\x89PNG\r\n\x1a\n" + bytes(300), "image/png")], 415, "unsupported_file_type",
         "image/png"),
        ([], [("file", "big.wav", big.getvalue(), "audio/wav")], 413, "file_too_large", "1 MB"),
        ([], [("file", "long.flac", long_wav.read_bytes(), "audio/flac")], 400, "audio_too_long", "20 s"),
        ([("response_format", "xml")], [good], 400, "invalid_value", "response_format"),
        ([("timestamp_granularities[]", "char")], [good], 400, "invalid_value", "word and/or segment"),
        ([("language", "fr")], [good], 400, "unsupported_language", "'en'"),
        ([("model", "whisper-1")], [good], 404, "model_not_found", "digits"),
        ([("model", "digits")], [], 400, "missing_file", "file"),
        ([("nbest", "two")], [good], 400, "invalid_value", "nbest must be a whole number"),
        ([("nbest", "2")], [good], 400, "invalid_value", "--method beam"),  # a greedy server: one hypothesis
        ([("file", "just text")], [], 400, "invalid_file", "file"),
    ]
    for fields, files, status, code, words in cases:
        err = _error(*post(url, fields, files), status, code)
        assert words in err["message"], (code, err)
        assert post(url, [], [good])[0] == 200, f"not serving after {code}"
    # not multipart at all, a broken multipart body, an unknown path
    req = urllib.request.Request(url, b'{"file": 1}', {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=60)
    _error(e.value.code, dict(e.value.headers), e.value.read(), 400, "missing_file")
    req = urllib.request.Request(url, b"--x\r\nbroken", {"Content-Type": "multipart/form-data"})  # no boundary
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=60)
    _error(e.value.code, dict(e.value.headers), e.value.read(), 400, None)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(server + "/v1/nothing", timeout=60)
    _error(e.value.code, dict(e.value.headers), e.value.read(), 404, None)
    # the official client sees the same errors as typed exceptions
    with pytest.raises(openai.BadRequestError) as e:
        client(server).audio.transcriptions.create(file=("e.wav", b""), model="digits")
    assert e.value.status_code == 400 and e.value.body["code"] == "empty_file"
    with urllib.request.urlopen(server + "/health", timeout=60) as r:
        health = json.loads(r.read())
    assert health["status"] == "ok" and health["failed"] >= len(cases) and health["requests_in_flight"] == 0


# ---- in-process servers around a model whose calls the test can count and hold ----

class Held:
    """Wraps model.transcribe_batch: records batch sizes; blocks while ``gate`` is clear."""

    def __init__(self, model):
        self.model, self.orig = model, model.transcribe_batch
        self.sizes: list[int] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, wavs, *a, **k):
        self.sizes.append(len(wavs))
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return self.orig(wavs, *a, **k)


@contextlib.contextmanager
def running(model, **opts):
    from asr.serve import ServeOptions, create_app
    from asr.serve_batch import BatchOptions

    batch = BatchOptions(**{k: opts.pop(k) for k in ("max_batch", "max_wait_ms") if k in opts})
    held = Held(model)
    model.transcribe_batch = held
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(model, ServeOptions(name="digits", batch=batch, **opts)),
                                        host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    try:
        wait_healthy(f"http://127.0.0.1:{port}", seconds=60)
        yield f"http://127.0.0.1:{port}", held
    finally:
        held.gate.set()
        srv.should_exit = True
        th.join(30)
        del model.transcribe_batch  # back to the class's method


def test_concurrent_requests_share_one_model_call(model, tmp_path):
    files = []
    for i, digits in enumerate([[1], [2, 5], [7, 0, 9], [8, 8]]):
        p = tmp_path / f"u{i}.wav"
        make_digit_utterance(p, digits, index=11 + i)
        files.append(p)
    expected = [model.transcribe(str(p)).text for p in files]
    with running(model, max_batch=4, max_wait_ms=10_000) as (url, held):
        results: dict[int, str] = {}
        threads = [threading.Thread(target=lambda i=i, p=p: results.__setitem__(
            i, client(url).audio.transcriptions.create(file=(p.name, p.read_bytes()), model="digits").text))
            for i, p in enumerate(files)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert held.sizes == [4]  # four requests, one batched model call
        assert [results[i] for i in range(4)] == expected  # padding in the batch changes nothing
        with urllib.request.urlopen(url + "/health", timeout=30) as r:
            assert json.loads(r.read())["batching"]["mean_batch_size"] == 4.0


def test_long_recording_is_cut_batched_and_stitched(model, tmp_path):
    from asr.transcribe import SegmentOptions

    p = tmp_path / "long.wav"
    make_digit_utterance(p, [1, 2, 3, 4, 5, 6, 7, 8, 9], index=12)  # about 5 s
    saved = model.segment_opts
    model.segment_opts = SegmentOptions(max_seconds=1.5, search_seconds=0.5)  # several pieces
    try:
        ref = model.transcribe(str(p), timestamps=True)
        assert len(ref.segments) >= 3
        with running(model, max_batch=8, max_wait_ms=20) as (url, held):
            v = client(url).audio.transcriptions.create(file=(p.name, p.read_bytes()), model="digits",
                                                        response_format="verbose_json",
                                                        timestamp_granularities=["word"])
            assert sum(held.sizes) == len(ref.segments)
    finally:
        model.segment_opts = saved
    assert v.text == ref.text
    assert [(w.word, w.start, w.end) for w in v.words] == [(w["word"], w["start"], w["end"]) for w in ref.words]
    assert v.duration == pytest.approx(sf.info(str(p)).duration, abs=0.01)


def test_nbest_alternatives_with_scores_in_the_json_formats(model, digits_wav):
    path, _ = digits_wav
    beam = model.with_decoding(method="beam", beam_size=4)
    ref = beam.transcribe(str(path), dataclasses.replace(beam.options, nbest=3))
    assert len(ref.alternatives) >= 2 and ref.alternatives[0][0] == ref.text
    good = [("file", "d.wav", path.read_bytes(), "audio/wav")]
    with running(beam, max_wait_ms=0) as (url, _):
        url += "/v1/audio/transcriptions"
        for fmt in ("json", "verbose_json"):
            status, _, body = post(url, [("nbest", "3"), ("response_format", fmt)], good)
            assert status == 200, body
            out = json.loads(body)
            assert out["text"] == ref.text
            assert [a["text"] for a in out["alternatives"]] == [t for t, _ in ref.alternatives]
            assert [a["score"] for a in out["alternatives"]] == pytest.approx([s for _, s in ref.alternatives],
                                                                              abs=2e-3)
        for value, fmt, words in [("0", "json", "1 or more"), ("1.5", "json", "whole number"),
                                  ("5", "json", "beam keeps (4"), ("2", "srt", "json or verbose_json")]:
            err = _error(*post(url, [("nbest", value), ("response_format", fmt)], good), 400, "invalid_value")
            assert words in err["message"] and err["param"] == "nbest", err
    # a plain request and an nbest one in one batch: a model call each, neither changes the other
    with running(beam, max_batch=2, max_wait_ms=10_000) as (url, held):
        res: dict = {}
        threads = [threading.Thread(target=lambda f=f: res.__setitem__(len(f), json.loads(
            post(url + "/v1/audio/transcriptions", f, good)[2]))) for f in ([], [("nbest", "2")])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        with urllib.request.urlopen(url + "/health", timeout=30) as r:
            stats = json.loads(r.read())["batching"]
        assert (stats["model_calls"], stats["segments"]) == (1, 2) and held.sizes == [1, 1]
    assert "alternatives" not in res[0] and res[0]["text"] == ref.text
    two = beam.transcribe(str(path), dataclasses.replace(beam.options, nbest=2)).alternatives
    assert [a["text"] for a in res[1]["alternatives"]] == [t for t, _ in two]


def test_full_queue_answers_503_with_retry_after_and_timeouts_504(model, digits_wav):
    path, _ = digits_wav
    good = [("file", "d.wav", path.read_bytes(), "audio/wav")]
    with running(model, max_queue=1, max_batch=1, max_wait_ms=0) as (url, held):
        url += "/v1/audio/transcriptions"
        held.gate.clear()
        first: list = []
        th = threading.Thread(target=lambda: first.append(post(url, [], good)))
        th.start()
        assert held.entered.wait(60)  # the first request is inside the model
        status, headers, body = post(url, [], good)
        _error(status, headers, body, 503, "server_busy")
        assert int(headers["retry-after"]) >= 1
        held.gate.set()
        th.join(60)
        assert first[0][0] == 200
        assert post(url, [], good)[0] == 200  # room again
    with running(model, timeout_s=5.0, max_batch=1, max_wait_ms=0) as (url, held):  # 5 s: room for a busy CPU
        url += "/v1/audio/transcriptions"
        held.gate.clear()
        _error(*post(url, [], good), 504, "timeout")
        held.gate.set()
        end = time.time() + 60  # the held call finishes; its result is dropped; the server goes on
        while wait_healthy(url.rsplit("/v1", 1)[0])["requests_in_flight"] and time.time() < end:
            time.sleep(0.2)
        assert wait_healthy(url.rsplit("/v1", 1)[0])["requests_in_flight"] == 0
        assert post(url, [], good)[0] in (200, 504)  # 200 unless the machine is too busy for 5 s


def test_serve_parser_imports_neither_torch_nor_fastapi():
    code = ("import sys; from asr.cli import build_parser; p = build_parser(); "
            "a = p.parse_args(['serve', '-m', 'x.pt', '--port', '9']); assert a.port == 9; "
            "bad = [m for m in ('torch', 'fastapi', 'uvicorn') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_page_transcribes_a_bundled_recording_in_chromium(server, model, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # bundled FSDD recordings (8_jackson_0, 6_jackson_0) with the pauses the model was trained with
    rec = tmp_path / "eight_six.flac"
    make_digit_utterance(rec, [8, 6], index=0)
    ref = model.transcribe(str(rec), timestamps=True)
    assert ref.words, "the tiny model found no words"
    profile = tmp_path / "chromium-profile"  # a fresh profile every run
    d = chromium(profile)
    try:
        d.set_page_load_timeout(60)
        d.get(server + "/")
        WebDriverWait(d, 60).until(lambda d: d.find_element(By.ID, "model").text == "digits")
        d.find_element(By.ID, "file").send_keys(str(rec))
        box = d.find_element(By.ID, "transcript")
        WebDriverWait(d, 120).until(lambda d: box.get_attribute("data-state") in ("done", "error"))
        assert box.get_attribute("data-state") == "done", d.find_element(By.ID, "error").text
        assert box.text == ref.text
        spans = d.find_elements(By.CSS_SELECTOR, "#transcript .word")
        assert [(s.text, float(s.get_attribute("data-start"))) for s in spans] == \
            [(w["word"], w["start"]) for w in ref.words]
        # the word lights up when the audio is at its time
        w = ref.words[0]
        d.execute_script("const p = document.getElementById('player'); p.currentTime = arguments[0];",
                         (w["start"] + w["end"]) / 2)
        WebDriverWait(d, 30).until(lambda d: "active" in spans[0].get_attribute("class"))
        # the srt download is the server's srt
        srt = d.execute_async_script("fetch(document.getElementById('dl-srt').href).then(r => r.text())"
                                     ".then(arguments[arguments.length - 1])")
        api = client(server).audio.transcriptions.create(file=(rec.name, rec.read_bytes()), model="digits",
                                                         response_format="srt")
        assert srt == api and ref.text in srt
        # the microphone path: record (Chromium's fake device plays a tone), encode WAV, upload
        d.find_element(By.ID, "record").click()
        WebDriverWait(d, 30).until(lambda d: d.find_element(By.ID, "record").text == "Stop")
        time.sleep(1.5)
        # forget the file upload's "done", so the wait below sees the recording's own result
        d.execute_script("arguments[0].dataset.state = 'recording';", box)
        d.find_element(By.ID, "record").click()
        WebDriverWait(d, 120).until(lambda d: box.get_attribute("data-state") in ("done", "error"))
        assert box.get_attribute("data-state") == "done", d.find_element(By.ID, "error").text
        assert "recording.wav" not in d.find_element(By.ID, "error").text
        secs = float(d.find_element(By.ID, "summary").text.split(" s of audio")[0].split("·")[-1])
        assert 1.0 < secs < 10.0  # the recording reached the server as audio of about that length
    finally:
        d.quit()

"""Audio soundfile cannot read (AAC in M4A, the sound of an MP4 video) through FFmpeg (asr.media):
read like soundfile's formats, transcribed like a WAV, degraded as aac:KBPS, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import MINI_LIBRISPEECH, ROOT, shared_data, write_video

from asr import media
from asr.audio import AudioError, audio_info, is_audio_file, load_audio
from asr.degrade import DegradeError, parse_kind
from asr.metrics import word_errors
from asr.transcribe import SegmentOptions, iter_segments

UTT = "1088/134315/1088-134315-0000"


def run_asr(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr", *map(str, args)], cwd=ROOT, capture_output=True,
                          timeout=300)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """16 s of real read speech (Mini LibriSpeech, 16 kHz)."""
    path = next(shared_data(*MINI_LIBRISPEECH, *UTT.split("/")[:2]).glob(UTT.split("/")[2] + ".*"))
    return load_audio(path)


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((out - ref).astype(np.float64) ** 2)))


def test_an_m4a_reads_like_the_audio_it_holds(speech, tmp_path):
    m4a = tmp_path / "talk.m4a"
    m4a.write_bytes(media.encode(speech, 16000, 64))
    assert is_audio_file(m4a) and is_audio_file("film.MP4") and is_audio_file("a.webm")
    seconds, sr, ch = audio_info(m4a)
    assert sr == 16000 and ch == 1 and seconds == pytest.approx(speech.size / 16000, abs=1e-3)
    wav = load_audio(m4a)
    assert wav.size == speech.size  # the encoder's priming and end padding are cut (header length)
    assert snr_db(speech, wav) > 12  # aligned sample for sample: a delay would make this negative
    assert np.array_equal(load_audio(m4a.read_bytes()), wav)  # bytes (stdin, uploads) as a file
    assert load_audio(m4a, sample_rate=8000).size == speech.size // 2

    # a segment (manifest offset/duration) is a seek, deterministic and of the asked length; AAC's noise
    # substitution draws from the decoder's running state, so it is close to, not equal to, that span of
    # the whole-file decode
    seg = load_audio(m4a, offset=4.25, duration=3.0)
    assert seg.size == 48000 and np.array_equal(seg, load_audio(m4a, offset=4.25, duration=3.0))
    span = wav[68000:116000]
    assert np.corrcoef(seg, span)[0, 1] > 0.9

    # long audio is read block by block (asr transcribe): the blocks are the whole decode, in order
    segs = list(iter_segments(str(m4a), 16000, SegmentOptions(max_seconds=5.0, search_seconds=1.5)))
    assert len(segs) >= 4
    assert np.array_equal(np.concatenate([s for _, s in segs]), wav)

    stereo = tmp_path / "stereo.m4a"  # downmixed to the mean of the channels, as soundfile's formats
    import av

    with av.open(str(stereo), "w") as c:
        st = c.add_stream("aac", rate=16000, layout="stereo")
        st.bit_rate = 128000
        frame = av.AudioFrame.from_ndarray(np.stack([speech, np.zeros_like(speech)]), format="fltp",
                                           layout="stereo")
        frame.sample_rate, frame.pts = 16000, 0
        for p in [*st.encode(frame), *st.encode(None)]:
            c.mux(p)
    assert audio_info(stereo)[2] == 2
    assert snr_db(speech / 2, load_audio(stereo)) > 12


def test_a_video_and_an_m4a_transcribe_like_the_wav(tiny_digits_model, tmp_path):
    """`asr transcribe` on a phone's video (video stream first, AAC second) and on an M4A of the
    same digits: the same words as from the WAV, which are (nearly: three utterances run together) the
    spoken digits."""
    manifest = tiny_digits_model.parent.parent / "train.jsonl"  # the tiny model knows these recordings
    lines = [json.loads(x) for x in manifest.read_text().splitlines()][:3]
    wav = np.concatenate([sf.read(x["audio"], dtype="float32")[0] for x in lines]
                         + [np.zeros(800, np.float32)])
    sf.write(tmp_path / "digits.wav", wav, 8000)
    write_video(tmp_path / "digits.mp4", wav, 8000)
    (tmp_path / "digits.m4a").write_bytes(media.encode(wav, 8000, 48))
    r = run_asr("transcribe", tiny_digits_model, tmp_path / "digits.wav", tmp_path / "digits.mp4",
                tmp_path / "digits.m4a", "--format", "json")
    assert r.returncode == 0, r.stderr.decode()
    texts = [json.loads(line)["text"] for line in r.stdout.decode().splitlines() if line.strip()]
    assert len(texts) == 3
    assert texts[1] == texts[0] and texts[2] == texts[0], texts  # the container and codec change nothing
    assert word_errors(" ".join(x["text"] for x in lines), texts[0]).errors <= 2, texts  # the spoken digits


def test_bad_media_files_are_clear_errors(speech, tmp_path):
    m4a = media.encode(speech[:32000], 16000, 32)
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(m4a[: len(m4a) // 3])  # an interrupted download
    with pytest.raises(AudioError, match=r"cut\.m4a: cannot decode audio \(soundfile: .*; FFmpeg: "):
        load_audio(cut)
    silent_film = tmp_path / "silent.mp4"
    import av

    with av.open(str(silent_film), "w") as c:
        v = c.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            f = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    with pytest.raises(AudioError, match=r"silent\.mp4: cannot decode audio \(soundfile: .*; FFmpeg: no audio stream "
                                         r"in this file \(video\)\)"):
        load_audio(silent_film)
    with pytest.raises(AudioError, match="no audio stream"):
        audio_info(silent_film)


def test_degrade_aac_writes_m4a_that_reads_back(speech, tmp_path):
    kind = parse_kind("aac:24")
    assert kind.codec and kind.suffix == ".m4a" and kind.folder == "aac_24"
    with pytest.raises(DegradeError, match=r"AAC bit rate must be 8-256 kbit/s"):
        parse_kind("aac:2")
    src = tmp_path / "src"
    src.mkdir()
    sf.write(src / "a.flac", speech[:80000], 16000)
    (src / "m.jsonl").write_text(json.dumps({"id": "a", "audio": "a.flac", "duration": 5.0, "text": "A B"}) + "\n")
    r = run_asr("data", "degrade", src / "m.jsonl", "--kind", "aac:24", "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr.decode()
    out = [json.loads(x) for x in (tmp_path / "out" / "aac_24" / "manifest.jsonl").read_text().splitlines()]
    path = tmp_path / "out" / "aac_24" / out[0]["audio"]
    assert path.suffix == ".m4a" and out[0]["text"] == "A B"
    kbps = path.stat().st_size * 8 / 5.0 / 1000
    assert 18 < kbps < 32, kbps  # the asked 24 kbit/s, plus the container
    back = load_audio(path)
    assert back.size == 80000 and snr_db(speech[:80000], back) > 5
    # AAC at 24 kbit/s keeps only the band below ~7 kHz at 16 kHz: the top mel bins empty, as MP3 does
    spec = np.abs(np.fft.rfft(back)) ** 2
    freqs = np.fft.rfftfreq(back.size, 1 / 16000)
    assert spec[freqs > 7500].sum() < 1e-3 * spec.sum()

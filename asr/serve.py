"""``asr serve``: the OpenAI-compatible transcription endpoint and a page to try it.

    POST /v1/audio/transcriptions   multipart: file, model, response_format (json | text | srt |
                                    vtt | verbose_json), timestamp_granularities[], language,
                                    nbest (json formats: the N best texts with their scores)
    GET  /v1/models                 the served model
    GET  /health                    status, limits, queue and batching figures
    GET  /                          the page (asr/static/): upload or record, words highlighted
                                    as the audio plays, srt/vtt download

Concurrent requests are batched (asr.serve_batch). Every failure is a JSON error in OpenAI's
shape ``{"error": {"message", "type", "param", "code"}}``: 400 bad or empty file or field,
404 unknown model or path, 413 upload too large, 415 not an audio format we read, 503 queue
full (with Retry-After), 504 past the request timeout; never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from asr.audio import AudioError, audio_info, is_audio_file
from asr.serve_batch import Batcher, BatchOptions, transcribe_segments
from asr.subtitles import cues, render
from asr.transcribe import iter_segments

log = logging.getLogger("asr.serve")
STATIC = Path(__file__).parent / "static"
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
# Content types of formats soundfile reads: such an upload that fails to decode is damaged (400);
# any other type that fails is a format we do not read (415).
AUDIO_TYPES = {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/flac", "audio/x-flac",
               "audio/ogg", "audio/opus", "audio/mpeg", "audio/mp3", "audio/aiff", "audio/x-aiff",
               "audio/basic", "application/ogg",
               # read through FFmpeg (asr.media): AAC, video soundtracks, AMR, WMA
               "audio/mp4", "audio/x-m4a", "audio/aac", "audio/webm", "video/mp4", "video/webm",
               "video/quicktime", "video/x-matroska", "audio/amr", "audio/x-ms-wma"}


@dataclass(frozen=True)
class ServeOptions:
    name: str = "asr"  # model id in /v1/models and the `model` field
    language: str = "en"  # the language the model transcribes (checked against `language`)
    max_upload_mb: float = 100.0  # largest request body (413 past it)
    max_audio_seconds: float = 3600.0  # longest recording (400 past it)
    timeout_s: float = 300.0  # a request taking longer gets 504
    max_queue: int = 64  # requests admitted at once (503 past it)
    batch: BatchOptions = field(default_factory=BatchOptions)


class ApiError(Exception):
    """An error answered as ``{"error": {...}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: a POST body past ``limit`` bytes is read to its end (discarded, so the
    client can read the answer), then answered 413; memory never holds more than one chunk."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        total = 0

        async def limited():
            nonlocal total
            msg = await receive()
            if msg["type"] == "http.request":
                total += len(msg.get("body", b""))
                if total > self.limit:
                    more = msg.get("more_body", False)
                    while more and total < 4 * self.limit + (64 << 20):  # drain, but not forever
                        m = await receive()
                        total += len(m.get("body", b""))
                        more = m.get("more_body", False) and m["type"] == "http.request"
                    raise ApiError(413, f"the upload is larger than this server's limit of "
                                   f"{self.limit / 1e6:g} MB (asr serve --max-upload-mb)",
                                   "file", "file_too_large")
            return msg

        await self.app(scope, limited, send)


def _upload_seconds(path: Path, upload: UploadFile) -> float:
    """The upload's duration in seconds; 400 (damaged audio) or 415 (not a format we read) for one
    that neither soundfile nor FFmpeg can open."""
    try:
        return audio_info(path)[0]
    except AudioError as e:
        reason = str(e).partition("cannot read audio header (")[2][:-1] or str(e)
    name = upload.filename or "file"
    ext = Path(name).suffix.lower().lstrip(".")
    ctype = (upload.content_type or "").split(";")[0].strip().lower()
    if is_audio_file(name) or ctype in AUDIO_TYPES or (not ext and ctype in ("", "application/octet-stream")):
        raise ApiError(400, f"{name}: cannot decode audio ({reason.replace(str(path), name)}); "
                       f"the file is damaged or not audio", "file", "invalid_audio")
    raise ApiError(415, f"{name}: unsupported file type ({ctype or 'no content type'}); this server "
                   f"reads WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, M4A/AAC, AMR, WMA and the sound of MP4/MOV/"
                   f"MKV/WebM videos: convert it first "
                   f"(e.g. ffmpeg -i {name} out.flac)", "file", "unsupported_file_type")


def _save_upload(upload: UploadFile, max_seconds: float) -> tuple[Path, float]:
    """Copy the upload to a temporary file (runs in a thread); check it is non-empty readable audio."""
    suffix = Path(upload.filename or "").suffix
    suffix = suffix if suffix[1:].isalnum() and len(suffix) <= 6 else ""
    fd, tmp = tempfile.mkstemp(prefix="asr-serve-", suffix=suffix)
    path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            upload.file.seek(0)
            shutil.copyfileobj(upload.file, out, 1 << 20)
        name = upload.filename or "file"
        if path.stat().st_size == 0:
            raise ApiError(400, f"{name}: the file is empty (0 bytes)", "file", "empty_file")
        seconds = _upload_seconds(path, upload)
        if seconds <= 0:
            raise ApiError(400, f"{name}: the audio is empty (0 samples)", "file", "empty_file")
        if seconds > max_seconds:
            raise ApiError(400, f"{name}: {seconds:.0f} s of audio is longer than this server's limit "
                           f"of {max_seconds:g} s (asr serve --max-audio-seconds)", "file", "audio_too_long")
        return path, seconds
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _segments_json(t, tokenizer) -> list[dict]:
    """verbose_json segments: the subtitle cues (words grouped at pauses), in Whisper's fields."""
    out = []
    words = t.words
    pos = 0
    for i, (start, end, text) in enumerate(cues(words)):
        n = len(text.split())
        conf = [max(w.get("confidence", 1.0), 1e-6) for w in words[pos: pos + n]]
        pos += n
        raw = text.encode()
        out.append({"id": i, "seek": int(round(start * 100)), "start": round(start, 3), "end": round(end, 3),
                    "text": text, "tokens": tokenizer.encode(text) if text else [], "temperature": 0.0,
                    "avg_logprob": round(sum(math.log(c) for c in conf) / max(1, len(conf)), 4),
                    "compression_ratio": round(len(raw) / max(1, len(zlib.compress(raw))), 3),
                    "no_speech_prob": 0.0})  # not estimated
    return out


def format_response(t, fmt: str, granularities: list[str], language: str, tokenizer):
    """The response body for one Transcript in OpenAI's ``response_format`` (json formats: plus
    ``alternatives`` [{"text", "score"}], best first, when the request asked for ``nbest``)."""
    alts = {"alternatives": [{"text": a, "score": round(s, 3)} for a, s in t.alternatives]} if t.alternatives else {}
    if fmt == "json":
        return JSONResponse({"text": t.text, "usage": {"type": "duration", "seconds": round(t.duration, 3)},
                             **alts})
    if fmt == "text":
        return PlainTextResponse(t.text + "\n")
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(render(t.words, fmt))
    body = {"task": "transcribe", "language": language, "duration": round(t.duration, 3), "text": t.text,
            "usage": {"type": "duration", "seconds": round(t.duration, 3)}}
    if "segment" in granularities:
        body["segments"] = _segments_json(t, tokenizer)
    if "word" in granularities:
        body["words"] = [{"word": w["word"], "start": w["start"], "end": w["end"],
                          "confidence": w.get("confidence")} for w in t.words]
    return JSONResponse({**body, **alts})


def _field(form, name: str, default: str = "") -> str:
    v = form.get(name, default)
    if not isinstance(v, str):
        raise ApiError(400, f"'{name}' must be a text field, not a file", name, "invalid_value")
    return v.strip()


def _nbest(value: str, fmt: str, options) -> int:
    """The ``nbest`` field checked against the format and the server's decoding; 0 when absent."""
    if not value:
        return 0
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ApiError(400, f"nbest must be a whole number of hypotheses, 1 or more; got '{value}'",
                       "nbest", "invalid_value")
    if fmt not in ("json", "verbose_json"):
        raise ApiError(400, f"nbest alternatives come in response_format json or verbose_json, not {fmt}",
                       "nbest", "invalid_value")
    if n > 1 and not options.uses_beam:
        raise ApiError(400, f"nbest={n} needs the beam search, and this server decodes greedily (one "
                       "hypothesis); start it with asr serve --method beam", "nbest", "invalid_value")
    if n > options.beam_size:
        raise ApiError(400, f"nbest={n} is more than this server's beam keeps ({options.beam_size}; "
                       "asr serve --beam-size)", "nbest", "invalid_value")
    return n


def create_app(model, opts: ServeOptions = ServeOptions()) -> FastAPI:
    """The FastAPI application serving ``model`` (an ``asr.transcribe.Model``)."""
    batcher = Batcher(model, opts.batch)
    state = {"active": 0, "latency": 1.0, "served": 0, "failed": 0, "started": time.time()}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="asr", version=_version(), lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.add_middleware(BodyLimit, limit=int(opts.max_upload_mb * 1e6))
    app.state.batcher, app.state.serve = batcher, state

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        if e.status >= 400 and e.status != 503:
            state["failed"] += 1
        return error_response(e.status, e.message, e.param, e.code, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e: StarletteHTTPException):
        msg = e.detail if isinstance(e.detail, str) else str(e.detail)
        if e.status_code == 404:
            msg = f"{request.method} {request.url.path}: no such endpoint (see /docs)"
        return error_response(e.status_code, msg, None, None, getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        return error_response(400, f"invalid request: {e.errors()[:1]}")

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):  # logged with its traceback by the server
        log.error("internal error on %s: %r", request.url.path, e)
        return error_response(500, "internal server error (see the server log)")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": opts.name, "language": opts.language,
                "requests_in_flight": state["active"], "queued_segments": batcher.waiting(),
                "served": state["served"], "failed": state["failed"],
                "uptime_seconds": round(time.time() - state["started"], 1),
                "limits": {"max_upload_mb": opts.max_upload_mb, "max_audio_seconds": opts.max_audio_seconds,
                           "timeout_seconds": opts.timeout_s, "max_queue": opts.max_queue},
                "batching": dict(max_batch=opts.batch.max_batch, max_wait_ms=opts.batch.max_wait_ms,
                                 **batcher.stats.to_dict())}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(model, opts)]}

    @app.get("/v1/models/{name}")
    async def model_card(name: str):
        if name != opts.name:
            raise ApiError(404, f"the model '{name}' does not exist; this server has '{opts.name}'",
                           "model", "model_not_found")
        return _model_card(model, opts)

    @app.post("/v1/audio/transcriptions", openapi_extra=_OPENAPI_FORM)
    async def transcriptions(request: Request):
        if state["active"] >= opts.max_queue:
            async for _ in request.stream():  # read the upload so the client can read the answer
                pass
            retry = max(1, math.ceil(state["latency"]))
            raise ApiError(503, f"the server is busy ({state['active']} requests in progress); retry in "
                           f"{retry} s", None, "server_busy", {"Retry-After": str(retry)})
        state["active"] += 1
        t0 = time.perf_counter()
        try:
            resp = await asyncio.wait_for(_transcribe(request), opts.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, f"the transcription took longer than the request timeout of "
                           f"{opts.timeout_s:g} s (asr serve --timeout)", None, "timeout") from None
        finally:
            state["active"] -= 1
        state["latency"] = 0.8 * state["latency"] + 0.2 * (time.perf_counter() - t0)
        state["served"] += 1
        return resp

    async def _transcribe(request: Request):
        async with request.form(max_files=1, max_fields=32, max_part_size=64 << 10) as form:
            upload = form.get("file")
            if upload is None:
                raise ApiError(400, "missing the 'file' field: send the audio as multipart/form-data",
                               "file", "missing_file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "'file' must be a file upload (multipart/form-data)", "file", "invalid_file")
            name = _field(form, "model")
            if name and name != opts.name:
                raise ApiError(404, f"the model '{name}' does not exist; this server has '{opts.name}'",
                               "model", "model_not_found")
            fmt = _field(form, "response_format", "json") or "json"
            if fmt not in FORMATS:
                raise ApiError(400, f"response_format must be one of {', '.join(FORMATS)}; got '{fmt}'",
                               "response_format", "invalid_value")
            lang = _field(form, "language").lower()
            if lang and lang != opts.language.lower():
                raise ApiError(400, f"this model transcribes language '{opts.language}'; got '{lang}'",
                               "language", "unsupported_language")
            grans = [g.strip() for key in ("timestamp_granularities[]", "timestamp_granularities")
                     for g in form.getlist(key) if isinstance(g, str)] or ["segment"]
            bad = [g for g in grans if g not in ("word", "segment")]
            if bad:
                raise ApiError(400, f"timestamp_granularities must be word and/or segment; got '{bad[0]}'",
                               "timestamp_granularities", "invalid_value")
            if _field(form, "stream").lower() in ("true", "1"):
                raise ApiError(400, "streaming is not supported; leave 'stream' out", "stream", "invalid_value")
            temp = _field(form, "temperature", "0") or "0"
            try:
                float(temp)
            except ValueError:
                raise ApiError(400, f"temperature must be a number; got '{temp}'", "temperature",
                               "invalid_value") from None
            nbest = _nbest(_field(form, "nbest"), fmt, model.options)
            path, _ = await asyncio.to_thread(_save_upload, upload, opts.max_audio_seconds)
        try:
            segs = iter_segments(path, model.sample_rate, model.segment_opts)
            t = await transcribe_segments(batcher, segs, fmt in ("srt", "vtt", "verbose_json"), nbest)
        except AudioError as e:
            raise ApiError(400, str(e).replace(str(path), upload.filename or "file"), "file",
                           "invalid_audio") from None
        finally:
            path.unlink(missing_ok=True)
        return format_response(t, fmt, grans, opts.language, model.tokenizer)

    return app


def _model_card(model, opts: ServeOptions) -> dict:
    created = int(model.path.stat().st_mtime) if model.path.is_file() else 0
    return {"id": opts.name, "object": "model", "created": created, "owned_by": "asr",
            "kind": model.kind, "language": opts.language, "sample_rate": model.sample_rate}


def _version() -> str:
    from asr import __version__

    return __version__


_OPENAPI_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"},
        "model": {"type": "string"},
        "response_format": {"type": "string", "enum": list(FORMATS), "default": "json"},
        "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["word", "segment"]}},
        "language": {"type": "string"},
        "temperature": {"type": "number"},
        "nbest": {"type": "integer", "minimum": 1, "description": "also return the N best texts with scores"},
        "prompt": {"type": "string"}}}}}}}


def serve(model, opts: ServeOptions, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the server until interrupted (uvicorn)."""
    import uvicorn

    uvicorn.run(create_app(model, opts), host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=5)

"""`asr serve`: the transcription service (OpenAI-compatible endpoint and a page; see asr.serve).

Nothing heavy is imported at parse time: torch, FastAPI and the model load in ``cmd_serve``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asr.cli_decode import add_decode_args as _add_decode_args
from asr.cli_decode import decode_overrides as _decode_overrides
from asr.errors import CLIError


def cmd_serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart)
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise CLIError(f"asr serve needs FastAPI, uvicorn and python-multipart ({e}): "
                       f"pip install 'asr[serve]'") from None
    from asr.serve import ServeOptions, serve
    from asr.serve_batch import BatchOptions
    from asr.transcribe import load_model

    for name in ("max_batch", "max_queue", "workers"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("max_upload_mb", "max_audio_seconds", "timeout"):
        if getattr(args, name) <= 0:
            raise CLIError(f"--{name.replace('_', '-')} must be positive")
    if args.max_wait_ms < 0:
        raise CLIError("--max-wait-ms must be 0 or more")
    if not Path(args.model).is_file():
        raise CLIError(f"{args.model}: model file does not exist")
    _check_address(args.host, args.port)  # before the model loads, not after
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    overrides = _decode_overrides(args)
    # with_decoding loads the LM and lexicon now, not on the first request
    model = load_model(args.model, args.device, quantize=args.quantize or "").with_decoding(**overrides)
    opts = ServeOptions(
        name=args.name or _default_name(Path(args.model)), language=args.language,
        max_upload_mb=args.max_upload_mb, max_audio_seconds=args.max_audio_seconds,
        timeout_s=args.timeout, max_queue=args.max_queue,
        batch=BatchOptions(max_batch=1 if args.no_batching else args.max_batch,
                           max_wait_ms=0.0 if args.no_batching else args.max_wait_ms,
                           workers=args.workers))
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    print(f"asr: serving {args.model} as '{opts.name}' ({model.kind}, {model.options.method} decoding) "
          f"at {url}/  (API: {url}/v1/audio/transcriptions, docs: {url}/docs)", file=sys.stderr, flush=True)
    serve(model, opts, args.host, args.port, args.log_level)
    return 0


def _check_address(host: str, port: int) -> None:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise CLIError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise CLIError(f"cannot listen on {host}:{port} ({e.strerror}); is another server running "
                           f"there? Choose another --port") from None


def _default_name(path: Path) -> str:
    """exp/digits/model.pt -> "digits"; other.pt -> "other"."""
    return path.resolve().parent.name if path.stem == "model" and path.resolve().parent.name else path.stem


def add_serve_parser(sub) -> None:
    s = sub.add_parser(
        "serve", help="run a transcription service: OpenAI-compatible API and a page to try it",
        description="Serve a model over HTTP: POST /v1/audio/transcriptions (the OpenAI API: json, text, "
        "srt, vtt, verbose_json with word times), GET /v1/models, GET /health, and a page at /. "
        "Concurrent requests are batched into one model call.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--model", "-m", required=True, help="checkpoint or exported model (.pt, .ts, .onnx)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--name", default="", help="model id for clients (default: the file's stem, or its folder's name for model.pt)")
    s.add_argument("--language", default="en", help="language the model transcribes (requests are checked)")
    s.add_argument("--workers", type=int, default=1, help="model calls running at once")
    s.add_argument("--threads", type=int, default=0, help="torch threads per model call (0: torch's default)")
    s.add_argument("--max-batch", type=int, default=8, help="segments of concurrent requests in one model call")
    s.add_argument("--max-wait-ms", type=float, default=50.0,
                   help="longest a request waits for others to share its batch")
    s.add_argument("--no-batching", action="store_true", help="one segment per model call")
    s.add_argument("--max-queue", type=int, default=64, help="requests admitted at once; more get 503")
    s.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload; larger gets 413")
    s.add_argument("--max-audio-seconds", type=float, default=3600.0, help="longest recording; longer gets 400")
    s.add_argument("--timeout", type=float, default=300.0, help="seconds before a request gets 504")
    s.add_argument("--quantize", choices=["int8"], help="dynamic int8 quantisation of a checkpoint (CPU)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    _add_decode_args(s)
    s.set_defaults(func=cmd_serve)

"""The ``asr`` command: ``asr train | evaluate | transcribe | average ...``.

Every expected failure (bad config, missing files, unreadable audio, bad checkpoints)
is an ``asr.errors.ASRError``, caught once in :func:`main` and printed as one
``asr: error: ...`` line; exit code 2 for usage, 1 for failures, never a traceback.

Adding a subcommand: put it in ``asr/cli_<noun>.py`` with ``add_<noun>_parsers(sub)`` and
its ``cmd_*`` functions, and register it in :func:`build_parser`. At module level import
only the standard library and ``asr.errors`` (``asr --help`` must not import torch); import
torch and the rest inside ``cmd_*``. Never import ``asr.cli`` from it (an import cycle);
``--device`` is ``asr.runtime.resolve_device``. Raise ``UsageError`` (alias ``CLIError``)
for a command line that asks for something impossible, another ``ASRError`` kind (or a new
one in ``asr/errors.py``) for a failure; do not catch and print them yourself. Add its bad
inputs to ``CASES`` in tests/test_errors.py (a test fails until you do);
tests/test_imports.py checks the cycles and the torch-free help.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from asr.cli_data import add_data_parsers
from asr.cli_decode import add_decode_args as _add_decode_args
from asr.cli_decode import decode_overrides as _decode_overrides
from asr.cli_lm import add_lm_parsers
from asr.errors import ASRError, CLIError, ManifestError, one_line


def cmd_train(args) -> int:
    from asr.config import load_config
    from asr.train import train

    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    cfg = load_config(args.config, overrides)
    out = train(cfg, resume=not args.no_resume, max_steps=args.max_steps, save_every_steps=args.save_every)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, only rank 0 reports
        print(out)
    return 0


def _file_info(path: str | Path) -> dict:
    """Path, size, modification time and a SHA-256 prefix: enough to tell which file was used."""
    import hashlib
    import time

    p = Path(path)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    st = p.stat()
    return {"path": str(p.resolve()), "bytes": st.st_size, "sha256": h.hexdigest()[:16],
            "modified": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime))}


def cmd_evaluate(args) -> int:
    import dataclasses
    import platform

    import torch

    import asr
    from asr.config import to_dict
    from asr.data import read_manifest
    from asr.evaluate import evaluate
    from asr.report import write_report
    from asr.transcribe import load_model

    overrides = _decode_overrides(args)  # a bad flag is reported before the model loads
    model = load_model(args.model, args.device, quantize=args.quantize or "", amp=args.amp)
    model = model.with_decoding(**overrides)
    bad_lines: list[str] = []
    utts = read_manifest(args.manifest, strict=False, skipped=bad_lines)
    if args.limit:
        utts = utts[: args.limit]
    if not utts:
        raise ManifestError(f"{args.manifest}: no utterances to evaluate; check it with "
                            f"`asr data validate {args.manifest}`")
    res = evaluate(model, utts)
    options = res.options or model.options  # a phone model is decoded with the beam search
    out_dir = Path(args.out or Path(args.model).parent / f"eval-{Path(args.manifest).stem}-{options.method}")
    state = getattr(model, "train_state", None) or {}
    meta = {
        "model": str(Path(args.model).resolve()),
        "manifest": str(Path(args.manifest).resolve()),
        "model_file": _file_info(args.model),
        "model_kind": model.kind,
        "manifest_file": dict(_file_info(args.manifest), utterances_used=len(utts),
                              lines_skipped=bad_lines),
        "decode": dataclasses.asdict(options),
        "lm_file": _file_info(options.lm_path) if options.lm_path else None,
        "model_config": {k: to_dict(getattr(model.config, k)) for k in ("feature", "model", "tokenizer")},
        "train_state": {k: state.get(k) for k in ("epoch", "step", "best_wer") if k in state} or None,
        "device": str(model.device),
        "command": " ".join(["asr"] + sys.argv[1:]) if sys.argv and sys.argv[0].endswith(("asr", "__main__.py")) else None,
        "versions": {"asr": asr.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    write_report(res, out_dir, meta, sources=utts, embed_mb=args.embed_audio_mb)
    per = f"PER {100 * res.per:.2f}% (greedy)  " if res.phones.ref else ""
    print(f"WER {100 * res.wer:.2f}%  CER {100 * res.cer:.2f}%  {per}"
          f"({len(res.utts)} utterances, {res.words.ref} words, {len(res.failed)} failed"
          f"{f', {len(bad_lines)} manifest lines skipped' if bad_lines else ''})  "
          f"report: {out_dir / 'report.html'}")
    for utt_id, reason in res.failed[:20]:  # all of them, with the reason, in the report's "failed"
        print(f"asr: skipped {utt_id}: {one_line(reason)}", file=sys.stderr)
    if len(res.failed) > 20:
        print(f"asr: ... and {len(res.failed) - 20} more skipped utterances (see report.json)", file=sys.stderr)
    return 1 if res.failed and not res.utts else 0


def cmd_compare(args) -> int:
    from asr.compare import compare_reports, format_comparison
    from asr.report import read_report

    try:
        a, b = read_report(args.report_a), read_report(args.report_b)
    except ValueError as e:
        raise ASRError(str(e)) from None
    c = compare_reports(a, b)
    if args.json:
        print(json.dumps(c, indent=1, ensure_ascii=False))
    else:
        sys.stdout.write(format_comparison(c, args.limit))
    return 0


MODEL_SUFFIXES = (".pt", ".ts", ".onnx", ".pth")


def _expand_inputs(inputs: list[str]) -> list[str]:
    """Files as given, folders as their audio files (recursively, sorted), "-" as standard input."""
    from asr.audio import is_audio_file

    out: list[str] = []
    for x in inputs:
        p = Path(x)
        if x != "-" and p.is_dir():
            found = sorted(str(f) for f in p.rglob("*")
                           if f.is_file() and is_audio_file(f))
            if not found:
                print(f"asr: warning: {x}: no audio files in this folder", file=sys.stderr)
            out += found
        else:
            out.append(x)
    return out


def _out_name(path: str, fmt: str, used: set[str]) -> str:
    stem = "stdin" if path == "-" else Path(path).stem
    name, i = f"{stem}.{fmt}", 2
    while name in used:
        name, i = f"{stem}-{i}.{fmt}", i + 1
    used.add(name)
    return name


def cmd_transcribe(args) -> int:
    from tqdm import tqdm

    from asr.audio import AudioError, audio_info
    from asr.subtitles import render
    from asr.transcribe import load_model, read_stdin

    paths = list(args.inputs)
    if args.model is None:
        # `asr transcribe MODEL.pt FILE...` also works
        if not paths or not paths[0].endswith(MODEL_SUFFIXES):
            raise CLIError("give the model with --model MODEL.pt (or as the first argument)")
        args.model, paths = paths[0], paths[1:]
    if not paths:
        raise CLIError("no audio files given")
    paths = _expand_inputs(paths)
    if not paths:
        raise CLIError("no audio files found in the given folders")
    if paths.count("-") > 1:
        raise CLIError("standard input (-) can be given only once")
    if args.format in ("srt", "vtt") and len(paths) > 1 and not args.output_dir:
        raise CLIError(f"--format {args.format} with several inputs needs --output-dir (one file per input)")
    overrides = _decode_overrides(args)  # a bad flag is reported before the model loads
    model = load_model(args.model, args.device, quantize=args.quantize or "", amp=args.amp)
    model = model.with_decoding(**overrides)
    if args.max_segment_seconds:
        import dataclasses

        model.segment_opts = dataclasses.replace(model.segment_opts, max_seconds=args.max_segment_seconds,
                                                 search_seconds=min(model.segment_opts.search_seconds,
                                                                    args.max_segment_seconds / 3))
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for p in paths:
        try:
            total += audio_info(p)[0] if p != "-" else 0.0
        except AudioError:  # unreadable files are reported when their turn comes
            pass
    show = not args.quiet and (len(paths) > 1 or total > 60)
    bar = tqdm(total=round(total, 1), unit="audio-s", desc="transcribe", disable=None if show else True,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} audio-s [{elapsed}<{remaining}]")
    timestamps = args.format in ("json", "srt", "vtt")
    failed, used = 0, set()
    for p in paths:
        try:
            src = read_stdin() if p == "-" else p
            t = model.transcribe(src, timestamps=timestamps, progress=bar.update)
        except (AudioError, RuntimeError, ValueError, OSError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            name = "<stdin>" if p == "-" else p
            bar.write(f"asr: error: {msg if msg.startswith(name) else f'{name}: {msg}'}", file=sys.stderr)
            failed += 1
            continue
        prefix = f"{p}\t" if out_dir is None and len(paths) > 1 else ""
        if args.format == "json":
            text = json.dumps(dict(audio=p, **t.to_dict()), ensure_ascii=False)
        elif args.format in ("srt", "vtt"):
            text = render(t.words, args.format)
        elif model.options.nbest > 1:  # one line per hypothesis: rank, score, text
            text = "\n".join(f"{prefix}{i}\t{s:.3f}\t{a}" for i, (a, s) in enumerate(t.alternatives, 1))
        else:
            text = prefix + t.text
        if out_dir is not None:
            (out_dir / _out_name(p, args.format, used)).write_text(text + "\n")
        else:
            bar.write(text.rstrip("\n"), file=sys.stdout)
    bar.close()
    if failed and len(paths) > 1:
        print(f"asr: {failed} of {len(paths)} inputs failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_export(args) -> int:
    from asr.export import export_model

    out = args.out or str(Path(args.model).with_suffix(
        (".int8" if args.quantize else "") + (".onnx" if args.format == "onnx" else ".ts")))
    r = export_model(args.model, out, args.format, args.quantize or "")
    print(f"{r['path']}: {r['format']}{' int8' if r['quantize'] else ''}, exported in {r['seconds']:.1f} s; "
          f"max |log-prob difference| from the checkpoint on a test input: {r['max_abs_diff']:.2e}")
    return 0


def cmd_average(args) -> int:
    from asr.checkpoint import average_checkpoints, best_checkpoints

    paths: list[Path] = []
    for c in args.checkpoints:
        p = Path(c)
        paths += best_checkpoints(p, args.best) if p.is_dir() else [p]
    average_checkpoints(paths, args.out)
    print(f"{args.out}: average of {len(paths)} checkpoints ({', '.join(p.name for p in paths)})")
    return 0




def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr", description="BiLSTM-CTC speech recognition")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (or resume) a model from a YAML config",
                       description="Train (or resume) a model. Several GPUs or machines: "
                       "torchrun --nproc_per_node N -m asr train ... (see README).")
    t.add_argument("--config", "-c", help="YAML config (conf/*.yaml)")
    t.add_argument("--run-dir", help="run folder (same as run_dir=...)")
    t.add_argument("--no-resume", action="store_true", help="start fresh even if the run folder has last.pt")
    t.add_argument("--max-steps", type=int, default=0, help="stop after N updates (resumable)")
    t.add_argument("--save-every", type=int, default=0, help="also write last.pt every N updates")
    t.add_argument("overrides", nargs="*", help="dotted overrides such as train.lr=1e-3")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="decode a manifest and write a WER report")
    e.add_argument("--model", "-m", required=True)
    e.add_argument("--manifest", required=True)
    e.add_argument("--out", "-o", help="report folder (default: next to the model)")
    e.add_argument("--embed-audio-mb", type=float, metavar="MB",
                   help="report.html embeds the listed utterances' audio up to MB megabytes (default "
                        "20), else links the audio files (0: always link)")
    e.add_argument("--limit", type=int, default=0, help="only the first N utterances")
    e.add_argument("--quantize", choices=["int8"], help="dynamic int8 quantisation of a checkpoint (CPU)")
    e.add_argument("--amp", choices=["auto", "off", "bf16"], default="auto",
                   help="checkpoint precision: auto = bf16 on CPUs with AMX (faster there), else fp32")
    _add_decode_args(e, nbest=True)
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("compare", help="what changed between two evaluation reports, utterance by utterance")
    c.add_argument("report_a", help="report.json (or its folder): the baseline")
    c.add_argument("report_b", help="report.json (or its folder): the new run")
    c.add_argument("--limit", type=int, default=50, help="changed utterances to print")
    c.add_argument("--json", action="store_true", help="print the comparison as JSON")
    c.set_defaults(func=cmd_compare)

    tr = sub.add_parser("transcribe", help="transcribe audio files, folders or standard input",
                        description="Transcribe audio of any length: files in any format soundfile reads, "
                        "folders (recursively), or - for standard input. Long recordings are cut at "
                        "quiet points and stitched.")
    tr.add_argument("--model", "-m", help="checkpoint or exported model (.pt, .ts, .onnx)")
    tr.add_argument("inputs", nargs="*", help="audio files, folders or - (MODEL.pt may come first instead of --model)")
    tr.add_argument("--format", "-f", choices=["txt", "json", "srt", "vtt"], default="txt",
                    help="txt: text; json: one object per input with words, times and confidences; srt/vtt: subtitles")
    tr.add_argument("--output-dir", "-o", help="write <name>.<format> per input here instead of printing")
    tr.add_argument("--max-segment-seconds", type=float, default=0.0,
                    help="longest piece decoded at once (default 30)")
    tr.add_argument("--quantize", choices=["int8"], help="dynamic int8 quantisation of a checkpoint (CPU)")
    tr.add_argument("--amp", choices=["auto", "off", "bf16"], default="auto",
                    help="checkpoint precision: auto = bf16 on CPUs with AMX (faster there), else fp32")
    tr.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    _add_decode_args(tr, nbest=True)
    tr.set_defaults(func=cmd_transcribe)

    x = sub.add_parser("export", help="export a checkpoint to TorchScript or ONNX (optionally int8) for CPU inference")
    x.add_argument("model", help="checkpoint written by asr train")
    x.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    x.add_argument("--quantize", choices=["int8"], help="dynamic int8 quantisation of LSTM and linear layers")
    x.add_argument("--out", "-o", help="output file (default: next to the model, .ts or .onnx)")
    x.set_defaults(func=cmd_export)

    a = sub.add_parser("average", help="average the weights of checkpoints")
    a.add_argument("checkpoints", nargs="+",
                   help="checkpoint files, or a run folder (its best-by-dev-WER checkpoints)")
    a.add_argument("--out", "-o", required=True)
    a.add_argument("--best", type=int, default=0,
                   help="with a run folder: only its N best checkpoints (default: all kept)")
    a.set_defaults(func=cmd_average)

    from asr.cli_phones import add_phone_parsers
    from asr.cli_serve import add_serve_parser

    add_data_parsers(sub)
    add_lm_parsers(sub)
    add_phone_parsers(sub)
    add_serve_parser(sub)
    return p


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """The package's own deprecation notices (a renamed config key) as one ``asr: warning:``
    line; every other warning as Python shows it."""
    if issubclass(category, FutureWarning) and str(filename).startswith(str(Path(__file__).parent)):
        print(f"asr: warning: {message}", file=sys.stderr)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    """Run the ``asr`` command; returns the exit code (0 ok, 1 failure, 2 usage, 130 interrupted).

    Expected failures (``ASRError`` and ``OSError``) become one ``asr: error:`` line on
    stderr; argparse reports a malformed command line itself (exit code 2).
    """
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return args.func(args)
    except ASRError as e:
        print(f"asr: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a full disk, a read-only or missing folder, a path through a file...
        where = f"{e.filename}: " if e.filename else ""
        print(f"asr: error: {where}{one_line(e.strerror or e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("asr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

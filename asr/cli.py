"""The ``asr`` command: ``asr train | evaluate | transcribe | average ...``.

Every subcommand turns expected failures (bad config, missing files, unreadable
audio, bad checkpoints) into a one-line ``asr: error: ...`` message and a non-zero
exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class CLIError(Exception):
    """An error to print as one line and exit with code 2."""


def _add_decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=["greedy", "beam"], help="decoder (default: the model's config)")
    p.add_argument("--beam-size", type=int, help="beam width")
    p.add_argument("--lm", dest="lm_path", help="ARPA word n-gram for shallow fusion")
    p.add_argument("--lm-weight", type=float, help="alpha")
    p.add_argument("--word-bonus", type=float, help="beta")
    p.add_argument("--lexicon", help="file of allowed words")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")


def _decode_overrides(args) -> dict:
    keys = ["method", "beam_size", "lm_path", "lm_weight", "word_bonus", "lexicon"]
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if out.get("lm_path") and "method" not in out:
        out["method"] = "beam"
    return out


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def cmd_train(args) -> int:
    from asr.config import load_config
    from asr.train import train

    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    cfg = load_config(args.config, overrides)
    out = train(cfg, resume=not args.no_resume, max_steps=args.max_steps, save_every_steps=args.save_every)
    print(out)
    return 0


def cmd_evaluate(args) -> int:
    from asr.data import read_manifest
    from asr.evaluate import evaluate
    from asr.report import write_report
    from asr.transcribe import load_model

    model = load_model(args.model, _device(args.device))
    model.with_decoding(**_decode_overrides(args))
    utts = read_manifest(args.manifest, strict=False)
    if args.limit:
        utts = utts[: args.limit]
    if not utts:
        raise CLIError(f"{args.manifest}: no utterances to evaluate")
    res = evaluate(model, utts)
    out_dir = Path(args.out or Path(args.model).parent / f"eval-{Path(args.manifest).stem}-{model.decode_cfg.method}")
    meta = {"model": str(Path(args.model).resolve()), "manifest": str(Path(args.manifest).resolve()),
            "decode": {k: v for k, v in model.decode_cfg.__dict__.items()}}
    write_report(res, out_dir, meta)
    print(f"WER {100 * res.wer:.2f}%  CER {100 * res.cer:.2f}%  "
          f"({len(res.utts)} utterances, {res.words.ref} words, {len(res.failed)} failed)  report: {out_dir}")
    return 1 if res.failed and not res.utts else 0


def cmd_transcribe(args) -> int:
    from asr.audio import AudioError
    from asr.transcribe import load_model

    paths = list(args.inputs)
    if args.model is None:
        # `asr transcribe MODEL.pt FILE...` also works
        if not paths or not paths[0].endswith(".pt"):
            raise CLIError("give the model with --model MODEL.pt (or as the first argument)")
        args.model, paths = paths[0], paths[1:]
    if not paths:
        raise CLIError("no audio files given")
    model = load_model(args.model, _device(args.device))
    model.with_decoding(**_decode_overrides(args))
    failed = 0
    for p in paths:
        try:
            t = model.transcribe(p)
        except AudioError as e:
            print(f"asr: error: {e}", file=sys.stderr)
            failed += 1
            continue
        if args.format == "json":
            print(json.dumps({"audio": p, "text": t.text, "duration": t.duration}, ensure_ascii=False))
        elif len(paths) > 1:
            print(f"{p}\t{t.text}")
        else:
            print(t.text)
    return 1 if failed else 0


def cmd_average(args) -> int:
    from asr.checkpoint import average_checkpoints

    average_checkpoints(args.checkpoints, args.out)
    print(args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr", description="BiLSTM-CTC speech recognition")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (or resume) a model from a YAML config")
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
    e.add_argument("--out", help="report folder (default: next to the model)")
    e.add_argument("--limit", type=int, default=0, help="only the first N utterances")
    _add_decode_args(e)
    e.set_defaults(func=cmd_evaluate)

    tr = sub.add_parser("transcribe", help="print transcripts of audio files")
    tr.add_argument("--model", "-m")
    tr.add_argument("inputs", nargs="*", help="audio files (MODEL.pt may come first instead of --model)")
    tr.add_argument("--format", choices=["txt", "json"], default="txt")
    _add_decode_args(tr)
    tr.set_defaults(func=cmd_transcribe)

    a = sub.add_parser("average", help="average the weights of checkpoints")
    a.add_argument("checkpoints", nargs="+")
    a.add_argument("--out", "-o", required=True)
    a.set_defaults(func=cmd_average)
    return p


def main(argv: list[str] | None = None) -> int:
    from asr.audio import AudioError
    from asr.checkpoint import CheckpointError
    from asr.config import ConfigError
    from asr.data import ManifestError
    from asr.decode.lm import LMError
    from asr.train import TrainingError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, ConfigError, CheckpointError, ManifestError, AudioError, LMError, TrainingError) as e:
        print(f"asr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

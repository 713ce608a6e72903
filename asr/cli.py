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


def cmd_data(args) -> int:
    from asr import datatools

    if args.data_cmd == "import":
        print(datatools.import_corpus(args.layout, args.src, args.out, args.workers))
        return 0
    if args.data_cmd == "split":
        speakers = [s.strip() for s in args.dev_speakers.split(",") if s.strip()] if args.dev_speakers else None
        print(datatools.split_manifest(args.manifest, args.out[0], args.out[1], speakers,
                                       args.dev_fraction, args.seed))
        return 0
    if args.data_cmd == "validate":
        tok = _load_tokenizer_arg(args)
        n, problems = datatools.validate_manifest(args.manifest, tok, not args.no_audio, args.decode,
                                                  args.tolerance, args.workers)
        for p in problems[: args.max_report or None]:
            print(p.format(args.manifest))
        if args.max_report and len(problems) > args.max_report:
            print(f"... {len(problems) - args.max_report} more problems not shown")
        kinds: dict[str, int] = {}
        for p in problems:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        detail = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
        print(f"{args.manifest}: {n} lines, {len(problems)} problems" + (f" ({detail})" if detail else ""),
              file=sys.stderr)
        return 1 if problems else 0
    if args.data_cmd == "stats":
        from asr.data import read_manifest

        for m in args.manifests:
            if len(args.manifests) > 1:
                print(f"== {m}")
            print(datatools.manifest_stats(read_manifest(m, strict=False), args.bins))
        return 0
    raise CLIError(f"unknown data command {args.data_cmd!r}")


def _load_tokenizer_arg(args):
    """The tokenizer named by --tokenizer FILE or --model MODEL.pt, or None."""
    from asr.text import TokenizerError, load_tokenizer

    if getattr(args, "tokenizer", None):
        try:
            return load_tokenizer(args.tokenizer)
        except TokenizerError as e:
            raise CLIError(str(e)) from None
    if getattr(args, "model", None):
        from asr.checkpoint import read_checkpoint
        from asr.text import tokenizer_from_dict

        return tokenizer_from_dict(read_checkpoint(args.model)["tokenizer"])
    return None


def cmd_tokenizer(args) -> int:
    from asr import datatools

    print(datatools.train_tokenizer_file(args.manifests, args.out, args.kind, args.vocab_size,
                                         args.model_type, not args.keep_case, args.keep_chars))
    return 0


def _add_data_parsers(sub) -> None:
    d = sub.add_parser("data", help="import corpora into manifests; split, validate, summarise them")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    im = dsub.add_parser("import", help="corpus folder -> manifest (durations from audio headers)")
    im.add_argument("layout", choices=["librispeech", "kaldi", "folder"],
                    help="librispeech: */*/*.trans.txt; kaldi: wav.scp+text[+utt2spk,segments]; "
                         "folder: audio files with same-named .txt transcripts")
    im.add_argument("src", help="corpus folder")
    im.add_argument("--out", "-o", required=True, help="manifest to write (JSONL)")
    im.add_argument("--workers", type=int, default=8, help="threads reading audio headers")
    sp = dsub.add_parser("split", help="speaker-disjoint train/dev split of a manifest")
    sp.add_argument("manifest")
    sp.add_argument("--out", "-o", nargs=2, required=True, metavar=("TRAIN", "DEV"),
                    help="train and dev manifests to write")
    sp.add_argument("--dev-speakers", help="comma-separated speakers for dev (default: random)")
    sp.add_argument("--dev-fraction", type=float, default=0.1,
                    help="share of audio for dev when speakers are picked at random")
    sp.add_argument("--seed", type=int, default=0, help="seed of the random speaker choice")
    va = dsub.add_parser("validate", help="report bad lines, audio, durations, text, duplicate ids; "
                                          "exit 1 if any")
    va.add_argument("manifest")
    va.add_argument("--tokenizer", help="tokenizer file: report text it cannot encode")
    va.add_argument("--model", help="or take the tokenizer from this model checkpoint")
    va.add_argument("--decode", action="store_true", help="decode the audio too (finds damaged files)")
    va.add_argument("--no-audio", action="store_true", help="check only the manifest lines and text")
    va.add_argument("--tolerance", type=float, default=0.05, help="seconds a duration may be off")
    va.add_argument("--workers", type=int, default=8, help="threads checking audio")
    va.add_argument("--max-report", type=int, default=200, help="print at most N problems (0: all)")
    st = dsub.add_parser("stats", help="hours, utterances, speakers and a duration histogram")
    st.add_argument("manifests", nargs="+")
    st.add_argument("--bins", type=int, default=10, help="histogram bins")
    d.set_defaults(func=cmd_data)

    tk = sub.add_parser("tokenizer", help="train a tokenizer on manifests' transcripts")
    tsub = tk.add_subparsers(dest="tokenizer_cmd", required=True)
    tt = tsub.add_parser("train", help="train and save a tokenizer (use it with tokenizer.path=FILE)")
    tt.add_argument("manifests", nargs="+", help="manifests whose text to train on")
    tt.add_argument("--out", "-o", required=True, help="tokenizer file to write (JSON)")
    tt.add_argument("--kind", choices=["char", "sentencepiece"], default="char")
    tt.add_argument("--vocab-size", type=int, default=256, help="SentencePiece vocabulary size")
    tt.add_argument("--model-type", choices=["unigram", "bpe"], default="unigram",
                    help="SentencePiece model type")
    tt.add_argument("--keep-case", action="store_true", help="do not lower-case the text")
    tt.add_argument("--keep-chars", default="'", help="punctuation kept by normalisation")
    tk.set_defaults(func=cmd_tokenizer)


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

    _add_data_parsers(sub)
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

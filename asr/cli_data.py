"""`asr data ...` and `asr tokenizer ...`: corpus import, splits, validation, statistics, tokenizers."""

from __future__ import annotations

import sys

from asr.errors import CLIError


def cmd_data(args) -> int:
    from asr import datatools

    if args.data_cmd == "import":
        if args.speaker_pattern:
            import re

            try:
                re.compile(args.speaker_pattern)
            except re.error as e:
                raise CLIError(f"--speaker-pattern {args.speaker_pattern!r} is not a regular expression "
                               f"({e})") from None
        print(datatools.import_corpus(args.layout, args.src, args.out, args.workers,
                                      speaker_pattern=args.speaker_pattern))
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
    if args.data_cmd == "degrade":
        from asr.degrade import DEFAULT_KINDS, DegradeError
        from asr.degraded_sets import degrade_manifest

        try:
            degrade_manifest(args.manifest, args.kind or list(DEFAULT_KINDS), args.out, args.seed,
                             args.noise_dir, args.workers, args.force,
                             on_kind=lambda line: print(line, flush=True))
        except DegradeError as e:
            raise CLIError(str(e)) from None
        return 0
    raise CLIError(f"unknown data command {args.data_cmd!r}")


def _load_tokenizer_arg(args):
    """The tokenizer named by --tokenizer FILE or --model MODEL.pt, or None."""
    from asr.text import load_tokenizer

    if getattr(args, "tokenizer", None):
        return load_tokenizer(args.tokenizer)
    if getattr(args, "model", None):
        from asr.checkpoint import read_checkpoint
        from asr.text import tokenizer_from_dict

        return tokenizer_from_dict(read_checkpoint(args.model)["tokenizer"])
    return None


def cmd_tokenizer(args) -> int:
    from asr import datatools

    print(datatools.train_tokenizer_file(args.manifests, args.out, args.kind, args.vocab_size,
                                         args.model_type, not args.keep_case, args.keep_chars,
                                         args.strip_accents))
    return 0


def add_data_parsers(sub) -> None:
    d = sub.add_parser("data", help="import corpora into manifests; split, validate, summarise them")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    im = dsub.add_parser("import", help="corpus folder -> manifest (durations from audio headers)")
    im.add_argument("layout", choices=["librispeech", "kaldi", "folder"],
                    help="librispeech: */*/*.trans.txt; kaldi: wav.scp+text[+utt2spk,segments]; "
                         "folder: audio files with same-named .txt transcripts")
    im.add_argument("src", help="corpus folder")
    im.add_argument("--out", "-o", required=True, help="manifest to write (JSONL)")
    im.add_argument("--workers", type=int, default=8, help="threads reading audio headers")
    im.add_argument("--speaker-pattern", help="folder layout: regex on the relative path whose first "
                                              "group is the speaker (default: the parent folder)")
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
    dg = dsub.add_parser("degrade", help="degraded copies of a manifest (codecs, telephone band, noise, "
                                         "level, room): OUT/<kind>/manifest.jsonl per kind")
    dg.add_argument("manifest")
    dg.add_argument("--kind", action="append",
                    help="mp3:KBPS (8-160, MPEG-2 rates), opus:KBPS (6-256), phone (8 kHz, 300-3400 Hz), "
                         "vorbis:Q (0-10), aac:KBPS (8-256, in an .m4a, through FFmpeg), noise:SNR_DB, level:DBFS (RMS), "
                         "reverb:RT60_S (a room, 0.05-3 s); "
                         "repeat for several (default: "
                         "mp3:24 mp3:40 opus:12 phone noise:10 level:-30)")
    dg.add_argument("--out", "-o", required=True, help="folder: one sub-folder per kind")
    dg.add_argument("--noise-dir", help="noise recordings for noise kinds (random stretches); "
                                        "default: generated white or pink noise")
    dg.add_argument("--seed", type=int, default=0, help="seed of the noise choices")
    dg.add_argument("--workers", type=int, default=2, help="threads encoding and filtering")
    dg.add_argument("--force", action="store_true", help="rebuild kinds that are already built")
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
    tt.add_argument("--strip-accents", action="store_true", help="normalise café to cafe")
    tk.set_defaults(func=cmd_tokenizer)

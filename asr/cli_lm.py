"""`asr lm build|mix|ppl`, `asr tune-lm` and `asr decode --tune-lm`: word n-gram LMs and their fusion weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from asr.cli_decode import add_lookahead_args
from asr.errors import CLIError, ManifestError


def cmd_lm_build(args) -> int:
    import logging
    import time

    from asr.lm_build import build_lm

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger = logging.getLogger("asr")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    t0 = time.time()
    try:
        counts = build_lm(args.text, args.out, args.order, not args.no_normalize, args.lexicon,
                          vocab_path=args.vocab, max_vocab=args.max_vocab, cutoffs=args.cutoffs,
                          prune=args.prune, progress=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    print(f"{args.out}: {args.order}-gram, " + ", ".join(f"{n}-grams {c}" for n, c in counts.items())
          + f" ({sum(counts.values())} n-grams, {time.time() - t0:.1f} s)")
    return 0


def _ppl_line(name: str, r: dict) -> str:
    return (f"{name}: perplexity {r['ppl']:.2f} ({r['ppl_no_oov']:.2f} without OOV words), "
            f"OOV rate {100 * r['oov_rate']:.2f} % of {r['words']} words, {r['sentences']} sentences")


def cmd_lm_ppl(args) -> int:
    from asr.lm_mix import perplexity, read_text
    from asr.lm_table import read_arpa

    sentences = read_text(args.text, not args.no_normalize)
    for path in args.lm:
        print(_ppl_line(path, perplexity(read_arpa(path), sentences)))
    return 0


def cmd_lm_mix(args) -> int:
    from asr.lm_mix import component_probs, mix, perplexity, read_text, tune_weights
    from asr.lm_table import read_arpa

    if len(args.lm) < 2:
        raise CLIError("asr lm mix needs two or more ARPA files")
    if bool(args.weights) == bool(args.tune_on):
        raise CLIError("asr lm mix: give either --weights W1,W2,... or --tune-on DEV_TEXT")
    models = [read_arpa(p) for p in args.lm]
    if args.tune_on:
        dev = read_text(args.tune_on, not args.no_normalize)
        for path, m in zip(args.lm, models):
            print(_ppl_line(path, perplexity(m, dev)))
        weights = tune_weights(component_probs(models, dev))
        print("weights (EM on dev perplexity): " + ",".join(f"{w:.4f}" for w in weights))
    else:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise CLIError(f"--weights {args.weights!r}: give numbers separated by commas") from None
    mixed = mix(models, weights)
    mixed.write_arpa(args.out, progress=True)
    print(f"{args.out}: " + ", ".join(f"{n}-grams {c}" for n, c in mixed.counts().items()))
    if args.tune_on:
        print(_ppl_line(f"{args.out} (mixed)", perplexity(mixed, dev)))
    return 0


def cmd_tune_lm(args) -> int:
    from asr.data import read_manifest
    from asr.decode import BeamOptions
    from asr.decode.lm import load_lm
    from asr.decode.tune import corpus_wer, dev_log_probs, grid_search, write_tuned
    from asr.runtime import resolve_device
    from asr.transcribe import load_model

    model = load_model(args.model, resolve_device(args.device))
    utts = read_manifest(args.manifest, strict=False)[: args.limit or None]
    if not utts:
        raise ManifestError(f"{args.manifest}: no utterances to tune on; check it with "
                            f"`asr data validate {args.manifest}`")
    lm = load_lm(args.lm)
    # a word list (characters, SentencePiece), or a phone model's lexicon plus the file's words
    lexicon = model.with_decoding(lexicon=args.lexicon or "").lexicon()
    try:
        batch, lengths, refs = dev_log_probs(model, utts)
    except ValueError as e:
        raise CLIError(f"{args.manifest}: {e}") from None
    tokens = model.tokenizer.token_strings()
    opts = BeamOptions(beam_size=args.beam_size, num_workers=args.workers, lm_lookahead=args.lm_lookahead)
    res = grid_search(batch, lengths, refs, tokens, lm, lexicon, opts, args.alphas, args.betas,
                      refine=not args.no_refine)
    from asr.decode import greedy_search

    # a phone model's greedy output is phones: no greedy WER
    greedy = None if model.is_phone else \
        corpus_wer([model.tokenizer.decode(ids) for ids in greedy_search(batch, lengths)], refs)
    print("alpha  beta   WER %")
    for g in res.grid:
        print(f"{g['lm_weight']:5.2f} {g['word_bonus']:5.2f} {100 * g['wer']:7.2f}")
    out = write_tuned(args.model, res, {"lm_path": str(Path(args.lm).resolve()), "beam_size": args.beam_size,
                                        "lexicon": str(Path(args.lexicon).resolve()) if args.lexicon else "",
                                        "lm_lookahead": args.lm_lookahead,
                                        "dev_manifest": str(Path(args.manifest).resolve()),
                                        "utterances": len(refs), "greedy_wer": greedy})
    floor = f" (greedy {100 * greedy:.2f}%)" if greedy is not None else ""
    print(f"best: --lm-weight {res.lm_weight} --word-bonus {res.word_bonus}: WER {100 * res.wer:.2f}%"
          f"{floor}; written to {out}")
    return 0


def cmd_decode(args) -> int:
    if not args.tune_lm:
        raise CLIError("asr decode needs --tune-lm (to decode and score a manifest, use asr evaluate)")
    return cmd_tune_lm(args)


def _add_tune_args(t: argparse.ArgumentParser) -> None:
    t.add_argument("--model", "-m", required=True)
    t.add_argument("--manifest", required=True, help="dev manifest (held out from training)")
    t.add_argument("--lm", required=True, help="ARPA word n-gram (or KenLM binary)")
    t.add_argument("--lexicon", help="file of allowed words (a phone model: `word P1 P2 ...` lines added to "
                   "its checkpoint's lexicon)")
    t.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    t.add_argument("--betas", type=float, nargs="+", default=[-1.0, 0.0, 1.0, 2.0, 3.0])
    t.add_argument("--no-refine", action="store_true",
                   help="only the grid (default: then hill-climb from its best pair, also beyond its edges)")
    t.add_argument("--beam-size", type=int, default=16)
    add_lookahead_args(t, default="context")
    t.add_argument("--workers", type=int, default=1, help="decoding threads")
    t.add_argument("--limit", type=int, default=0, help="only the first N utterances")
    t.add_argument("--device", default="auto", help="cpu, cuda or auto")


def add_lm_parsers(sub) -> None:
    lm = sub.add_parser("lm", help="word n-gram language models")
    lsub = lm.add_subparsers(dest="lm_cmd", required=True)
    b = lsub.add_parser("build", help="estimate a word n-gram (modified Kneser-Ney) and write ARPA",
                        description="Estimate an interpolated modified Kneser-Ney word n-gram from a text file "
                        "(a sentence per line) or a JSONL manifest (its text fields) and write ARPA, which "
                        "kenlm, flashlight and pyctcdecode also read.")
    b.add_argument("text", nargs="+", help="text files (plain, .gz, .xz; a sentence per line) or manifests (.jsonl)")
    b.add_argument("--out", "-o", required=True, help="ARPA file to write (atomically: OUT.tmp, then renamed)")
    b.add_argument("--order", type=int, default=3, help="n of the n-gram (2 or more)")
    b.add_argument("--lexicon", help="also write the vocabulary here (a word per line; use with --lexicon)")
    b.add_argument("--vocab", help="closed vocabulary file (a word per line, e.g. librispeech-vocab.txt); "
                   "other words become <unk>")
    b.add_argument("--max-vocab", type=int, default=0, help="keep only the N most frequent words (others <unk>)")
    b.add_argument("--cutoffs", help="count cut-offs per order, e.g. 0,1,1: drop bigrams and trigrams seen "
                   "once (KenLM --prune 0 1 1; the last value repeats)")
    b.add_argument("--prune", type=float, default=0.0,
                   help="entropy-pruning threshold (Stolcke; SRILM -prune), e.g. 1e-8 for a book 3-gram; 0: none")
    b.add_argument("--no-normalize", action="store_true",
                   help="keep the text as it is (default: lower-case, no punctuation, as the tokenizers do)")
    b.set_defaults(func=cmd_lm_build)

    mx = lsub.add_parser("mix", help="linear interpolation of ARPA models into one (SRILM -mix-lm)",
                         description="Interpolate back-off models statically into one ARPA: every n-gram of "
                         "any model, P = sum of weight x P_model, back-off weights recomputed. Weights given "
                         "(--weights) or chosen by EM on dev text (--tune-on), printing each perplexity.")
    mx.add_argument("lm", nargs="+", help="ARPA files (plain or gzipped)")
    mx.add_argument("--out", "-o", required=True, help="ARPA file to write")
    mx.add_argument("--weights", help="comma-separated, one per model, summing to 1 (e.g. 0.8,0.2)")
    mx.add_argument("--tune-on", help="dev text (or manifest): choose the weights that minimise its perplexity")
    mx.add_argument("--no-normalize", action="store_true", help="do not normalise the dev text")
    mx.set_defaults(func=cmd_lm_mix)

    pp = lsub.add_parser("ppl", help="perplexity and OOV rate of ARPA models on a text",
                         description="Perplexity over the words and </s> of every sentence (OOV words scored "
                         "as <unk>, as kenlm does; also without them, as SRILM reports) and the OOV rate.")
    pp.add_argument("lm", nargs="+", help="ARPA files")
    pp.add_argument("text", help="text file (a sentence per line) or manifest (.jsonl)")
    pp.add_argument("--no-normalize", action="store_true", help="do not normalise the text")
    pp.set_defaults(func=cmd_lm_ppl)

    t = sub.add_parser("tune-lm", help="grid-search the LM weight and word bonus on a dev manifest",
                       description="Run the model once over a dev manifest, then beam-search its log-probs for "
                       "every (alpha, beta) pair and write the best to <model>.lm.json beside the model; "
                       "asr evaluate/transcribe --lm LM then use them unless given explicitly.")
    _add_tune_args(t)
    t.set_defaults(func=cmd_tune_lm)

    d = sub.add_parser("decode", help="decoder tools: --tune-lm (same as asr tune-lm)",
                       description="asr decode --tune-lm: grid-search the LM weight (alpha) and word bonus "
                       "(beta) on a dev manifest and write the best to <model>.lm.json beside the model; "
                       "asr evaluate/transcribe --lm LM then use them unless given explicitly.")
    d.add_argument("--tune-lm", action="store_true", help="tune alpha and beta (required)")
    _add_tune_args(d)
    d.set_defaults(func=cmd_decode)

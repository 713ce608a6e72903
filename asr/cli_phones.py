"""`asr g2p train|eval|pronounce` and `asr lexicon`: pronunciations for phone models."""

from __future__ import annotations

import logging
import sys
import time

from asr.errors import CLIError


def _g2p(path: str | None):
    from asr.g2p import load_g2p
    from asr.phones import default_g2p

    try:
        return load_g2p(path) if path else default_g2p()
    except ValueError as e:
        raise CLIError(str(e)) from None


def cmd_g2p_train(args) -> int:
    if args.epochs < 1 or args.minutes <= 0:
        raise CLIError("asr g2p train: --epochs must be 1 or more and --minutes above 0")
    import torch

    from asr.g2p import evaluate_g2p, save_g2p, train_g2p
    from asr.phones import load_cmudict

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    lex = load_cmudict()
    t0 = time.time()
    try:
        model = train_g2p(lex, minutes=args.minutes, epochs=args.epochs, hidden=args.hidden,
                          layers=args.layers, lr=args.lr, batch_words=args.batch_words,
                          init=_g2p(args.init) if args.init else None)
    except ValueError as e:
        raise CLIError(f"{args.init}: {e}") from None
    save_g2p(model, args.out)
    res = evaluate_g2p(model, lex)
    print(f"{args.out}: trained in {(time.time() - t0) / 60:.1f} min; held-out CMUdict words: "
          f"{res['words']}, word accuracy {100 * res['word_accuracy']:.2f}%, PER {100 * res['per']:.2f}%")
    return 0


def cmd_g2p_eval(args) -> int:
    from asr.g2p import evaluate_g2p
    from asr.phones import load_cmudict

    res = evaluate_g2p(_g2p(args.model), load_cmudict())
    print(f"held-out CMUdict words (never seen in G2P training): {res['words']}; word accuracy "
          f"{100 * res['word_accuracy']:.2f}%, phone error rate {100 * res['per']:.2f}%")
    return 0


def cmd_g2p_pronounce(args) -> int:
    from asr.text import normalize_text

    words = [normalize_text(w) for w in args.words]
    for w, pron in zip(words, _g2p(args.model).pronounce(words)):
        print(w, " ".join(pron))
    return 0


def cmd_lexicon(args) -> int:
    from asr.lexicon import LexiconError, read_lexicon, write_lexicon
    from asr.phones import build_lexicon, load_cmudict, phone_lexicon_args
    from asr.text import normalize_text

    try:
        base = read_lexicon(args.base, **phone_lexicon_args()) if args.base else load_cmudict()
    except LexiconError as e:
        raise CLIError(str(e)) from None
    words: set[str] = set()
    skipped = 0
    try:
        with open(args.wordlist, encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if not fields or fields[0].startswith("#"):
                    continue
                w = normalize_text(fields[0])
                if len(w.split()) != 1:
                    skipped += 1
                    continue
                words.add(w)
    except FileNotFoundError:
        raise CLIError(f"word list {args.wordlist} does not exist") from None
    except UnicodeDecodeError as e:
        raise CLIError(f"{args.wordlist}: not UTF-8 text ({e})") from None
    t0 = time.time()
    lex, g2p_words = build_lexicon(words, base, _g2p(args.g2p) if args.g2p else None,
                                   progress=not args.quiet)
    write_lexicon(lex, args.out)
    lost = len(words) - len(lex)
    print(f"{args.out}: {len(lex)} words, {sum(len(p) for p in lex.values())} pronunciations; "
          f"{len(words) - len(g2p_words)} from {args.base or 'CMUdict'}, {len(g2p_words) - lost} by G2P "
          f"in {time.time() - t0:.1f} s" + (f"; {lost} without a pronunciation" if lost else "")
          + (f"; {skipped} entries that are not one word skipped" if skipped else ""), file=sys.stderr)
    return 0


def add_phone_parsers(sub) -> None:
    g = sub.add_parser("g2p", help="grapheme-to-phoneme model (CMUdict-trained BiLSTM-CTC)")
    gsub = g.add_subparsers(dest="g2p_cmd", required=True)
    t = gsub.add_parser("train", help="train a G2P model on CMUdict (held-out words excluded)")
    t.add_argument("--out", "-o", required=True, help="weights file to write (.pt)")
    t.add_argument("--minutes", type=float, default=10.0, help="time budget")
    t.add_argument("--epochs", type=int, default=30, help="at most this many epochs (cosine LR over them)")
    t.add_argument("--hidden", type=int, default=96)
    t.add_argument("--layers", type=int, default=2)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--batch-words", type=int, default=256)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--init", help="continue training this weights file (e.g. asr/g2p_cmudict.pt)")
    t.set_defaults(func=cmd_g2p_train)
    e = gsub.add_parser("eval", help="word accuracy and PER on the held-out CMUdict words")
    e.add_argument("--model", help="weights file (default: the shipped one)")
    e.set_defaults(func=cmd_g2p_eval)
    p = gsub.add_parser("pronounce", help="print G2P pronunciations of words")
    p.add_argument("words", nargs="+")
    p.add_argument("--model", help="weights file (default: the shipped one)")
    p.set_defaults(func=cmd_g2p_pronounce)

    lx = sub.add_parser("lexicon", help="pronunciation lexicon for a word list (CMUdict, G2P for the rest)",
                        description="Write WORD P1 P2 ... lines for every word of a word list (a word per "
                        "line, e.g. the LM vocabulary): CMUdict's pronunciations (all variants, no stress), "
                        "G2P for the words CMUdict lacks. A phone model decodes with it (--lexicon).")
    lx.add_argument("wordlist", help="a word per line (further fields are ignored)")
    lx.add_argument("--out", "-o", required=True, help="lexicon file to write")
    lx.add_argument("--base", help="lexicon file to use instead of CMUdict")
    lx.add_argument("--g2p", help="G2P weights file (default: the shipped one)")
    lx.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    lx.set_defaults(func=cmd_lexicon)

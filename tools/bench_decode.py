"""Decoder speed and WER: our C++ prefix beam search against pyctcdecode and flashlight-text.

All decoders get the same log-probabilities, the same word LM and the same beam width, in
one run; the script prints seconds and WER for each (and greedy as a floor).

Inputs, in order of preference:

  # a trained model on held-out utterances (log-probs computed once, then decoded by each)
  flock /tmp/asr-cpu.lock .venv/bin/python tools/bench_decode.py \
      --model exp/mini_librispeech/model.pt --manifest exp/mini_librispeech/data/dev.jsonl \
      --lm-text exp/mini_librispeech/data/train.jsonl --beam 8 32

  # synthetic peaky CTC posteriors spelled from transcripts (no model needed)
  flock /tmp/asr-cpu.lock .venv/bin/python tools/bench_decode.py --synthetic 100 \
      --lm-text exp/mini_librispeech/data/train.jsonl --manifest exp/mini_librispeech/data/dev.jsonl

``--lm`` takes an existing ARPA file; ``--lm-text`` builds a word 3-gram (modified Kneser-Ney)
from a text file or manifest first. With an LM, flashlight needs a lexicon (its lexicon-free
decoder only fuses token-level LMs), so flashlight and ours both decode with the LM's vocabulary
as the lexicon ("ours+lex"); ours is also run open-vocabulary. pyctcdecode needs
``pip install --no-deps pyctcdecode pygtrie`` (its numpy<2 pin is too strict).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.decode import BeamOptions, greedy_search  # noqa: E402
from asr.decode.backends import BackendError, lm_vocabulary, make_decoder  # noqa: E402
from asr.metrics import ErrorCounts, word_errors  # noqa: E402
from asr.text import CharTokenizer, normalize_text  # noqa: E402


def model_log_probs(model_path: str, manifest: str, limit: int, batch_seconds: float = 60.0):
    """(B, T, V) log-probs, (B,) lengths, references and token strings from a checkpoint."""
    from tqdm import tqdm

    from asr.audio import load_audio
    from asr.data import read_manifest
    from asr.transcribe import load_model

    model = load_model(model_path, "cpu")
    utts = read_manifest(manifest, strict=False)[: limit or None]
    order = sorted(range(len(utts)), key=lambda i: utts[i].duration)  # similar lengths per batch
    lps: list[np.ndarray | None] = [None] * len(utts)
    batch: list[int] = []
    with tqdm(total=len(utts), desc="log-probs", unit="utt") as bar:
        for n, i in enumerate(order):
            batch.append(i)
            if sum(utts[j].duration for j in batch) >= batch_seconds or n == len(order) - 1:
                wavs = [load_audio(utts[j].audio, model.sample_rate) for j in batch]
                lp, lens = model.log_probs(wavs)
                for k, j in enumerate(batch):
                    lps[j] = lp[k, : int(lens[k])].numpy()
                bar.update(len(batch))
                batch = []
    refs = [model.tokenizer.normalize(u.text) for u in utts]
    return (*_pad(lps), refs, model.tokenizer.token_strings())


def synthetic_log_probs(texts: list[str], n: int, seed: int = 0, sub_prob: float = 0.12):
    """Peaky CTC posteriors spelling ``texts``, with confusions an LM can repair."""
    rng = np.random.default_rng(seed)
    tok = CharTokenizer.train(texts)
    V = len(tok)
    lps = []
    for text in texts[:n]:
        frames = []
        for i in tok.encode(text):
            for _ in range(rng.integers(0, 3)):
                frames.append((0, None))
            shown = i if rng.random() > sub_prob else int(rng.integers(1, V))
            for _ in range(rng.integers(1, 3)):
                frames.append((shown, i))
        frames.append((0, None))
        logits = rng.normal(0, 1.0, size=(len(frames), V)).astype(np.float32)
        for t, (shown, true) in enumerate(frames):
            logits[t, shown] += 9.0
            if true is not None and true != shown:
                logits[t, true] += 7.5
        lps.append(torch.log_softmax(torch.from_numpy(logits), -1).numpy())
    return (*_pad(lps), [tok.normalize(t) for t in texts[:n]], tok.token_strings())


def _pad(lps: list[np.ndarray]):
    lens = np.array([x.shape[0] for x in lps], dtype=np.int64)
    out = np.full((len(lps), int(lens.max()), lps[0].shape[1]), -1e4, dtype=np.float32)
    out[:, :, 0] = 0.0
    for i, x in enumerate(lps):
        out[i, : x.shape[0]] = x
    return out, lens


def read_texts(path: str) -> list[str]:
    texts = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            texts.append(json.loads(line)["text"] if path.endswith((".jsonl", ".json")) else line)
    return [normalize_text(t) for t in texts]


def wer(hyps: list[str], refs: list[str]) -> float:
    total = ErrorCounts()
    for h, r in zip(hyps, refs):
        total += word_errors(r, h)
    return total.rate


def timed(fn, lp, lens, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(lp, lens)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint; log-probs are computed for --manifest")
    ap.add_argument("--manifest", help="held-out utterances (references; audio when --model)")
    ap.add_argument("--synthetic", type=int, default=0, help="N synthetic utterances instead of a model")
    ap.add_argument("--lm", help="ARPA word LM")
    ap.add_argument("--lm-text", help="build a word 3-gram from this text/manifest instead of --lm")
    ap.add_argument("--beam", type=int, nargs="+", default=[8], help="beam widths")
    ap.add_argument("--alpha", type=float, default=0.5, help="LM weight (ln P)")
    ap.add_argument("--beta", type=float, default=1.0, help="word bonus")
    ap.add_argument("--token-min-logp", type=float, default=-10.0, help="token pruning, all decoders")
    ap.add_argument("--decoders", default="ours,flashlight,pyctcdecode", help="comma-separated")
    ap.add_argument("--workers", type=int, default=1, help="also time ours with this many threads")
    ap.add_argument("--limit", type=int, default=0, help="first N utterances of the manifest")
    ap.add_argument("--repeat", type=int, default=1, help="best of N timings")
    ap.add_argument("--no-lm-runs", action="store_true", help="skip the runs without an LM")
    ap.add_argument("--cache", help="save the model's log-probs here (.npz) and reuse them next time")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    if args.model:
        if not args.manifest:
            ap.error("--model needs --manifest")
        if args.cache and Path(args.cache).is_file():
            z = np.load(args.cache, allow_pickle=False)
            lp, lens, refs, tokens = z["lp"], z["lens"], list(z["refs"]), list(z["tokens"])
        else:
            lp, lens, refs, tokens = model_log_probs(args.model, args.manifest, args.limit)
            if args.cache:
                np.savez(args.cache, lp=lp, lens=lens, refs=np.array(refs), tokens=np.array(tokens))
        source = f"{Path(args.model)} on {Path(args.manifest).name} ({len(refs)} utterances)"
    elif args.synthetic:
        src = args.manifest or args.lm_text
        if not src:
            ap.error("--synthetic needs --manifest (or --lm-text) for the texts to spell")
        lp, lens, refs, tokens = synthetic_log_probs(read_texts(src), args.synthetic)
        source = f"{len(refs)} synthetic peaky utterances spelled from {Path(src).name}"
    else:
        ap.error("give --model and --manifest, or --synthetic N")
    tmp = tempfile.TemporaryDirectory()
    lm_path = args.lm
    if args.lm_text and not lm_path:
        from asr.lm_build import build_lm

        lm_path = str(Path(tmp.name) / "lm.arpa")
        counts = build_lm(args.lm_text, lm_path, order=3)
        print(f"built a 3-gram from {args.lm_text}: {counts}")
    print(f"input: {source}; {int(lens.sum())} frames, vocabulary {lp.shape[2]}; "
          f"torch threads 1; token_min_logp {args.token_min_logp}")

    rows = []
    t0 = time.perf_counter()
    greedy = greedy_search(torch.from_numpy(lp), torch.from_numpy(lens))
    rows.append(("greedy", "-", "-", time.perf_counter() - t0,
                 wer(["".join(tokens[i] for i in g).strip() for g in greedy], refs)))
    names = [n.strip() for n in args.decoders.split(",") if n.strip()]
    lex = set(lm_vocabulary(lm_path)) if lm_path else None
    settings = ([] if args.no_lm_runs else [(None, None)]) + ([(lm_path, lex)] if lm_path else [])
    for beam in args.beam:
        for lm, lexicon in settings:
            opts = BeamOptions(beam_size=beam, token_min_logp=args.token_min_logp,
                               lm_weight=args.alpha, word_bonus=args.beta)
            runs = []
            for name in names:
                if name == "ours":
                    runs.append(("ours", make_decoder("ours", tokens, opts, lm)))
                    if lm:
                        runs.append(("ours+lex", make_decoder("ours", tokens, opts, lm, lexicon)))
                    if args.workers > 1:
                        w = BeamOptions(**{**opts.__dict__, "num_workers": args.workers})
                        runs.append((f"ours x{args.workers} threads", make_decoder("ours", tokens, w, lm)))
                else:
                    try:
                        runs.append((name + ("+lex" if name == "flashlight" and lm else ""),
                                     make_decoder(name, tokens, opts, lm, lexicon)))
                    except BackendError as e:
                        print(f"skipping {name}: {e}")
            for label, fn in runs:
                secs, out = timed(fn, lp, lens, args.repeat)
                hyps = [" ".join(h[0].words) if h[0].words else "" for h in out]
                rows.append((label, "3-gram" if lm else "none", beam, secs, wer(hyps, refs)))
                print(f"  {label:22s} LM {rows[-1][1]:6s} beam {beam:3d}: {secs:8.3f} s  WER {100 * rows[-1][4]:6.2f}%",
                      flush=True)

    print()
    print("| decoder | LM | beam | seconds | WER % | ours is x faster |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, lm, beam, secs, w in rows:
        ref = [r for r in rows if r[1] == lm and r[2] == beam and r[0] == ("ours+lex" if "+lex" in label else "ours")]
        speed = f"{secs / ref[0][3]:.1f}" if ref and not label.startswith("ours") and label != "greedy" else ""
        print(f"| {label} | {lm} | {beam} | {secs:.3f} | {100 * w:.2f} | {speed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

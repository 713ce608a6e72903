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

  # the book-scale LM (issue 14): a pruned 3-gram of millions of n-grams and the 200 k-word
  # LibriSpeech vocabulary as the lexicon
  flock /tmp/asr-cpu.lock .venv/bin/python tools/bench_decode.py \
      --model exp/mini_librispeech/model.pt --manifest exp/mini_librispeech/data/dev.jsonl \
      --lm exp/mini_librispeech/lm/book-3gram.arpa --lexicon exp/mini_librispeech/lm/vocab.txt \
      --beam 64 --cache dev-logprobs.npz --no-lm-runs

``--lm`` takes an existing ARPA file; ``--lm-text`` builds a word 3-gram (modified Kneser-Ney)
from a text file or manifest first. With an LM, flashlight needs a lexicon (its lexicon-free
decoder only fuses token-level LMs), so flashlight and ours both decode with a lexicon
("ours+lex"): ``--lexicon FILE`` (a word per line, normalised like the transcripts) or else the
LM's vocabulary; ours is also run open-vocabulary. pyctcdecode gets the LM's unigrams, as it
expects. Each decoder's set-up time is printed as "load": reading the LM (KenLM's ARPA reader for
pyctcdecode and flashlight, ours in C++) and building the lexicon trie, with the growth of the
process' resident memory. pyctcdecode needs ``pip install --no-deps pyctcdecode pygtrie`` (its
numpy<2 pin is too strict).
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


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def loaded(make, lp, lens):
    """Build a decoder and run it on one frame (so lazy set-up, like our trie, is counted):
    (decoder, seconds, MB of resident memory added)."""
    r0, t0 = rss_mb(), time.perf_counter()
    fn = make()
    fn(lp[:1, :1], np.ones(1, dtype=np.int64))
    return fn, time.perf_counter() - t0, rss_mb() - r0


def read_lexicon(path: str) -> set[str]:
    """Words of a lexicon file (first field of each line), normalised like the transcripts."""
    words = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                w = normalize_text(line.split()[0])
                if w and " " not in w:
                    words.add(w)
    return words


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
    ap.add_argument("--lexicon", help="word list for the lexicon runs (default: the LM's vocabulary)")
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
                 wer(["".join(tokens[i] for i in g).strip() for g in greedy], refs), 0.0, 0.0))
    names = [n.strip() for n in args.decoders.split(",") if n.strip()]
    lex = None
    if args.lexicon:
        lex = read_lexicon(args.lexicon)
    elif lm_path:
        lex = set(lm_vocabulary(lm_path))
    lm_label = "none"
    if lm_path:
        from asr.decode.lm import load_lm

        r0, t0 = rss_mb(), time.perf_counter()
        info = load_lm(lm_path).info()
        lm_label = f"{info['order']}-gram"
        print(f"LM {lm_path}: {info['order']}-gram, n-grams per order {info['counts']}; ours loads it in "
              f"{time.perf_counter() - t0:.2f} s, +{rss_mb() - r0:.0f} MB resident "
              f"({info['bytes'] / 2**20:.0f} MB of tables); lexicon {len(lex)} words")
    settings = ([] if args.no_lm_runs else [(None, None)]) + ([(lm_path, lex)] if lm_path else [])
    for beam in args.beam:
        for lm, lexicon in settings:
            opts = BeamOptions(beam_size=beam, token_min_logp=args.token_min_logp,
                               lm_weight=args.alpha, word_bonus=args.beta)
            makers = []
            for name in names:
                if name == "ours":
                    makers.append(("ours", lambda o=opts, m=lm: make_decoder("ours", tokens, o, m)))
                    if lm:
                        makers.append(("ours+lex", lambda o=opts, m=lm, x=lexicon: make_decoder("ours", tokens, o, m, x)))
                    if args.workers > 1:
                        w = BeamOptions(**{**opts.__dict__, "num_workers": args.workers})
                        makers.append((f"ours x{args.workers} threads", lambda o=w, m=lm: make_decoder("ours", tokens, o, m)))
                else:
                    label = name + ("+lex" if name == "flashlight" and lm else "")
                    makers.append((label, lambda n=name, o=opts, m=lm, x=lexicon: make_decoder(n, tokens, o, m, x)))
            for label, make in makers:
                try:
                    fn, load_s, load_mb = loaded(make, lp, lens)
                except BackendError as e:
                    print(f"skipping {label}: {e}")
                    continue
                secs, out = timed(fn, lp, lens, args.repeat)
                hyps = [" ".join(h[0].words) if h[0].words else "" for h in out]
                rows.append((label, lm_label if lm else "none", beam, secs, wer(hyps, refs), load_s, load_mb))
                print(f"  {label:22s} LM {rows[-1][1]:6s} beam {beam:3d}: load {load_s:6.2f} s (+{load_mb:5.0f} MB)"
                      f"  decode {secs:8.3f} s  WER {100 * rows[-1][4]:6.2f}%", flush=True)
                del fn, out

    print()
    print("| decoder | LM | beam | load s | load +MB | decode s | WER % | ours is x faster |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, lm, beam, secs, w, load_s, load_mb in rows:
        ref = [r for r in rows if r[1] == lm and r[2] == beam and r[0] == ("ours+lex" if "+lex" in label else "ours")]
        speed = f"{secs / ref[0][3]:.1f}" if ref and not label.startswith("ours") and label != "greedy" else ""
        print(f"| {label} | {lm} | {beam} | {load_s:.2f} | {load_mb:.0f} | {secs:.3f} | {100 * w:.2f} | {speed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

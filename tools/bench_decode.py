"""Decoder speed, memory and WER: our C++ prefix beam search against pyctcdecode and flashlight-text.

All decoders get the same log-probabilities, the same word LM file and the same beam width, in
one run; the script prints, per decoder, the set-up ("load") time, the peak resident memory, the
decode time (wall and CPU seconds, real-time factor) and WER/CER, with greedy as a floor. Each
decoder runs in its own process (reading the log-probs from a .npz), so its peak memory is its
own.

Inputs, in order of preference:

  # the book-scale LM (issue 14), everything from the recipe's exp dir: the model's dev
  # log-probs (computed once, cached in --cache), lm/book-3gram.arpa (a pruned 3-gram of
  # 2.8 M n-grams), its 118 k words as the lexicon, beam 64, alpha 0.75, beta 3.0, threads 1 and 2
  flock /tmp/asr-cpu.lock .venv/bin/python tools/bench_decode.py --book --limit 100 \
      --cache /tmp/dev-logprobs.npz

  # a trained model on held-out utterances, LM built from the training transcripts
  flock /tmp/asr-cpu.lock .venv/bin/python tools/bench_decode.py \
      --model exp/mini_librispeech/model.pt --manifest exp/mini_librispeech/data/dev.jsonl \
      --lm-text exp/mini_librispeech/data/train.jsonl --beam 8 32

  # synthetic peaky CTC posteriors spelled from transcripts (no model needed)
  flock /tmp/asr-cpu.lock .venv/bin/python tools/bench_decode.py --synthetic 100 \
      --lm-text exp/mini_librispeech/data/train.jsonl --manifest exp/mini_librispeech/data/dev.jsonl

``--lm`` takes an existing ARPA file (or a KenLM binary: then ours runs the slow Python search);
``--lm-text`` builds a word 3-gram (modified Kneser-Ney) from a text file or manifest first. With
an LM, flashlight needs a lexicon (its lexicon-free decoder only fuses token-level LMs), so
flashlight and ours both decode with a lexicon ("+lex"): ``--lexicon FILE`` (a word per line,
normalised like the transcripts) or else the LM's vocabulary; ours is also run open-vocabulary.
pyctcdecode gets the same word list as its unigrams, as it expects. "load" is each decoder's
set-up: reading the LM (KenLM's ARPA reader for pyctcdecode and flashlight, ours in C++) and
building the lexicon trie. pyctcdecode needs ``pip install --no-deps pyctcdecode pygtrie`` (its
numpy<2 pin is too strict).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.config import LOOKAHEAD_MODES  # noqa: E402
from asr.data import read_manifest  # noqa: E402
from asr.decode import BeamOptions, greedy_search  # noqa: E402
from asr.decode.backends import BackendError, lm_vocabulary, make_decoder  # noqa: E402
from asr.metrics import ErrorCounts, char_errors, word_errors  # noqa: E402
from asr.text import CharTokenizer, normalize_text  # noqa: E402


def model_log_probs(model_path: str, manifest: str, limit: int, batch_seconds: float = 60.0):
    """(B, T, V) log-probs, (B,) lengths, references, token strings and (B,) audio seconds."""
    from tqdm import tqdm

    from asr.audio import load_audio
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
    return (*_pad(lps), refs, model.tokenizer.token_strings(), [u.duration for u in utts])


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


def cer(hyps: list[str], refs: list[str]) -> float:
    total = ErrorCounts()
    for h, r in zip(hyps, refs):
        total += char_errors(r, h)
    return total.rate


def memory_mb() -> tuple[float, float]:
    """(resident, peak resident) memory of this process in MB (Linux; zeros elsewhere)."""
    out = {"VmRSS": 0.0, "VmHWM": 0.0}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":")[0]
                if key in out:
                    out[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out["VmRSS"], out["VmHWM"]


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


def load_inputs(args, ap):
    """(log-probs (B, T, V), lengths (B,), references, token strings, audio seconds or None, source)."""
    if args.model:
        if not args.manifest:
            ap.error("--model needs --manifest")
        want = args.limit or len(read_manifest(args.manifest, strict=False))
        if args.cache and Path(args.cache).is_file():
            z = np.load(args.cache, allow_pickle=False)
            if str(z["model"]) == str(Path(args.model).resolve()) and len(z["refs"]) >= want:
                n = want
                lp, lens = z["lp"][:n], z["lens"][:n]
                lp = lp[:, : int(lens.max())]
                source = f"{Path(args.model)} on {Path(args.manifest).name} ({n} utterances, from {args.cache})"
                return lp, lens, list(z["refs"][:n]), list(z["tokens"]), float(z["audio_s"][:n].sum()), source
        lp, lens, refs, tokens, durs = model_log_probs(args.model, args.manifest, args.limit)
        if args.cache:
            tmp = Path(str(args.cache) + ".tmp.npz")
            np.savez(tmp, lp=lp, lens=lens, refs=np.array(refs), tokens=np.array(tokens),
                     audio_s=np.array(durs), model=np.array(str(Path(args.model).resolve())))
            tmp.replace(args.cache)
        source = f"{Path(args.model)} on {Path(args.manifest).name} ({len(refs)} utterances)"
        return lp, lens, refs, tokens, float(sum(durs)), source
    if args.synthetic:
        src = args.manifest or args.lm_text
        if not src:
            ap.error("--synthetic needs --manifest (or --lm-text) for the texts to spell")
        lp, lens, refs, tokens = synthetic_log_probs(read_texts(src), args.synthetic)
        return lp, lens, refs, tokens, None, f"{len(refs)} synthetic peaky utterances spelled from {Path(src).name}"
    ap.error("give --book, --model and --manifest, or --synthetic N")


def run_row(spec: dict) -> dict:
    """One decoder on the inputs in ``spec["inputs"]`` (.npz): set-up and decode times, memory, WER."""
    z = np.load(spec["inputs"], allow_pickle=False)
    lp, lens, refs, tokens = z["lp"], z["lens"], list(z["refs"]), list(z["tokens"])
    lexicon = read_lexicon(spec["lexicon"]) if spec.get("lexicon") else None
    opts = BeamOptions(**spec["options"])
    rss0, _ = memory_mb()
    try:  # peak memory from here on (Linux >= 4.0); else the process' peak since it started
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        fn = make_decoder(spec["backend"], tokens, opts, spec.get("lm"), lexicon)
        fn(lp[:1, :1], np.ones(1, dtype=np.int64))  # lazy set-up (our trie) counts as loading
    except BackendError as e:
        return {"skipped": str(e)}
    load_s, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss1, _ = memory_mb()
    best = (float("inf"), 0.0)
    for _ in range(spec.get("repeat", 1)):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(lp, lens)
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    _, peak = memory_mb()
    hyps = [" ".join(h[0].words) if h and h[0].words else "" for h in out]
    return {"load_s": load_s, "load_cpu": load_cpu, "load_mb": rss1 - rss0, "base_mb": rss0, "peak_mb": peak,
            "decode_s": best[0], "decode_cpu": best[1], "wer": wer(hyps, refs), "cer": cer(hyps, refs)}


def run_isolated(spec: dict) -> dict:
    """``run_row`` in a fresh Python process (so memory figures are this decoder's alone)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--row", json.dumps(spec)], capture_output=True,
                          text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"skipped": f"failed (exit {proc.returncode}): {tail}"}
    return json.loads(lines[-1])


def book_preset(args) -> None:
    """Fill unset options from the recipe's experiment directory (issue 14's book-LM comparison)."""
    exp = Path(args.exp)
    args.model = args.model or str(exp / "model.pt")
    args.manifest = args.manifest or str(exp / "data/dev.jsonl")
    args.lm = args.lm or str(exp / "lm/book-3gram.arpa")
    args.lexicon = args.lexicon or str(exp / "lm/book-words.txt")
    args.beam = args.beam or [64]
    args.alpha = 0.75 if args.alpha is None else args.alpha
    args.beta = 3.0 if args.beta is None else args.beta
    args.workers = args.workers or 2
    args.no_lm_runs = True
    for f in (args.model, args.manifest, args.lm, args.lexicon):
        if not Path(f).is_file():
            sys.exit(f"bench_decode.py --book: {f} does not exist; run recipes/mini_librispeech/run.sh "
                     "(stages 1-3) or give --exp DIR")


def decoder_rows(names: list[str], lm_path, lexicon_file, workers: int) -> list[tuple[str, str, int, bool]]:
    """(label, backend, threads, with lexicon) of each decoder run for one LM setting."""
    rows = []
    for name in names:
        if name == "ours":
            variants = [("ours", False)] + ([("ours+lex", True)] if lm_path else [])
            for label, lex in variants:
                rows.append((label, "ours", 1, lex))
                if workers > 1:
                    rows.append((f"{label} x{workers} threads", "ours", workers, lex))
        elif name == "flashlight":
            rows.append(("flashlight+lex" if lm_path else "flashlight", name, 1, bool(lm_path)))
        else:
            rows.append((name, name, 1, bool(lm_path)))  # pyctcdecode: the word list as unigrams
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--book", action="store_true",
                    help="issue 14's book-LM comparison: model, dev set, book LM and lexicon from --exp; "
                         "beam 64, alpha 0.75, beta 3.0, ours at 1 and 2 threads (each overridable)")
    ap.add_argument("--exp", default="exp/mini_librispeech", help="experiment directory for --book")
    ap.add_argument("--model", help="checkpoint; log-probs are computed for --manifest")
    ap.add_argument("--manifest", help="held-out utterances (references; audio when --model)")
    ap.add_argument("--synthetic", type=int, default=0, help="N synthetic utterances instead of a model")
    ap.add_argument("--lm", help="ARPA word LM")
    ap.add_argument("--lm-text", help="build a word 3-gram from this text/manifest instead of --lm")
    ap.add_argument("--lexicon", help="word list for the lexicon runs (default: the LM's vocabulary)")
    ap.add_argument("--beam", type=int, nargs="+", help="beam widths (default 8)")
    ap.add_argument("--alpha", type=float, help="LM weight (ln P; default 0.5)")
    ap.add_argument("--beta", type=float, help="word bonus (default 1.0)")
    ap.add_argument("--token-min-logp", type=float, default=-10.0, help="token pruning, all decoders")
    ap.add_argument("--lm-lookahead", choices=LOOKAHEAD_MODES, default="context",
                    help="ours with an LM and a lexicon (flashlight's lexicon decoder smears unigrams)")
    ap.add_argument("--decoders", default="ours,flashlight,pyctcdecode", help="comma-separated")
    ap.add_argument("--workers", type=int, default=0, help="also time ours with this many threads")
    ap.add_argument("--limit", type=int, default=0, help="first N utterances of the manifest")
    ap.add_argument("--repeat", type=int, default=1, help="best of N timings")
    ap.add_argument("--no-lm-runs", action="store_true", help="skip the runs without an LM")
    ap.add_argument("--cache", help="save the model's log-probs here (.npz) and reuse them next time")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--row", help=argparse.SUPPRESS)  # internal: one decoder, in a child process
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.row:
        print(json.dumps(run_row(json.loads(args.row))))
        return 0
    if args.book:
        book_preset(args)
    args.beam = args.beam or [8]
    args.alpha = 0.5 if args.alpha is None else args.alpha
    args.beta = 1.0 if args.beta is None else args.beta

    lp, lens, refs, tokens, audio_s, source = load_inputs(args, ap)
    tmp = tempfile.TemporaryDirectory(prefix="bench-decode-")
    inputs = str(Path(tmp.name) / "inputs.npz")
    np.savez(inputs, lp=lp, lens=lens, refs=np.array(refs), tokens=np.array(tokens))
    lm_path = args.lm
    if args.lm_text and not lm_path:
        from asr.lm_build import build_lm

        lm_path = str(Path(tmp.name) / "lm.arpa")
        counts = build_lm(args.lm_text, lm_path, order=3)
        print(f"built a 3-gram from {args.lm_text}: {counts}")
    lexicon_file = args.lexicon
    lm_label = "none"
    if lm_path:
        head = Path(lm_path).read_bytes()[:4096].decode("utf-8", "replace")
        counts = [ln.split("=")[1] for ln in head.splitlines() if ln.startswith("ngram ")]
        lm_label = f"{len(counts)}-gram"
        if not lexicon_file:
            lexicon_file = str(Path(tmp.name) / "lm-words.txt")
            Path(lexicon_file).write_text("\n".join(lm_vocabulary(lm_path)) + "\n", encoding="utf-8")
        print(f"LM {lm_path}: {lm_label}, n-grams per order {' / '.join(counts)}, "
              f"{Path(lm_path).stat().st_size / 2**20:.0f} MB; lexicon {lexicon_file}")
    audio = f", {audio_s / 60:.1f} min of audio" if audio_s else ""
    print(f"input: {source}; {int(lens.sum())} frames{audio}, vocabulary {lp.shape[2]}; alpha {args.alpha}, "
          f"beta {args.beta}, token_min_logp {args.token_min_logp}; each decoder in its own process", flush=True)

    t0 = time.perf_counter()
    greedy = greedy_search(torch.from_numpy(lp), torch.from_numpy(lens))
    g_hyps = ["".join(tokens[i] for i in g).strip() for g in greedy]
    rows = [{"label": "greedy", "lm": "-", "beam": "-", "decode_s": time.perf_counter() - t0,
             "wer": wer(g_hyps, refs), "cer": cer(g_hyps, refs)}]
    names = [n.strip() for n in args.decoders.split(",") if n.strip()]
    settings = ([] if args.no_lm_runs else [None]) + ([lm_path] if lm_path else [])
    for beam in args.beam:
        for lm in settings:
            for label, backend, threads, with_lex in decoder_rows(names, lm, lexicon_file, args.workers):
                options = {"beam_size": beam, "token_min_logp": args.token_min_logp, "lm_weight": args.alpha,
                           "word_bonus": args.beta, "num_workers": threads, "lm_lookahead": args.lm_lookahead}
                spec = {"inputs": inputs, "backend": backend, "options": options, "lm": lm,
                        "lexicon": lexicon_file if with_lex and lm else None, "repeat": args.repeat}
                r = run_isolated(spec)
                if "skipped" in r:
                    print(f"  skipping {label}: {r['skipped']}", flush=True)
                    continue
                rows.append({"label": label, "lm": lm_label if lm else "none", "beam": beam, **r})
                print(f"  {label:24s} LM {rows[-1]['lm']:6s} beam {beam:3d}: load {r['load_s']:6.2f} s "
                      f"(CPU {r['load_cpu']:5.2f}, +{r['load_mb']:4.0f} MB, peak {r['peak_mb']:5.0f} MB)  decode "
                      f"{r['decode_s']:8.2f} s (CPU {r['decode_cpu']:7.2f})  WER {100 * r['wer']:6.2f}%  "
                      f"CER {100 * r['cer']:6.2f}%", flush=True)
    print_table(rows, audio_s)
    if args.json:
        Path(args.json).write_text(json.dumps({"source": source, "audio_s": audio_s, "rows": rows}, indent=1))
    return 0


def print_table(rows: list[dict], audio_s: float | None) -> None:
    """The rows as Markdown; "x faster" compares CPU seconds with ours at one thread (same LM, beam,
    lexicon or not)."""
    print()
    print("| decoder | LM | beam | load s | load +MB | peak RSS MB | decode s | CPU s | RTF (CPU) | WER % | CER % "
          "| ours is x faster (CPU) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        lex = "+lex" in r["label"] or r["label"] == "pyctcdecode" and r["lm"] != "none"
        ref = [o for o in rows if o["lm"] == r["lm"] and o["beam"] == r["beam"]
               and o["label"] == ("ours+lex" if lex and r["label"] != "pyctcdecode" else "ours")]
        speed = ""
        if ref and not r["label"].startswith(("ours", "greedy")):
            speed = f"**{r['decode_cpu'] / ref[0]['decode_cpu']:.1f}**"
        cpu = r.get("decode_cpu", r["decode_s"])
        rtf = f"{cpu / audio_s:.4f}" if audio_s else "-"
        load = f"{r['load_s']:.2f} | {r['load_mb']:.0f} | {r['peak_mb']:.0f}" if "load_s" in r else "- | - | -"
        print(f"| {r['label']} | {r['lm']} | {r['beam']} | {load} | {r['decode_s']:.2f} | {cpu:.2f} | {rtf} | {100 * r['wer']:.2f} "
              f"| {100 * r['cer']:.2f} | {speed} |")


if __name__ == "__main__":
    sys.exit(main())

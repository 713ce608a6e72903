#!/usr/bin/env python
"""Training and inference throughput: our pipeline against the common naive one, in one run.

Both train the same model (frontend -> stack3 -> 4x256 BiLSTM -> CTC head, Adam) on the same
Mini LibriSpeech utterances, with the same padded-seconds budget per batch:

- ours:  duration-bucketed batches (asr.data.BucketBatchSampler), asr.model.CTCModel (each
         direction a unidirectional LSTM on the padded batch, the backward one reversed within
         each length: exact, at padded speed), denormals flushed to zero;
- naive: random batches (no bucketing), pack_padded_sequence into nn.LSTM(bidirectional=True),
         default float handling.

Audio is decoded once up front (both pipelines would pay the same for it), so the figures
are audio-seconds of real (unpadded) speech processed per second of wall time. Also measured:
inference with the same two pipelines, and the custom peephole LSTM against nn.LSTM.

The recipe's whole training step (``--pipeline``, on by default): real updates of
asr.train.Trainer with conf/mini_librispeech_cpu.yaml (speed perturbation, global CMVN,
Opus decoding in the data loader) on the same utterances, side by side:

- today:  data.cache=off, fp32, torch's dropout (each utterance decoded and resampled in every
          epoch: the recipe before issue 15);
- cache:  data.cache=ram, measured once the cache holds every speed variant (a run reaches
          that after its first epochs; the CMVN pass fills the unperturbed waveforms);
- cache + bf16: train.amp=bf16, only on CPUs where train.amp=auto picks it (AMX; otherwise the
          row says why not; --force-bf16 measures it anyway: AVX512-BF16 without AMX, or emulation);
- + cheap dropout: asr.model.Dropout (4 mask elements per 64-bit random word) instead of
          torch's (one ``bernoulli_`` draw per element);
- + direction-parallel: train.direction_parallel=on (the two directions of each layer at once,
          one core each, asr.parallel_rnn);
- + batch x2: twice the config's data.max_batch_seconds (oneDNN's bf16 LSTM gains with the batch);
- + keep freed memory: asr.runtime.keep_freed_memory (glibc malloc keeps freed activations for
          the next step instead of returning them to the kernel): the recipe today. Last, as it
          cannot be undone within the process; the rows above run without it.

Each row also splits the wall time into data loading (decode, speed perturbation, collate),
features (the frontend) and the rest (model, CTC, backward, Adam).

Direction parallelism on the bare model (``ours``, same batches and audio budget): sequential
with 1 thread, sequential with --threads threads, and the two directions in parallel (one
thread each; the rest of the step on --threads). ``--directions`` runs only that table and the
pipeline's today, + cheap dropout and + direction-parallel rows:

    .venv/bin/python tools/bench_train.py --directions --train-seconds 600 --pipeline-seconds 600

    flock /tmp/asr-cpu.lock .venv/bin/python tools/bench_train.py           # about 5 minutes
    .venv/bin/python tools/bench_train.py --train-seconds 100 --infer-seconds 300   # quicker
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.audio import load_audio  # noqa: E402
from asr.config import FeatureConfig, ModelConfig, load_config  # noqa: E402
from asr.data import BucketBatchSampler, Utterance, read_manifest, write_manifest  # noqa: E402
from asr.features import Frontend  # noqa: E402
from asr.model import CTCModel, Subsampling, count_parameters, set_direction_parallel  # noqa: E402
from asr.runtime import cpu_bf16_support, keep_freed_memory  # noqa: E402
from asr.text import CharTokenizer  # noqa: E402

# "today": the recipe's batch (conf/mini_librispeech_cpu.yaml), fixed here so that the rows keep their meaning
# if the recipe's batch changes; "+ batch x2" is the 240 s variant measured in recipes/mini_librispeech/README.md
TODAY_BATCH_SECONDS = 120.0
LIBRI = ROOT.parent / "shared" / "data" / "mini_librispeech" / "LibriSpeech" / "train-clean-5"


def mini_librispeech_manifest(path: Path) -> list[Utterance]:
    """Import Mini LibriSpeech once (asr.importers) and cache the manifest."""
    if path.is_file():
        return read_manifest(path)
    from asr.importers import import_librispeech

    utts = import_librispeech(LIBRI).utts
    write_manifest(utts, path)
    return utts


class NaiveCTC(nn.Module):
    """The common recipe: packed sequences into one nn.LSTM(bidirectional=True)."""

    def __init__(self, cfg: ModelConfig, input_size: int, vocab: int):
        super().__init__()
        self.subsample = Subsampling(cfg.subsampling, input_size)
        self.rnn = nn.LSTM(self.subsample.output_size, cfg.hidden_size, num_layers=cfg.num_layers,
                           bidirectional=True, dropout=cfg.dropout, batch_first=True)
        self.head = nn.Linear(2 * cfg.hidden_size, vocab)

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lens = self.subsample(feats, lens)
        packed = pack_padded_sequence(x, lens.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return torch.log_softmax(self.head(out), dim=-1), lens


def random_batches(durs: list[float], max_seconds: float, max_size: int, seed: int) -> list[list[int]]:
    """Shuffle, then fill each batch up to the same padded-seconds budget as the sampler."""
    order = list(range(len(durs)))
    random.Random(seed).shuffle(order)
    batches, cur, cur_max = [], [], 0.0
    for i in order:
        m = max(cur_max, durs[i])
        if cur and (m * (len(cur) + 1) > max_seconds or len(cur) >= max_size):
            batches.append(cur)
            cur, m = [], durs[i]
        cur.append(i)
        cur_max = m
    return batches + ([cur] if cur else [])


def make_batch(idx: list[int], wavs: list[torch.Tensor], toks: list[list[int]]):
    lens = torch.tensor([wavs[i].numel() for i in idx])
    x = torch.zeros(len(idx), int(lens.max()))
    tl = torch.tensor([len(toks[i]) for i in idx])
    y = torch.zeros(len(idx), int(tl.max()), dtype=torch.long)
    for j, i in enumerate(idx):
        x[j, : lens[j]] = wavs[i]
        y[j, : tl[j]] = torch.tensor(toks[i])
    return x, lens, y, tl


def run(name: str, model: nn.Module, frontend: Frontend, batches, wavs, toks, sr: int,
        budget_s: float, train: bool, flush: bool) -> dict:
    """Process batches until ``budget_s`` seconds of real audio are done (after one warm-up)."""
    torch.set_flush_denormal(flush)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3) if train else None
    model.train(train)
    audio = padded = 0.0
    t0 = None
    bar = tqdm(total=budget_s, desc=f"{name} {'train' if train else 'infer'}", unit="audio-s", leave=False)
    for k, idx in enumerate(batches):
        x, lens, y, tl = make_batch(idx, wavs, toks)
        with torch.set_grad_enabled(train):
            with torch.no_grad():
                feats, flens = frontend(x, lens)
            lp, olens = model(feats, flens)
            if train:
                loss = nn.functional.ctc_loss(lp.transpose(0, 1), y, olens, tl, zero_infinity=True)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
        if k == 0:
            t0 = time.perf_counter()  # the first batch is a warm-up
            continue
        audio += float(lens.sum()) / sr
        padded += float(lens.max()) * len(idx) / sr
        bar.update(float(lens.sum()) / sr)
        if audio >= budget_s:
            break
    bar.close()
    wall = time.perf_counter() - t0
    torch.set_flush_denormal(True)
    return {"audio_s": audio, "wall_s": wall, "audio_s_per_s": audio / wall,
            "padding": 1 - audio / padded, "batches": k}


def peephole_ratio(threads: int) -> dict:
    """Forward+backward of one BiLSTM layer (80 -> 256/direction, 8 x 300 frames)."""
    out = {}
    x = torch.randn(8, 300, 80)
    lens = torch.randint(200, 301, (8,))
    lens[0] = 300
    for rnn in ("lstm", "lstm_peephole"):
        cfg = ModelConfig(rnn_type=rnn, num_layers=1, hidden_size=256, subsampling="none")
        model = CTCModel(cfg, 80, 30)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            lp, _ = model(x, lens)
            lp.sum().backward()
            times.append(time.perf_counter() - t)
        out[rnn] = min(times)
    out["slowdown"] = out["lstm_peephole"] / out["lstm"]
    return out


def pipeline_run(name: str, manifest: Path, overrides: list[str], budget_s: float, warm_cache: bool,
                 threads: int, torch_dropout: bool = False, keep_memory: bool = False) -> dict:
    """Real training updates (asr.train.Trainer, the CPU recipe's config) through the real data
    loader until ``budget_s`` seconds of (speed-perturbed) audio are trained, after one warm-up
    update; wall time split into data loading, features and the rest of the step."""
    import asr.train
    from asr.train import Trainer

    # glibc's malloc settings cannot be undone in a process: the rows before the last run without them
    asr.train.keep_freed_memory = keep_freed_memory if keep_memory else (lambda: False)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / "conf" / "mini_librispeech_cpu.yaml", [
            f"run_dir={tmp}", f"data.train_manifest={manifest}", "data.dev_manifest=",
            f"train.threads={threads}", "train.log_every=100000", *overrides])
        t = Trainer(cfg, resume=False)
        if torch_dropout:  # the recipe's dropout before asr.model.Dropout
            t.model.ctc.dropout = nn.Dropout(cfg.model.dropout)
        logging.getLogger("asr").setLevel(logging.WARNING)
        ds = t.train_loader.dataset
        if warm_cache and t.cache is not None:  # the state a run reaches after its first epochs
            for u in tqdm(ds.utts, desc=f"{name}: fill cache", leave=False):
                for f in cfg.augment.speed_perturb or [1.0]:
                    ds.waveform(u, float(f))
        feat_s = [0.0]
        t0_box = [0.0]
        t.model.frontend.register_forward_pre_hook(lambda *_: t0_box.__setitem__(0, time.perf_counter()))
        t.model.frontend.register_forward_hook(
            lambda *_: feat_s.__setitem__(0, feat_s[0] + time.perf_counter() - t0_box[0]))
        t.model.train()
        epoch, k, audio, data_s, step_s = 0, 0, 0.0, 0.0, 0.0
        sampler = t.train_loader.batch_sampler
        sampler.set_epoch(epoch)
        it = iter(t.train_loader)
        bar = tqdm(total=budget_s, desc=f"{name} train", unit="audio-s", leave=False)
        while audio < budget_s:
            a = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                epoch += 1
                sampler.set_epoch(epoch)
                ds.epoch = epoch
                it = iter(t.train_loader)
                continue
            b = time.perf_counter()
            out = t.train_step([batch])
            c = time.perf_counter()
            if k > 0:  # the first update is a warm-up
                data_s += b - a
                step_s += c - b
                audio += out["audio_seconds"]
                bar.update(out["audio_seconds"])
            else:
                feat_s[0] = 0.0
            k += 1
        bar.close()
        wall = data_s + step_s
        return {"audio_s": audio, "wall_s": wall, "audio_s_per_s": audio / wall, "updates": k - 1,
                "data_s": data_s, "features_s": feat_s[0], "model_s": step_s - feat_s[0],
                "cache_gb": t.cache.nbytes / 2**30 if t.cache is not None else 0.0}


def pipeline_table(pool: list[Utterance], args) -> dict:
    native, why = cpu_bf16_support()
    bf16_ok = native or args.force_bf16
    batch = args.pipeline_batch_seconds or TODAY_BATCH_SECONDS
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "pool.jsonl"
        write_manifest(pool, manifest)
        cheap = ["data.cache=ram", "train.amp=bf16" if bf16_ok else "train.amp=off"]
        # (name, overrides, warm cache, run it, torch's dropout, keep freed memory: process-wide, so last)
        rows = [("today (no cache, fp32)", ["data.cache=off", "train.amp=off"], False, True, True, False),
                ("cache", ["data.cache=ram", "train.amp=off"], True, not args.directions, True, False),
                ("cache + bf16", ["data.cache=ram", "train.amp=bf16"], True, bf16_ok and not args.directions,
                 True, False),
                ("+ cheap dropout", cheap, True, True, False, False),
                ("+ direction-parallel", [*cheap, "train.direction_parallel=on"], True, True, False, False),
                ("+ batch x2", [*cheap, f"data.max_batch_seconds={2 * batch}"], True, not args.directions,
                 False, False),
                ("+ keep freed memory", cheap, True, not args.directions, False, True)]
        res = {"bf16_native": native, "bf16_why": why, "batch": batch, "overrides": args.pipeline_override,
               "rows": {}}
        for name, over, warm, ok, torch_dropout, keep in rows:
            if args.directions and not ok:
                continue
            over = ["train.direction_parallel=off", f"data.max_batch_seconds={batch}", *args.pipeline_override,
                    *over]
            res["rows"][name] = (pipeline_run(name, manifest, over, args.pipeline_seconds, warm, args.threads,
                                              torch_dropout, keep) if ok else None)
    return res


def print_pipeline(res: dict, naive: float | None) -> None:
    rows = res["rows"]
    base = rows["today (no cache, fp32)"]["audio_s_per_s"]
    print(f"\nThe recipe's training step through the real data pipeline, batches of <= {res['batch']:.0f} padded "
          f"seconds{''.join(' ' + o for o in res['overrides'])} (bf16: {res['bf16_why']})")
    print(f"{'':24}{'audio-s/s':>10}{'x today':>9}{'data s':>8}{'feats s':>8}{'model s':>8}{'updates':>8}")
    for name, r in rows.items():
        if r is None:
            print(f"{name:24}  not run: train.amp=auto would not pick bf16 here (--force-bf16 runs it)")
            continue
        print(f"{name:24}{r['audio_s_per_s']:10.1f}{r['audio_s_per_s'] / base:8.2f}x{r['data_s']:8.1f}"
              f"{r['features_s']:8.1f}{r['model_s']:8.1f}{r['updates']:8d}")
    if naive:
        print(f"{'naive packed (above)':24}{naive:10.1f}{naive / base:8.2f}x")


def direction_table(mcfg: ModelConfig, vocab: int, frontend: Frontend, batches, wavs, toks, sr: int,
                    args) -> dict:
    """Training audio-s/s of the same model on the same batches: sequential with 1 thread,
    sequential with ``args.threads``, and direction-parallel (one thread per direction, the rest
    of the step on ``args.threads``)."""
    rows = {}
    for name, threads, parallel in (("sequential, 1 thread", 1, False),
                                    (f"sequential, {args.threads} threads", args.threads, False),
                                    ("direction-parallel", args.threads, True)):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = CTCModel(mcfg, 80, vocab)
        set_direction_parallel(model, parallel)
        rows[name] = run(name, model, frontend, batches, wavs, toks, sr, args.train_seconds, True, True)
    torch.set_num_threads(args.threads)
    return rows


def print_directions(rows: dict, threads: int) -> None:
    base = rows[f"sequential, {threads} threads"]["audio_s_per_s"]
    print(f"\nDirection parallelism, bare model training (same batches; x vs sequential on {threads} threads)")
    print(f"{'':28}{'audio-s/s':>10}{'x':>8}{'batches':>8}")
    for name, r in rows.items():
        print(f"{name:28}{r['audio_s_per_s']:10.1f}{r['audio_s_per_s'] / base:7.2f}x{r['batches']:8d}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=Path("/tmp/mini_librispeech_train.jsonl"),
                    help="Mini LibriSpeech manifest (imported and cached here if missing)")
    ap.add_argument("--pool-seconds", type=float, default=1500, help="audio decoded up front")
    ap.add_argument("--train-seconds", type=float, default=300, help="audio trained on per pipeline")
    ap.add_argument("--infer-seconds", type=float, default=900, help="audio decoded per pipeline")
    ap.add_argument("--max-batch-seconds", type=float, default=60, help="padded seconds per batch")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--pipeline-seconds", type=float, default=600,
                    help="audio trained on per row of the recipe-pipeline table (0 skips the table)")
    ap.add_argument("--pipeline-batch-seconds", type=float,
                    help="data.max_batch_seconds of the pipeline rows (default: 120, the recipe's)")
    ap.add_argument("--pipeline-override", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every pipeline row, e.g. model.hidden_size=256 (repeatable)")
    ap.add_argument("--force-bf16", action="store_true", help="measure bf16 also where it is not native")
    ap.add_argument("--skip-model-bench", action="store_true",
                    help="only the recipe-pipeline table (no ours/naive model comparison)")
    ap.add_argument("--directions", action="store_true",
                    help="only direction parallelism: its bare-model table and the pipeline's today, + cheap dropout and "
                         "direction-parallel rows")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    utts = [u for u in mini_librispeech_manifest(args.manifest) if u.duration <= 20.0]
    random.Random(0).shuffle(utts)
    pool, total = [], 0.0
    for u in utts:
        if total >= args.pool_seconds:
            break
        pool.append(u)
        total += u.duration
    sr = 16000
    wavs = [torch.from_numpy(load_audio(u.audio, sr)) for u in tqdm(pool, desc="decode audio", leave=False)]
    tok = CharTokenizer(sorted({c for u in pool for c in u.text.lower()}))
    toks = [tok.encode(u.text) for u in pool]
    durs = [w.numel() / sr for w in wavs]

    mcfg = ModelConfig(rnn_type="lstm", num_layers=4, hidden_size=256, dropout=0.15, subsampling="stack3")
    frontend = Frontend(FeatureConfig(n_mels=80, cmvn="utterance")).eval()
    torch.manual_seed(0)
    ours, naive = CTCModel(mcfg, 80, len(tok)), NaiveCTC(mcfg, 80, len(tok))
    n_ours, n_naive = count_parameters(ours), count_parameters(naive)
    assert n_ours == n_naive, (n_ours, n_naive)

    bucketed = BucketBatchSampler(durs, args.max_batch_seconds, 64, 10, shuffle=True, seed=0)
    ours_batches = list(bucketed)
    naive_batches = random_batches(durs, args.max_batch_seconds, 64, seed=0)
    res = {"threads": args.threads, "pool_utterances": len(pool), "pool_seconds": sum(durs),
           "parameters": n_ours, "model": "stack3 + 4x256 BiLSTM, 80 log-mel, char CTC"}
    if args.pipeline_seconds > 0:
        res["pipeline"] = pipeline_table(pool, args)
    if args.directions:
        res["directions"] = direction_table(mcfg, len(tok), frontend, ours_batches, wavs, toks, sr, args)
        print_directions(res["directions"], args.threads)
        if "pipeline" in res:
            print_pipeline(res["pipeline"], None)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
        return
    if args.skip_model_bench:
        print_pipeline(res["pipeline"], None)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
        return
    res["train_ours"] = run("ours", ours, frontend, ours_batches, wavs, toks, sr, args.train_seconds, True, True)
    res["train_naive"] = run("naive", naive, frontend, naive_batches, wavs, toks, sr, args.train_seconds, True, False)
    res["infer_ours"] = run("ours", ours, frontend, ours_batches, wavs, toks, sr, args.infer_seconds, False, True)
    res["infer_naive"] = run("naive", naive, frontend, naive_batches, wavs, toks, sr, args.infer_seconds, False, False)
    res["peephole"] = peephole_ratio(args.threads)
    res["directions"] = direction_table(mcfg, len(tok), frontend, ours_batches, wavs, toks, sr, args)

    print(f"Mini LibriSpeech, {len(pool)} utterances ({sum(durs) / 60:.1f} min) decoded up front; "
          f"{res['model']}, {n_ours / 1e6:.2f}M parameters; {args.threads} threads; "
          f"batches of <= {args.max_batch_seconds:.0f} padded seconds")
    print(f"{'':18}{'ours':>14}{'naive':>14}{'speed-up':>10}")
    for kind in ("train", "infer"):
        a, b = res[f"{kind}_ours"], res[f"{kind}_naive"]
        print(f"{kind + ' audio-s/s':18}{a['audio_s_per_s']:14.1f}{b['audio_s_per_s']:14.1f}"
              f"{a['audio_s_per_s'] / b['audio_s_per_s']:9.1f}x")
        print(f"{kind + ' padding':18}{100 * a['padding']:13.1f}%{100 * b['padding']:13.1f}%")
    p = res["peephole"]
    print(f"peephole LSTM (Python cell) vs nn.LSTM, one 256-unit BiLSTM layer fwd+bwd on 8x300 frames: "
          f"{p['lstm_peephole']:.2f} s vs {p['lstm']:.2f} s ({p['slowdown']:.1f}x slower)")
    print_directions(res["directions"], args.threads)
    if "pipeline" in res:
        print_pipeline(res["pipeline"], res["train_naive"]["audio_s_per_s"])
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

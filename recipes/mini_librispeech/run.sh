#!/usr/bin/env bash
# Mini LibriSpeech (train-clean-5) BiLSTM-CTC recipe, in stages.
#
#   bash recipes/mini_librispeech/run.sh                      # everything (sets up .venv first), CPU budget config
#   bash recipes/mini_librispeech/run.sh --stage 4            # only decoding + reports
#   bash recipes/mini_librispeech/run.sh --conf conf/mini_librispeech_gpu.yaml --exp exp/mls_gpu
#   bash recipes/mini_librispeech/run.sh --download --corpus /data/LibriSpeech   # fetch OpenSLR 31 first
#
# Stages:
#   0  data: import the LibriSpeech-layout folder (any audio extension) -> manifest; fixed speaker-disjoint
#      dev split: speakers 1088, 1898 (female), 118, 163 (male) = 318 utterances; the rest trains
#   1  word 3-gram LM (modified Kneser-Ney) and its word list (the lexicon) from the TRAINING transcripts only
#   2  train (resumes automatically if the run folder has a checkpoint)
#   3  average the best checkpoints into model.pt (done by training when train.average_last > 1)
#   4  decode dev: greedy, beam, beam + LM restricted to the lexicon, beam + LM open-vocabulary
#      (alpha/beta tuned on dev for each); HTML + JSON reports
#   5  robustness: degraded copies of dev (MP3 24/40 kbit/s, Opus 12 kbit/s, telephone band, noise at
#      10 dB SNR, -30 dBFS; seeded, cached in $exp/data/degraded), decoded like clean dev
#      (--robust-modes: greedy and/or beam-lm, the open-vocabulary LM of stage 4d); table clean vs
#      degraded -> $exp/robustness.md
# Extra arguments of the form key=value are passed to `asr train` as config overrides.
set -euo pipefail
cd "$(dirname "$0")/../.."

stage=0; stop_stage=5
conf=conf/mini_librispeech_cpu.yaml
exp=exp/mini_librispeech
corpus=../shared/data/mini_librispeech/LibriSpeech
download=false
lm_order=3
beam=64
dev_speakers=1088,1898,118,163
robust_kinds="mp3:24 mp3:40 opus:12 phone noise:10 level:-30"
robust_modes="greedy"
overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2;;
    --stop-stage) stop_stage=$2; shift 2;;
    --conf) conf=$2; shift 2;;
    --exp) exp=$2; shift 2;;
    --corpus) corpus=$2; shift 2;;
    --download) download=true; shift;;
    --lm-order) lm_order=$2; shift 2;;
    --beam) beam=$2; shift 2;;
    --robust-kinds) robust_kinds=$2; shift 2;;
    --robust-modes) robust_modes=$2; shift 2;;
    -h|--help) sed -n '2,24p' "$0"; exit 0;;
    *=*) overrides+=("$1"); shift;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2;;
  esac
done
log() { echo "[$(date +%H:%M:%S)] [mini_librispeech] $*"; }
if [ -z "${PY:-}" ]; then
  # a fresh clone: set up .venv first (tools/install.sh is a no-op when it is up to date)
  log "setup: bash tools/install.sh dev,lm,serve"
  bash tools/install.sh dev,lm,serve
  PY=.venv/bin/python
fi
ASR="$PY -m asr"
data=$exp/data
mkdir -p "$data"

if [ "$download" = true ]; then
  if [ ! -d "$corpus/train-clean-5" ]; then
    log "downloading OpenSLR 31 train-clean-5 into $corpus"
    mkdir -p "$corpus"
    curl -fL https://www.openslr.org/resources/31/train-clean-5.tar.gz | tar xz -C "$corpus" --strip-components=1
  fi
fi

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  src=$corpus/train-clean-5
  [ -d "$src" ] || { echo "run.sh: $src does not exist; pass --corpus DIR (the folder holding train-clean-5) or --download" >&2; exit 2; }
  log "stage 0: importing $src; dev speakers $dev_speakers"
  $ASR data import librispeech "$src" -o "$data/all.jsonl"
  $ASR data split "$data/all.jsonl" --dev-speakers "$dev_speakers" -o "$data/train.jsonl" "$data/dev.jsonl"
  $ASR data stats "$data/train.jsonl" "$data/dev.jsonl"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: word ${lm_order}-gram LM from the training transcripts -> $exp/lm/${lm_order}gram.arpa"
  mkdir -p "$exp/lm"
  $ASR lm build "$data/train.jsonl" -o "$exp/lm/${lm_order}gram.arpa" --order "$lm_order" \
    --lexicon "$exp/lm/words.txt"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "stage 2: training with $conf into $exp (log: $exp/train.log; tensorboard --logdir $exp/tb)"
  $ASR train -c "$conf" run_dir="$exp" data.train_manifest="$data/train.jsonl" \
    data.dev_manifest="$data/dev.jsonl" "${overrides[@]}"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  if [ ! -f "$exp/model.pt" ]; then
    log "stage 3: averaging the best checkpoints into $exp/model.pt"
    $ASR average "$exp"/checkpoints/best-epoch-*.pt -o "$exp/model.pt"
  else
    log "stage 3: $exp/model.pt exists (averaged by training: train.average_last)"
  fi
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  lm=$exp/lm/${lm_order}gram.arpa
  log "stage 4a: greedy decoding of dev"
  $ASR evaluate --model "$exp/model.pt" --manifest "$data/dev.jsonl" --method greedy --out "$exp/eval-dev-greedy"
  log "stage 4b: beam search (beam $beam), no LM"
  $ASR evaluate --model "$exp/model.pt" --manifest "$data/dev.jsonl" --method beam --beam-size "$beam" \
    --out "$exp/eval-dev-beam"
  lex=$exp/lm/words.txt
  log "stage 4c: beam + ${lm_order}-gram LM, words restricted to the lexicon ($lex): tuning alpha/beta on dev"
  $ASR decode --tune-lm --model "$exp/model.pt" --manifest "$data/dev.jsonl" --lm "$lm" --lexicon "$lex" \
    --beam-size "$beam"
  $ASR evaluate --model "$exp/model.pt" --manifest "$data/dev.jsonl" --method beam --beam-size "$beam" \
    --lm "$lm" --lexicon "$lex" --out "$exp/eval-dev-beam-lm-lex"
  # last, so that the tuned weights left beside the model are the open-vocabulary ones `asr transcribe --lm` uses
  log "stage 4d: beam + ${lm_order}-gram LM, open vocabulary: tuning alpha/beta on dev"
  $ASR decode --tune-lm --model "$exp/model.pt" --manifest "$data/dev.jsonl" --lm "$lm" --beam-size "$beam"
  $ASR evaluate --model "$exp/model.pt" --manifest "$data/dev.jsonl" --method beam --beam-size "$beam" \
    --lm "$lm" --out "$exp/eval-dev-beam-lm"
  log "reports: $exp/eval-dev-*/report.html"
fi
if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  deg=$data/degraded
  log "stage 5: robustness: degraded copies of dev ($robust_kinds) -> $deg (built once, then cached)"
  kind_args=(); folders=()
  for k in $robust_kinds; do kind_args+=(--kind "$k"); folders+=("${k//:/_}"); done
  $ASR data degrade "$data/dev.jsonl" "${kind_args[@]}" -o "$deg" --seed 0
  for f in "${folders[@]}"; do
    m=$deg/$f/manifest.jsonl
    for mode in $robust_modes; do
      out=$exp/eval-dev-$f-$mode
      if [ "$out/report.json" -nt "$exp/model.pt" ] && [ "$out/report.json" -nt "$m" ]; then
        log "stage 5: $out is newer than the model and the data: kept"; continue
      fi
      log "stage 5: $mode decoding of dev $f"
      case "$mode" in
        greedy) $ASR evaluate --model "$exp/model.pt" --manifest "$m" --method greedy --out "$out";;
        beam-lm) $ASR evaluate --model "$exp/model.pt" --manifest "$m" --method beam --beam-size "$beam" \
                   --lm "$exp/lm/${lm_order}gram.arpa" --out "$out";;
        *) echo "run.sh: unknown --robust-modes entry $mode (greedy, beam-lm)" >&2; exit 2;;
      esac
    done
  done
  $PY tools/robustness_table.py "$exp" --kinds "${folders[@]}" --modes $robust_modes -o "$exp/robustness.md"
  log "robustness table: $exp/robustness.md"
fi
log "done"

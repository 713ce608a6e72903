#!/usr/bin/env bash
# Mini LibriSpeech (train-clean-5) BiLSTM-CTC recipe, in stages.
#
#   bash recipes/mini_librispeech/run.sh                      # everything (sets up .venv first), CPU budget config:
#                                                             # one stage, clean epochs then channels (about 75 min of training)
#   bash recipes/mini_librispeech/run.sh --conf conf/mini_librispeech_cpu.yaml   # two stages: clean, then channel fine-tuning
#   bash recipes/mini_librispeech/run.sh --stage 4            # only decoding + reports
#   bash recipes/mini_librispeech/run.sh --conf conf/mini_librispeech_gpu.yaml --exp exp/mls_gpu
#   bash recipes/mini_librispeech/run.sh --download --corpus /data/LibriSpeech   # fetch OpenSLR 31 (+ OpenSLR 11 LM text)
#   bash recipes/mini_librispeech/run.sh --stage 1 --stop-stage 1 --lm-text my-books.txt.gz more.txt   # your own LM text
#   bash recipes/mini_librispeech/run.sh --lm-arpa /data/3-gram.pruned.1e-7.arpa.gz   # an existing book ARPA
#   bash recipes/mini_librispeech/run.sh --conf conf/mini_librispeech_cpu.yaml --finetune-conf none   # clean audio only
#
# Stages:
#   0  data: import the LibriSpeech-layout folder (any audio extension) -> manifest; fixed speaker-disjoint
#      dev split: speakers 1088, 1898 (female), 118, 163 (male) = 318 utterances; the rest trains
#   1  word LMs (modified Kneser-Ney), built once and cached (skipped when the ARPA is newer than its inputs):
#      a) transcript 3-gram and its word list (a lexicon) from the TRAINING transcripts only;
#      b) book 3-gram: ../shared/data/books_lm (50 M words) or --lm-text FILE... (plain/.gz/.xz, one sentence per
#         line), words limited to the 200 k LibriSpeech vocabulary (also the lexicon), entropy-pruned (--lm-prune);
#         or --lm-arpa FILE (e.g. OpenSLR 11's 3-gram.pruned.1e-7.arpa.gz), lower-cased to match the tokenizer;
#      c) book + transcript LM interpolated, weights by perplexity on a held-out 10 % of the TRAINING transcripts
#   2  train (resumes automatically if the run folder has a checkpoint) into $exp/base when stage 3 fine-tunes,
#      else into $exp; a config whose train.select_on names degraded dev copies (conf/mini_librispeech_cpu_robust.yaml)
#      gets them built first (as in stage 5)
#   3  average the best checkpoints into model.pt when training did not (train.average_best); then channel
#      fine-tuning (--finetune-conf; on by default with conf/mini_librispeech_cpu.yaml, which trains on clean
#      audio; the default config already trains its last epochs with channels): the stage-2 model trained a few more
#      epochs with codec round trips, rooms, band limits, 8 kHz round trips and noise, epochs ranked on clean dev
#      and its MP3 24 / telephone / 10 dB-noise copies -> $exp/model.pt, the model stages 4-5 decode
#      (--finetune-conf none: no fine-tuning, stage 2 trains $exp/model.pt itself)
#   4  decode dev: greedy, beam, then beam + each LM (--lm-modes; default all) with and without its lexicon,
#      alpha/beta tuned on dev for each (at --tune-beam 64, then decoded at --beam 1024); HTML + JSON reports
#   5  robustness: degraded copies of dev (MP3 24/40 kbit/s, Opus 12 kbit/s, telephone band, noise at
#      10 dB SNR, -30 dBFS, a room with RT60 0.6 s; seeded, cached in $exp/data/degraded), decoded like clean dev
#      (--robust-modes: greedy and/or beam-lm, the book LM open-vocabulary as in stage 4); table clean vs
#      degraded -> $exp/robustness.md
# Extra arguments of the form key=value are passed to `asr train` as config overrides (give them before
# --lm-text, which takes every following argument up to the next --option).
set -euo pipefail
cd "$(dirname "$0")/../.."

stage=0; stop_stage=5
conf=conf/mini_librispeech_cpu_curriculum.yaml  # one stage: 8 clean epochs, then 7 with channels (issues 13, 15)
exp=exp/mini_librispeech
corpus=../shared/data/mini_librispeech/LibriSpeech
download=false
lm_order=3
beam=1024      # beam of the dev decodes (the LM look-ahead makes wide beams cheap: 90 CPU-s per dev pass)
tune_beam=64   # beam of the alpha/beta grid (about 40 dev decodes per LM and lexicon)
dev_speakers=1088,1898,118,163
robust_kinds="mp3:24 mp3:40 opus:12 phone noise:10 level:-30 reverb:0.6 aac:32"
robust_modes="greedy"
books=../shared/data/books_lm
lm_text=("$books/books-lm-norm.txt.xz")  # book LM text: plain, .gz or .xz files, one sentence per line
lm_arpa=""                             # or an existing book ARPA (plain or .gz): no build
vocab_src=$books/librispeech-vocab.txt # the book LM's vocabulary and the lexicon for decoding with it
lm_prune=1e-7                          # entropy pruning threshold of the book LM (SRILM/KenLM style)
lm_download=text                       # with --download: OpenSLR 11 LM text (text) or pruned 3-gram (arpa)
lm_modes="trans book mix"              # LMs decoded in stage 4
finetune_conf=auto  # stage 3: auto = conf/mini_librispeech_cpu_robust_ft.yaml with conf/mini_librispeech_cpu.yaml, else none
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
    --lm-text) shift; lm_text=(); while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do lm_text+=("$1"); shift; done
      [ ${#lm_text[@]} -gt 0 ] || { echo "run.sh: --lm-text needs at least one file" >&2; exit 2; };;
    --lm-arpa) lm_arpa=$2; shift 2;;
    --vocab) vocab_src=$2; shift 2;;
    --lm-prune) lm_prune=$2; shift 2;;
    --lm-download) lm_download=$2; shift 2;;
    --lm-modes) lm_modes=$2; shift 2;;
    --beam) beam=$2; shift 2;;
    --tune-beam) tune_beam=$2; shift 2;;
    --robust-kinds) robust_kinds=$2; shift 2;;
    --robust-modes) robust_modes=$2; shift 2;;
    --finetune-conf) finetune_conf=$2; shift 2;;
    -h|--help) sed -n '2,36p' "$0"; exit 0;;
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
if [ "$finetune_conf" = auto ]; then
  finetune_conf=none
  [ "$conf" != conf/mini_librispeech_cpu.yaml ] || finetune_conf=conf/mini_librispeech_cpu_robust_ft.yaml
fi
base=$exp  # stage 2's run folder: $exp/base when stage 3 fine-tunes its model into $exp
[ "$finetune_conf" = none ] || base=$exp/base
mkdir -p "$data"

if [ "$download" = true ]; then
  if [ ! -d "$corpus/train-clean-5" ]; then
    log "downloading OpenSLR 31 train-clean-5 into $corpus"
    mkdir -p "$corpus"
    curl -fL https://www.openslr.org/resources/31/train-clean-5.tar.gz | tar xz -C "$corpus" --strip-components=1
  fi
  # OpenSLR 11: the 800 M-word LibriSpeech LM text (1.5 GB) or its pruned 3-gram (Kaldi's tgsmall, 30 MB)
  case "$lm_download" in
    text) lm_url=https://www.openslr.org/resources/11/librispeech-lm-norm.txt.gz;;
    arpa) lm_url=https://www.openslr.org/resources/11/3-gram.pruned.1e-7.arpa.gz;;
    *) echo "run.sh: --lm-download must be text or arpa, got $lm_download" >&2; exit 2;;
  esac
  mkdir -p "$exp/lm/download"
  lm_file=$exp/lm/download/$(basename "$lm_url")
  if [ ! -f "$lm_file" ]; then
    log "downloading $lm_url"
    curl -fL "$lm_url" -o "$lm_file.part" && mv "$lm_file.part" "$lm_file"
  fi
  if [ "$lm_download" = text ]; then lm_text=("$lm_file"); else lm_arpa=$lm_file; fi
fi

# true when $1 exists and is newer than every other argument (a cached build)
up_to_date() { local out=$1; shift; [ -s "$out" ] || return 1; local f; for f in "$@"; do [ "$f" -nt "$out" ] && return 1; done; return 0; }
# true when $1.opts says $1 was made with options $2 (what file dates cannot tell: a threshold, another source)
made_with() { [ "$(cat "$1.opts" 2>/dev/null)" = "$2" ]; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  src=$corpus/train-clean-5
  [ -d "$src" ] || { echo "run.sh: $src does not exist; pass --corpus DIR (the folder holding train-clean-5) or --download" >&2; exit 2; }
  log "stage 0: importing $src; dev speakers $dev_speakers"
  $ASR data import librispeech "$src" -o "$data/all.jsonl"
  $ASR data split "$data/all.jsonl" --dev-speakers "$dev_speakers" -o "$data/train.jsonl" "$data/dev.jsonl"
  $ASR data stats "$data/train.jsonl" "$data/dev.jsonl"
fi

lmd=$exp/lm
if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  mkdir -p "$lmd"
  # a) the training transcripts
  if up_to_date "$lmd/${lm_order}gram.arpa" "$data/train.jsonl"; then
    log "stage 1a: $lmd/${lm_order}gram.arpa is up to date"
  else
    log "stage 1a: word ${lm_order}-gram LM from the training transcripts -> $lmd/${lm_order}gram.arpa"
    $ASR lm build "$data/train.jsonl" -o "$lmd/${lm_order}gram.arpa" --order "$lm_order" --lexicon "$lmd/words.txt"
  fi
  # b) book text: the vocabulary normalised like the transcripts (lower case), which is also the lexicon
  [ -f "$vocab_src" ] || { echo "run.sh: vocabulary $vocab_src does not exist; pass --vocab FILE" >&2; exit 2; }
  if ! up_to_date "$lmd/vocab.txt" "$vocab_src"; then
    LC_ALL=C tr 'A-Z' 'a-z' < "$vocab_src" | awk 'NF {print $1}' | LC_ALL=C sort -u > "$lmd/vocab.txt.tmp"
    mv "$lmd/vocab.txt.tmp" "$lmd/vocab.txt"
  fi
  book=$lmd/book-3gram.arpa
  if [ -n "$lm_arpa" ]; then
    [ -f "$lm_arpa" ] || { echo "run.sh: --lm-arpa $lm_arpa does not exist" >&2; exit 2; }
    book_opts="arpa=$lm_arpa"  # another --lm-arpa, or a built LM, is replaced
    if up_to_date "$book" "$lm_arpa" && made_with "$book" "$book_opts"; then
      log "stage 1b: $book is up to date (from $lm_arpa)"
    else
      # OpenSLR's ARPA files are upper case; the tokenizer's text is lower case
      log "stage 1b: book LM from $lm_arpa, lower-cased -> $book"
      { if [ "$(head -c2 "$lm_arpa" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then gzip -dc "$lm_arpa"; else cat "$lm_arpa"; fi; } \
        | LC_ALL=C tr 'A-Z' 'a-z' > "$book.tmp"
      mv "$book.tmp" "$book"
      echo "$book_opts" > "$book.opts"
    fi
  else
    for f in "${lm_text[@]}"; do
      [ -f "$f" ] || { echo "run.sh: LM text $f does not exist; pass --lm-text FILE... or --lm-arpa FILE" >&2; exit 2; }
    done
    book_opts="prune=$lm_prune text=${lm_text[*]}"  # another --lm-text or --lm-prune rebuilds it
    if up_to_date "$book" "${lm_text[@]}" "$lmd/vocab.txt" && made_with "$book" "$book_opts"; then
      log "stage 1b: $book is up to date ($book_opts)"
    else
      log "stage 1b: book 3-gram from ${lm_text[*]} (vocabulary $vocab_src, pruned at $lm_prune) -> $book"
      $ASR lm build "${lm_text[@]}" -o "$book" --order 3 --vocab "$lmd/vocab.txt" --prune "$lm_prune"
      echo "$book_opts" > "$book.opts"
    fi
  fi
  # c) book + transcripts, interpolated; the weights come from a speaker-disjoint 10 % of the TRAINING
  #    transcripts, held out of the transcript LM that is mixed (dev is never used to build or weigh an LM)
  if up_to_date "$lmd/mix-3gram.arpa" "$book" "$data/train.jsonl"; then
    log "stage 1c: $lmd/mix-3gram.arpa is up to date"
  else
    log "stage 1c: book + transcript LM, weights by perplexity on held-out training transcripts -> $lmd/mix-3gram.arpa"
    $ASR data split "$data/train.jsonl" --dev-fraction 0.1 -o "$lmd/trans90.jsonl" "$lmd/heldout.jsonl"
    $PY -c 'import json, sys
from asr.text import normalize_text
for line in open(sys.argv[1], encoding="utf-8"):
    print(normalize_text(json.loads(line)["text"]))' "$lmd/heldout.jsonl" > "$lmd/heldout.txt"
    $ASR lm build "$lmd/trans90.jsonl" -o "$lmd/trans90-3gram.arpa" --order 3
    $ASR lm mix "$book" "$lmd/trans90-3gram.arpa" --tune-on "$lmd/heldout.txt" -o "$lmd/mix-3gram.arpa"
  fi
  # d) the lexicon of each book LM = its own words (the 1-grams), not the whole vocabulary: a lexicon
  #    word the LM lacks would be scored as <unk>, which carries the mass of every unseen word
  #    (log10 -2.4 here) and lets a weak acoustic model pick rare words (measured: 75.8 % dev WER with
  #    the 200 k vocabulary as lexicon against the LM's own 118 k words, see README)
  for name in book mix; do
    if ! up_to_date "$lmd/$name-words.txt" "$lmd/$name-3gram.arpa"; then
      awk '/^\\1-grams:/ {f = 1; next} /^\\/ {f = 0} f && NF >= 2 && $2 !~ /^</ {print $2}' \
        "$lmd/$name-3gram.arpa" | LC_ALL=C sort -u > "$lmd/$name-words.txt.tmp"
      mv "$lmd/$name-words.txt.tmp" "$lmd/$name-words.txt"
    fi
  done
fi

# degraded copies of dev ($robust_kinds; seeded, built once, then cached): stage 5 scores them, and stage 2
# ranks epochs on them when the config's train.select_on names one (conf/mini_librispeech_cpu_robust.yaml)
build_degraded() {
  local kind_args=() k
  for k in $robust_kinds; do kind_args+=(--kind "$k"); done
  $ASR data degrade "$data/dev.jsonl" "${kind_args[@]}" -o "$data/degraded" --seed 0
}

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  if [ "$finetune_conf" = none ] && [ -d "$exp/base" ] && [ -f "$exp/checkpoints/last.pt" ]; then
    # $exp holds a two-stage run (the default before 2026-12-04): its checkpoints are stage 3's, which a
    # one-stage run would resume as if they were its own
    echo "run.sh: $exp holds a two-stage run (base/ and stage 3's checkpoints/); train this one-stage config" \
         "into another folder (--exp exp/NEW), or continue that run with --conf conf/mini_librispeech_cpu.yaml" >&2
    exit 2
  fi
  select_arg=()
  if grep -q "^[^#]*degraded/" "$conf" || [[ " ${overrides[*]:-} " == *"train.select_on="*"degraded/"* ]]; then
    log "stage 2: epochs are ranked on degraded dev copies: building them first ($robust_kinds)"
    build_degraded
    # unless the command line names the sets, the config's copies are read from this run's data folder
    # (its paths name the config's own run_dir)
    [[ " ${overrides[*]:-} " == *"train.select_on="* ]] || select_arg=("train.select_on=$($PY -c 'import sys
from asr.config import load_config
sets = load_config(sys.argv[1]).train.select_on
print("[" + ", ".join(s if "degraded/" not in s else sys.argv[2] + "/degraded/" + s.split("degraded/", 1)[1] for s in sets) + "]")' "$conf" "$data")")
  fi
  log "stage 2: training with $conf into $base (log: $base/train.log; tensorboard --logdir $base/tb)"
  $ASR train -c "$conf" run_dir="$base" data.train_manifest="$data/train.jsonl" \
    data.dev_manifest="$data/dev.jsonl" "${select_arg[@]}" "${overrides[@]}"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  if [ ! -f "$base/model.pt" ]; then
    log "stage 3: averaging the best checkpoints into $base/model.pt"
    $ASR average "$base"/checkpoints/best-epoch-*.pt -o "$base/model.pt"
  else
    log "stage 3: $base/model.pt exists (averaged by training: train.average_best)"
  fi
  if [ "$finetune_conf" != none ] && [ "$exp/model.pt" -nt "$base/model.pt" ]; then
    log "stage 3: $exp/model.pt (fine-tuned) is newer than $base/model.pt: kept"
  elif [ "$finetune_conf" != none ]; then
    if [ "$base/model.pt" -nt "$exp/checkpoints/last.pt" ] && [ -f "$exp/checkpoints/last.pt" ]; then
      echo "run.sh: $exp/checkpoints/last.pt is older than $base/model.pt (a fine-tuning of an earlier model, or a" \
           "run from before stage 2 moved to base/): move $exp/checkpoints away to fine-tune the new model, or" \
           "touch $exp/checkpoints/last.pt to resume that fine-tuning" >&2; exit 2
    fi
    # the base model's shape and units carry over (model.*, tokenizer.*, feature.* overrides of stage 2)
    ft_overrides=()
    for o in "${overrides[@]}"; do case "$o" in model.*|tokenizer.*|feature.*) ft_overrides+=("$o");; esac; done
    log "stage 3: channel fine-tuning with $finetune_conf from $base/model.pt into $exp (log: $exp/train.log;" \
        "epochs ranked on dev and three degraded copies, built first; --finetune-conf none skips this)"
    $ASR data degrade "$data/dev.jsonl" --kind mp3:24 --kind phone --kind noise:10 -o "$data/degraded" --seed 0
    $ASR train -c "$finetune_conf" run_dir="$exp" train.init_from="$base/model.pt" \
      data.train_manifest="$data/train.jsonl" data.dev_manifest="$data/dev.jsonl" \
      train.select_on="[dev, $data/degraded/mp3_24/manifest.jsonl, $data/degraded/phone/manifest.jsonl, $data/degraded/noise_10/manifest.jsonl]" \
      "${ft_overrides[@]}"
  fi
fi

# the model's output units (char, sentencepiece or phone): a phone model decodes words through a
# pronunciation lexicon, so each LM's word list becomes WORD P1 P2 ... lines (CMUdict + G2P, cached)
unit_kind() {
  [ -f "$exp/model.pt" ] || { echo "run.sh: $exp/model.pt does not exist; run stages 2-3 first" >&2; exit 2; }
  $PY -c 'import sys, torch
print(torch.load(sys.argv[1], map_location="cpu", weights_only=False)["config"]["tokenizer"]["kind"])' "$exp/model.pt"
}
# lexicon_for WORDS: the lexicon file to decode with: WORDS itself for spelling units, its phone lexicon
# ($lmd/NAME-phones.txt, built once) for a phone model
lexicon_for() {
  local words=$1
  if [ "$kind" != phone ]; then echo "$words"; return; fi
  local out=${words%-words.txt}; out=${out%.txt}-phones.txt
  if ! up_to_date "$out" "$words"; then
    log "pronunciations of $(wc -l < "$words") words (CMUdict, G2P for the rest) -> $out" >&2
    $ASR lexicon "$words" -o "$out" --quiet >&2
  fi
  echo "$out"
}

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  kind=$(unit_kind)
  log "stage 4a: greedy decoding of dev (model units: $kind)"
  # (a phone model's greedy rows: PER from the greedy phones, WER from a lexicon beam search, which needs no
  #  more than beam 16 without an LM: at the config's beam 1024 it took 4-5 CPU-min per dev pass)
  $ASR evaluate --model "$exp/model.pt" --manifest "$data/dev.jsonl" --method greedy --beam-size 16 \
    --out "$exp/eval-dev-greedy"
  log "stage 4b: beam search (beam $beam), no LM"
  $ASR evaluate --model "$exp/model.pt" --manifest "$data/dev.jsonl" --method beam --beam-size "$beam" \
    --out "$exp/eval-dev-beam"
  # decode NAME LM [LEXICON]: tune alpha/beta on dev (asr decode --tune-lm), then evaluate with them
  #   A phone model has no open vocabulary (phones do not spell words): without LEXICON it decodes with the
  #   lexicon in its checkpoint (the training words), which is reported as "open" for the other units.
  decode() {
    local name=$1 lm=$2 lex=${3:-} lexarg=()
    [ -f "$lm" ] || { echo "run.sh: $lm does not exist; run stage 1 first" >&2; exit 2; }
    local what="open vocabulary"
    [ "$kind" != phone ] || what="the checkpoint's lexicon (the training words)"
    [ -z "$lex" ] || { lex=$(lexicon_for "$lex"); lexarg=(--lexicon "$lex"); what="words restricted to the lexicon $lex"; }
    log "stage 4: beam $beam + $name ($lm), $what: tuning alpha/beta on dev (beam $tune_beam)"
    $ASR decode --tune-lm --model "$exp/model.pt" --manifest "$data/dev.jsonl" --lm "$lm" "${lexarg[@]}" \
      --beam-size "$tune_beam" --workers "$(nproc 2>/dev/null || echo 1)"
    $ASR evaluate --model "$exp/model.pt" --manifest "$data/dev.jsonl" --method beam --beam-size "$beam" \
      --lm "$lm" "${lexarg[@]}" --out "$exp/eval-dev-beam-$name${lex:+-lex}"
  }
  for mode in $lm_modes; do
    case "$mode" in
      trans) decode lm "$lmd/${lm_order}gram.arpa" "$lmd/words.txt"; decode lm "$lmd/${lm_order}gram.arpa";;
      mix) decode mixlm "$lmd/mix-3gram.arpa" "$lmd/mix-words.txt"; decode mixlm "$lmd/mix-3gram.arpa";;
      book) ;;  # last, below
      *) echo "run.sh: unknown --lm-modes entry $mode (trans, book, mix)" >&2; exit 2;;
    esac
  done
  # last, so that the tuned weights left beside the model (model.lm.json, which `asr transcribe --lm` uses)
  # are those of the book LM, open vocabulary
  #   (for a phone model: the book LM with its words' phone lexicon, as a phone model has no open vocabulary)
  case " $lm_modes " in
    *" book "*) if [ "$kind" = phone ]; then
                  decode booklm "$lmd/book-3gram.arpa"; decode booklm "$lmd/book-3gram.arpa" "$lmd/book-words.txt"
                else
                  decode booklm "$lmd/book-3gram.arpa" "$lmd/book-words.txt"; decode booklm "$lmd/book-3gram.arpa"
                fi;;
  esac
  log "reports: $exp/eval-dev-*/report.html"
fi
if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  deg=$data/degraded
  log "stage 5: robustness: degraded copies of dev ($robust_kinds) -> $deg (built once, then cached)"
  kind=$(unit_kind)
  robust_lex=()  # beam-lm: the book LM open-vocabulary, or through its words' phone lexicon for a phone model
  [ "$kind" != phone ] || robust_lex=(--lexicon "$(lexicon_for "$lmd/book-words.txt")")
  # beam-lm's clean row is stage 4's book-LM decoding with the same lexicon and weights (model.lm.json)
  clean_lm=eval-dev-beam-booklm
  [ "$kind" != phone ] || clean_lm=eval-dev-beam-booklm-lex
  folders=()
  for k in $robust_kinds; do folders+=("${k//:/_}"); done
  build_degraded
  for f in clean "${folders[@]}"; do
    m=$deg/$f/manifest.jsonl
    for mode in $robust_modes; do
      out=$exp/eval-dev-$f-$mode
      if [ "$f" = clean ]; then  # stage 4 decoded clean dev; only beam-lm without stage 4's book rows needs it
        [ "$mode" = beam-lm ] || continue
        m=$data/dev.jsonl out=$exp/$clean_lm
      fi
      if [ "$out/report.json" -nt "$exp/model.pt" ] && [ "$out/report.json" -nt "$m" ]; then
        log "stage 5: $out is newer than the model and the data: kept"; continue
      fi
      log "stage 5: $mode decoding of dev $f"
      case "$mode" in
        greedy) $ASR evaluate --model "$exp/model.pt" --manifest "$m" --method greedy --beam-size 16 --out "$out";;
        beam-lm) $ASR evaluate --model "$exp/model.pt" --manifest "$m" --method beam --beam-size "$beam" \
                   --lm "$exp/lm/book-3gram.arpa" "${robust_lex[@]}" --out "$out";;
        *) echo "run.sh: unknown --robust-modes entry $mode (greedy, beam-lm)" >&2; exit 2;;
      esac
    done
  done
  $PY tools/robustness_table.py "$exp" --kinds "${folders[@]}" --modes $robust_modes --clean "beam-lm=$clean_lm" \
    -o "$exp/robustness.md"
  log "robustness table: $exp/robustness.md"
fi
log "done"

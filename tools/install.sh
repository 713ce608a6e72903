#!/usr/bin/env bash
# Create .venv and install asr with its dev extras. Safe to re-run.
# Usage: bash tools/install.sh [extras]   (default extras: dev)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-dev}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "[install] creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
STAMP=.venv/.asr-installed-$EXTRAS
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt setup.py ] && [ "$STAMP" -nt asr/decode/_ctcdecode.cpp ]; then
    echo "[install] .venv is up to date ($STAMP)"
    exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
echo "[install] installing asr[$EXTRAS] (first time: torch + CUDA libraries, a few minutes)"
.venv/bin/python -m pip install -q -e ".[$EXTRAS]"
touch "$STAMP"
echo "[install] done: $(.venv/bin/python -c 'import torch, torchaudio; print("torch", torch.__version__, "torchaudio", torchaudio.__version__)')"

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
# The page test of `asr serve` drives the system Chromium (Debian's chromium + chromium-driver).
# As root (CI's fresh Debian machine) install them when missing; otherwise say how.
case ",$EXTRAS," in *,dev,*)
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "[install] apt-get install chromium chromium-driver (for the browser test of asr serve)"
            export DEBIAN_FRONTEND=noninteractive
            { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver; } \
                >/tmp/asr-install-chromium.log 2>&1 \
                || echo "[install] warning: could not install chromium (see /tmp/asr-install-chromium.log)"
        else
            echo "[install] note: the browser test of asr serve needs chromium and chromium-driver" \
                 "(sudo apt-get install chromium chromium-driver); without them it is skipped"
        fi
    fi;;
esac
STAMP=.venv/.asr-installed-$EXTRAS
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt setup.py ] && [ "$STAMP" -nt asr/decode/_ctcdecode.cpp ]; then
    echo "[install] .venv is up to date ($STAMP)"
    exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
echo "[install] installing asr[$EXTRAS] (first time: torch + CUDA libraries, a few minutes)"
.venv/bin/python -m pip install -q -e ".[$EXTRAS]"
case ",$EXTRAS," in *,lm,*)
    # pyctcdecode is only the named alternative of tools/bench_decode.py and tests/test_backends.py. Its
    # metadata caps numpy below 2, which would downgrade the whole environment (onnx's ml-dtypes needs
    # numpy 2); it runs on numpy 2 (those tests), so it is installed without its declared dependencies.
    .venv/bin/python -m pip install -q --no-deps "pyctcdecode==0.5.0" "pygtrie>=2.1";;
esac
touch "$STAMP"
echo "[install] done: $(.venv/bin/python -c 'import torch, torchaudio; print("torch", torch.__version__, "torchaudio", torchaudio.__version__)')"

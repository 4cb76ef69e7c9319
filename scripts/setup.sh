#!/usr/bin/env bash
# What the main job and the tests need on a fresh machine: the Python reference runtime
# (ONNX Runtime, and the onnx package the asset script uses) installed with pip when python3
# lacks them, then the datasets and models fetched into $WHITTLE_ASSETS (default
# ~/.cache/whittle-assets). Idempotent: what is already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
export WHITTLE_ASSETS=${WHITTLE_ASSETS:-$HOME/.cache/whittle-assets}
python3 -c "import onnxruntime, onnx, numpy" 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check -r scripts/requirements.txt
scripts/fetch-assets.sh "$WHITTLE_ASSETS"

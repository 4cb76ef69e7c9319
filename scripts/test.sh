#!/usr/bin/env bash
# The test command: every crate's unit tests, the ONNX node-test conformance suite, and the
# real-model tests against ONNX Runtime. Needs the assets (scripts/fetch-assets.sh) and the
# Python packages in scripts/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export WHITTLE_ASSETS=${WHITTLE_ASSETS:-$HOME/.cache/whittle-assets}
if [ ! -d "$WHITTLE_ASSETS/onnx-node-tests" ]; then
  echo "assets missing in $WHITTLE_ASSETS: run scripts/fetch-assets.sh first" >&2
  exit 1
fi
cargo test --release --workspace "$@"

#!/usr/bin/env bash
# The test command: installs the Python reference runtime if missing, fetches the assets if
# missing, then runs every crate's unit tests, the ONNX node-test conformance suite and the
# real-model tests against ONNX Runtime. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export WHITTLE_ASSETS=${WHITTLE_ASSETS:-$HOME/.cache/whittle-assets}
scripts/setup.sh
# The browser tests of `whittle ui` drive Debian's chromium through chromium-driver.
command -v chromedriver >/dev/null ||
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --workspace "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"

#!/usr/bin/env bash
# Gradient checkpointing on zoo:vit-tiny at batch 256: for each number of recompute
# segments ("none" = off), one `whittle train` run of one step (the first 256 Fashion-MNIST
# training images), with the peak resident set of the whole process (/usr/bin/time, which
# covers the pre-flight checks and the step), its wall time, and the trainer's estimate of
# the activations it keeps.
#
#   bench/recompute_memory.sh FASHION_MNIST_DIR OUT_DIR [SEGMENTS...]   (default: none 4 8 16 32)
#
# Environment: WHITTLE (default target/release/whittle); THREADS (RAYON_NUM_THREADS,
# default 1); TABLE_ONLY=1 only prints the table of an earlier run's OUT_DIR;
# WRITE=docs/BENCHMARKS.md puts the table in its `recompute-memory` section.
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
data="fashion-mnist:$1"
out="$2"
shift 2
segments=(none 4 8 16 32)
[[ $# -gt 0 ]] && segments=("$@")
threads="${THREADS:-1}"
whittle="${WHITTLE:-target/release/whittle}"
mkdir -p "$out"

for s in "${segments[@]}"; do
  [[ "${TABLE_ONLY:-0}" == 1 ]] && break
  extra=()
  [[ "$s" != none ]] && extra=(--recompute-segments "$s")
  RAYON_NUM_THREADS="$threads" /usr/bin/time -f "%M %e" -o "$out/$s.time" "$whittle" train \
    --model zoo:vit-tiny --data "$data" --limit 256 --epochs 1 --batch-size 256 \
    --optimizer adamw --seed 0 "${extra[@]}" -o "$out/$s.onnx" --force >"$out/$s.log" 2>&1
done

table="$out/table.md"
{
  machine_line
  echo "\`whittle train --model zoo:vit-tiny --data fashion-mnist:DIR --limit 256 --epochs 1"
  echo "--batch-size 256 --optimizer adamw --seed 0 [--recompute-segments K]\`, RAYON_NUM_THREADS=$threads;"
  echo "peak RSS and wall time of the whole process (\`bench/recompute_memory.sh\`)."
  echo
  python3 - "$out" "${segments[@]}" <<'PY'
import os, re, sys
out, segments = sys.argv[1], sys.argv[2:]
print("| recompute segments | peak RSS | saving | wall s | estimate: activations kept |")
print("|---|---|---|---|---|")
base = None
for s in segments:
    rss_kib, wall = open(os.path.join(out, f"{s}.time")).read().split()[-2:]
    gb = int(rss_kib) * 1024 / 1e9
    log = open(os.path.join(out, f"{s}.log")).read()
    m = re.search(r"activations ([\d.]+ \w+)(?:, ([\d.]+ \w+) with gradient checkpointing)?", log)
    estimate = "-" if m is None else (m.group(2) or m.group(1))
    if s == "none":
        base = gb
    saving = "-" if base is None or s == "none" else f"{100 * (1 - gb / base):.0f}%"
    print(f"| {s} | {gb:.2f} GB | {saving} | {float(wall):.1f} | {estimate} |")
PY
} >"$table"
publish recompute-memory "$table"

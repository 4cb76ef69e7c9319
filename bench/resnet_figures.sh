#!/usr/bin/env bash
# zoo:resnet (ResNet-8) on Fashion-MNIST: trains it (AdamW one-cycle lr 0.003, batch 64,
# seed 0), measures the trained file in whittle and in ONNX Runtime, then compresses it with
# bench/compress_figures.sh (channel 30/50/70%, magnitude 50/70/90%, 2:4 with the stem
# dense; each fine-tuned 1 epoch distilling from the trained model). Writes the tables
# (Markdown, headed by the machine, the date and the settings) to OUT/table.md and stdout.
#
#   bench/resnet_figures.sh FASHION_MNIST_DIR OUT_DIR [EPOCHS [TRAIN_LIMIT [FINETUNE_LIMIT]]]
#
# Defaults: 2 epochs on all 60,000 training images, fine-tunes on the first 10,000.
# Environment: WHITTLE (default target/release/whittle); THREADS (RAYON_NUM_THREADS of the
# training run, default 1); LATENCY_RUNS and PARALLEL as in compress_figures.sh;
# WRITE=docs/BENCHMARKS.md puts the tables in its `resnet-figures` section.
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
dir="$1"
out="$2"
epochs="${3:-2}"
train_limit="${4:-60000}"
finetune_limit="${5:-10000}"
whittle="${WHITTLE:-target/release/whittle}"
mkdir -p "$out"

model="$out/resnet.onnx"
if [[ "${TABLE_ONLY:-0}" != 1 ]]; then
  RAYON_NUM_THREADS="${THREADS:-1}" /usr/bin/time -f "%e" -o "$out/train.time" "$whittle" train \
    --model zoo:resnet --data "fashion-mnist:$dir" --limit "$train_limit" --epochs "$epochs" \
    --optimizer adamw --lr 0.003 --lr-schedule one-cycle --batch-size 64 --seed 0 \
    -o "$model" --force --json >"$out/train.json"
  "$whittle" eval "$model" --data "fashion-mnist:$dir" --json >"$out/eval.json"
  python3 "$here/../scripts/ort_eval.py" "$model" "$dir" >"$out/eval.ort.json"
  "$whittle" inspect "$model" --json >"$out/inspect.json"
fi
METHODS="channel magnitude nm" NM_EXCLUDE=stem.conv DISTILL=1 WRITE="" \
  "$here/compress_figures.sh" "$model" "fashion-mnist:$dir" "$out/compress" "$finetune_limit" \
  >/dev/null

table="$out/table.md"
{
  machine_line
  echo "\`whittle train --model zoo:resnet --data fashion-mnist:DIR --limit $train_limit --epochs $epochs"
  echo "--optimizer adamw --lr 0.003 --lr-schedule one-cycle --batch-size 64 --seed 0\`,"
  echo "RAYON_NUM_THREADS=${THREADS:-1} (\`bench/resnet_figures.sh\`); accuracy on the 10,000 test images."
  echo
  python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
load = lambda n: json.load(open(os.path.join(out, n)))
t, e, o, i = load("train.json"), load("eval.json"), load("eval.ort.json"), load("inspect.json")
wall = float(open(os.path.join(out, "train.time")).read().split()[-1])
print("| epoch | train loss | train acc | images/s |")
print("|---|---|---|---|")
for r in t["epochs"]:
    print(f"| {r['epoch']} | {r['loss']:.3f} | {100 * r['accuracy']:.2f}% | {r['images_per_sec']:.0f} |")
print()
print(f"Wall time {wall / 60:.0f} min. Test accuracy {100 * e['accuracy']:.2f}% in whittle, "
      f"{100 * o['accuracy']:.2f}% in ONNX Runtime; {i['parameters']:,} parameters, {i['macs']:,} MACs.")
PY
  echo
  sed 1d "$out/compress/table.md"
} >"$table"
publish resnet-figures "$table"

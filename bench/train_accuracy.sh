#!/usr/bin/env bash
# Trains `zoo:cnn` or `zoo:vit-tiny` on Fashion-MNIST with its documented recipe and measures
# the saved file on the 10,000 test images in whittle's executor and in ONNX Runtime
# (scripts/ort_eval.py). Writes the per-epoch table and the test figures (Markdown, headed
# by the machine, the date and the settings) to OUT_DIR/table.md and stdout.
#
#   bench/train_accuracy.sh FASHION_MNIST_DIR OUT_DIR cnn|vit-tiny [EPOCHS [LIMIT]]
#
# Recipes (batch 64, seed 0): cnn: AdamW lr 0.003, one-cycle, 5 epochs by default;
# vit-tiny: AdamW lr 0.001, weight decay 0.05, warmup-cosine with 0.3 warm-up epochs,
# 4 epochs by default. LIMIT (default 60000) trains on the first LIMIT training images.
# Environment: WHITTLE (default target/release/whittle); THREADS (RAYON_NUM_THREADS of the
# training run, default 1); TABLE_ONLY=1 only prints the table of an earlier run's OUT_DIR;
# WRITE=docs/BENCHMARKS.md puts the table in its `train-cnn` or `train-vit-tiny` section.
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
dir="$1"
out="$2"
model="$3"
whittle="${WHITTLE:-target/release/whittle}"
case "$model" in
  cnn) recipe="--optimizer adamw --lr 0.003 --lr-schedule one-cycle" default_epochs=5 ;;
  vit-tiny)
    recipe="--optimizer adamw --lr 0.001 --weight-decay 0.05 --lr-schedule warmup-cosine --warmup-epochs 0.3"
    default_epochs=4
    ;;
  *) echo "error: model '$model': expected cnn or vit-tiny" >&2 && exit 2 ;;
esac
epochs="${4:-$default_epochs}"
limit="${5:-60000}"
threads="${THREADS:-1}"
mkdir -p "$out"

if [[ "${TABLE_ONLY:-0}" != 1 ]]; then
  # shellcheck disable=SC2086
  RAYON_NUM_THREADS="$threads" /usr/bin/time -f "%e" -o "$out/train.time" "$whittle" train \
    --model "zoo:$model" $recipe --data "fashion-mnist:$dir" --limit "$limit" --epochs "$epochs" \
    --batch-size 64 --seed 0 -o "$out/$model.onnx" --force --json >"$out/train.json"
  "$whittle" eval "$out/$model.onnx" --data "fashion-mnist:$dir" --json >"$out/eval.json"
  python3 "$here/../scripts/ort_eval.py" "$out/$model.onnx" "$dir" >"$out/eval.ort.json"
  "$whittle" inspect "$out/$model.onnx" --json >"$out/inspect.json"
fi

table="$out/table.md"
{
  machine_line
  echo "\`whittle train --model zoo:$model --data fashion-mnist:DIR --limit $limit --epochs $epochs"
  echo "--batch-size 64 $recipe --seed 0\`,"
  echo "RAYON_NUM_THREADS=$threads (\`bench/train_accuracy.sh\`); accuracy on the 10,000 test images."
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
print(f"Wall time {wall:.0f} s" if wall < 120 else f"Wall time {wall / 60:.0f} min", end="")
print(f". Test accuracy {100 * e['accuracy']:.2f}% in whittle, "
      f"{100 * o['accuracy']:.2f}% in ONNX Runtime; {i['parameters']:,} parameters.")
PY
} >"$table"
publish "train-$model" "$table"

#!/usr/bin/env bash
# The main job on its built-in default: fetch the real assets, build whittle, then compress the
# pretrained MNIST LeNet5 (lossless graph optimization, static INT8 per-channel calibrated on
# 512 MNIST training images, FP16; and 50% structured channel pruning with one epoch of
# fine-tuning on 10,000 training images, then INT8; a recipe; and `whittle auto`) and print
# size on disk, ONNX Runtime latency and accuracy on the 10,000 MNIST test images, before
# and after, with the pipeline auto chose. Installs ONNX
# Runtime (and the onnx package the asset script uses) with pip when python3 lacks them.
set -euo pipefail
cd "$(dirname "$0")/.."
export WHITTLE_ASSETS=${WHITTLE_ASSETS:-$HOME/.cache/whittle-assets}
scripts/setup.sh
cargo build --release -q -p whittle-cli
whittle=target/release/whittle
model="$WHITTLE_ASSETS/models/mnist_lenet5.onnx"
mnist="mnist:$WHITTLE_ASSETS/mnist"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

$whittle inspect "$model"
echo
$whittle optimize "$model" -o "$out/lenet5-opt.onnx"
echo
$whittle quantize "$out/lenet5-opt.onnx" -o "$out/lenet5-int8.onnx" --mode static \
  --per-channel --calib-data "$mnist" --calib-samples 512
echo
$whittle quantize "$out/lenet5-opt.onnx" -o "$out/lenet5-fp16.onnx" --mode fp16
echo
$whittle prune "$out/lenet5-opt.onnx" -o "$out/lenet5-pruned.onnx" --method channel \
  --sparsity 0.5 --finetune-epochs 1 --data "$mnist" --limit 10000 --eval-limit 1000 \
  --optimizer adamw --lr 0.001 --batch-size 64
echo
$whittle quantize "$out/lenet5-pruned.onnx" -o "$out/lenet5-pruned-int8.onnx" --mode static \
  --per-channel --calib-data "$mnist" --calib-samples 512 >/dev/null
# The same chain as a recipe (prune 75% -> finetune keeping zeros -> INT8 -> verify), with
# a resumable work folder and an HTML report of every step.
$whittle pipeline recipes/lenet_prune_finetune_quantize.toml -o "$out/lenet5-recipe.onnx" \
  --report "$out/report.html" >/dev/null
# The recommended path: `whittle auto` chooses the steps itself (balanced target, at most
# 1 point of accuracy lost, 8 trials), shown beside the hand-made rows.
$whittle auto "$model" --data "$mnist" --target balanced --max-accuracy-drop 1 --max-trials 8 \
  --work-dir "$out/auto" -o "$out/lenet5-auto.onnx" --json >"$out/auto.json"
echo
printf '%-12s %12s %14s %10s\n' model bytes "ORT b1 ms" accuracy
for variant in "fp32:$model" "int8:$out/lenet5-int8.onnx" "fp16:$out/lenet5-fp16.onnx" \
  "pruned:$out/lenet5-pruned.onnx" "pruned+int8:$out/lenet5-pruned-int8.onnx" \
  "recipe:$out/lenet5-recipe.onnx" "auto:$out/lenet5-auto.onnx"; do
  name=${variant%%:*} path=${variant#*:}
  bytes=$(stat -c %s "$path")
  ms=$($whittle bench "$path" --engine ort --batch 1 --runs 200 --warmup 20 --json |
    grep -o '"median_ms": *[0-9.]*' | grep -o '[0-9.]*$')
  acc=$($whittle eval "$path" --data "$mnist" --json |
    grep -o '"accuracy": *[0-9.]*' | head -1 | grep -o '[0-9.]*$')
  awk -v n="$name" -v b="$bytes" -v ms="$ms" -v a="$acc" \
    'BEGIN { printf "%-12s %12d %14.3f %9.2f%%\n", n, b, ms, 100 * a }'
done
python3 - "$out/auto.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
print(f"auto chose {a['best']['name']} ({a['status']}, {a['trials']} trials of "
      f"{a['search_space']} candidates, {a['elapsed_s']:.0f} s)")
PY

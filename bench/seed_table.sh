#!/usr/bin/env bash
# The seed's headline table (issue 18 item 8): trains `zoo:vit-tiny` on Fashion-MNIST, then
# writes the rows FP16, INT8 (static, per-channel, 512 calibration images of the training
# split), 50% pruned (structured channel pruning to half the parameters, fine-tuned), INT8 +
# 50% pruned and `whittle auto --target balanced` (when the binary has `auto`), and measures
# every row in ONNX Runtime: size on disk, FPS at batch 1 on one thread (`whittle bench
# --engine ort`), parameters (`whittle inspect`) and accuracy on the 10,000 test images
# (scripts/ort_eval.py). The Markdown table (bench/seed_table.py: measured rows beside the
# issue's claims, both as ratios to their own baseline) goes to stdout and OUT_DIR/table.md.
#
#   bench/seed_table.sh FASHION_MNIST_DIR OUT_DIR [--force]
#
# Rerunnable: a step whose output exists in OUT_DIR is skipped unless --force. The latency
# rounds always run again, visiting every row in turn, so all FPS figures and the baseline
# they are divided by come from the same run.
#
# Environment: WHITTLE (default target/release/whittle); THREADS (RAYON_NUM_THREADS of the
# training and fine-tuning, default 2); EPOCHS (default 1) and LR (default 0.002) of the
# baseline's training; PRUNE_SPARSITY (default 0.96: the share of each prunable channel
# group removed; in this ViT only the MLP hidden widths are prunable, and 0.96 halves the
# parameters); PRUNE_LIMIT (training images of the pruned model's one fine-tuning epoch,
# default 20000); AUTO_DROP (default 1, points) and AUTO_BUDGET (default 20m) of the auto
# row; RUNS (default 200) and ROUNDS (default 3) of the latency; TABLE_ONLY=1 only prints
# the table of an earlier run; WRITE=docs/BENCHMARKS.md puts it in the `seed-table` section.
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
dir="$1"
read_run_args "$2" "${3:-}"
threads="${THREADS:-2}"
epochs="${EPOCHS:-1}"
lr="${LR:-0.002}"
sparsity="${PRUNE_SPARSITY:-0.96}"
prune_limit="${PRUNE_LIMIT:-20000}"
auto_drop="${AUTO_DROP:-1}"
auto_budget="${AUTO_BUDGET:-20m}"
runs="${RUNS:-200}"
rounds="${ROUNDS:-3}"
data="fashion-mnist:$dir"
train_recipe="--batch-size 64 --optimizer adamw --lr $lr --weight-decay 0.05 \
--lr-schedule warmup-cosine --warmup-epochs 0.1 --clip-grad-norm 1 --seed 0"
mkdir -p "$out"

quantize_int8() { # IN OUT
  nice -n 10 "$whittle" quantize "$1" -o "$2" --mode static --per-channel --calib-data "$data" \
    --calib-samples 512 --no-latency --force --json
}

if [[ "${TABLE_ONLY:-0}" != 1 ]]; then
  export RAYON_NUM_THREADS="$threads"
  # shellcheck disable=SC2086
  step_stdout "$out/train.json" nice -n 10 /usr/bin/time -v -o "$out/train.time" \
    "$whittle" train --model zoo:vit-tiny --data "$data" --epochs "$epochs" $train_recipe \
    -o "$out/baseline.onnx" --force --json
  step_stdout "$out/fp16.json" "$whittle" quantize "$out/baseline.onnx" -o "$out/fp16.onnx" \
    --mode fp16 --force --json
  step_stdout "$out/int8.json" quantize_int8 "$out/baseline.onnx" "$out/int8.onnx"
  step_stdout "$out/pruned.json" nice -n 10 "$whittle" prune "$out/baseline.onnx" \
    -o "$out/pruned.onnx" --method channel --sparsity "$sparsity" --latency-runs 0 \
    --finetune-epochs 1 --data "$data" --limit "$prune_limit" --eval-limit 1000 \
    --optimizer adamw --lr 0.001 --batch-size 64 --force --json
  step_stdout "$out/pruned-int8.json" quantize_int8 "$out/pruned.onnx" \
    "$out/pruned-int8.onnx"
  if "$whittle" auto --help >/dev/null 2>&1; then
    step_stdout "$out/auto.json" nice -n 10 /usr/bin/time -v -o "$out/auto.time" \
      "$whittle" auto "$out/baseline.onnx" --data "$data" --target balanced \
      --max-accuracy-drop "$auto_drop" --budget "$auto_budget" --threads 1 \
      --work-dir "$out/auto-work" --report "$out/auto.html" -o "$out/auto.onnx" --json ||
      echo "warning: whittle auto failed ($(tail -n 1 "$out/auto.json.log")); no auto row" >&2
  else
    echo "note: $whittle has no 'auto' command yet; the auto row is left out" >&2
  fi
  unset RAYON_NUM_THREADS
  for m in baseline fp16 int8 pruned pruned-int8 auto; do
    [[ -f "$out/$m.onnx" ]] || continue
    step_stdout "$out/$m.inspect.json" "$whittle" inspect "$out/$m.onnx" --json
    step_stdout "$out/$m.ort.json" python3 "$here/../scripts/ort_eval.py" "$out/$m.onnx" "$dir"
  done
  echo "$rounds" >"$out/rounds"
  for k in $(seq "$rounds"); do
    for m in baseline fp16 int8 pruned pruned-int8 auto; do
      [[ -f "$out/$m.onnx" ]] || continue
      "$whittle" bench "$out/$m.onnx" --engine ort --batch 1 --threads 1 --runs "$runs" \
        --warmup 20 --json >"$out/$m.bench-$k.json"
    done
  done
  uptime >"$out/load"
fi
rounds=$(cat "$out/rounds")

table="$out/table.md"
{
  machine_line
  echo "Load average after the latency rounds: $(sed 's/.*load average: //' "$out/load")."
  echo "Baseline: \`whittle train --model zoo:vit-tiny --data fashion-mnist:DIR --epochs $epochs"
  echo "$train_recipe\` (RAYON_NUM_THREADS=$threads, under nice;"
  echo "wall time $(sed -n 's/.*Elapsed (wall clock) time.*: //p' "$out/train.time"), [h:]m:ss)."
  echo "FP16: \`whittle quantize --mode fp16\`. INT8: \`--mode static --per-channel\`, 512"
  echo "calibration images of the training split. Pruned: \`whittle prune --method channel"
  echo "--sparsity $sparsity --finetune-epochs 1 --limit $prune_limit --optimizer adamw --lr 0.001\`."
  if [[ -f "$out/auto.json" ]]; then
    echo "Auto: \`whittle auto --target balanced --max-accuracy-drop $auto_drop --budget $auto_budget"
    echo "--threads 1\`."
  fi
  echo "Size in MB of 2^20 bytes on disk; FPS = 1000 / the median over $rounds rounds (every row in"
  echo "turn) of the median of $runs runs, ONNX Runtime, batch 1, one thread; accuracy in ONNX"
  echo "Runtime on the 10,000 test images (\`bench/seed_table.sh\`)."
  echo
  python3 "$here/seed_table.py" "$out" "$rounds"
} >"$table"
publish seed-table "$table"

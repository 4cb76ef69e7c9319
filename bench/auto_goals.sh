#!/usr/bin/env bash
# The goals of issue 18 (`whittle auto`), measured: trains `zoo:cnn` on Fashion-MNIST (the
# documented 5-epoch recipe), then runs `whittle auto` on it with --target balanced
# --max-accuracy-drop 1, speed 2 and size 2, on the pretrained LeNet5 / MNIST (balanced 1),
# and the same balanced search with --exhaustive (the grid over the same actions). Every
# run's wall time and peak resident memory come from /usr/bin/time -v, beside the peak of
# one `whittle eval` of the baseline. Then each output and its baseline are measured again
# here, in ONNX Runtime: size on disk, batch-1 one-thread latency (`whittle bench --engine
# ort`, rounds that visit every model in turn) and test accuracy (scripts/ort_eval.py, one
# image per run, as `whittle auto` measures it and as deployed at batch 1).
# The Markdown tables (bench/auto_goals.py) go to stdout and OUT_DIR/table.md.
#
#   bench/auto_goals.sh ASSETS_DIR OUT_DIR [--force]
#
# ASSETS_DIR is $WHITTLE_ASSETS (fashion-mnist/, mnist/, models/mnist_lenet5.onnx).
# Rerunnable: a step whose output exists in OUT_DIR is skipped unless --force; the latency
# rounds always run again. Environment: WHITTLE (default target/release/whittle); THREADS
# (RAYON_NUM_THREADS of training and of auto's fine-tuning, default 2); BUDGET (default
# 20m) of every search, GRID_BUDGET (default 90m) of the exhaustive one; RUNS (default 200)
# and ROUNDS (default 3) of the latency; ONLY (space-separated run names, default all:
# cnn-balanced cnn-speed cnn-size lenet5-balanced cnn-grid; lenet5-grid is the smaller
# exhaustive grid on LeNet5; cnn-qat is the balanced search restricted to `--actions
# qat,int8-static`, QAT forced, whose peak memory is QAT's training); SEARCH_ONLY=1 stops
# after the searches (to run several side by side; a later run measures them all); TABLE_ONLY=1 only
# prints the tables of an earlier run; WRITE=docs/BENCHMARKS.md puts them in its
# `auto-goals` section.
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
assets="$1"
read_run_args "$2" "${3:-}"
budget="${BUDGET:-20m}"
grid_budget="${GRID_BUDGET:-90m}"
runs="${RUNS:-200}"
rounds="${ROUNDS:-3}"
only="${ONLY:-cnn-balanced cnn-speed cnn-size lenet5-balanced cnn-grid}"
fashion="fashion-mnist:$assets/fashion-mnist"
mnist="mnist:$assets/mnist"
lenet5="$assets/models/mnist_lenet5.onnx"
mkdir -p "$out"

# The baseline model, data spec and IDX directory of a run, by its name.
run_model() { case "$1" in lenet5-*) echo "$lenet5" ;; *) echo "$out/cnn.onnx" ;; esac; }
run_data() { case "$1" in lenet5-*) echo "$mnist" ;; *) echo "$fashion" ;; esac; }
run_dir() { case "$1" in lenet5-*) echo "$assets/mnist" ;; *) echo "$assets/fashion-mnist" ;; esac; }
run_args() {
  case "$1" in
    *-balanced) echo "--target balanced --max-accuracy-drop 1 --budget $budget" ;;
    cnn-speed) echo "--target speed --max-accuracy-drop 2 --budget $budget" ;;
    cnn-size) echo "--target size --max-accuracy-drop 2 --budget $budget" ;;
    *-grid) echo "--target balanced --max-accuracy-drop 1 --budget $grid_budget --exhaustive" ;;
    cnn-qat) echo "--target balanced --max-accuracy-drop 1 --budget $budget --actions qat,int8-static" ;;
    *) echo "error: run '$1': expected cnn-balanced, cnn-speed, cnn-size, lenet5-balanced, cnn-grid, lenet5-grid or cnn-qat" >&2 && exit 2 ;;
  esac
}

# Runs `whittle auto` for the run NAME under /usr/bin/time -v (NAME.time).
auto_run() { # NAME
  local name="$1" args
  args=$(run_args "$name")
  # shellcheck disable=SC2086
  step_stdout "$out/$name.json" nice -n 10 /usr/bin/time -v -o "$out/$name.time" \
    "$whittle" auto "$(run_model "$name")" --data "$(run_data "$name")" $args --threads 1 \
    --seed 0 --work-dir "$out/$name-work" --report "$out/$name.html" -o "$out/$name.onnx" --json
}

# Size, ORT accuracy and `whittle eval`'s peak memory of the model PATH, as STEM.*.json.
measure_once() { # STEM PATH IDX_DIR DATA
  step_stdout "$out/$1.inspect.json" "$whittle" inspect "$2" --json
  step_stdout "$out/$1.ort.json" python3 "$here/../scripts/ort_eval.py" "$2" "$3" 1
  step_stdout "$out/$1.eval.json" /usr/bin/time -v -o "$out/$1.eval.time" \
    "$whittle" eval "$2" --data "$4" --json
}

if [[ "${TABLE_ONLY:-0}" != 1 ]]; then
  if ! "$whittle" auto --help >/dev/null 2>&1; then
    echo "error: $whittle has no 'auto' command (build whittle-cli with issue 18's auto)" >&2
    exit 1
  fi
  export RAYON_NUM_THREADS="${THREADS:-2}"
  [[ " $only " != *" cnn-"* ]] || step_stdout "$out/cnn.train.json" nice -n 10 /usr/bin/time -v -o "$out/cnn.train.time" \
    "$whittle" train --model zoo:cnn --data "$fashion" --epochs 5 --batch-size 64 \
    --optimizer adamw --lr 0.003 --lr-schedule one-cycle --seed 0 -o "$out/cnn.onnx" --force --json
  for name in $only; do auto_run "$name"; done
  unset RAYON_NUM_THREADS
  [[ "${SEARCH_ONLY:-0}" != 1 ]] || exit 0
  measure_once cnn "$out/cnn.onnx" "$assets/fashion-mnist" "$fashion"
  measure_once lenet5 "$lenet5" "$assets/mnist" "$mnist"
  for name in $only; do
    [[ -f "$out/$name.onnx" ]] || continue
    measure_once "$name" "$out/$name.onnx" "$(run_dir "$name")" "$(run_data "$name")"
  done
  echo "$rounds" >"$out/rounds"
  for k in $(seq "$rounds"); do
    for pair in "cnn:$out/cnn.onnx" "lenet5:$lenet5" $(for n in $only; do echo "$n:$out/$n.onnx"; done); do
      [[ -f "${pair#*:}" ]] || continue
      "$whittle" bench "${pair#*:}" --engine ort --batch 1 --threads 1 --runs "$runs" \
        --warmup 20 --json >"$out/${pair%%:*}.bench-$k.json"
    done
  done
  uptime >"$out/load"
fi

table="$out/table.md"
{
  machine_line
  echo "Load average after the latency rounds: $(sed 's/.*load average: //' "$out/load")."
  echo "\`zoo:cnn\` trained 5 epochs on Fashion-MNIST (\`--batch-size 64 --optimizer adamw --lr 0.003"
  echo "--lr-schedule one-cycle --seed 0\`); LeNet5 is the pretrained MNIST asset. Every search:"
  echo "\`whittle auto MODEL --data SPEC --target T --max-accuracy-drop D --budget B --threads 1"
  echo "--seed 0\` (the grid adds \`--exhaustive\`), RAYON_NUM_THREADS=${THREADS:-2}, under"
  echo "nice. Sizes, latency (median over $(cat "$out/rounds") rounds of the median of $runs runs, ONNX Runtime,"
  echo "batch 1, one thread) and test accuracy (ONNX Runtime, all test images, one per run) measured again"
  echo "by this script for the baseline and the output in the same run (\`bench/auto_goals.sh\`)."
  echo
  python3 "$here/auto_goals.py" "$out" "$(cat "$out/rounds")" $only
} >"$table"
publish auto-goals "$table"

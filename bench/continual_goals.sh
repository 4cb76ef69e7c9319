#!/usr/bin/env bash
# The goals of issue 19 (`whittle continual`), measured: Split Fashion-MNIST and Split
# MNIST, class-IL, MLP 784-256-256-10, 3 seeds, on the reference protocol (SGD lr 0.1,
# batches of 10 new + 128 replayed, 1 epoch per task, reservoir of 500) and on whittle's
# best settings (ER-ACE's asymmetric cross-entropy, --ace; ER with 2 epochs per task;
# DER++ with alpha 0.1, beta 1.0; DER++ on a 784-512-512-10 MLP), beside the PyTorch
# reference figures of the issue; then the wall and CPU time of one 5-task run with
# compression after and during training against the same run without compression, and
# against the compressed run on two executor threads, in the same script run (the load
# average before and after every run is noted, in its JSON and the table). The Markdown
# table goes to stdout and OUT_DIR/table.md.
#
#   bench/continual_goals.sh ASSETS_DIR OUT_DIR [--force]
#
# Rerunnable: a run whose JSON exists in OUT_DIR is skipped unless --force (the table is
# made from whichever runs exist; a missing one shows as "not run"). Environment: WHITTLE
# (default target/release/whittle); SEEDS (default 0,1,2); ONLY (space-separated run
# names, default all, see RUNS below); TABLE_ONLY=1 only prints the table;
# WRITE=docs/BENCHMARKS.md puts it in its `continual-goals` section.
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
assets="$1"
read_run_args "$2" "${3:-}"
seeds="${SEEDS:-0,1,2}"
mkdir -p "$out"
model=zoo:mlp:hidden=256-256
# A LeNet-5 with 3x3 kernels, 8 and 16 channels and one hidden layer of 256: as many
# multiply-adds as LeNet-5 (372K per image), a conv net with a higher joint ceiling.
lenet_wide=zoo:lenet:channels=8-16,kernel=3,hidden=256

# name data flags...: the runs (reference protocol, then whittle's best settings).
RUNS=(
  "fmnist-er fashion-mnist --strategy er"
  "fmnist-derpp fashion-mnist --strategy derpp --no-baselines"
  "fmnist-er-ace-e2 fashion-mnist --strategy er --ace --epochs-per-task 2 --no-baselines"
  "fmnist-derpp-ace fashion-mnist --strategy derpp --ace --alpha 0.1 --beta 1.0 --no-baselines"
  "fmnist-derpp512-ace fashion-mnist --model zoo:mlp:hidden=512-512 --strategy derpp --ace --alpha 0.1 --beta 1.0 --no-baselines"
  "fmnist-er-ncm fashion-mnist --strategy er --ncm --no-baselines"
  "fmnist-derpp-ace-ncm fashion-mnist --strategy derpp --ace --alpha 0.1 --beta 1.0 --ncm --no-baselines"
  "fmnist-lenetw-er fashion-mnist --model $lenet_wide --strategy er --no-baselines"
  "fmnist-lenetw-er-ncm fashion-mnist --model $lenet_wide --strategy er --ncm --no-baselines"
  "fmnist-lenetw-derpp-ace fashion-mnist --model $lenet_wide --strategy derpp --ace --alpha 0.1 --beta 1.0 --no-baselines"
  "fmnist-lenetw-er-cos fashion-mnist --model $lenet_wide --strategy er --ncm cosine --no-baselines"
  "fmnist-lenetw-derpp-ace-e2 fashion-mnist --model $lenet_wide --strategy derpp --ace --alpha 0.1 --beta 1.0 --epochs-per-task 2 --no-baselines"
  "fmnist-lenetw-er-ace-aug fashion-mnist --model $lenet_wide --strategy er --ace --replay-augment --no-baselines"
  "fmnist-lenetw-derpp-ace-e2-aug fashion-mnist --model $lenet_wide --strategy derpp --ace --alpha 0.1 --beta 1.0 --epochs-per-task 2 --replay-augment --no-baselines"
  "fmnist-lenetw-er-hyb fashion-mnist --model $lenet_wide --strategy er --ncm hybrid --no-baselines"
  "fmnist-lenetw-er-aug-hyb fashion-mnist --model $lenet_wide --strategy er --replay-augment --ncm hybrid --no-baselines"
  "mnist-er mnist --strategy er"
  "mnist-derpp mnist --strategy derpp --no-baselines"
  "mnist-er-ace-e2 mnist --strategy er --ace --epochs-per-task 2 --no-baselines"
  "mnist-derpp-ace mnist --strategy derpp --ace --alpha 0.1 --beta 1.0 --no-baselines"
)
only="${ONLY:-$(for r in "${RUNS[@]}"; do echo "${r%% *}"; done) time}"

if [[ -z "${TABLE_ONLY:-}" ]]; then
  for run in "${RUNS[@]}"; do
    read -r name data flags <<<"$run"
    [[ " $only " == *" $name "* ]] || continue
    # A run's own leading --model replaces the default.
    run_model=$model
    if [[ $flags == "--model "* ]]; then
      read -r _ run_model flags <<<"$flags"
    fi
    target="$out/$name.json"
    already_done "$target" && continue
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    # shellcheck disable=SC2086
    step_stdout "$target" "$whittle" continual --model "$run_model" \
      --data "$data:$assets/$data" --seeds "$seeds" $flags \
      -o "$out/$name.onnx" --force --json
    # The load average (1, 5, 15 min) before and after the run, beside its figures.
    python3 - "$target" "$load_before" <<'PY'
import json, sys
path, load_before = sys.argv[1:]
d = json.load(open(path))
d.update(load_before=load_before.split(), load=open("/proc/loadavg").read().split()[:3])
json.dump(d, open(path, "w"))
PY
  done
  if [[ " $only " == *" time "* ]]; then
    # One seed, 5 tasks, ER: plain, then with compression after (int8, 50% pruning,
    # pruned + int8) and during training, on one executor thread (the default) and on
    # two (the old default: candle's threads spin on each small batch), in the same
    # script run; wall and CPU time (user + system) of the whole command.
    for variant in plain compressed compressed-2-threads; do
      extra=()
      [[ $variant == compressed* ]] && extra=(--quantize int8 --prune 0.5 --compress-during)
      [[ $variant == *2-threads ]] && extra+=(--threads 2)
      target="$out/time-$variant.json"
      already_done "$target" && continue
      load_before=$(cut -d' ' -f1-3 /proc/loadavg)
      /usr/bin/time -f '%e %U %S' -o "$target.time" "$whittle" continual --model "$model" \
        --data "fashion-mnist:$assets/fashion-mnist" --strategy er --no-baselines --seeds 0 \
        "${extra[@]}" -o "$out/time-$variant.onnx" --force --json >"$target.part" 2>"$target.log"
      python3 - "$target.part" "$target.time" "$load_before" <<'PY'
import json, sys
path, times, load_before = sys.argv[1:]
wall, user, system = map(float, open(times).read().split()[-3:])
d = json.load(open(path))
d.update(wall_seconds=wall, cpu_seconds=user + system, load_before=load_before.split(),
         load=open("/proc/loadavg").read().split()[:3])
json.dump(d, open(path, "w"))
PY
      mv "$target.part" "$target"
    done
  fi
fi

{
  machine_line
  echo
  python3 "$here/continual_goals.py" "$out"
} >"$out/table.md"
publish continual-goals "$out/table.md"

#!/usr/bin/env bash
# Training throughput per core: zoo:cnn (BatchNormalization, trained through the fused
# kernel of crates/exec/src/ops/batch_norm_train.rs) and zoo:vit-tiny (LayerNorm) on the
# first IMAGES Fashion-MNIST training images, batch 64, one epoch, one thread. Each row is
# the median of REPEATS runs (default 3), the models taking turns; images/s is the
# trainer's own figure (wall time of the epoch), CPU seconds the user + system time of the
# whole process (/usr/bin/time), and images per CPU second their quotient: a lower bound of
# the rate (the process also loads data and runs pre-flight checks) that holds on a machine
# shared with other jobs, where the wall-time rate does not.
#
#   bench/train_throughput.sh FASHION_MNIST_DIR OUT_DIR [IMAGES]
#
# Environment: WHITTLE (default target/release/whittle); BASELINE, a second whittle binary
# (for example one built from an earlier commit) timed in the same run, its rows marked as
# such; TABLE_ONLY=1 only prints the table of an earlier run's OUT_DIR;
# WRITE=docs/BENCHMARKS.md puts the table in its `train-throughput` section.
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
data="fashion-mnist:$1"
out="$2"
images="${3:-640}"
repeats="${REPEATS:-3}"
whittle="${WHITTLE:-target/release/whittle}"
mkdir -p "$out"

declare -A model_args=(
  [cnn]="--model zoo:cnn --optimizer adamw --lr 0.003 --lr-schedule one-cycle"
  [vit-tiny]="--model zoo:vit-tiny --optimizer adamw --lr 0.001 --weight-decay 0.05 --lr-schedule warmup-cosine --warmup-epochs 0.3"
)
builds=(current)
[[ -n "${BASELINE:-}" ]] && builds+=(baseline)

# One run: OUT/<model>-<build>-<k>.json (whittle train --json) and .time ("user_s sys_s").
run() { # MODEL BUILD K
  local bin="$whittle"
  [[ "$2" == baseline ]] && bin="$BASELINE"
  # shellcheck disable=SC2086
  RAYON_NUM_THREADS=1 /usr/bin/time -f "%U %S" -o "$out/$1-$2-$3.time" "$bin" train \
    ${model_args[$1]} --data "$data" --limit "$images" --epochs 1 --batch-size 64 --seed 0 \
    -o "$out/$1-$2.onnx" --force --json >"$out/$1-$2-$3.json"
}
for k in $(seq "$repeats"); do
  [[ "${TABLE_ONLY:-0}" == 1 ]] && break
  for m in cnn vit-tiny; do
    for b in "${builds[@]}"; do run "$m" "$b" "$k"; done
  done
done

table="$out/table.md"
{
  machine_line
  echo "\`whittle train\` on the first $images Fashion-MNIST training images, one epoch, batch 64,"
  echo "seed 0, RAYON_NUM_THREADS=1; median of $repeats runs taking turns (\`bench/train_throughput.sh\`)."
  echo
  python3 - "$out" "$repeats" "$images" "${builds[@]}" <<'PY'
import json, os, statistics, sys
out, repeats, images, builds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
norm = {"cnn": "BatchNormalization (fused kernel)", "vit-tiny": "LayerNorm"}
print("| model | normalization | build | images/s | CPU seconds | images per CPU second | loss |")
print("|---|---|---|---|---|---|---|")
for m in ["cnn", "vit-tiny"]:
    for b in builds:
        runs = [json.load(open(os.path.join(out, f"{m}-{b}-{k}.json")))["epochs"][0] for k in range(1, repeats + 1)]
        cpu_s = [sum(map(float, open(os.path.join(out, f"{m}-{b}-{k}.time")).read().split()[-2:])) for k in range(1, repeats + 1)]
        ips, cpu = statistics.median(r["images_per_sec"] for r in runs), statistics.median(cpu_s)
        print(f"| `zoo:{m}` | {norm[m]} | {b} | {ips:.1f} | {cpu:.2f} | {images / cpu:.0f} | {runs[0]['loss']:.4f} |")
PY
} >"$table"
publish train-throughput "$table"

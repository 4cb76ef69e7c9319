#!/usr/bin/env bash
# Distilled vs trained-alone students on Fashion-MNIST: the same student, data, epochs,
# LR schedule and seed, once with labels only and once per ALPHA with `whittle distill`
# from TEACHER. Each seed repeats the comparison; every run is one thread and they all run
# at once (for a many-core machine). The table goes to stdout (markdown).
#
#   bench/distill_grid.sh TEACHER.onnx FASHION_MNIST_DIR OUT_DIR
#
# Environment: TABLE_ONLY=1 only prints the table of an earlier run's OUT_DIR; STUDENT
# (default zoo:cnn:channels=16-32-64, a quarter of zoo:cnn), ALPHAS (default "0.5 0.7 0.9"),
# TEMPERATURE (4), SEEDS ("0 1"), EPOCHS (3), LIMIT (30000).
set -euo pipefail
teacher="$1"
data="fashion-mnist:$2"
out="$3"
whittle="${WHITTLE:-target/release/whittle}"
student="${STUDENT:-zoo:cnn:channels=16-32-64}"
alphas="${ALPHAS:-0.5 0.7 0.9}"
seeds="${SEEDS:-0 1}"
mkdir -p "$out"
common=(--data "$data" --limit "${LIMIT:-30000}" --epochs "${EPOCHS:-3}" --batch-size 64
  --optimizer adamw --lr 0.003 --lr-schedule one-cycle)

if [[ "${TABLE_ONLY:-0}" != 1 ]]; then
for seed in $seeds; do
  (RAYON_NUM_THREADS=1 "$whittle" train --model "$student" "${common[@]}" --seed "$seed" \
    -o "$out/alone-$seed.onnx" --force --json >"$out/alone-$seed.train.json" 2>"$out/alone-$seed.err" &&
    "$whittle" eval "$out/alone-$seed.onnx" --data "$data" --json >"$out/alone-$seed.json") &
  for alpha in $alphas; do
    RAYON_NUM_THREADS=1 "$whittle" distill --teacher "$teacher" --student "$student" "${common[@]}" \
      --temperature "${TEMPERATURE:-4}" --alpha "$alpha" --seed "$seed" \
      -o "$out/kd-$alpha-$seed.onnx" --force --json >"$out/kd-$alpha-$seed.json" \
      2>"$out/kd-$alpha-$seed.err" &
  done
done
wait
fi

python3 - "$out" "$alphas" "$seeds" <<'PY'
import json, os, sys
out, alphas, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def acc(name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    j = json.load(open(path))
    return j.get("accuracy", j.get("student_accuracy"))
rows = [("trained alone", "alone-{}")] + [(f"distilled, alpha {a}", f"kd-{a}-{{}}") for a in alphas]
print("| student | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
print("|---|" + "---|" * (len(seeds) + 1))
for label, pattern in rows:
    accs = [acc(pattern.format(s)) for s in seeds]
    done = [a for a in accs if a is not None]
    mean = f"{100 * sum(done) / len(done):.2f}%" if done else "-"
    cells = " | ".join("-" if a is None else f"{100 * a:.2f}%" for a in accs)
    print(f"| {label} | {cells} | {mean} |")
PY

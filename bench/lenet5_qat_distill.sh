#!/usr/bin/env bash
# Quantization-aware training and distillation on the pretrained MNIST LeNet5:
# - FP32 vs PTQ INT8 vs QAT INT8 (`whittle qat`, which reports all three in whittle's
#   executor), once with min/max observers and per-tensor weights and once with learned step
#   sizes and per-channel weights (--lsq --per-channel); each QAT model is also evaluated in
#   ONNX Runtime (scripts/ort_eval.py; default session options, which fuse Q/DQ pairs into
#   integer kernels);
# - a `zoo:mlp:hidden=32` student distilled from LeNet5 (T = 4, alpha = 0.7) against the
#   same student trained alone (same data, epochs, seed, LR).
# Every run trains with plain SGD at a constant rate, batch 32.
# Every command's --json output is kept in OUT_DIR; the tables (Markdown, headed by the
# machine, the date and the settings) go to OUT_DIR/qat.md and OUT_DIR/distill.md and stdout.
#
#   bench/lenet5_qat_distill.sh MNIST_LENET5.onnx MNIST_DIR OUT_DIR
#
# Environment: WHITTLE (default target/release/whittle); QAT_LIMIT (training images of the
# min/max QAT run, default 4000), LSQ_LIMIT (of the LSQ run, default 2000), DISTILL_LIMIT
# (default 10000); TABLE_ONLY=1 only prints the tables of an earlier run's OUT_DIR;
# WRITE=docs/BENCHMARKS.md puts them in its `lenet5-qat` and `lenet5-distill` sections.
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
model="$1"
dir="$2"
out="$3"
whittle="${WHITTLE:-target/release/whittle}"
qat_limit="${QAT_LIMIT:-4000}"
lsq_limit="${LSQ_LIMIT:-2000}"
distill_limit="${DISTILL_LIMIT:-10000}"
mkdir -p "$out"
# Plain SGD at a constant rate, batch 32 (the trainer's defaults when these figures were
# first taken), named so that a change of defaults does not change the figures.
sgd=(--optimizer sgd --lr-schedule constant --batch-size 32)
qat=(--data "mnist:$dir" --epochs 1 --lr 0.001 "${sgd[@]}" --calib-samples 512 --seed 0 --force --json)
student=(--data "mnist:$dir" --limit "$distill_limit" --epochs 3 --lr 0.05 "${sgd[@]}" --seed 0 --force
  --json)

if [[ "${TABLE_ONLY:-0}" != 1 ]]; then
  timed() { # NAME COMMAND... -> OUT/NAME.json, OUT/NAME.time (wall seconds)
    local name="$1"
    shift
    /usr/bin/time -f "%e" -o "$out/$name.time" "$whittle" "$@" >"$out/$name.json"
  }
  timed qat qat "$model" -o "$out/qat.onnx" --limit "$qat_limit" "${qat[@]}"
  timed qat-lsq qat "$model" -o "$out/qat-lsq.onnx" --limit "$lsq_limit" --lsq --per-channel "${qat[@]}"
  for name in qat qat-lsq; do
    python3 "$here/../scripts/ort_eval.py" "$out/$name.onnx" "$dir" >"$out/$name.ort.json"
  done
  timed distill distill --teacher "$model" --student zoo:mlp:hidden=32 --temperature 4 \
    --alpha 0.7 -o "$out/kd.onnx" "${student[@]}"
  timed alone train --model zoo:mlp:hidden=32 -o "$out/alone.onnx" "${student[@]}"
  "$whittle" eval "$out/alone.onnx" --data "mnist:$dir" --json >"$out/alone.eval.json"
  "$whittle" inspect "$out/alone.onnx" --json >"$out/alone.inspect.json"
fi

{
  machine_line
  echo "\`whittle qat $(basename "$model") -o qat.onnx --data mnist:DIR --limit N --epochs 1 --lr 0.001"
  echo "${sgd[*]} --calib-samples 512 --seed 0 [--lsq --per-channel]\`"
  echo "(N = $qat_limit; $lsq_limit with --lsq); accuracy on the 10,000 MNIST test images (\`bench/lenet5_qat_distill.sh\`)."
  echo
  python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
load = lambda n: json.load(open(os.path.join(out, n)))
pct = lambda v: f"{100 * v:.2f}%"
print("| run | FP32 (whittle) | PTQ INT8 (whittle) | QAT INT8 (whittle / ORT) | size FP32 -> QAT | wall s |")
print("|---|---|---|---|---|---|")
for name, label in (("qat", "min/max, per-tensor"), ("qat-lsq", "LSQ, per-channel")):
    q, ort = load(name + ".json"), load(name + ".ort.json")
    wall = float(open(os.path.join(out, name + ".time")).read().split()[-1])
    print(f"| {label} | {pct(q['accuracy_fp32'])} | {pct(q['accuracy_ptq'])} | "
          f"{pct(q['accuracy_qat'])} / {pct(ort['accuracy'])} | {q['size_fp32']:,} -> {q['size_qat']:,} B | "
          f"{wall:.0f} |")
PY
} >"$out/qat.md"

{
  machine_line
  echo "\`whittle distill --teacher $(basename "$model") --student zoo:mlp:hidden=32 --temperature 4 --alpha 0.7\`"
  echo "against \`whittle train --model zoo:mlp:hidden=32\`, both \`--data mnist:DIR --limit $distill_limit --epochs 3"
  echo "--lr 0.05 ${sgd[*]} --seed 0\`; accuracy on the 10,000 MNIST test"
  echo "images (\`bench/lenet5_qat_distill.sh\`)."
  echo
  python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
load = lambda n: json.load(open(os.path.join(out, n)))
pct = lambda v: f"{100 * v:.2f}%"
kd = load("distill.json")
print("| model | parameters | accuracy |")
print("|---|---|---|")
print(f"| teacher: LeNet5 | {kd['teacher_params']:,} | {pct(kd['teacher_accuracy'])} |")
print(f"| student `zoo:mlp:hidden=32`, distilled (T = 4, alpha = 0.7) | {kd['student_params']:,} | {pct(kd['student_accuracy'])} |")
print(f"| same student trained alone | {load('alone.inspect.json')['parameters']:,} | {pct(load('alone.eval.json')['accuracy'])} |")
PY
} >"$out/distill.md"
publish lenet5-qat "$out/qat.md"
publish lenet5-distill "$out/distill.md"

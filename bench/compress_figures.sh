#!/usr/bin/env bash
# Pruning and QAT figures on a trained Fashion-MNIST classifier (zoo:cnn trained by
# `whittle train`, see docs/BENCHMARKS.md): every row is one whittle command whose --json
# output is kept in OUT/, and the tables go to stdout (markdown).
#
#   bench/compress_figures.sh TRAINED_CNN.onnx FASHION_MNIST_DIR OUT_DIR [FINETUNE_LIMIT]
#
# Pruning rows fine-tune 1 epoch on the first FINETUNE_LIMIT (default 10,000) training
# images, AdamW lr 0.001, batch 64, seed 0. QAT: 1 epoch on QAT_LIMIT (default 10,000)
# images with `whittle qat`'s own optimizer defaults. Accuracy: all 10,000 test images in
# whittle's executor. Latency: batch 1, median of LATENCY_RUNS (default 30) runs, ONNX
# Runtime on one thread (0: not measured).
# Environment: TABLE_ONLY=1 only prints the table of an earlier run's OUT_DIR; DISTILL=1
# fine-tunes the pruned models by distilling from the unpruned one; PARALLEL=1 runs every
# row at once, one thread each (for a many-core machine).
set -euo pipefail
model="$1"
data="fashion-mnist:$2"
out="$3"
limit="${4:-10000}"
whittle="${WHITTLE:-target/release/whittle}"
mkdir -p "$out"
tune=(--data "$data" --limit "$limit" --optimizer adamw --lr 0.001 --batch-size 64 --seed 0
  --latency-runs "${LATENCY_RUNS:-30}")
[[ "${DISTILL:-0}" == 1 ]] && tune+=(--distill)

run() { # NAME ARGS... -> OUT/NAME.json
  local name="$1"
  shift
  if [[ "${PARALLEL:-0}" == 1 ]]; then
    RAYON_NUM_THREADS=1 "$whittle" "$@" -o "$out/$name.onnx" --force --json >"$out/$name.json" \
      2>"$out/$name.err" &
  else
    "$whittle" "$@" -o "$out/$name.onnx" --force --json >"$out/$name.json"
  fi
}

if [[ "${TABLE_ONLY:-0}" != 1 ]]; then
for s in 0.3 0.5 0.7; do
  run "channel-$s" prune "$model" --method channel --sparsity "$s" --finetune-epochs 1 "${tune[@]}"
done
for s in 0.5 0.7 0.9; do
  run "magnitude-$s" prune "$model" --method magnitude --sparsity "$s" --finetune-epochs 1 "${tune[@]}"
done
run nm-2-4 prune "$model" --method nm --exclude block1.conv --finetune-epochs 1 "${tune[@]}"
run qat qat "$model" --epochs 1 --per-channel --calib-samples 512 --data "$data" \
  --limit "${QAT_LIMIT:-10000}" --seed 0
wait
fi

python3 - "$out" "$limit" "${DISTILL:-0}" <<'PY'
import json, os, sys
out, limit, distill = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
load = lambda n: json.load(open(os.path.join(out, n + ".json")))
pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"
tune = f"after 1 epoch ({limit:,} images{', distilled' if distill else ''})"
print(f"| method | target | accuracy before | {tune} | params | MACs | ORT b1 ms | gzip |")
print("|---|---|---|---|---|---|---|---|")
for name in ["channel-0.3", "channel-0.5", "channel-0.7", "magnitude-0.5", "magnitude-0.7", "magnitude-0.9", "nm-2-4"]:
    j = load(name)
    c, l = j.get("channels"), j.get("latency")
    params = f"{c['params_before']:,} -> {c['params_after']:,}" if c else f"{j['nonzero_params']:,} non-zero of {j['params']:,}"
    macs = f"{c['macs_before']:,} -> {c['macs_after']:,}" if c else "unchanged (dense)"
    ort = f"{l['ort_ms_before']:.3f} -> {l['ort_ms_after']:.3f}" if l and l.get("ort_ms_before") else "-"
    gz = f"{j['input_gzip_bytes'] / 1024:.0f} -> {j['gzip_bytes'] / 1024:.0f} KiB"
    print(f"| {j['method']} | {pct(j['target_sparsity'])} | {pct(j['accuracy_before'])} | {pct(j['accuracy_after'])} | {params} | {macs} | {ort} | {gz} |")
q = load("qat")
print()
print("| FP32 | PTQ INT8 (per-channel, 512 calibration images) | QAT INT8 (1 epoch) | size FP32 -> QAT |")
print("|---|---|---|---|")
print(f"| {pct(q['accuracy_fp32'])} | {pct(q['accuracy_ptq'])} | {pct(q['accuracy_qat'])} | {q['size_fp32']:,} -> {q['size_qat']:,} B |")
PY

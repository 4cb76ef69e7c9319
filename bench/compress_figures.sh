#!/usr/bin/env bash
# Pruning and QAT figures on a trained image classifier (zoo:cnn or zoo:resnet trained by
# `whittle train` on Fashion-MNIST, or the pretrained MNIST LeNet5): every row is one
# whittle command whose --json output is kept in OUT/; the table (Markdown, headed by the
# machine, the date and the settings) goes to OUT/table.md and stdout.
#
#   bench/compress_figures.sh MODEL.onnx DATA OUT_DIR [FINETUNE_LIMIT]
#
# DATA is a dataset SPEC (fashion-mnist:DIR or mnist:DIR; a bare DIR means
# fashion-mnist:DIR). Pruning rows fine-tune 1 epoch on the first FINETUNE_LIMIT (default
# 10,000) training images, AdamW lr 0.001, batch 64, seed 0. QAT: 1 epoch on QAT_LIMIT
# (default 10,000) images with `whittle qat`'s own optimizer defaults. Accuracy: all 10,000
# test images, in whittle's executor and in ONNX Runtime (scripts/ort_eval.py). Latency:
# batch 1, median of LATENCY_RUNS (default 30) runs, ONNX Runtime on one thread (0: not
# measured).
# Environment: METHODS (default "channel magnitude nm qat"): which rows to run (channel and
# magnitude at three targets each, nm = 2:4, qat); NM_EXCLUDE (default block1.conv, the
# zoo:cnn stem): the layer 2:4 leaves dense ("" for none); TABLE_ONLY=1 only prints the
# table of an earlier run's OUT_DIR; DISTILL=1 fine-tunes the pruned models by distilling
# from the unpruned one; PARALLEL=1 runs every row at once, one thread each (for a
# many-core machine); WRITE=docs/BENCHMARKS.md puts the table in the section named SECTION
# (default compress-figures).
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
model="$1"
data="$2"
[[ "$data" == *:* ]] || data="fashion-mnist:$data"
out="$3"
limit="${4:-10000}"
methods="${METHODS:-channel magnitude nm qat}"
whittle="${WHITTLE:-target/release/whittle}"
mkdir -p "$out"
tune=(--data "$data" --limit "$limit" --optimizer adamw --lr 0.001 --batch-size 64 --seed 0)
[[ "${DISTILL:-0}" == 1 ]] && tune+=(--distill)

# The rows METHODS asks for, as NAME:METHOD:TARGET.
rows=()
for m in $methods; do
  case "$m" in
    channel) rows+=(channel-0.3 channel-0.5 channel-0.7) ;;
    magnitude) rows+=(magnitude-0.5 magnitude-0.7 magnitude-0.9) ;;
    nm) rows+=(nm-2-4) ;;
    qat) ;;
    *) echo "error: METHODS: unknown method '$m' (channel, magnitude, nm, qat)" >&2 && exit 2 ;;
  esac
done

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
  for name in "${rows[@]}"; do
    case "$name" in
      nm-2-4)
        exclude=()
        [[ -n "${NM_EXCLUDE-block1.conv}" ]] && exclude=(--exclude "${NM_EXCLUDE-block1.conv}")
        run nm-2-4 prune "$model" --method nm "${exclude[@]}" --finetune-epochs 1 "${tune[@]}"
        ;;
      channel-*) run "$name" prune "$model" --method channel --sparsity "${name##*-}" \
        --finetune-epochs 1 --latency-runs "${LATENCY_RUNS:-30}" "${tune[@]}" ;;
      *) run "$name" prune "$model" --method "${name%-*}" --sparsity "${name##*-}" \
        --finetune-epochs 1 "${tune[@]}" ;;
    esac
  done
  if [[ " $methods " == *" qat "* ]]; then
    run qat qat "$model" --epochs 1 --per-channel --calib-samples 512 --data "$data" \
      --limit "${QAT_LIMIT:-10000}" --seed 0
  fi
  wait
  for name in "${rows[@]}"; do
    python3 "$here/../scripts/ort_eval.py" "$out/$name.onnx" "${data#*:}" >"$out/$name.ort.json"
  done
fi

table="$out/table.md"
{
  machine_line
  MODEL="$(basename "$model")" DATA="${data%%:*}" LIMIT="$limit" DISTILL="${DISTILL:-0}" \
    RUNS="${LATENCY_RUNS:-30}" PARALLEL="${PARALLEL:-0}" NM_EXCLUDE="${NM_EXCLUDE-block1.conv}" \
    python3 - "$out" "$methods" "${rows[@]}" <<'PY'
import json, os, sys
out, methods, rows = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
env = os.environ
distill = ", distilled from the unpruned model" if env["DISTILL"] == "1" else ""
parallel = ", every row at once, one thread each" if env["PARALLEL"] == "1" else ""
dense = f"; 2:4 leaves `{env['NM_EXCLUDE']}` dense" if "nm-2-4" in rows and env["NM_EXCLUDE"] else ""
print(f"Model `{env['MODEL']}`, data `{env['DATA']}`; fine-tune: 1 epoch on the first {int(env['LIMIT']):,} training")
print(f"images{distill}, AdamW lr 0.001, batch 64, seed 0{dense}; accuracy on the 10,000")
print(f"test images; ORT latency batch 1, one thread, median of {env['RUNS']} runs (`compress_figures.sh`{parallel}).")
print()
load = lambda n: json.load(open(os.path.join(out, n)))
pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"
share = lambda a, b: f"{a:,} -> {b:,} ({100 * b / a:.1f}%)"
if rows:
    print("| method | target | accuracy before | after (whittle / ORT) | params | MACs | ORT b1 ms | gzip |")
    print("|---|---|---|---|---|---|---|---|")
for name in rows:
    j, ort = load(name + ".json"), load(name + ".ort.json")
    c, l = j.get("channels"), j.get("latency")
    params = share(c["params_before"], c["params_after"]) if c else f"{j['nonzero_params']:,} non-zero of {j['params']:,}"
    macs = share(c["macs_before"], c["macs_after"]) if c else "unchanged (dense)"
    ms = f"{l['ort_ms_before']:.3f} -> {l['ort_ms_after']:.3f}" if l and l.get("ort_ms_before") else "-"
    gz = f"{j['input_gzip_bytes'] / 1024:.0f} -> {j['gzip_bytes'] / 1024:.0f} KiB"
    target = "2:4" if j["method"] == "nm" else pct(j["target_sparsity"])
    after = f"{pct(j['accuracy_after'])} / {pct(ort['accuracy'])}"
    print(f"| {j['method']} | {target} | {pct(j['accuracy_before'])} | {after} | {params} | {macs} | {ms} | {gz} |")
if "qat" in methods:
    q = load("qat.json")
    print()
    print("| FP32 | PTQ INT8 (per-channel, 512 calibration images) | QAT INT8 (1 epoch) | size FP32 -> QAT |")
    print("|---|---|---|---|")
    print(f"| {pct(q['accuracy_fp32'])} | {pct(q['accuracy_ptq'])} | {pct(q['accuracy_qat'])} | {q['size_fp32']:,} -> {q['size_qat']:,} B |")
PY
} >"$table"
publish "${SECTION:-compress-figures}" "$table"

#!/usr/bin/env bash
# Low-rank factorization of the pretrained MNIST LeNet5's first Gemm (`g1`, 3136 -> 200,
# 627,200 of the model's 648,226 parameters) by `whittle factorize`, at several ranks chosen
# by --rank-ratio or --energy, without fine-tuning. Accuracy on the 10,000 MNIST test images
# in whittle's executor (the command's own figure) and in ONNX Runtime (scripts/ort_eval.py).
# Every command's --json output is kept in OUT_DIR; the table (Markdown, headed by the
# machine, the date and the settings) goes to OUT_DIR/table.md and stdout.
#
#   bench/factorize_lenet5.sh MNIST_LENET5.onnx MNIST_DIR OUT_DIR
#
# Environment: WHITTLE (default target/release/whittle); RULES (default "rank-ratio:0.02
# rank-ratio:0.05 energy:0.5 rank-ratio:0.1 rank-ratio:0.25 energy:0.8 rank-ratio:0.5
# energy:0.9"): one row per OPTION:VALUE; TABLE_ONLY=1 only prints the table of an earlier
# run's OUT_DIR; WRITE=docs/BENCHMARKS.md puts it in its `factorize-lenet5` section.
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
model="$1"
dir="$2"
out="$3"
whittle="${WHITTLE:-target/release/whittle}"
rules="${RULES:-rank-ratio:0.02 rank-ratio:0.05 energy:0.5 rank-ratio:0.1 rank-ratio:0.25 energy:0.8 rank-ratio:0.5 energy:0.9}"
mkdir -p "$out"

if [[ "${TABLE_ONLY:-0}" != 1 ]]; then
  python3 "$here/../scripts/ort_eval.py" "$model" "$dir" >"$out/original.ort.json"
  for rule in $rules; do
    "$whittle" factorize "$model" -o "$out/$rule.onnx" "--${rule%%:*}" "${rule#*:}" --layers g1 \
      --data "mnist:$dir" --force --json >"$out/$rule.json"
    python3 "$here/../scripts/ort_eval.py" "$out/$rule.onnx" "$dir" >"$out/$rule.ort.json"
  done
fi

table="$out/table.md"
{
  machine_line
  echo "\`whittle factorize $(basename "$model") -o f.onnx --rank-ratio R | --energy E --layers g1 --data mnist:DIR\`,"
  echo "no fine-tuning; accuracy on the 10,000 MNIST test images (\`bench/factorize_lenet5.sh\`)."
  echo
  python3 - "$out" $rules <<'PY'
import json, os, sys
out, rules = sys.argv[1], sys.argv[2:]
load = lambda n: json.load(open(os.path.join(out, n)))
rows = [(r, load(r + ".json"), load(r + ".ort.json")) for r in rules]
rows.sort(key=lambda row: row[1]["layers"][0]["rank"])
first = rows[0][1]
g1 = first["layers"][0]
size = lambda b: f"{b / 1e6:.2f} MB" if b >= 1e6 else f"{b / 1e3:.0f} KB"
pct = lambda v: f"{100 * v:.2f}%"
print("| rule | rank | g1 weights | model params | file size | accuracy (whittle / ORT) |")
print("|---|---|---|---|---|---|")
print(f"| original | {min(g1['in'], g1['out'])} | {g1['params_before']:,} | {first['params_before']:,} | "
      f"{size(first['size_before'])} | {pct(first['accuracy_before'])} / {pct(load('original.ort.json')['accuracy'])} |")
for rule, j, ort in rows:
    layer = j["layers"][0]
    option, value = rule.split(":")
    print(f"| --{option} {value} | {layer['rank']} | {layer['params_after']:,} | {j['params_after']:,} | "
          f"{size(j['size_after'])} | {pct(j['accuracy_after'])} / {pct(ort['accuracy'])} |")
PY
} >"$table"
publish factorize-lenet5 "$table"

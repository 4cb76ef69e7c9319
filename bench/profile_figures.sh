#!/usr/bin/env bash
# `whittle profile` and `whittle bench` on the real models, one thread: per-operator-type and
# per-node shares of LeNet5 (batch 1), MiniLM-L3 (batch 1, seq 128) and YOLOv8n-320 (batch 1);
# latency percentiles, throughput and peak RSS of LeNet5 (batch 1, 32) and MiniLM-L3 (batch
# 1, 8) in whittle's executor and in ONNX Runtime. Every command's --json output is kept in
# OUT_DIR; the tables (Markdown, headed by the machine, the date and the settings) go to
# OUT_DIR/table.md and stdout.
#
#   bench/profile_figures.sh MODELS_DIR OUT_DIR
#
# MODELS_DIR holds mnist_lenet5.onnx, paraphrase-MiniLM-L3-v2.onnx and yolov8n-320.onnx
# ($WHITTLE_ASSETS/models). Environment: WHITTLE (default target/release/whittle);
# TABLE_ONLY=1 only prints the tables of an earlier run's OUT_DIR; WRITE=docs/BENCHMARKS.md
# puts them in its `profile-figures` section.
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
models="$1"
out="$2"
whittle="${WHITTLE:-target/release/whittle}"
mkdir -p "$out"

lenet="$models/mnist_lenet5.onnx"
minilm="$models/paraphrase-MiniLM-L3-v2.onnx"
yolo="$models/yolov8n-320.onnx"
if [[ "${TABLE_ONLY:-0}" != 1 ]]; then
  profile() { # NAME MODEL ARGS...
    local name="$1" model="$2"
    shift 2
    RAYON_NUM_THREADS=1 "$whittle" profile "$model" "$@" --json >"$out/profile-$name.json"
  }
  profile lenet5 "$lenet" --batch 1 --runs 50 --warmup 5
  profile minilm "$minilm" --shape input_ids=1x128 --batch 1 --runs 10
  profile yolo "$yolo" --shape images=1x3x320x320 --runs 5 --warmup 1
  for engine in whittle ort; do
    "$whittle" bench "$lenet" --batch 1,32 --engine "$engine" --threads 1 --runs 30 --warmup 5 \
      --json >"$out/bench-lenet5-$engine.json"
    "$whittle" bench "$minilm" --shape input_ids=1x128 --batch 1,8 --engine "$engine" \
      --threads 1 --runs 10 --warmup 2 --json >"$out/bench-minilm-$engine.json"
  done
fi

table="$out/table.md"
{
  machine_line
  echo "One thread (RAYON_NUM_THREADS=1 for profiles, \`--threads 1\` for benches; \`bench/profile_figures.sh\`):"
  echo
  echo '```sh'
  echo "whittle profile mnist_lenet5.onnx --batch 1 --runs 50 --warmup 5"
  echo "whittle profile paraphrase-MiniLM-L3-v2.onnx --shape input_ids=1x128 --batch 1 --runs 10"
  echo "whittle profile yolov8n-320.onnx --shape images=1x3x320x320 --runs 5 --warmup 1"
  echo "whittle bench mnist_lenet5.onnx --batch 1,32 --engine whittle|ort --threads 1 --runs 30 --warmup 5"
  echo "whittle bench paraphrase-MiniLM-L3-v2.onnx --shape input_ids=1x128 --batch 1,8 \\"
  echo "  --engine whittle|ort --threads 1 --runs 10 --warmup 2"
  echo '```'
  echo
  python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
load = lambda n: json.load(open(os.path.join(out, n)))

def shorten(names):
    """Drops the folder prefix ('/a/b/') that all NAMES share."""
    common = os.path.commonprefix(names)
    cut = common.rfind("/") + 1 if all("/" in n for n in names) else 0
    return [n[cut:] for n in names]

def ms(v):
    """Three significant digits, trailing zeros kept."""
    return f"{v:#.3g}" if v < 100 else f"{v:.0f}"

def rate(v):
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"

def count(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)

print("| model | mean time per run | MACs | top operator types (share of time, nodes) | top nodes |")
print("|---|---|---|---|---|")
for name, label in (("lenet5", "LeNet5, batch 1"), ("minilm", "MiniLM-L3, batch 1, seq 128"),
                    ("yolo", "YOLOv8n-320, batch 1")):
    p = load(f"profile-{name}.json")
    ops = sorted(p["by_op_type"], key=lambda o: -o["share"])[:5]
    nodes = sorted(p["nodes"], key=lambda n: -n["share"])[:5]
    types = ", ".join(f"{o['op_type']} {100 * o['share']:.1f}% ({o['count']})" for o in ops)
    top = ", ".join(f"{n} {100 * s['share']:.1f}%" for n, s in zip(shorten([n["name"] for n in nodes]), nodes))
    print(f"| {label} | {ms(p['run_time_ms'])} ms | {count(p['total_macs'])} | {types} | {top} |")
print()
print("| model | engine | batch | mean ms | median ms | p99 ms | samples/s | peak RSS |")
print("|---|---|---|---|---|---|---|---|")
for name, label in (("lenet5", "LeNet5"), ("minilm", "MiniLM-L3")):
    for engine in ("whittle", "ort"):
        for b in load(f"bench-{name}-{engine}.json")["batches"]:
            rss = b["peak_rss_bytes"] / 2**20
            print(f"| {label} | {engine} | {b['batch']} | {ms(b['mean_ms'])} | {ms(b['median_ms'])} | "
                  f"{ms(b['p99_ms'])} | {rate(b['throughput'])} | {rss:.1f} MiB |")
PY
} >"$table"
publish profile-figures "$table"

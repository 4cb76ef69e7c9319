#!/usr/bin/env bash
# Two figures on the untrained `zoo:cnn` (seed 0; channels 32-64-128, BatchNormalization
# after every conv): `whittle optimize --verify` (nodes, parameters, bytes; latency in
# whittle's executor and ONNX Runtime at batch 1 and 32, one thread), and `whittle prune
# --method channel --sparsity 0.5` with the other channel defaults (L1, counts rounded to 8,
# stem and classifier protected; batch-1 latency before and after, back to back). Every
# command's --json output is kept in OUT_DIR; the tables (Markdown, headed by the machine,
# the date and the settings) go to OUT_DIR/optimize.md and OUT_DIR/channel.md and stdout.
#
#   bench/cnn_optimize_prune.sh OUT_DIR
#
# Environment: WHITTLE (default target/release/whittle); RUNS (timed runs of every latency,
# default 50 for the benches, 200 for the pruning); ROUNDS (default 3): the benches run in
# rounds that visit both models in turn, and the table takes the median over the rounds
# (a TABLE_ONLY run reads the count from OUT_DIR/rounds);
# TABLE_ONLY=1 only prints the tables of an earlier run's OUT_DIR; WRITE=docs/BENCHMARKS.md
# puts them in its `cnn-optimize` and `cnn-channel-untrained` sections.
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
out="$1"
whittle="${WHITTLE:-target/release/whittle}"
bench_runs="${RUNS:-50}"
prune_runs="${RUNS:-200}"
rounds="${ROUNDS:-3}"
mkdir -p "$out"

if [[ "${TABLE_ONLY:-0}" != 1 ]]; then
  "$whittle" zoo cnn -o "$out/cnn.onnx" --force >/dev/null
  "$whittle" optimize "$out/cnn.onnx" -o "$out/cnn-opt.onnx" --verify --force --json \
    >"$out/optimize.json"
  for m in cnn cnn-opt; do "$whittle" inspect "$out/$m.onnx" --json >"$out/$m.inspect.json"; done
  echo "$rounds" >"$out/rounds"
  for k in $(seq "$rounds"); do
    for m in cnn cnn-opt; do
      for engine in whittle ort; do
        "$whittle" bench "$out/$m.onnx" --batch 1,32 --engine "$engine" --threads 1 \
          --runs "$bench_runs" --warmup 5 --json >"$out/$m.bench-$engine-$k.json"
      done
    done
  done
  "$whittle" prune "$out/cnn.onnx" --method channel --sparsity 0.5 --latency-runs "$prune_runs" \
    -o "$out/cnn-ch50.onnx" --force --json >"$out/channel.json"
fi
rounds=$(cat "$out/rounds")

{
  machine_line
  echo "\`whittle zoo cnn\`, \`whittle optimize cnn.onnx -o cnn-opt.onnx --verify\`; latency: median over"
  echo "$rounds rounds (both models in turn) of the median of $bench_runs runs after 5 warm-up runs,"
  echo "\`whittle bench --engine whittle|ort --batch 1,32 --threads 1\` (\`bench/cnn_optimize_prune.sh\`)."
  echo
  python3 - "$out" "$rounds" <<'PY'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
load = lambda n: json.load(open(os.path.join(out, n)))
o = load("optimize.json")
print("| model | nodes | params | bytes | whittle b1 ms | whittle b32 ms | ORT b1 ms | ORT b32 ms |")
print("|---|---|---|---|---|---|---|---|")
for m, label in (("cnn", "`zoo:cnn`"), ("cnn-opt", "optimized")):
    i = load(f"{m}.inspect.json")
    medians = [statistics.median(load(f"{m}.bench-{e}-{k}.json")["batches"][b]["median_ms"]
                                 for k in range(1, rounds + 1))
               for e in ("whittle", "ort") for b in (0, 1)]
    ms = [f"{v:.3f}" if v < 1 else f"{v:.2f}" for v in medians]
    print(f"| {label} | {i['nodes']} | {i['parameters']:,} | {i['size_bytes']:,} | {' | '.join(ms)} |")
changed = ", ".join(f"{p['name']} {p['changes']}" for p in o["passes"] if p["changes"])
print()
print(f"Passes that changed something: {changed}; largest relative output difference "
      f"{o['max_relative_diff']:.1e}.")
PY
} >"$out/optimize.md"

{
  machine_line
  echo "\`whittle prune cnn.onnx --method channel --sparsity 0.5 --latency-runs $prune_runs\` on the untrained"
  echo "\`zoo:cnn\`, other options at their defaults; latency batch 1, one thread, median of"
  echo "$prune_runs runs, before and after back to back (\`bench/cnn_optimize_prune.sh\`)."
  echo
  python3 - "$out" <<'PY'
import json, os, sys
j = json.load(open(os.path.join(sys.argv[1], "channel.json")))
c, l = j["channels"], j["latency"]
ratio = lambda a, b: f"{a:,} -> {b:,} ({b / a:.2f}x)"
print("| pruned groups | params | MACs per sample | whittle b1 ms | ORT b1 ms |")
print("|---|---|---|---|---|")
groups = "; ".join(f"{g['layers'][0]} {g['channels_before']} -> {g['channels_after']}" for g in c["groups"])
print(f"| {groups} | {ratio(c['params_before'], c['params_after'])} | "
      f"{ratio(c['macs_before'], c['macs_after'])} | {l['whittle_ms_before']:.3f} -> "
      f"{l['whittle_ms_after']:.3f} | {l['ort_ms_before']:.3f} -> {l['ort_ms_after']:.3f} |")
print()
print("Left unpruned: " + "; ".join(f"{', '.join(s['layers'])} ({s['reason']})" for s in c["skipped"]) + ".")
PY
} >"$out/channel.md"
publish cnn-optimize "$out/optimize.md"
publish cnn-channel-untrained "$out/channel.md"

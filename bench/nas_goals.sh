#!/usr/bin/env bash
# The goals of issue 20 (`whittle nas`), measured on Fashion-MNIST: for three latency
# budgets, `whittle nas --space cnn` (the default search: evolution warm-started by the
# parameter count ranking a 4x larger first generation, `warm`), plain evolution
# (`--warm-start none`, `evolution`) and the same search with random proposals
# (`--strategy random`, the same number of evaluations), each over SEEDS seeds; beside them
# the zoo's models (documented options) trained with the search's last rung (2 epochs on
# 80% of the training split). Every returned model and every zoo model is measured again
# here in Python ONNX Runtime (1 thread, 10 warm-up and 100 timed runs, median) and on the
# whole test split (scripts/ort_eval.py). The Markdown table goes to stdout and
# OUT_DIR/table.md (and into docs/BENCHMARKS.md's nas-goals section when WRITE names it).
#
#   bench/nas_goals.sh ASSETS_DIR OUT_DIR
#
# Environment: WHITTLE (default target/release/whittle); BUDGETS (ms, default
# "0.15 0.3 0.6"); SEEDS (default "0 1 2"); ITERATIONS (default 24, whittle nas's own);
# BUDGET (default 30m);
# STRATEGIES (default "evolution random warm"); TABLE_ONLY (set: no new search runs, the
# table of the finished ones).
# Rerunnable: the searches of one seed share a work folder (OUT_DIR/work-SEED), whose
# journals hold every candidate's measurements and trainings, so a rerun or another budget
# reuses them; a finished run's JSON in OUT_DIR is kept.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"
assets=${1:?usage: bench/nas_goals.sh ASSETS_DIR OUT_DIR}
out=${2:?usage: bench/nas_goals.sh ASSETS_DIR OUT_DIR}
whittle=${WHITTLE:-$here/../target/release/whittle}
budgets=${BUDGETS:-0.15 0.3 0.6}
seeds=${SEEDS:-0 1 2}
iterations=${ITERATIONS:-24}
data="fashion-mnist:$assets/fashion-mnist"
mkdir -p "$out/zoo"

# The zoo's models with documented options, trained like the search's last rung.
zoo=(
  "mlp" "lenet" "cnn" "cnn:channels=16-32-64" "cnn:channels=8-16-32" "resnet"
  "resnet:widths=8-16-32" "mobilenetv3-small:width=0.5" "vit-tiny:dim=64,depth=2,mlp=128"
)
for spec in "${zoo[@]}"; do
  name=${spec//[:=,]/_}
  [[ -f "$out/zoo/$name.onnx" ]] && continue
  RAYON_NUM_THREADS=1 "$whittle" train --model "zoo:$spec" --data "$data" --epochs 2 \
    --val-fraction 0.2 --seed 0 -o "$out/zoo/$name.onnx" >"$out/zoo/$name.log" 2>&1
done

for seed in $seeds; do
  for budget in $budgets; do
    for strategy in ${STRATEGIES:-evolution random warm}; do
      run="$out/$strategy-$budget-$seed"
      [[ -f "$run.json" || -n ${TABLE_ONLY:-} ]] && continue
      case $strategy in
        warm) flags=() ;;
        evolution) flags=(--warm-start none) ;;
        *) flags=(--strategy "$strategy") ;;
      esac
      /usr/bin/time -f "%e" -o "$run.time" "$whittle" nas --space cnn --data "$data" \
        --max-latency-ms "$budget" --iterations "$iterations" --budget "${BUDGET:-30m}" \
        --threads 1 --seed "$seed" "${flags[@]}" --work-dir "$out/work-$seed" \
        -o "$run.onnx" --force --json >"$run.json.tmp" 2>"$run.log"
      mv "$run.json.tmp" "$run.json"
    done
  done
done

python3 - "$out" "$assets/fashion-mnist" "$here/../scripts/ort_eval.py" "$budgets" "$seeds" \
  "$(machine_line)" >"$out/table.md" <<'PY'
import glob, json, os, statistics, subprocess, sys, time
import numpy as np
import onnxruntime as ort

out, test_dir, ort_eval, budgets, seeds, machine = sys.argv[1:]
budgets, seeds = budgets.split(), seeds.split()

def latency(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    feed = {s.get_inputs()[0].name: x}
    for _ in range(10):
        s.run(None, feed)
    times = []
    for _ in range(100):
        t = time.perf_counter(); s.run(None, feed); times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)

def accuracy(path):
    r = subprocess.run([sys.executable, ort_eval, path, test_dir], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["accuracy"]

zoo = {}
for path in sorted(glob.glob(f"{out}/zoo/*.onnx")):
    zoo[os.path.basename(path)[:-5]] = (latency(path), accuracy(path), os.path.getsize(path))

print(machine)
print()
print("| latency budget (ms) | best zoo model within it: top-1 (ms) | nas --warm-start none top-1 per seed | median | nas (default: --warm-start params) top-1 per seed | median | random search top-1 per seed | median | nas models within budget in ORT | nas wall (s) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for b in budgets:
    limit = float(b)
    fits = [(acc, name, lat) for name, (lat, acc, _) in zoo.items() if lat <= limit]
    best_zoo = max(fits) if fits else None
    cells = {}
    for strategy in ("evolution", "warm", "random"):
        accs, within, walls = [], 0, []
        for seed in seeds:
            run = f"{out}/{strategy}-{b}-{seed}"
            try:
                r = json.load(open(run + ".json"))
            except (OSError, ValueError):
                accs.append(None); continue
            if r["status"] != "ok":
                accs.append(None); continue
            lat = latency(r["output"])
            within += lat <= limit
            accs.append(accuracy(r["output"]))
            walls.append(float(open(run + ".time").read().split()[-1]))
        cells[strategy] = (accs, within, walls)
    fmt = lambda a: "-" if a is None else f"{100 * a:.2f}"
    med = lambda xs: fmt(statistics.median([x for x in xs if x is not None])) if any(x is not None for x in xs) else "-"
    ea, ew, ewall = cells["evolution"]
    wa, ww, _ = cells["warm"]
    ra, _, _ = cells["random"]
    zoo_cell = "none" if best_zoo is None else f"{fmt(best_zoo[0])} `{best_zoo[1]}` ({best_zoo[2]:.3f})"
    print(f"| {b} | {zoo_cell} | {' / '.join(map(fmt, ea))} | {med(ea)} | {' / '.join(map(fmt, wa))} | {med(wa)} | {' / '.join(map(fmt, ra))} | {med(ra)} | {ew + ww}/{len([a for a in ea + wa if a is not None])} | {' / '.join(f'{w:.0f}' for w in ewall) or '-'} |")
print()
print("Zoo models (trained 2 epochs on 80% of the training split; Python ORT, 1 thread):")
print()
print("| model | latency (ms) | top-1 (%) | size (bytes) |")
print("|---|---|---|---|")
for name, (lat, acc, size) in zoo.items():
    print(f"| `{name}` | {lat:.3f} | {100 * acc:.2f} | {size} |")
PY
publish nas-goals "$out/table.md"

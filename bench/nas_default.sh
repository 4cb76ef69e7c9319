#!/usr/bin/env bash
# Issue 20's last goal: "the default run finishes within 30 minutes; the same seed gives the
# same result". Runs `whittle nas` as a user would, with only the required flags
# (`--space cnn --data fashion-mnist:DIR -o best.onnx`, plus --json), under `nice -n 10`,
# RUNS times (default 2), each in a fresh folder OUT_DIR/run-N, one after the other; the
# load average is logged every minute beside each run. Then prints one Markdown row per run
# (wall, load, candidates and how many reached each rung, the budget's stops, the result)
# and whether every run returned the same model: id, test accuracy and the file's bytes.
#
#   bench/nas_default.sh ASSETS_DIR OUT_DIR
#
# Environment: WHITTLE (default target/release/whittle; copied into OUT_DIR first, so a
# rebuild during the runs does not change the binary); RUNS (default 2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"
assets=${1:?usage: bench/nas_default.sh ASSETS_DIR OUT_DIR}
out=${2:?usage: bench/nas_default.sh ASSETS_DIR OUT_DIR}
mkdir -p "$out"
cp "${WHITTLE:-$here/../target/release/whittle}" "$out/whittle"
for n in $(seq 1 "${RUNS:-2}"); do
  dir="$out/run-$n"
  [[ -f "$dir/result.json" ]] && continue
  rm -rf "$dir" && mkdir -p "$dir"
  (while true; do echo "$(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)"; sleep 60; done) \
    >"$dir/load.log" &
  monitor=$!
  (cd "$dir" && /usr/bin/time -f "%e" -o time.txt nice -n 10 "$out/whittle" nas --space cnn \
    --data "fashion-mnist:$assets/fashion-mnist" -o best.onnx --json >result.json.tmp 2>log.txt)
  kill "$monitor"
  mv "$dir/result.json.tmp" "$dir/result.json"
done

machine_line
echo
python3 - "$out" <<'PY'
import glob, hashlib, json, os, sys

out = sys.argv[1]
print("| run | wall (s) | load (min-max) | candidates / rung 0 / rung 1 / rung 2 | budget stops | result | test top-1 | model sha256 |")
print("|---|---|---|---|---|---|---|---|")
seen = set()
for dir in sorted(glob.glob(f"{out}/run-*")):
    r = json.load(open(f"{dir}/result.json"))
    wall = float(open(f"{dir}/time.txt").read().split()[-1])
    loads = [float(l.split()[1]) for l in open(f"{dir}/load.log") if l.strip()]
    rungs = [sum(len(t["rung_accuracy"]) > n for t in r["trials"]) for n in range(3)]
    digest = hashlib.sha256(open(f"{dir}/best.onnx", "rb").read()).hexdigest()[:16]
    seen.add((r["id"], r["accuracy"], digest))
    spec = r["spec"].split(",input=")[0]
    print(f"| {os.path.basename(dir)} | {wall:.0f} | {min(loads):.1f}-{max(loads):.1f} | "
          f"{r['candidates']} / {' / '.join(map(str, rungs))} | {len(r['budget_stops'])} | "
          f"`{spec}` | {100 * r['accuracy']:.2f}% | `{digest}` |")
print()
print("same model in every run (id, accuracy, bytes):", "yes" if len(seen) == 1 else "**no**")
PY

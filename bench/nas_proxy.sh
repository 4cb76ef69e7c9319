#!/usr/bin/env bash
# Does the zero-cost proxy of `whittle nas --warm-start` rank candidates the way training
# does? For every candidate that trained in the given work folders (bench/nas_goals.sh's
# OUT_DIR/work-SEED), the proxy (NASWOT, ln|det K|) is computed through the hidden
# `whittle nas --job FILE` entrypoint, and its Spearman rank correlation with each rung's
# validation accuracy is printed, beside that of the parameter count (the usual yardstick
# a proxy must beat) and the sample sizes.
#
#   bench/nas_proxy.sh ASSETS_DIR OUT_DIR WORK_DIR...
#
# Environment: WHITTLE (default target/release/whittle). The table goes to stdout and
# OUT_DIR/proxy.md (into docs/BENCHMARKS.md's nas-proxy section when WRITE names it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"
assets=${1:?usage: bench/nas_proxy.sh ASSETS_DIR OUT_DIR WORK_DIR...}
out=${2:?usage: bench/nas_proxy.sh ASSETS_DIR OUT_DIR WORK_DIR...}
shift 2
whittle=${WHITTLE:-$here/../target/release/whittle}
mkdir -p "$out/proxy/jobs"

python3 - "$whittle" "fashion-mnist:$assets/fashion-mnist" "$out/proxy" "$(machine_line)" \
  "$@" >"$out/proxy.md" <<'PY'
import json, os, subprocess, sys

whittle, data, scratch, machine, *works = sys.argv[1:]

def journal(path):
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []

def rank(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r

def spearman(xs, ys):
    rx, ry = rank(xs), rank(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var else float("nan")

candidates, accuracy = {}, {}
for work in works:
    for m in journal(f"{work}/nas-measured.jsonl"):
        candidates[m["key"]] = m
    for t in journal(f"{work}/nas-trained.jsonl"):
        accuracy.setdefault(t["rung"]["index"], {})[t["id"]] = t["accuracy"]

proxy = {}
for id in sorted(set().union(*[a.keys() for a in accuracy.values()])):
    job = {"settings": {"data": data, "threads": 1, "seed": 0},
           "job": {"candidate": candidates[id]["candidate"], "task": {"kind": "proxy"},
                   "last_rung": False},
           "work_dir": scratch}
    path = f"{scratch}/jobs/{id}-naswot.json"
    json.dump(job, open(path, "w"))
    subprocess.run([whittle, "nas", "--job", path], check=True, capture_output=True)
    score = json.load(open(f"{scratch}/jobs/{id}-naswot.out.json"))["score"]
    proxy[id] = float("-inf") if score is None else score

print(machine)
print()
print("| rung | candidates | Spearman: proxy vs accuracy | Spearman: parameters vs accuracy |")
print("|---|---|---|---|")
for rung in sorted(accuracy):
    ids = sorted(accuracy[rung])
    acc = [accuracy[rung][i] for i in ids]
    p = [proxy[i] for i in ids]
    params = [candidates[i]["measurement"]["parameters"] for i in ids]
    print(f"| {rung} | {len(ids)} | {spearman(p, acc):.3f} | {spearman(params, acc):.3f} |")
PY
publish nas-proxy "$out/proxy.md"

#!/usr/bin/env bash
# Re-times models returned by `whittle nas` in Python ONNX Runtime, the check of issue 20's
# first goal ("every returned model meets the latency limit when measured again in ONNX
# Runtime"): batch 1, one intra-op thread, a random sample, 10 warm-up and RUNS timed runs
# (default 200), median and 90th percentile, against the limit given after the path.
#
#   bench/nas_retime.sh MODEL.onnx[@LIMIT_MS]...
#
# Prints one Markdown row per model, then how many medians and p90s are within their limits,
# and the machine and load average.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"
(($# > 0)) || { echo "usage: bench/nas_retime.sh MODEL.onnx[@LIMIT_MS]..." >&2; exit 2; }
machine_line
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
RUNS=${RUNS:-200} python3 - "$@" <<'PY'
import os, statistics, sys, time
import numpy as np
import onnxruntime as ort

runs = int(os.environ["RUNS"])
print(f"| model | limit (ms) | median (ms) | p90 (ms) | median within | p90 within |")
print("|---|---|---|---|---|---|")
medians = p90s = limited = 0
for arg in sys.argv[1:]:
    path, _, limit = arg.partition("@")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in i.shape]
    feed = {i.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    for _ in range(10):
        s.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter(); s.run(None, feed); times.append((time.perf_counter() - t) * 1e3)
    median, p90 = statistics.median(times), float(np.percentile(times, 90))
    cells = ["-", "-"]
    if limit:
        limited += 1
        medians += median <= float(limit)
        p90s += p90 <= float(limit)
        cells = ["yes" if median <= float(limit) else "**no**", "yes" if p90 <= float(limit) else "**no**"]
    name = os.path.join(os.path.basename(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
    print(f"| `{name}` | {limit or '-'} | {median:.3f} | {p90:.3f} | {cells[0]} | {cells[1]} |")
print()
print(f"{limited} models with a limit: {medians} medians and {p90s} p90s within it ({runs} runs each).")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

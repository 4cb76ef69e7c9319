"""Latency of whittle's executor against ONNX Runtime on the same models, inputs and threads.

usage: python3 bench/executor_vs_ort.py [--threads 1 2] [--runs N] [--write docs/BENCHMARKS.md]

Builds the `latency` example and the CLI in release mode, writes the zoo models it needs
(`whittle zoo`), times whittle (the planned executor: median of N runs after warm-up, kernels
in a rayon pool of T threads) and ONNX Runtime (same inputs, intra-op threads = T, inter-op 1,
full graph optimisation, median of N runs after the same warm-up) for each thread count, and
prints a Markdown table of ratios. With --write, the table replaces the section between the
markers in the given file. Run it under `nice` on a shared machine.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.environ.get("WHITTLE_ASSETS", os.path.expanduser("~/.cache/whittle-assets"))
# (label, model: an asset file or zoo:NAME, batch, size of the other symbolic dimensions,
# how the input is described in the table)
CASES = [
    ("LeNet5", "mnist_lenet5.onnx", 1, 0, "batch 1"),
    ("LeNet5", "mnist_lenet5.onnx", 32, 0, "batch 32"),
    ("MiniLM-L3", "paraphrase-MiniLM-L3-v2.onnx", 1, 128, "batch 1, seq 128"),
    ("MiniLM-L3", "paraphrase-MiniLM-L3-v2.onnx", 8, 128, "batch 8, seq 128"),
    ("YOLOv8n", "yolov8n-320.onnx", 1, 320, "batch 1, 320x320"),
    ("zoo:cnn", "zoo:cnn", 32, 0, "batch 32, 1x28x28"),
    ("zoo:mobilenetv3-small", "zoo:mobilenetv3-small", 1, 0, "batch 1, 1x28x28"),
]
BEGIN, END = "<!-- executor-vs-ort:begin -->", "<!-- executor-vs-ort:end -->"


def inputs_for(session, batch, seq):
    """The same synthetic inputs as crates/exec/examples/latency.rs."""
    feeds = {}
    for inp in session.get_inputs():
        dims = [d if isinstance(d, int) else (batch if i == 0 else seq) for i, d in enumerate(inp.shape)]
        n = int(np.prod(dims))
        idx = np.arange(n, dtype=np.int64)
        if inp.type == "tensor(int64)":
            values = np.ones(n, np.int64) if "mask" in inp.name else 1000 + (idx * 7919) % 1000
        else:
            values = ((idx * 2654435761) % 1000).astype(np.float32) / 1000.0
        feeds[inp.name] = values.reshape(dims)
    return feeds


def time_ort(path, batch, seq, threads, warmup, runs):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feeds = inputs_for(session, batch, seq)
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_whittle(path, batch, seq, threads, warmup, runs):
    binary = os.path.join(ROOT, "target/release/examples/latency")
    out = subprocess.run(
        [binary, path, str(batch), str(seq), str(warmup), str(runs), str(threads)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)["median_ms"]


def model_path(model, scratch):
    """An asset model's path, or a zoo model written into `scratch` by the CLI."""
    if not model.startswith("zoo:"):
        return os.path.join(ASSETS, "models", model)
    path = os.path.join(scratch, model[4:] + ".onnx")
    if not os.path.exists(path):
        subprocess.run([os.path.join(ROOT, "target/release/whittle"), "zoo", model, "-o", path],
                       check=True, capture_output=True)
    return path


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, ONNX Runtime {ort.__version__}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=1,
                    help="time every row this many times, all rows once per round and the engines taking turns, "
                         "and keep each engine's lowest median (a shared machine's bursts of load then spare "
                         "one round of a row at least)")
    ap.add_argument("--write")
    args = ap.parse_args()
    for target in (["--example", "latency", "-p", "whittle-exec"], ["-p", "whittle-cli"]):
        subprocess.run(["cargo", "build", "--release", "-q", *target], check=True, cwd=ROOT)
    best = {}  # (threads, case) -> [ORT ms, whittle ms], or the row of a failing model
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as scratch:
        # Rounds outermost: a row's rounds lie a whole round (tens of seconds) apart, so one burst of load on a
        # shared machine spoils one round of a row, not all of them.
        for _ in range(args.rounds):
            for threads in args.threads:
                for case, (name, model, batch, seq, shape) in enumerate(CASES):
                    key = (threads, case)
                    if isinstance(best.get(key), str):
                        continue
                    path = model_path(model, scratch)
                    try:
                        o = time_ort(path, batch, seq, threads, args.warmup, args.runs)
                        w = time_whittle(path, batch, seq, threads, args.warmup, args.runs)
                    except subprocess.CalledProcessError as e:
                        # A failing model is a row of the table, not the end of the run.
                        why = next((l for l in e.stderr.splitlines() if "panicked" in l or "Error" in l), "failed")
                        best[key] = f"| {name} | {shape} | {threads} | fails: {why.strip()} | - | - |"
                        continue
                    prev = best.get(key, [float("inf"), float("inf")])
                    best[key] = [min(prev[0], o), min(prev[1], w)]
                    print(f"| {name} | {shape} | {threads} | {w:.3f} | {o:.3f} | {w / o:.2f}x |", file=sys.stderr)
    rows = []
    for (threads, case), v in sorted(best.items()):
        name, _, _, _, shape = CASES[case]
        rows.append(v if isinstance(v, str)
                    else f"| {name} | {shape} | {threads} | {v[1]:.3f} | {v[0]:.3f} | {v[1] / v[0]:.2f}x |")
    loads.append(os.getloadavg()[0])
    table = "\n".join([
        f"Machine: {machine()}. Median of {args.runs} runs after {args.warmup} warm-up runs"
        + (f", the lowest of {args.rounds} rounds (every row once a round) with the engines taking turns"
           if args.rounds > 1 else "")
        + "; "
        f"load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end.",
        "",
        "| model | input | threads | whittle ms | ORT ms | whittle / ORT |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    print(table)
    if args.write:
        with open(args.write) as f:
            text = f.read()
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        with open(args.write, "w") as f:
            f.write(f"{head}{BEGIN}\n{table}\n{END}{tail}")


if __name__ == "__main__":
    main()

"""How much of a run is serial: Amdahl's bound on the 2-thread speed-up, measured from CPU
time (which a loaded machine does not inflate the way it inflates wall time), beside the
measured 2-thread / 1-thread throughput and the load average.

usage: python3 bench/amdahl.py train [--model zoo:cnn] [--steps N] [--batch 64] [--repeats R]
       python3 bench/amdahl.py infer [--model PATH|zoo:NAME] [--batch 32] [--runs N]

Each configuration runs under `perf record -e cpu-clock --call-graph dwarf` at 1 and 2
threads (RAYON_NUM_THREADS for `whittle train`, the `latency` example's pool for inference).
Samples of start-up (loading, preflight, the memory estimate, Executor::new) are left out,
and so are rayon workers' idle spinning (a worker sample outside any job).
  T1 = busy samples at 1 thread (all threads);
  S2 = serial busy samples at 2 threads. Training: all busy samples minus twice those of
       the least busy pool worker (the training thread's own work, which runs while the
       workers wait, plus any imbalance between the workers). Inference (the latency
       example runs inside its pool, so one worker does both): the busy samples outside a
       parallel iterator (no rayon bridge/join frame); faer's GEMM micro-kernels carry no
       unwind tables, so their samples count as parallel (at batch 32 the convolutions'
       GEMMs run inside per-image tasks), which makes this bound an optimistic one;
  p  = 1 - S2 / T1, and Amdahl's bound 1 / ((1 - p) + p / 2).
Then the same command runs R times at each thread count without perf (alternating) and the
best 2t/1t throughput ratio is printed beside the load average. Needs `perf` and a release
build (target/release/whittle, target/release/examples/latency).
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.environ.get("WHITTLE_ASSETS", os.path.expanduser("~/.cache/whittle-assets"))
SETUP = re.compile(r"preflight|memory::estimate|whittle_data::|zoo::|Executor::new|Model::load"
                   r"|Model::save|Trainer::new|Trainer::evaluate|inflate")
PARALLEL = re.compile(r"bridge_producer_consumer|join_context|gemm_v0")


def command(args, tmp):
    """The command of one configuration, and how to read its throughput from stdout."""
    if args.mode == "train":
        data = os.path.join(ASSETS, "fashion-mnist")
        cmd = [os.path.join(ROOT, "target/release/whittle"), "train", "--model", args.model,
               "--data", f"fashion-mnist:{data}", "--limit", str(args.batch * args.steps),
               "--epochs", "2", "--batch-size", str(args.batch), "--optimizer", "adamw",
               "--lr", "0.003", "--lr-schedule", "constant", "--seed", "0", "--json",
               "--force", "-o", os.path.join(tmp, "trained.onnx")]
        return cmd, lambda out: json.loads(out)["epochs"][-1]["images_per_sec"]
    model = args.model
    if model.startswith("zoo:"):
        path = os.path.join(tmp, model[4:] + ".onnx")
        subprocess.run([os.path.join(ROOT, "target/release/whittle"), "zoo", model[4:], "-o",
                        path], check=True, capture_output=True)
        model = path
    cmd = [os.path.join(ROOT, "target/release/examples/latency"), model, str(args.batch),
           "0", "5", str(args.runs), "THREADS"]
    return cmd, lambda out: args.batch * 1e3 / json.loads(out)["median_ms"]


def with_threads(cmd, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    return [str(threads) if c == "THREADS" else c for c in cmd], env


def stacks(path):
    """(tid, frames) of each sample of a `perf script` dump."""
    out = subprocess.run(["perf", "script", "-i", path, "-F", "tid,ip,sym"], check=True,
                         capture_output=True, text=True).stdout
    for block in out.split("\n\n"):
        lines = [l for l in block.splitlines() if l.strip()]
        if lines:
            yield lines[0].split()[0], [l.strip() for l in lines[1:]]


def busy(path):
    """Busy samples by thread (setup and idle spinning left out), and the pool workers."""
    per, workers = collections.Counter(), set()
    for tid, frames in stacks(path):
        s = " ".join(frames)
        if "ThreadBuilder::run" in s:
            workers.add(tid)
            if "Job>::execute" not in s and "gemm_v0" not in s:
                continue
        if SETUP.search(s):
            continue
        per[tid] += 1
        if not PARALLEL.search(s):
            per["outside parallel iterators"] += 1
    return per, workers


def profile(cmd, env, tmp, threads):
    data = os.path.join(tmp, f"perf{threads}.data")
    subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "499", "--call-graph",
                    "dwarf,16384", "-o", data, *cmd], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return busy(data)


def load():
    return open("/proc/loadavg").read().split()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["train", "infer"])
    ap.add_argument("--model", default="zoo:cnn")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    args.batch = args.batch or (64 if args.mode == "train" else 32)
    with tempfile.TemporaryDirectory() as tmp:
        base, rate = command(args, tmp)
        loads = [load()]
        (t1, _), (t2, workers) = (profile(*with_threads(base, t), tmp, t) for t in (1, 2))
        outside = "outside parallel iterators"
        T1 = sum(t1.values()) - t1[outside]
        if args.mode == "train":
            least = min((t2[w] for w in workers), default=0)
            S2 = sum(t2.values()) - t2[outside] - 2 * least
        else:
            S2 = t2[outside]
        p = 1 - S2 / T1
        bound = 1 / ((1 - p) + p / 2)
        speed = {1: [], 2: []}
        for _ in range(args.repeats):
            for t in (1, 2):
                cmd, env = with_threads(base, t)
                out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
                speed[t].append(rate(out.stdout))
        loads.append(load())
    ratio = max(speed[2]) / max(speed[1])
    print(json.dumps({
        "mode": args.mode, "model": args.model, "batch": args.batch,
        "busy_samples_1t": T1, "busy_samples_2t": dict(t2), "serial_samples_2t": S2,
        "p": round(p, 3), "amdahl_bound": round(bound, 2),
        "items_per_s_1t": [round(v) for v in speed[1]],
        "items_per_s_2t": [round(v) for v in speed[2]],
        "measured_2t_over_1t": round(ratio, 2), "load_before_after": loads,
    }))


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput and peak memory: whittle train against the same models in PyTorch.

usage: python3 bench/train_vs_torch.py [--whittle BIN] [--torch-python PY] [--steps N]
           [--warmup W] [--models cnn,resnet,...] [--rounds R] [--write docs/BENCHMARKS.md]

Models: zoo:cnn, zoo:resnet, zoo:mobilenetv3-small, zoo:vit-tiny, and their PyTorch twins in
bench/train_vs_torch_models.py. Fashion-MNIST (the first images of the training split),
batch 64, AdamW (lr 0.003, no weight decay), cross-entropy, 1 and 2 threads.

Each configuration runs in a fresh process, whittle and PyTorch taking turns:
  * whittle: `BIN train --model zoo:M --epochs 2 --limit 64*N` with RAYON_NUM_THREADS=t;
    the first epoch is the warm-up, images/s is the second epoch's (its JSON report), so
    the steady state is N steps either side.
  * PyTorch (torch.set_num_threads(t)): W untimed warm-up steps, then N timed steps.
With --rounds R every model's configurations (both thread counts, both engines) run R times
in turn and each keeps its highest images/s (and its highest peak RSS): on a host whose load
comes in bursts, one burst then spoils one run, not a row or a 2/1-threads ratio. Below the
table, each model's whittle 2/1-threads ratio per round (its two runs minutes apart at most,
where the best-of-rounds column pairs runs from different rounds).
Peak RSS is the child's ru_maxrss (os.wait4), so it covers the whole process: data,
model, warm-up and timed steps. Never part of CI: PyTorch comes from a bench-only virtual
environment (default /tmp/torchvenv/bin/python). Run it on a quiet machine; the table says
the load average seen during the run.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
ASSETS = os.environ.get("WHITTLE_ASSETS", os.path.expanduser("~/.cache/whittle-assets"))
DATA = os.path.join(ASSETS, "fashion-mnist")
MODELS = ["cnn", "resnet", "mobilenetv3-small", "vit-tiny"]
BATCH = 64
BEGIN, END = "<!-- train-vs-torch:begin -->", "<!-- train-vs-torch:end -->"


def run(cmd, env):
    """Runs `cmd`; returns (stdout, its peak RSS in MiB). Fails with the command's stderr."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.read()[-2000:]}")
        return out.read(), usage.ru_maxrss / 1024


def whittle(args, model, threads, tmp):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = [args.whittle, "train", "--model", f"zoo:{model}", "--data", f"fashion-mnist:{DATA}",
           "--limit", str(BATCH * args.steps), "--epochs", "2", "--batch-size", str(BATCH),
           "--optimizer", "adamw", "--lr", "0.003", "--lr-schedule", "constant", "--seed", "0",
           "--json", "--force", "-o", os.path.join(tmp, f"{model}.onnx")]
    out, rss = run(cmd, env)
    report = json.loads(out)
    return report["epochs"][-1]["images_per_sec"], rss


def torch(args, model, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [args.torch_python, os.path.join(ROOT, "bench", "train_vs_torch_models.py"),
           "--model", model, "--threads", str(threads), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(BATCH), "--data", DATA]
    out, rss = run(cmd, env)
    return json.loads(out.strip().splitlines()[-1])["images_per_s"], rss


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--whittle", default=os.path.join(ROOT, "target/release/whittle"))
    p.add_argument("--torch-python", default="/tmp/torchvenv/bin/python")
    p.add_argument("--steps", type=int, default=40, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=10, help="PyTorch's untimed steps")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=1,
                   help="runs of each configuration, taking turns; the fastest is kept")
    p.add_argument("--write", help="markdown file whose marked section receives the table")
    args = p.parse_args()
    rows = []
    loads = []
    per_round = {}
    thread_counts = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            best = {}
            for _ in range(args.rounds):
                for threads in thread_counts:
                    runs = [whittle(args, model, threads, tmp)]
                    loads.append(os.getloadavg()[0])
                    runs.append(torch(args, model, threads))
                    loads.append(os.getloadavg()[0])
                    per_round.setdefault(model, {}).setdefault(threads, []).append(runs[0][0])
                    seen = best.setdefault(threads, runs)
                    best[threads] = [(max(a[0], b[0]), max(a[1], b[1])) for a, b in zip(seen, runs)]
                    (w_ips, w_rss), (t_ips, t_rss) = runs
                    print(f"{model:18} {threads} thr  whittle {w_ips:8.1f} img/s {w_rss:7.0f} MiB"
                          f"  torch {t_ips:8.1f} img/s {t_rss:7.0f} MiB  ratio {w_ips / t_ips:.2f}",
                          flush=True)
            for threads in thread_counts:
                (w_ips, w_rss), (t_ips, t_rss) = best[threads]
                rows.append((model, threads, w_ips, t_ips, w_rss, t_rss))
    by = {(m, t): w for m, t, w, *_ in rows}
    cpu = platform.machine()
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    lines = [
        f"Machine: {cpu}, {os.cpu_count()} cores, "
        f"{datetime.date.today()}; load average during the run {min(loads):.1f}-{max(loads):.1f}.",
        f"Fashion-MNIST, batch {BATCH}, AdamW lr 0.003, {args.steps} timed steps after warm-up, "
        "fresh process per configuration"
        + (f", the highest of {args.rounds} rounds with the engines and thread counts taking turns"
           if args.rounds > 1 else "")
        + " (`bench/train_vs_torch.py`).",
        "",
        "| model | threads | whittle images/s | PyTorch images/s | ratio | whittle 2/1 threads "
        "| whittle peak RSS MiB | PyTorch peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, t, w, tt, wr, tr in rows:
        scale = f"{w / by[(m, 1)]:.2f}x" if t != 1 and (m, 1) in by else "-"
        lines.append(f"| `zoo:{m}` | {t} | {w:.0f} | {tt:.0f} | {w / tt:.2f} | {scale} "
                     f"| {wr:.0f} | {tr:.0f} |")
    if args.rounds > 1 and len(thread_counts) > 1:
        lo, hi = thread_counts[0], thread_counts[-1]
        ratios = []
        for m, by_threads in per_round.items():
            pairs = zip(by_threads[hi], by_threads[lo])
            ratios.append(f"{m} " + " / ".join(f"{a / b:.2f}x" for a, b in pairs))
        lines += ["", f"whittle {hi}/{lo} threads per round (both runs of the same round): "
                  + "; ".join(ratios) + "."]
    text = "\n".join(lines)
    print(text)
    if args.write:
        from quantize_vs_ort import write_section
        write_section(args.write, text, BEGIN, END, "Training against PyTorch",
                      "python3 bench/train_vs_torch.py --write docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Issue 18's MiniLM-L3 goal, measured: `whittle auto` on paraphrase-MiniLM-L3-v2 with
label-less feeds (64 tokenized sentences, bench/quantize_vs_ort.py's tokenizer and
sentences) and a cosine budget, then the baseline and the output measured again here in
ONNX Runtime in the same run: size on disk, batch-1 one-thread latency (`whittle bench
--engine ort` at the feeds' width, median of ROUNDS rounds) and the smallest cosine of an
output to the baseline's, in runs of 32 samples (what `whittle auto` measures). Prints a
Markdown table (also OUT_DIR/table.md).

    bench/auto_goals_minilm.py OUT_DIR [--target balanced] [--min-cosine 0.99] [--budget 10m]

Environment: WHITTLE (default target/release/whittle), THREADS (RAYON_NUM_THREADS of the
search, default 2), RUNS (default 100) and ROUNDS (default 3) of the latency.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quantize_vs_ort import MINILM, VOCAB, WordPiece, minilm_batch, sentences  # noqa: E402

WHITTLE = os.environ.get("WHITTLE", "target/release/whittle")


# Samples per run, as `whittle auto` runs a `feeds:` archive (dynamic INT8 quantizes each
# run's activations with one scale, so the cosine depends on the run's size).
RUN = 32


def outputs(path, feeds):
    """Every output of `path` on `feeds`, in runs of RUN samples, each flattened as float64."""
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    n = len(next(iter(feeds.values())))
    runs = [s.run(None, {k: v[i:i + RUN] for k, v in feeds.items()}) for i in range(0, n, RUN)]
    return [np.concatenate([r[o].ravel() for r in runs]).astype(np.float64) for o in range(len(runs[0]))]


def cosine(want, got):
    """The smallest cosine of an output to the reference's (what `whittle auto` measures)."""
    return min(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(want, got))


def latency(path, runs, rounds, width):
    medians = []
    for _ in range(rounds):
        out = subprocess.run([WHITTLE, "bench", path, "--engine", "ort", "--batch", "1", "--threads", "1",
                              "--shape", f"input_ids=1x{width}", "--runs", str(runs), "--warmup", "10", "--json"],
                             check=True, capture_output=True, text=True).stdout
        medians.append(json.loads(out)["batches"][0]["median_ms"])
    return statistics.median(medians)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--target", default="balanced")
    p.add_argument("--min-cosine", default="0.99")
    p.add_argument("--budget", default="10m")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    feeds = minilm_batch(sentences(64), WordPiece(VOCAB))
    npz = os.path.join(a.out, "minilm_feeds.npz")
    np.savez(npz, **feeds)
    best = os.path.join(a.out, f"minilm-{a.target}.onnx")
    env = dict(os.environ, RAYON_NUM_THREADS=os.environ.get("THREADS", "2"))
    start = time.time()
    run = subprocess.run(["nice", "-n", "10", WHITTLE, "auto", MINILM, "--data", f"feeds:{npz}",
                          "--target", a.target, "--min-cosine", a.min_cosine, "--budget", a.budget,
                          "--threads", "1", "--seed", "0", "--work-dir", best + ".work", "-o", best,
                          "--force", "--json"], env=env, capture_output=True, text=True)
    wall = time.time() - start
    with open(best + ".log", "w") as f:
        f.write(run.stderr)
    if run.returncode != 0:
        sys.exit(f"whittle auto failed ({run.returncode}), see {best}.log")
    j = json.loads(run.stdout)
    with open(best + ".json", "w") as f:
        json.dump(j, f, indent=1)
    runs, rounds = int(os.environ.get("RUNS", "100")), int(os.environ.get("ROUNDS", "3"))
    width = feeds["input_ids"].shape[1]
    base_ms, best_ms = latency(MINILM, runs, rounds, width), latency(best, runs, rounds, width)
    base_mb, best_mb = os.path.getsize(MINILM) / 1e6, os.path.getsize(best) / 1e6
    cos = cosine(outputs(MINILM, feeds), outputs(best, feeds))
    load = os.getloadavg()
    rows = [
        f"Machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} after the latency rounds.",
        f"`whittle auto paraphrase-MiniLM-L3-v2.onnx --data feeds:minilm_feeds.npz --target {a.target} "
        f"--min-cosine {a.min_cosine} --budget {a.budget} --threads 1 --seed 0` (64 sentences, padded to "
        f"{feeds['input_ids'].shape[1]} tokens); size, ORT batch-1 one-thread latency (median of {rounds} "
        f"rounds of {runs} runs, batch 1 at that width) and the smallest cosine of an output to the "
        f"baseline's in ONNX Runtime, "
        f"measured again by `bench/auto_goals_minilm.py` in the same run.",
        "",
        "| run | status | trials | wall | chosen steps | size MB (x smaller) | ORT b1 ms (x faster) | cosine (auto / ORT) |",
        "|---|---|---|---|---|---|---|---|",
        f"| minilm-{a.target}, cosine >= {a.min_cosine} | {j['status']} | {j['trials']} | {wall / 60:.1f} min | "
        f"{j['best']['name'] if j.get('best') else '-'} | {base_mb:.1f} -> {best_mb:.1f} ({base_mb / best_mb:.2f}x) | "
        f"{base_ms:.3f} -> {best_ms:.3f} ({base_ms / best_ms:.2f}x) | "
        f"{j['best']['accuracy'] if j.get('best') else float('nan'):.5f} / {cos:.5f} |",
    ]
    table = "\n".join(rows) + "\n"
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(table)
    print(table, end="")


if __name__ == "__main__":
    main()

"""The seed's headline table (issue 18 item 8) from the files bench/seed_table.sh leaves.

usage: seed_table.py OUT_DIR ROUNDS

Reads, for every row whose model OUT_DIR/NAME.onnx exists, NAME.inspect.json (`whittle
inspect --json`), NAME.ort.json (scripts/ort_eval.py) and NAME.bench-K.json for K in
1..ROUNDS (`whittle bench --engine ort --batch 1 --threads 1 --json`); FPS is 1000 over the
median of the rounds' median latencies. Prints the Markdown table, measured figures beside
the issue's claims, both as ratios to their own baseline: a row meets its claim when it is
at least as many times smaller and faster than our baseline as the claim is than its own
(for the size: than the smallest ratio the claims' MB, rounded to 0.1, allow), and loses
fewer accuracy points.
"""
import json
import os
import statistics
import sys

MIB = 1 << 20

# (file stem, row label, claim: size MB, FPS, parameters, accuracy %); None = no claim.
ROWS = [
    ("baseline", "Baseline (FP32)", (2.8, 120, 730_000, 94.5)),
    ("fp16", "FP16", (1.4, 240, 730_000, 94.2)),
    ("int8", "INT8 (static, per-channel)", (0.7, 360, 730_000, 92.8)),
    ("pruned", "50% pruned (channels) + fine-tune", (1.4, 200, 365_000, 91.5)),
    ("pruned-int8", "INT8 + 50% pruned", (0.4, 420, 365_000, 90.1)),
    ("auto", "auto balanced", None),
]


def load(out, name):
    with open(os.path.join(out, name), encoding="utf-8") as f:
        return json.load(f)


def size_floor(claim_mb):
    """The smallest size ratio consistent with the claims' sizes rounded to 0.1 MB."""
    return (ROWS[0][2][0] - 0.05) / (claim_mb + 0.05)


def measure(out, stem, rounds):
    """Size in bytes, FPS, parameters and ORT accuracy (fraction) of OUT/STEM.onnx."""
    inspect = load(out, f"{stem}.inspect.json")
    median_ms = statistics.median(
        load(out, f"{stem}.bench-{k}.json")["batches"][0]["median_ms"] for k in range(1, rounds + 1)
    )
    accuracy = load(out, f"{stem}.ort.json")["accuracy"]
    return inspect["size_bytes"], 1000.0 / median_ms, inspect["parameters"], accuracy


def verdict(ours, claim, size_floor):
    """Whether our (smaller x, faster x, points lost) is at least the claim's, with the misses;
    the size passes from SIZE_FLOOR, the smallest ratio the claim's rounded MB allow."""
    misses = []
    if ours[0] < size_floor:
        misses.append(f"size {ours[0]:.2f}x < {size_floor:.2f}x")
    if ours[1] < claim[1]:
        misses.append(f"speed {ours[1]:.2f}x < {claim[1]:.2f}x")
    if ours[2] >= claim[2]:
        misses.append(f"loss {ours[2]:.2f} >= {claim[2]:.1f} pt")
    return "yes" if not misses else "no: " + ", ".join(misses)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    out, rounds = sys.argv[1], int(sys.argv[2])
    if not os.path.exists(os.path.join(out, "baseline.onnx")):
        sys.exit(f"error: {out} has no baseline.onnx; run bench/seed_table.sh first")
    base = measure(out, "baseline", rounds)
    claim_base = ROWS[0][2]
    print("| row | size MB | FPS | parameters | accuracy | smaller | faster | points lost "
          "| claim: MB, FPS, params, accuracy | claim: smaller, faster, points lost "
          "| meets the claim's ratios |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for stem, label, claim in ROWS:
        if not os.path.exists(os.path.join(out, f"{stem}.onnx")):
            print(f"| {label} | not run | | | | | | | | | |")
            continue
        size, fps, params, acc = measure(out, stem, rounds)
        ours = (base[0] / size, fps / base[1], 100 * (base[3] - acc))
        cells = [label, f"{size / MIB:.2f}", f"{fps:.0f}", f"{params / 1000:.0f}K",
                 f"{100 * acc:.2f}%", f"{ours[0]:.2f}x", f"{ours[1]:.2f}x", f"{ours[2]:.2f}"]
        if claim is None:
            cells += ["-", "-", "-"]
        else:
            theirs = (claim_base[0] / claim[0], claim[1] / claim_base[1], claim_base[3] - claim[3])
            cells += [f"{claim[0]} MB, {claim[1]}, {claim[2] / 1000:.0f}K, {claim[3]}%",
                      f"{theirs[0]:.2f}x, {theirs[1]:.2f}x, {theirs[2]:.1f}",
                      "-" if stem == "baseline" else verdict(ours, theirs, size_floor(claim[0]))]
        print("| " + " | ".join(cells) + " |")
    if os.path.exists(os.path.join(out, "auto.json")):
        auto = load(out, "auto.json")
        best = auto.get("best") or {}
        print()
        print(f"`whittle auto` chose {best.get('name', '(nothing)')} ({auto.get('status')}, "
              f"{auto.get('trials')} trials of a {auto.get('search_space')}-candidate space, "
              f"{auto.get('elapsed_s', 0) / 60:.1f} min).")


if __name__ == "__main__":
    main()

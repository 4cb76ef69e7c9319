"""The Markdown tables of bench/continual_goals.sh from the JSON of its runs in OUT_DIR."""
import json
import os
import sys

out = sys.argv[1]

# PyTorch 2.15 on this machine (issue 19), reference protocol, 3 seeds; for joint training
# also PyTorch's mean over the seeds of bench/continual_vs_torch.py (the same 1-epoch step,
# its own initialisation), whose spread the single figure does not show.
REFERENCE = {
    ("fmnist", "er"): "79.0 ± 0.6, forgetting 17.6",
    ("fmnist", "finetune"): "19.9",
    ("fmnist", "joint"): "84.5 (continual_vs_torch.py, 10 seeds: 82.76 ± 1.66)",
    ("mnist", "er"): "87.7 ± 0.5, forgetting 11.6",
    ("mnist", "finetune"): "19.7",
    ("mnist", "joint"): "97.3 (continual_vs_torch.py, 10 seeds: 95.99 ± 0.54)",
}
GOALS = {
    ("fmnist", "er"): ">= 80, forgetting <= 15",
    ("fmnist", "derpp"): ">= 82",
    ("fmnist", "finetune"): "<= 22",
    ("mnist", "er"): ">= 89",
    ("mnist", "derpp"): ">= 90",
}
RUNS = [
    ("fmnist-er", "reference protocol"),
    ("fmnist-derpp", "reference protocol (alpha 0.3, beta 0.5)"),
    ("fmnist-er-ace-e2", "best: ER-ACE, 2 epochs per task"),
    ("fmnist-derpp-ace", "best: DER++ with ACE, alpha 0.1, beta 1.0"),
    ("fmnist-derpp512-ace", "best: DER++ with ACE, alpha 0.1, beta 1.0, MLP 784-512-512-10"),
    ("fmnist-er-ncm", "reference protocol, nearest-class-mean head (--ncm)"),
    ("fmnist-derpp-ace-ncm", "best: DER++ with ACE, alpha 0.1, beta 1.0, --ncm"),
    ("fmnist-lenetw-er", "reference protocol on lenet:channels=8-16,kernel=3,hidden=256"),
    ("fmnist-lenetw-er-ncm", "the same with --ncm"),
    ("fmnist-lenetw-derpp-ace", "DER++ with ACE, alpha 0.1, beta 1.0, on the same LeNet"),
    ("fmnist-lenetw-er-cos", "reference protocol on the same LeNet, cosine class means (--ncm cosine)"),
    ("fmnist-lenetw-derpp-ace-e2", "DER++ with ACE, alpha 0.1, beta 1.0, on the same LeNet, 2 epochs per task"),
    ("fmnist-lenetw-er-ace-aug", "ER-ACE on the same LeNet, --replay-augment"),
    ("fmnist-lenetw-derpp-ace-e2-aug", "DER++ with ACE, alpha 0.1, beta 1.0, on the same LeNet, 2 epochs per task, --replay-augment"),
    ("fmnist-lenetw-er-hyb", "reference protocol on the same LeNet, the trained head plus 32 x cosine to the class means (--ncm hybrid)"),
    ("fmnist-lenetw-er-aug-hyb", "the same with --replay-augment"),
    ("mnist-er", "reference protocol"),
    ("mnist-derpp", "reference protocol (alpha 0.3, beta 0.5)"),
    ("mnist-er-ace-e2", "best: ER-ACE, 2 epochs per task"),
    ("mnist-derpp-ace", "best: DER++ with ACE, alpha 0.1, beta 1.0"),
]
DATA = {"fmnist": "Split Fashion-MNIST", "mnist": "Split MNIST"}


def load(name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def pm(d, key, scale=100.0):
    if d.get(key) is None:
        return "-"
    std = d.get(key + "_std")
    text = f"{scale * d[key]:.2f}"
    return text + (f" ± {scale * std:.2f}" if std is not None else "")


print("PyTorch reference: the issue's figures on the reference protocol (beside every row "
      "of the same strategy, best settings included).")
print()
print("| data | strategy | settings | average accuracy (%) | forgetting (points) "
      "| task-IL accuracy (%) | seeds | s per run | load before -> after | goal | PyTorch reference |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name, settings in RUNS:
    data = name.split("-")[0]
    d = load(name)
    if d is None:
        print(f"| {DATA[data]} | {name.split('-', 1)[1]} | {settings} | not run | | | | | | | |")
        continue
    # The load average (1 min) before and after the command, which ran the baselines too.
    load_text = (f"{d['load_before'][0]} -> {d['load'][0]}" if "load" in d else "")
    rows = [(d["strategy"], d, settings)]
    rows += [(b, s, "same run, same seeds") for b, s in sorted(d.get("baselines", {}).items())]
    for strategy, s, how in rows:
        label = strategy + (" (ACE)" if "ace" in name and strategy == d["strategy"] else "")
        print(f"| {DATA[data]} | {label} | {how} | **{pm(s, 'average_accuracy')}** "
              f"| {pm(s, 'forgetting')} | {pm(s, 'task_il_accuracy')} | {len(d['seeds'])} "
              f"| {s.get('seconds', 0):.0f} | {load_text} | {GOALS.get((data, strategy), '')} "
              f"| {REFERENCE.get((data, strategy), '')} |")

plain, comp, comp2 = (load(f"time-{v}") for v in ("plain", "compressed", "compressed-2-threads"))
if plain and comp:
    print()
    print("5-task ER run on Split Fashion-MNIST, 1 seed, wall and CPU time (user + system) of "
          "the whole command, one after another in the same script run (load average before "
          "and after each):")
    print()
    print("| run | executor threads | wall time (s) | CPU time (s) | CPU time / plain | load before -> after | goal |")
    print("|---|---|---|---|---|---|---|")
    rows = [("plain", "1", plain),
            ("with compression (int8, 50% pruning, pruned + int8 after; pruned + QAT int8 "
             "during)", "1", comp)]
    if comp2:
        rows.append(("the same with compression", "2 (the old default)", comp2))
    for label, threads, d in rows:
        goal = "<= 180 s" if d is not plain else ""
        print(f"| {label} | {threads} | {d['wall_seconds']:.0f} | {d['cpu_seconds']:.0f} "
              f"| {d['cpu_seconds'] / plain['cpu_seconds']:.2f} "
              f"| {' '.join(d['load_before'])} -> {' '.join(d['load'])} | {goal} |")
    print()
    print("| variant | average accuracy (%) | forgetting (points) | size (bytes) | non-zero / parameters | FPS (ORT) |")
    print("|---|---|---|---|---|---|")
    for k, m in comp["compressed"].items():
        fps = f"{m['fps']:.0f}" if m.get("fps") else "-"
        print(f"| {k} | {100 * m['average_accuracy']:.2f} | {100 * m['forgetting']:.2f} "
              f"| {m['size_bytes']} | {m['nonzero_parameters']} / {m['parameters']} | {fps} |")

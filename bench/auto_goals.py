"""Issue 18's goal tables from the files bench/auto_goals.sh leaves.

usage: auto_goals.py OUT_DIR ROUNDS RUN...

For every RUN (cnn-balanced, cnn-speed, cnn-size, lenet5-balanced, cnn-grid, lenet5-grid,
cnn-qat) whose OUT_DIR/RUN.json exists (`whittle auto --json`): RUN.time (/usr/bin/time -v: wall, peak
RSS), and for the output and its baseline (cnn or lenet5) STEM.inspect.json, STEM.ort.json
(scripts/ort_eval.py), STEM.bench-K.json for K in 1..ROUNDS (`whittle bench --engine ort`)
and STEM.eval.time (`whittle eval` under /usr/bin/time -v: one evaluation's peak memory).
Prints the goal table and, for each model (cnn, lenet5) whose balanced search and grid
both ran, the efficiency table.
"""
import json
import os
import re
import statistics
import sys

MIB = 1 << 20

# run -> (baseline stem, target and budget as passed, goal: min x smaller, min x faster,
# max points lost, max wall seconds); None = no such goal.
RUNS = {
    "cnn-balanced": ("cnn", "balanced, drop <= 1", (4, 2, 1, 20 * 60)),
    "cnn-speed": ("cnn", "speed, drop <= 2", (None, 3, 2, None)),
    "cnn-size": ("cnn", "size, drop <= 2", (8, None, 2, None)),
    "lenet5-balanced": ("lenet5", "balanced, drop <= 1", (None, None, 1, None)),
    "cnn-grid": ("cnn", "balanced, drop <= 1, --exhaustive", (None, None, 1, None)),
    "lenet5-grid": ("lenet5", "balanced, drop <= 1, --exhaustive", (None, None, 1, None)),
    "cnn-qat": ("cnn", "balanced, drop <= 1, --actions qat,int8-static", (None, None, 1, None)),
}


def load(out, name):
    with open(os.path.join(out, name), encoding="utf-8") as f:
        return json.load(f)


def time_v(out, name):
    """(wall seconds, peak RSS bytes) from a /usr/bin/time -v file."""
    text = open(os.path.join(out, name), encoding="utf-8").read()
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    hours, minutes, seconds = (float(g or 0) for g in wall.groups())
    return hours * 3600 + minutes * 60 + seconds, int(rss.group(1)) * 1024


def measure(out, stem, rounds):
    """Size in bytes, ORT batch-1 latency in ms and ORT accuracy (fraction) of STEM."""
    latency = statistics.median(
        load(out, f"{stem}.bench-{k}.json")["batches"][0]["median_ms"] for k in range(1, rounds + 1)
    )
    return load(out, f"{stem}.inspect.json")["size_bytes"], latency, load(out, f"{stem}.ort.json")["accuracy"]


def budget_text(report):
    """The budget the run was given, from its plan line 'target ...; budget ...'."""
    line = next((p for p in report.get("plan", []) if "; budget " in p), "")
    return line.split("; budget ", 1)[1] if line else "?"


def step_text(step):
    """One chosen step as text: a string as is, an object as kind(key=value, ...)."""
    if not isinstance(step, dict):
        return str(step)
    kind = next((step[k] for k in ("kind", "step", "name", "type") if k in step), None)
    rest = ", ".join(f"{k}={v}" for k, v in step.items() if v != kind and not isinstance(v, (dict, list)))
    return f"{kind}({rest})" if kind else rest


def minutes(seconds):
    return f"{seconds / 60:.1f} min"


def goal_text(goal):
    parts = []
    if goal[0]:
        parts.append(f">= {goal[0]}x smaller")
    if goal[1]:
        parts.append(f">= {goal[1]}x faster")
    parts.append(f"<= {goal[2]} pt lost")
    if goal[3]:
        parts.append(f"<= {goal[3] // 60} min")
    return ", ".join(parts)


def goal_misses(goal, smaller, faster, lost, wall):
    misses = []
    if goal[0] and smaller < goal[0]:
        misses.append(f"{smaller:.2f}x smaller")
    if goal[1] and faster < goal[1]:
        misses.append(f"{faster:.2f}x faster")
    if lost > goal[2]:
        misses.append(f"{lost:.2f} pt lost")
    if goal[3] and wall > goal[3]:
        misses.append(minutes(wall))
    return "yes" if not misses else "no: " + ", ".join(misses)


def goal_table(out, rounds, runs):
    print("| run | target | budget | status | trials | wall | peak RSS MiB (one eval) | chosen steps "
          "| size MB (x smaller) | ORT b1 ms (x faster) | accuracy (pt lost) | goal | met |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        if not os.path.exists(os.path.join(out, f"{run}.json")):
            print(f"| {run} | {RUNS[run][1]} | | not run | | | | | | | | | |")
            continue
        base_stem, target, goal = RUNS[run]
        report = load(out, f"{run}.json")
        wall, rss = time_v(out, f"{run}.time")
        eval_rss = time_v(out, f"{base_stem}.eval.time")[1]
        base, new = measure(out, base_stem, rounds), measure(out, run, rounds)
        smaller, faster, lost = base[0] / new[0], base[1] / new[1], 100 * (base[2] - new[2])
        best = report.get("best") or {}
        steps = best.get("name") or " -> ".join(step_text(s) for s in best.get("steps", [])) or "(none)"
        memory = "" if rss <= 2 * eval_rss else " (over 2x)"
        print(f"| {run} | {target} | {budget_text(report)} | {report.get('status')} | {report.get('trials')} | {minutes(wall)} "
              f"| {rss / MIB:.0f} ({eval_rss / MIB:.0f}){memory} | {steps} "
              f"| {base[0] / MIB:.3f} -> {new[0] / MIB:.3f} ({smaller:.2f}x) "
              f"| {base[1]:.3f} -> {new[1]:.3f} ({faster:.2f}x) "
              f"| {100 * base[2]:.2f}% -> {100 * new[2]:.2f}% ({lost:.2f}) "
              f"| {goal_text(goal)} | {goal_misses(goal, smaller, faster, lost, wall)} |")


def first_trial(history, accept):
    """The 1-based trial number of the first history entry ACCEPT takes, or None."""
    return next((i + 1 for i, t in enumerate(history) if accept(t)), None)


def efficiency_table(out, rounds, model):
    search, grid = load(out, f"{model}-balanced.json"), load(out, f"{model}-grid.json")
    best = measure(out, f"{model}-grid", rounds)
    print()
    print("| search | candidates | trials | trials to first in-budget | wall | best accuracy | best ORT b1 ms |")
    print("|---|---|---|---|---|---|---|")
    for run, report in ((f"{model}-balanced", search), (f"{model}-grid", grid)):
        history = report.get("history", [])
        first = report.get("first_in_budget") or first_trial(history, lambda t: t.get("in_budget"))
        wall = time_v(out, f"{run}.time")[0]
        _, latency, acc = measure(out, run, rounds)
        print(f"| {run} | {report.get('search_space', '?')} | {report.get('trials')} "
              f"| {first if first else ('none' if history else '?')} | {minutes(wall)} "
              f"| {100 * acc:.2f}% | {latency:.3f} |")
    # The grid's best as auto measured it, against the search's trials in the same units.
    grid_best = grid["best"]
    near = lambda t: (t.get("accuracy") is not None
                      and t["accuracy"] >= grid_best["accuracy"] - 0.002
                      and t.get("latency_ms") is not None
                      and t["latency_ms"] <= 1.1 * grid_best["latency_ms"])
    history = search.get("history")
    reached = first_trial(history, near) if history else (search["trials"] if near(search["best"]) else None)
    third = grid["trials"] / 3
    verdict = "yes" if reached and reached <= third else "no"
    print()
    print(f"{model}: the search reached the grid's best (within 0.2 points and 10% latency, as each run "
          f"measured it: grid best {100 * grid_best['accuracy']:.2f}%, {grid_best['latency_ms']:.3f} ms) "
          f"at trial {reached if reached else 'never'}; a third of the grid's {grid['trials']} trials "
          f"is {third:.1f}: **{verdict}**. Measured again here, the grid's output is "
          f"{100 * best[2]:.2f}%, {best[1]:.3f} ms.")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, rounds, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        sys.exit(f"error: unknown run(s) {', '.join(unknown)}; expected {', '.join(RUNS)}")
    goal_table(out, rounds, runs)
    for model in ("cnn", "lenet5"):
        pair = (f"{model}-balanced", f"{model}-grid")
        if all(r in runs and os.path.exists(os.path.join(out, f"{r}.json")) for r in pair):
            efficiency_table(out, rounds, model)


if __name__ == "__main__":
    main()

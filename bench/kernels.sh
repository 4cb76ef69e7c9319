#!/usr/bin/env bash
# Micro-benchmark of the planned executor's kernels (crates/exec/benches/kernels.rs): GEMM and
# convolution at LeNet5, MiniLM-L3 and YOLOv8n-320 shapes against candle's matmul/conv2d (the
# operators' current path) and the gemm crate, 1 and 2 threads, GFLOP/s; then elementwise and
# row kernels (GELU, SiLU, Tanh, Exp, Softmax, LayerNorm) against candle's, Melem/s. Each cell is the
# median over REPEAT runs (default 3) of the per-run median; runs under `nice -n 10`.
#
#   bench/kernels.sh            # prints the table
#   WRITE=docs/BENCHMARKS.md bench/kernels.sh   # also puts it in the `kernels` section
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
repeat="${REPEAT:-3}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

bin=$(cargo bench -p whittle-exec --bench kernels --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "kernels" and m.get("executable"):
        print(m["executable"])' | tail -n 1)
for threads in 1 2; do
  for r in $(seq "$repeat"); do
    RAYON_NUM_THREADS=$threads nice -n 10 "$bin" >"$out/t$threads-$r.md"
  done
done

python3 - "$out" "$repeat" >"$out/table.md" <<'PY'
import statistics, sys
out, repeat = sys.argv[1], int(sys.argv[2])
def cell(col):
    """Median of a column of cells across runs ("1.23x" stays a ratio, text stays text)."""
    ratio = col[0].endswith("x")
    try:
        v = statistics.median(float(c.rstrip("x")) for c in col)
    except ValueError:
        return col[0]
    return f"{v:.2f}x" if ratio else f"{v:.1f}" if v < 1000 else f"{v:.0f}"
def tables(threads):
    """The two tables of every run at THREADS, cells replaced by their medians."""
    runs = [open(f"{out}/t{threads}-{r}.md").read().strip().split("\n\n") for r in range(1, repeat + 1)]
    for parts in zip(*runs):
        lines = zip(*(p.strip().splitlines() for p in parts))
        yield [
            [cell(col) for col in zip(*([c.strip() for c in l.strip().strip("|").split("|")] for l in same))]
            for same in lines
        ]
per_threads = {t: list(tables(t)) for t in (1, 2)}
heads = [
    "| model | kernel | threads | candle | gemm crate | whittle | whittle transB view | whittle packed | whittle / candle |\n|---|---|---|---|---|---|---|---|---|",
    "| op | shape | threads | candle Melem/s | whittle Melem/s | whittle / candle |\n|---|---|---|---|---|---|",
]
for i, head in enumerate(heads):
    print(head)
    for t in (1, 2):
        for r in per_threads[t][i]:
            print("| " + " | ".join(r[:2] + [str(t)] + r[2:]) + " |")
    print()
PY
{
  echo "$(machine_line) Shared with other engineers' builds while it ran. GFLOP/s, median of $repeat runs (each the median of repeats over 0.4 s)."
  echo
  cat "$out/table.md"
} >"$out/section.md"
publish kernels "$out/section.md"

"""Whittle's continual (joint) SGD step against PyTorch's, on the same MLP and pixels.

usage: python3 bench/continual_vs_torch.py [--whittle BIN] [--torch-python PY]
           [--data fashion-mnist,mnist] [--steps 1,10,100,1000] [--seeds 0,1,2]
           [--skip-joint] [--write docs/BENCHMARKS.md]

The MLP 784-256-256-10 of `zoo:mlp:hidden=256-256` (seed 0), pixels scaled to 0..1, SGD
lr 0.1 without momentum or weight decay, batches of 10, mean cross-entropy:

1. Step by step, on Fashion-MNIST (its first 10 training images hold a class of every
   task): `whittle continual --strategy joint --train-samples 10 --epochs-per-task N`
   trains N steps on one batch of the same 10 images (the order inside a batch does not
   change a mean loss, so whittle's shuffle cannot make the runs differ); PyTorch takes
   the same N steps from the same initial weights (read from whittle's ONNX). The table
   gives the largest weight difference and both losses after N steps.
2. The joint upper bound of each --data set (1 epoch over all 60,000 images, test
   accuracy over all 10 classes): whittle per seed beside PyTorch from whittle's initial
   weights and from PyTorch's own initialisation, each seed's order from its own
   generator; mean and sample standard deviation over the seeds.

The PyTorch half runs in the bench-only virtual environment (default
/tmp/torchvenv/bin/python; never part of CI) as `--torch-worker`; ONNX is read here with
`onnx`. Prints Markdown tables; --write puts them in the file's `continual-vs-torch`
section.
"""

import argparse
import datetime
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
ASSETS = os.environ.get("WHITTLE_ASSETS", os.path.expanduser("~/.cache/whittle-assets"))
MODEL = "zoo:mlp:hidden=256-256"
LR, BATCH = 0.1, 10
# The step-by-step data: its first 10 training images hold a class of every task.
STEP_DATA = "fashion-mnist"
BEGIN, END = "<!-- continual-vs-torch:begin -->", "<!-- continual-vs-torch:end -->"


def idx(path):
    """An IDX file (`path`, else `path.gz`) as a numpy array."""
    if os.path.exists(path):
        with open(path, "rb") as f:
            raw = f.read()
    else:
        with gzip.open(path + ".gz", "rb") as f:
            raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def split(data, name):
    """(images [N, 784] float32 in 0..1, labels int64) of a split of an MNIST-layout set."""
    folder = os.path.join(ASSETS, data)
    x = idx(os.path.join(folder, f"{name}-images-idx3-ubyte")).reshape(-1, 784)
    y = idx(os.path.join(folder, f"{name}-labels-idx1-ubyte"))
    return x.astype(np.float32) / 255.0, y.astype(np.int64)


# ---------------------------------------------------------------- PyTorch worker


def torch_worker(args):
    """Runs in the torch environment: `steps` or `joint`, one JSON line out."""
    import torch
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    def mlp(init):
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256),
                            nn.ReLU(), nn.Linear(256, 10))
        if init:
            w = np.load(init)
            linears = [m for m in net if isinstance(m, nn.Linear)]
            with torch.no_grad():
                for i, lin in enumerate(linears):
                    lin.weight.copy_(torch.from_numpy(w[f"w{i}"]))
                    lin.bias.copy_(torch.from_numpy(w[f"b{i}"]))
        return net

    def weights(net):
        linears = [m for m in net if isinstance(m, nn.Linear)]
        out = {}
        for i, lin in enumerate(linears):
            out[f"w{i}"] = lin.weight.detach().numpy().copy()
            out[f"b{i}"] = lin.bias.detach().numpy().copy()
        return out

    net = mlp(args.init)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    if args.mode == "steps":
        x, y = split(STEP_DATA, "train")
        x, y = torch.from_numpy(x[:BATCH]), torch.from_numpy(y[:BATCH])
        marks = sorted(int(s) for s in args.steps.split(","))
        saved, losses = {}, {}
        for step in range(1, marks[-1] + 1):
            opt.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            if step in marks:
                with torch.no_grad():
                    losses[step] = float(loss_fn(net(x), y))
                for k, v in weights(net).items():
                    saved[f"{step}/{k}"] = v
        np.savez(args.out, **saved)
        print(json.dumps({"losses": losses}))
        return
    x, y = split(args.data, "train")
    tx, ty = split(args.data, "t10k")
    x, y, tx, ty = map(torch.from_numpy, (x, y, tx, ty))
    order = torch.randperm(len(x))
    for i in range(0, len(x), BATCH):
        b = order[i: i + BATCH]
        opt.zero_grad()
        loss_fn(net(x[b]), y[b]).backward()
        opt.step()
    with torch.no_grad():
        accuracy = float((net(tx).argmax(1) == ty).float().mean())
    print(json.dumps({"accuracy": accuracy}))


# ---------------------------------------------------------------- driver


def onnx_weights(path):
    """The three Gemm layers' weights [out, in] and biases of an MLP ONNX file, in order."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    if len(gemms) != 3:
        sys.exit(f"error: {path} has {len(gemms)} Gemm nodes, expected the MLP's 3")
    for i, node in enumerate(gemms):
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        w = inits[node.input[1]]
        out[f"w{i}"] = (w if trans_b else w.T).astype(np.float32)
        out[f"b{i}"] = inits[node.input[2]].astype(np.float32)
    return out


def run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def whittle_continual(args, data, model, out, extra):
    cmd = [args.whittle, "continual", "--model", model, "--data",
           f"{data}:{os.path.join(ASSETS, data)}",
           "--strategy", "joint", "--no-baselines", "-o", out, "--force", "--json"] + extra
    return json.loads(run(cmd))


def torch_run(args, mode, seed, data, out=None, init=None):
    """The PyTorch worker's result: `steps` (losses; weights in `out`) or `joint`
    (test accuracy, 0..1)."""
    cmd = [args.torch_python, os.path.abspath(__file__), "--torch-worker", mode,
           "--seed", str(seed), "--steps", args.steps, "--data", data]
    if out:
        cmd += ["--out", out]
    if init:
        cmd += ["--init", init]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = json.loads(run(cmd, env=env).strip().splitlines()[-1])
    return result["accuracy"] if mode == "joint" else result


def ce_loss(w, x, y):
    """Mean cross-entropy of the MLP with weights `w` on (x, y), in float64."""
    h = x.astype(np.float64)
    for i in range(3):
        h = h @ w[f"w{i}"].T.astype(np.float64) + w[f"b{i}"]
        if i < 2:
            h = np.maximum(h, 0)
    h -= h.max(1, keepdims=True)
    logp = h - np.log(np.exp(h).sum(1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--whittle", default=os.path.join(ROOT, "target/release/whittle"))
    p.add_argument("--torch-python", default="/tmp/torchvenv/bin/python")
    p.add_argument("--data", default="fashion-mnist",
                   help="datasets of the joint runs, comma-separated: fashion-mnist, mnist")
    p.add_argument("--steps", default="1,10,100,1000")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--skip-joint", action="store_true", help="only the step-by-step table")
    p.add_argument("--write", help="markdown file whose marked section receives the tables")
    p.add_argument("--torch-worker", choices=["steps", "joint"], help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--init", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.torch_worker:
        args.mode = args.torch_worker
        return torch_worker(args)
    lines = []

    def say(line=""):
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        init_onnx = os.path.join(tmp, "init.onnx")
        run([args.whittle, "zoo", MODEL, "-o", init_onnx, "--force"])
        init = os.path.join(tmp, "init.npz")
        np.savez(init, **onnx_weights(init_onnx))
        x, y = split(STEP_DATA, "train")
        x, y = x[:BATCH], y[:BATCH]
        say(f"`{MODEL}` (seed 0), SGD lr {LR} (no momentum, no weight decay), batch {BATCH}, "
            f"mean cross-entropy, pixels 0..1; `bench/continual_vs_torch.py`, "
            f"{datetime.date.today()}, load average {os.getloadavg()[0]:.1f} at the start.")
        say()
        say("Step by step on the first 10 Fashion-MNIST training images, from the same weights:")
        say()
        say("| steps on one batch | largest weight difference | largest weight change "
            "| whittle loss | PyTorch loss |")
        say("|---|---|---|---|---|")
        torch_npz = os.path.join(tmp, "torch.npz")
        losses = torch_run(args, "steps", 0, STEP_DATA, out=torch_npz, init=init)["losses"]
        theirs = np.load(torch_npz)
        start = np.load(init)
        for n in args.steps.split(","):
            out = os.path.join(tmp, f"w{n}.onnx")
            whittle_continual(args, STEP_DATA, init_onnx, out,
                              ["--train-samples", str(BATCH), "--test-samples", "100",
                               "--epochs-per-task", n])
            ours = onnx_weights(out)
            diff = max(float(np.abs(ours[k] - theirs[f"{n}/{k}"]).max()) for k in ours)
            moved = max(float(np.abs(theirs[f"{n}/{k}"] - start[k]).max()) for k in ours)
            say(f"| {n} | {diff:.2e} | {moved:.2e} | {ce_loss(ours, x, y):.6f} "
                f"| {losses[n]:.6f} |")
        for data in [] if args.skip_joint else args.data.split(","):
            say()
            say(f"Joint training on {data}, 1 epoch (6000 steps), test accuracy (%) per seed:")
            say()
            say("| seed | whittle joint | PyTorch, whittle's init | PyTorch, its own init |")
            say("|---|---|---|---|")
            columns = []
            for seed in [int(s) for s in args.seeds.split(",")]:
                joint = os.path.join(tmp, "joint.onnx")
                w = whittle_continual(args, data, init_onnx, joint, ["--seeds", str(seed)])
                row = [w["average_accuracy"], torch_run(args, "joint", seed, data, init=init),
                       torch_run(args, "joint", seed, data)]
                row = [100 * a for a in row]
                columns.append(row)
                say(f"| {seed} | " + " | ".join(f"{a:.2f}" for a in row) + " |")
            if len(columns) > 1:
                cells = [f"**{statistics.mean(c):.2f} ± {statistics.stdev(c):.2f}**"
                         for c in zip(*columns)]
                say("| mean ± std | " + " | ".join(cells) + " |")
    if args.write:
        from quantize_vs_ort import write_section
        write_section(args.write, "\n".join(lines), BEGIN, END,
                      "Continual learning's training step against PyTorch",
                      "python3 bench/continual_vs_torch.py --write docs/BENCHMARKS.md")

if __name__ == "__main__":
    main()

"""Run a model in ONNX Runtime (the reference whittle is tested against) on .npy inputs.

usage: ort_reference.py MODEL OUT_DIR NAME=FILE.npy [NAME=FILE.npy ...]

Writes OUT_DIR/<index>.npy for each graph output, in graph order, and OUT_DIR/names.txt
with the output names, one per line. One thread, all graph optimisations off, so the
numbers are ORT's plain kernels.
"""
import os
import sys

import numpy as np
import onnxruntime as ort


def main():
    model, out_dir, *pairs = sys.argv[1:]
    feeds = {}
    for pair in pairs:
        name, path = pair.split("=", 1)
        feeds[name] = np.load(path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(names, feeds)
    os.makedirs(out_dir, exist_ok=True)
    for i, value in enumerate(outputs):
        np.save(os.path.join(out_dir, f"{i}.npy"), np.asarray(value))
    with open(os.path.join(out_dir, "names.txt"), "w") as f:
        f.write("\n".join(names) + "\n")


if __name__ == "__main__":
    main()

"""Test accuracy of an image classifier in ONNX Runtime on MNIST-format IDX data.

usage: ort_eval.py MODEL DIR [BATCH]

DIR holds t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (raw or .gz), as for
`whittle eval --data mnist:DIR` / `fashion-mnist:DIR`. Pixels are scaled to [0, 1] and fed
as [N, 1, 28, 28] float32, as whittle's data loader does, BATCH images per run (default
500; dynamic INT8 quantizes each run's activations with one scale, so its accuracy depends
on it: 1 is deployment at batch 1). Prints one JSON line:
{"accuracy": ..., "samples": ...}.
"""
import gzip
import json
import os
import sys

import numpy as np
import onnxruntime as ort


def read_idx(directory, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as f:
                data = f.read()
            dims = int(data[3])
            shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    sys.exit(f"error: {directory} has no {stem}[.gz]")


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    model, directory = sys.argv[1:3]
    batch = int(sys.argv[3]) if len(sys.argv) == 4 else 500
    images = read_idx(directory, "t10k-images-idx3-ubyte").astype(np.float32) / 255.0
    labels = read_idx(directory, "t10k-labels-idx1-ubyte").astype(np.int64)
    x = images.reshape(len(images), 1, 28, 28)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, len(x), batch):
        scores = session.run(None, {name: x[start:start + batch]})[0]
        correct += int((scores.argmax(axis=1) == labels[start:start + batch]).sum())
    print(json.dumps({"accuracy": correct / len(x), "samples": len(x)}))


if __name__ == "__main__":
    main()

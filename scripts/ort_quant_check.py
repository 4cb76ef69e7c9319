"""Check a quantized model the way its users will run it: onnx.checker (full check), then
ONNX Runtime, compared with the float model.

usage: ort_quant_check.py QUANT.onnx FLOAT.onnx (--mnist DIR [--limit N] | --tokens)

Prints one JSON object: {"checker": "ok", "ops": {...}, "accuracy", "float_accuracy"} for
--mnist (MNIST test images, [0, 1] scaling, first output argmax), or {"min_cosine"} for
--tokens (random token ids [4, 32] fed to a BERT-style model, cosine per output row).
"""
import argparse
import collections
import gzip
import json
import os

import numpy as np
import onnx
import onnxruntime as ort


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(dirname, stem):
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(dirname, name)):
            return os.path.join(dirname, name)
    raise FileNotFoundError(os.path.join(dirname, stem))


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def accuracy(sess, images, labels):
    name = sess.get_inputs()[0].name
    correct = 0
    for s in range(0, len(images), 500):
        out = sess.run(None, {name: images[s:s + 500]})[0]
        correct += int((out.argmax(1) == labels[s:s + 500]).sum())
    return correct / len(images)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("quant")
    ap.add_argument("float")
    ap.add_argument("--mnist")
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--tokens", action="store_true")
    a = ap.parse_args()
    onnx.checker.check_model(a.quant, full_check=True)
    ops = collections.Counter(n.op_type for n in onnx.load(a.quant).graph.node)
    result = {"checker": "ok", "ops": dict(ops)}
    q, f = session(a.quant), session(a.float)
    if a.mnist:
        images = read_idx(find(a.mnist, "t10k-images-idx3-ubyte"))[: a.limit]
        images = (images.astype(np.float32) / 255.0)[:, None, :, :]
        labels = read_idx(find(a.mnist, "t10k-labels-idx1-ubyte"))[: a.limit].astype(np.int64)
        result["accuracy"] = accuracy(q, images, labels)
        result["float_accuracy"] = accuracy(f, images, labels)
    if a.tokens:
        rng = np.random.default_rng(0)
        feeds = {}
        for i in f.get_inputs():
            if i.name == "input_ids":
                feeds[i.name] = rng.integers(1000, 20000, size=(4, 32), dtype=np.int64)
            elif i.name == "attention_mask":
                feeds[i.name] = np.ones((4, 32), dtype=np.int64)
            else:
                feeds[i.name] = np.zeros((4, 32), dtype=np.int64)
        cos = []
        for x, y in zip(f.run(None, feeds), q.run(None, feeds)):
            x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
            num = (x * y).sum(1)
            cos.extend((num / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))).tolist())
        result["min_cosine"] = min(cos)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

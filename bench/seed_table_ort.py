"""ONNX Runtime's own quantizer on the seed table's baseline, as the reference for its INT8 rows.

usage: python3 bench/seed_table_ort.py OUT_DIR FASHION_MNIST_DIR [ROUNDS]

OUT_DIR is bench/seed_table.sh's (baseline.onnx, int8.onnx, pruned-int8.onnx). Quantizes
baseline.onnx with onnxruntime.quantization: `quantize_static` (QDQ, per-channel, int8
weights, uint8 activations, MinMax on the first 256 training images scaled to [0, 1], as
whittle calibrates) and `quantize_dynamic` (int8 weights), then times every model in ONNX
Runtime at batch 1 on one thread: ROUNDS rounds (default 3), every model in turn, 50 warm-up
and 400 timed runs each; speed is the baseline's median over the model's (median over rounds).
Prints a Markdown table of size and speed ratios to the baseline, with the load average.
"""
import gzip
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)


def train_images(directory, n):
    with gzip.open(os.path.join(directory, "train-images-idx3-ubyte.gz")) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16)
    return raw.reshape(-1, 1, 28, 28)[:n].astype(np.float32) / 255.0


class Images(CalibrationDataReader):
    """One image a batch, under the model's input name."""

    def __init__(self, name, images):
        self.feeds = iter([{name: images[i:i + 1]} for i in range(len(images))])

    def get_next(self):
        return next(self.feeds, None)


def median_ms(path, feed):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    for _ in range(50):
        s.run(None, feed)
    times = []
    for _ in range(400):
        t = time.perf_counter()
        s.run(None, feed)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main():
    out, data = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    baseline = os.path.join(out, "baseline.onnx")
    name = ort.InferenceSession(baseline).get_inputs()[0].name
    images = train_images(data, 256)
    tmp = tempfile.mkdtemp(prefix="seed-ort-")
    ort_static, ort_dynamic = os.path.join(tmp, "static.onnx"), os.path.join(tmp, "dynamic.onnx")
    quantize_static(baseline, ort_static, Images(name, images), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    quantize_dynamic(baseline, ort_dynamic, weight_type=QuantType.QInt8)
    rows = [("Baseline (FP32)", baseline),
            ("whittle INT8 (static, per-channel)", os.path.join(out, "int8.onnx")),
            ("ORT quantize_static (QDQ, per-channel)", ort_static),
            ("ORT quantize_dynamic", ort_dynamic),
            ("whittle INT8 + 50% pruned", os.path.join(out, "pruned-int8.onnx"))]
    rows = [(label, path) for label, path in rows if os.path.exists(path)]
    feed = {name: images[:1]}
    load_before = open("/proc/loadavg").read().split()[:3]
    times = {label: [] for label, _ in rows}
    for _ in range(rounds):
        for label, path in rows:
            times[label].append(median_ms(path, feed))
    load_after = open("/proc/loadavg").read().split()[:3]
    base_ms = statistics.median(times[rows[0][0]])
    base_bytes = os.path.getsize(baseline)
    print(f"Load average {' '.join(load_before)} before, {' '.join(load_after)} after "
          f"({os.cpu_count()} cores); ONNX Runtime {ort.__version__}, batch 1, one thread.")
    print()
    print("| model | bytes | smaller | median ms | faster |")
    print("|---|---|---|---|---|")
    for label, path in rows:
        ms, size = statistics.median(times[label]), os.path.getsize(path)
        print(f"| {label} | {size:,} | {base_bytes / size:.2f}x | {ms:.3f} | {base_ms / ms:.2f}x |")


if __name__ == "__main__":
    main()

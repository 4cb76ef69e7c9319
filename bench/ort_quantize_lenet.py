"""ONNX Runtime's own static quantization of LeNet5 as a yardstick for `whittle quantize`.

usage: ort_quantize_lenet.py MODEL MNIST_DIR OUT.onnx [--calibration minmax|entropy|percentile]

Calibrates on the first 512 MNIST training images (per-channel QDQ, uint8 activations,
int8 weights), then prints the test accuracy (10k images) and sizes as JSON.
"""
import json
import os
import sys

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from ort_quant_check import accuracy, find, read_idx, session  # noqa: E402


class Reader(CalibrationDataReader):
    def __init__(self, name, images):
        self.batches = iter([{name: images[i:i + 32]} for i in range(0, len(images), 32)])

    def get_next(self):
        return next(self.batches, None)


def main():
    model, mnist, out = sys.argv[1:4]
    method = sys.argv[5] if len(sys.argv) > 5 else "minmax"
    train = read_idx(find(mnist, "train-images-idx3-ubyte"))[:512]
    train = (train.astype(np.float32) / 255.0)[:, None]
    name = session(model).get_inputs()[0].name
    quantize_static(model, out, Reader(name, train), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method={"minmax": CalibrationMethod.MinMax,
                                      "entropy": CalibrationMethod.Entropy,
                                      "percentile": CalibrationMethod.Percentile}[method])
    test = read_idx(find(mnist, "t10k-images-idx3-ubyte"))
    test = (test.astype(np.float32) / 255.0)[:, None]
    labels = read_idx(find(mnist, "t10k-labels-idx1-ubyte")).astype(np.int64)
    print(json.dumps({
        "calibration": method,
        "float_accuracy": accuracy(session(model), test, labels),
        "accuracy": accuracy(session(out), test, labels),
        "input_bytes": os.path.getsize(model),
        "output_bytes": os.path.getsize(out),
    }))


if __name__ == "__main__":
    main()

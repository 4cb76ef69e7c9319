"""Rebuild advertorch's pretrained MNIST LeNet5 as ONNX, reading its legacy torch checkpoint
without torch (the checkpoint is a pickle followed by raw little-endian storages).

usage: lenet5_to_onnx.py WEIGHTS.pt OUT.onnx
"""
import collections
import pickle
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "HalfStorage": np.float16,
    "ByteStorage": np.uint8,
}


class _Storage:
    def __init__(self, kind):
        self.kind = kind
        self.data = None


class _StorageKind:
    def __init__(self, name):
        self.name = name


def _tensor(storage, offset, size, stride, *_):
    return storage, offset, tuple(size), tuple(stride)


class _Unpickler(pickle.Unpickler):
    """Resolves only the few torch names a legacy state_dict uses; anything else is refused."""

    def __init__(self, stream, storages):
        super().__init__(stream)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name.startswith("_rebuild_tensor"):
            return _tensor
        if module == "torch" and name.endswith("Storage"):
            return _StorageKind(name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}")

    def persistent_load(self, pid):
        kind, key = pid[1].name, pid[2]
        return self.storages.setdefault(key, _Storage(kind))


def load_legacy_state_dict(path):
    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(f)
        storages = {}
        state = _Unpickler(f, storages).load()
        for key in pickle.load(f):
            storage = storages[key]
            count = struct.unpack("<q", f.read(8))[0]
            dtype = np.dtype(STORAGE_DTYPES[storage.kind])
            storage.data = np.frombuffer(f.read(count * dtype.itemsize), dtype)
    out = collections.OrderedDict()
    for name, (storage, offset, size, stride) in state.items():
        item = storage.data.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage.data[offset:], shape=size, strides=[s * item for s in stride]
        )
        out[name] = np.array(view)
    return out


def lenet5(weights):
    def conv(x, layer, y):
        return helper.make_node(
            "Conv", [x, f"{layer}.weight", f"{layer}.bias"], [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        )

    def pool(x, y):
        return helper.make_node("MaxPool", [x], [y], kernel_shape=[2, 2], strides=[2, 2])

    def dense(x, layer, y):
        return helper.make_node("Gemm", [x, f"{layer}.weight", f"{layer}.bias"], [y], transB=1)

    nodes = [
        conv("input", "conv1", "c1"), helper.make_node("Relu", ["c1"], ["r1"]), pool("r1", "p1"),
        conv("p1", "conv2", "c2"), helper.make_node("Relu", ["c2"], ["r2"]), pool("r2", "p2"),
        helper.make_node("Flatten", ["p2"], ["f"], axis=1),
        dense("f", "linear1", "g1"), helper.make_node("Relu", ["g1"], ["h1"]),
        dense("h1", "linear2", "logits"),
    ]
    graph = helper.make_graph(
        nodes,
        "mnist_lenet5",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    source, target = sys.argv[1], sys.argv[2]
    weights = load_legacy_state_dict(source)
    onnx.save(lenet5(weights), target)
    print(f"{target}: {sum(v.size for v in weights.values())} parameters")

"""What ONNX Runtime makes of a quantized model: its optimized graph's operators.

usage: ort_fused_ops.py MODEL OPTIMIZED.onnx

Loads MODEL in ONNX Runtime's CPU provider with every graph optimization on (one thread),
writes the optimized graph to OPTIMIZED.onnx (`optimized_model_filepath`) and prints one
JSON object: {"ops": {op_type: count}, "unfused": [...], "constant_dequantize": N}.
"unfused" lists each DequantizeLinear left feeding a float Conv, Gemm, MatMul or FusedMatMul
(a pair ORT's QDQ fusions should have turned into QLinearConv, QGemm,
MatMulIntegerToFloat or QLinearMatMul); "constant_dequantize" counts the DequantizeLinear
nodes left reading an initializer, which ORT runs on every inference (it does not
constant-fold DequantizeLinear).
"""
import collections
import json
import sys

import onnx
import onnxruntime as ort

FLOAT_COMPUTE = {"Conv", "Gemm", "MatMul", "FusedMatMul"}


def main():
    model, optimized = sys.argv[1:3]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = optimized
    opts.log_severity_level = 3  # the NCHWc "hardware specific" warning on saving
    ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    graph = onnx.load(optimized).graph
    constants = {t.name for t in graph.initializer}
    readers = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    dequantize = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    unfused = [f"DequantizeLinear({n.input[0]}) -> {r.op_type} {r.name or r.output[0]}"
               for n in dequantize for r in readers[n.output[0]] if r.op_type in FLOAT_COMPUTE]
    print(json.dumps({
        "ops": collections.Counter(n.op_type for n in graph.node),
        "unfused": unfused,
        "constant_dequantize": sum(n.input[0] in constants for n in dequantize),
    }))


if __name__ == "__main__":
    main()

//! Profiling and benchmarking: per-node time, MACs, parameters and memory in whittle's
//! executor; latency percentiles, throughput and peak memory in whittle or ONNX Runtime.

#![warn(missing_docs)]

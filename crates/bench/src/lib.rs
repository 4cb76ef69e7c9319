//! Profiling and benchmarking: per-node time, MACs, parameters and memory in whittle's
//! executor; latency percentiles, throughput and peak memory in whittle or ONNX Runtime.
//!
//! - [`profile::profile`]: per-node and per-operator-type figures, bottlenecks, peak
//!   activation memory.
//! - [`bench::bench_batch`]: latency statistics, throughput and peak resident memory of
//!   one batch size in [`bench::Engine::Whittle`] or [`bench::Engine::Ort`].
//! - [`ort_engine::OrtEngine`]: a model in ONNX Runtime (for deployment latency and
//!   reference outputs).
//! - [`latency::measure`]: ONNX Runtime latency of a model before and after compression.
//!
//! Their reports (text, Markdown, HTML) are whittle-pipeline's `report` module.

#![warn(missing_docs)]

pub mod analysis;
pub mod bench;
pub mod error;
pub mod inputs;
pub mod latency;
pub mod ort_engine;
pub mod profile;
pub mod stats;

pub use error::{BenchError, Result};

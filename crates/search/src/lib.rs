//! Searches under measured constraints, on top of whittle-pipeline: the auto-optimizer
//! (`whittle auto`: which combination of compression steps) and architecture search
//! (`whittle nas`: which architecture). Both measure what they constrain (ONNX Runtime
//! latency, bytes, accuracy on real data), journal every trial so a killed run resumes, and
//! always return their best candidate.

pub mod auto;
pub mod nas;
pub mod pareto;

//! Architecture search under measured constraints (`whittle nas`).
//!
//! - [`space`]: the zoo builders' options as genes, scaled to the data's input.
//! - [`shrink`]: the space of a trained model's channel-pruning ratios (`--from`).
//! - [`candidate`]: a genome, its zoo spec and the hash that identifies it.
//! - [`measure`]: size (FP32, INT8), MACs and ONNX Runtime latency before training, and the
//!   limits they are checked against (infeasible candidates never train).
//! - [`evolution`]: proposals from the Pareto front (crossover, mutation).
//! - [`proxy`]: the zero-cost proxy (NASWOT, in log space) that ranks the first generation.
//! - [`recheck`]: the latency limit checked again at the end (90th percentile, taking
//!   turns with a reference model).
//! - [`halving`]: successive halving (short training ranks many, full training few).
//! - [`trials`], [`runner`]: the journals of the work folder and the one job each candidate
//!   runs through, in this process or on a cluster ([`ray`]: Ray's job submission API).
//! - [`search`]: the search, returning a [`NasResult`]; [`report`]: its report.

pub mod candidate;
pub mod error;
pub mod evolution;
pub mod halving;
pub mod measure;
pub mod proxy;
pub mod ray;
pub mod recheck;
pub mod report;
pub mod runner;
pub mod search;
pub mod shrink;
pub mod space;
pub mod trials;

pub use error::{NasError, Result};
pub use measure::Limits;
pub use search::{search, NasResult, Settings, Status, Strategy, WarmStart};
pub use space::Family;

//! `whittle auto`: finds the best composition of compression steps for a target (speed,
//! size, accuracy, balanced) under an accuracy budget and optional latency and size
//! limits, always returning a model. See docs/AUTO.md.
//!
//! - [`config`]: what is asked ([`AutoConfig`]).
//! - [`space`]: the candidates ([`space::Candidate`]) and their pipeline steps.
//! - [`measure`]: the baseline, measured once, and each candidate's measurements.
//! - [`predict`]: predicted gain and accuracy cost, refitted after every trial.
//! - [`timing`]: how long a candidate will take, so that none overruns the budget.
//! - [`trial`]: running and journalling one candidate.
//! - [`search`]: the loop ([`run`]).
//! - [`outcome`]: the result, its JSON and its report.

pub mod config;
pub mod measure;
pub mod outcome;
pub mod predict;
pub mod search;
pub mod space;
pub mod timing;
pub mod trial;

pub use config::{AutoConfig, Budget, Target};
pub use outcome::{Outcome, Status, Summary};
pub use search::run;

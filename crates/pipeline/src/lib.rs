//! whittle's library layer: it composes the techniques of `whittle-passes`, the trainer of
//! `whittle-train` and the measurements of `whittle-bench` into steps that a Rust program,
//! the CLI, the web UI or the auto-optimizer run alike.
//!
//! - [`source`]: where models ([`ModelSource`]: a file or `zoo:`) and data ([`DataSource`]:
//!   a dataset SPEC or `feeds:FILE.npz`) come from.
//! - [`feed`]: [`Feed`], the named inputs of one run, and batching.
//! - [`inspect`]: what a model is made of (`whittle inspect`, the UI's inspect page).
//! - [`eval`]: measuring a model ([`eval::Metrics`]).
//! - [`observer`]: progress and log lines go to an [`Observer`]; the CLI renders them with
//!   indicatif, a UI as events.
//! - [`step`]: one [`step::Step`] per technique, configured by a serde struct and run as
//!   `Step::run(&mut Ctx, Model) -> (Model, StepReport)`.
//! - [`recipe`], [`runner`]: ordered steps read from TOML or YAML, run with a work folder
//!   that keeps each step's model under a content key ([`cache`]) and a [`journal`].

pub mod cache;
pub mod continual;
pub mod continual_compress;
pub mod error;
pub mod eval;
pub mod feed;
pub mod inspect;
pub mod journal;
pub mod nonfinite;
pub mod observer;
pub mod recipe;
pub mod report;
pub mod runner;
pub mod source;
pub mod step;

pub use error::{PipelineError, Result};
pub use feed::Feed;
pub use observer::{Event, Level, Observer, SilentObserver};
pub use source::{DataSource, ModelSource};
pub use step::{Ctx, Step, StepReport};

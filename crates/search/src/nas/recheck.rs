//! The latency limit checked again at the end of a search. A candidate's first
//! measurement (the median of [`crate::nas::measure::MIN_RUNS`] runs) screens it during
//! the search, but a model chosen close to the limit may be over it minutes later, when the
//! machine's load has changed. So the candidates that would train at the last rung, in rank
//! order, and then the trained finalists are measured again, each in one loop taking turns
//! with a reference model, and a model is kept only when its median and its **90th
//! percentile** are within `--max-latency-ms`, the percentile less the tail the machine's
//! load added since the search started: how far the reference's 90th percentile in the
//! same loop rose above its 90th percentile then ([`within_limit`]). On 2 shared cores at
//! load 7.5 a 0.24 ms model's p90 was 0.40 ms, preempted runs rather than its own cost, and
//! a run at load 5 kept it: the raw p90 made the returned model depend on the load.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use whittle_bench::inputs::{random_inputs, resolve_inputs, ShapeRequest};
use whittle_bench::latency::{interleaved, LatencyOptions};
use whittle_ir::Model;
use whittle_pipeline::{Level, Observer};

use crate::nas::error::{At, Result};
use crate::nas::measure::{latency, WARMUP};
use crate::nas::trials::save;

/// Timed runs of each model (and of the reference, in turn) in a re-measurement.
pub const RUNS: usize = 200;

/// The model every re-measurement takes turns with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// The zoo spec of the reference, or the `--from` model's path.
    pub spec: String,
    /// Its median latency when the search started, milliseconds.
    pub latency_ms: f64,
    /// Its 90th percentile then.
    pub latency_p90_ms: f64,
    /// Where it is saved.
    #[serde(skip)]
    pub path: PathBuf,
}

impl Reference {
    /// The zoo's default cnn at the data's input and classes, saved in `work_dir` and
    /// measured now with `threads` ONNX Runtime threads.
    pub fn zoo(input: [usize; 3], classes: usize, threads: usize, work_dir: &Path) -> Result<Self> {
        let [c, h, w] = input;
        let spec = format!("zoo:cnn:input={c}x{h}x{w},classes={classes},seed=0");
        let model = whittle_zoo::build(&spec).at(|| spec.clone())?;
        let path = work_dir.join("reference.onnx");
        save(&model, &path)?;
        Reference::measured(spec, &model, path, threads)
    }

    /// The model at `path` (a `--from` model), measured now.
    pub fn file(model: &Model, path: &Path, threads: usize) -> Result<Self> {
        Reference::measured(
            path.display().to_string(),
            model,
            path.to_path_buf(),
            threads,
        )
    }

    fn measured(spec: String, model: &Model, path: PathBuf, threads: usize) -> Result<Self> {
        let timed = latency(model, &path, threads)?;
        Ok(Reference {
            spec,
            latency_ms: timed.median_ms,
            latency_p90_ms: timed.p90_ms,
            path,
        })
    }
}

/// Which model of a candidate was measured again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Its untrained model, before it may train at the last rung (latency does not
    /// depend on the weights).
    Finalist,
    /// Its model trained at the last rung, before it is returned.
    Result,
}

/// One re-measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recheck {
    /// The candidate's id.
    pub id: String,
    /// Which of its models.
    pub stage: Stage,
    /// Its median latency, milliseconds.
    pub latency_ms: f64,
    /// Its 90th percentile: what the limit is checked against.
    pub latency_p90_ms: f64,
    /// The reference's median in the same loop.
    pub reference_ms: f64,
    /// The reference's 90th percentile in the same loop.
    #[serde(default)]
    pub reference_p90_ms: f64,
    /// The tail the load added since the search started: the reference's 90th percentile
    /// now less its 90th percentile then, at least 0. The limit is checked against
    /// `latency_p90_ms` less this.
    #[serde(default)]
    pub load_tail_ms: f64,
    /// Timed runs of each.
    pub runs: usize,
    /// Whether the median and the 90th percentile less the load's tail are within the
    /// limit (true without one).
    pub passed: bool,
}

/// Whether a model re-measured at `median_ms` and `p90_ms`, while the load added
/// `load_tail_ms` to the reference's 90th percentile, meets `limit_ms`: its median, and its
/// 90th percentile less that tail. A quiet machine (no tail) checks the raw percentile;
/// a busier one forgives the reference's own rise, never more.
pub fn within_limit(median_ms: f64, p90_ms: f64, load_tail_ms: f64, limit_ms: f64) -> bool {
    median_ms <= limit_ms && p90_ms - load_tail_ms.max(0.0) <= limit_ms
}

/// Measures the model at `path` (candidate `id`) again, taking turns with `reference` on
/// the same random sample, and checks it against `limit_ms` ([`within_limit`]).
pub fn recheck(
    id: &str,
    stage: Stage,
    path: &Path,
    reference: &Reference,
    threads: usize,
    limit_ms: Option<f64>,
) -> Result<Recheck> {
    let at = || format!("{}: measuring the latency again", path.display());
    let model = Model::load(path).at(at)?;
    let request = ShapeRequest {
        batch: Some(1),
        shapes: HashMap::new(),
    };
    let feed = resolve_inputs(&model, &request)
        .and_then(|inputs| random_inputs(&inputs, 0))
        .at(at)?;
    let opts = LatencyOptions {
        threads,
        warmup: WARMUP,
        runs: RUNS,
    };
    let latencies = interleaved(&[path, &reference.path], &feed, &opts).at(at)?;
    let (model, now) = (&latencies[0], &latencies[1]);
    let load_tail_ms = (now.p90_ms - reference.latency_p90_ms).max(0.0);
    Ok(Recheck {
        id: id.to_string(),
        stage,
        latency_ms: model.median_ms,
        latency_p90_ms: model.p90_ms,
        reference_ms: now.median_ms,
        reference_p90_ms: now.p90_ms,
        load_tail_ms,
        runs: RUNS,
        passed: limit_ms
            .is_none_or(|limit| within_limit(model.median_ms, model.p90_ms, load_tail_ms, limit)),
    })
}

/// The first `keep` ids of `ranked` (best first) whose re-measurement by `check` passed,
/// each with what `check` returned beside it. Every re-measurement is logged and added to
/// `rechecks`; the ones after the `keep`-th pass are not measured.
pub fn first_passing<T>(
    ranked: impl IntoIterator<Item = String>,
    keep: usize,
    mut check: impl FnMut(&str) -> Result<(Recheck, T)>,
    observer: &dyn Observer,
    rechecks: &mut Vec<Recheck>,
) -> Result<Vec<(String, T)>> {
    let mut kept = Vec::new();
    for id in ranked {
        if kept.len() == keep {
            break;
        }
        let (checked, value) = check(&id)?;
        observer.log(
            if checked.passed {
                Level::Info
            } else {
                Level::Warn
            },
            format!(
                "candidate {id} ({}) measured again: {:.3} ms median, {:.3} ms p90 ({}), \
                 reference {:.3} ms in the same loop (its p90 {:.3} ms above the search's \
                 start)",
                match checked.stage {
                    Stage::Finalist => "untrained",
                    Stage::Result => "trained",
                },
                checked.latency_ms,
                checked.latency_p90_ms,
                if checked.passed {
                    "kept"
                } else {
                    "over the limits: trying the next"
                },
                checked.reference_ms,
                checked.load_tail_ms,
            ),
        );
        if checked.passed {
            kept.push((id, value));
        }
        rechecks.push(checked);
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::within_limit;

    #[test]
    fn the_load_tail_is_forgiven_and_never_more() {
        // Quiet: the raw 90th percentile is checked.
        assert!(within_limit(0.27, 0.29, 0.0, 0.3));
        assert!(!within_limit(0.27, 0.31, 0.0, 0.3));
        // Load 7.5: a 0.24 ms model at 0.40 ms p90 while the reference's rose 0.15 ms.
        assert!(within_limit(0.241, 0.402, 0.15, 0.3));
        assert!(!within_limit(0.241, 0.402, 0.05, 0.3));
        // The median is never forgiven, and a quieter machine adds nothing.
        assert!(!within_limit(0.31, 0.32, 0.2, 0.3));
        assert!(!within_limit(0.27, 0.31, -0.05, 0.3));
    }
}

//! Streaming calibration: runs the float model over the calibration samples and feeds
//! every watched tensor into its observers through the executor's hook.

use std::collections::{HashMap, HashSet};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use whittle_exec::{Executor, RunOptions, Value};
use whittle_ir::Model;

use super::observer::{clip_range, CalibrationMethod, Histogram, MinMax};
use super::scheme::Scheme;
use crate::{bail, PassError, Result};

/// The observers of one tensor.
#[derive(Clone, Debug)]
pub struct Observer {
    /// Running min/max.
    pub minmax: MinMax,
    /// Histogram, when the method needs one.
    pub histogram: Option<Histogram>,
}

impl Observer {
    /// Observers for `method` with `bins` histogram bins.
    pub fn new(method: &CalibrationMethod, bins: usize) -> Self {
        Observer {
            minmax: MinMax::default(),
            histogram: method.needs_histogram().then(|| Histogram::new(bins)),
        }
    }

    /// Folds a batch of values in.
    pub fn update(&mut self, values: &[f32]) {
        self.minmax.update(values);
        if let Some(h) = &mut self.histogram {
            h.update(values);
        }
    }
}

/// The outcome of calibration: a clipping range per watched tensor.
#[derive(Clone, Debug, Serialize)]
pub struct Calibration {
    /// The method used.
    pub method: CalibrationMethod,
    /// Samples seen (sum of the first dimension of the first input over all batches).
    pub samples: usize,
    /// Batches run.
    pub batches: usize,
    /// `[min, max]` clipping range per tensor.
    #[serde(skip)]
    pub ranges: HashMap<String, (f32, f32)>,
}

/// Float values of a value as f32 (None for non-float values).
pub fn float_values(v: &Value) -> Result<Option<Vec<f32>>> {
    if !v.dtype().is_float() {
        return Ok(None);
    }
    Ok(Some(v.to_f32_vec()?))
}

/// Runs `model` on every batch of `samples` and returns the clipping range of each tensor
/// in `watch` under `method` (activation scheme `scheme`, for the MSE method).
pub fn calibrate<I>(
    model: &Model,
    watch: &HashSet<String>,
    samples: I,
    method: CalibrationMethod,
    scheme: &Scheme,
    bins: usize,
    progress: bool,
) -> Result<Calibration>
where
    I: IntoIterator<Item = HashMap<String, Value>>,
{
    let exec = Executor::new(model)?;
    let mut observers: HashMap<String, Observer> = watch
        .iter()
        .map(|n| (n.clone(), Observer::new(&method, bins)))
        .collect();
    let samples = samples.into_iter();
    let bar = progress_bar(progress, samples.size_hint().1, "calibrating")?;
    let (mut count, mut batches) = (0usize, 0usize);
    for feed in samples {
        count += feed
            .values()
            .next()
            .map_or(0, |v| v.shape().first().copied().unwrap_or(1));
        observe_feed(&feed, &mut observers)?;
        let mut hook = |name: &str, _: &whittle_ir::proto::NodeProto, v: &Value| {
            if let Some(obs) = observers.get_mut(name) {
                if let Some(vals) = float_values(v).map_err(to_exec)? {
                    obs.update(&vals);
                }
            }
            Ok(())
        };
        let opts = RunOptions {
            hook: Some(&mut hook),
            ..Default::default()
        };
        exec.run_with(feed, opts)
            .map_err(|e| PassError::Invalid(format!("calibration batch {}: {e}", batches + 1)))?;
        batches += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    if batches == 0 {
        bail!("the calibration data is empty");
    }
    // Graph outputs keep their full range: clipping saturates logits into ties.
    let outputs: HashSet<&str> = model
        .graph()
        .output
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    let ranges = observers
        .iter()
        .map(|(n, o)| {
            let m = if outputs.contains(n.as_str()) {
                CalibrationMethod::MinMax
            } else {
                method
            };
            (
                n.clone(),
                clip_range(&m, &o.minmax, o.histogram.as_ref(), scheme),
            )
        })
        .collect();
    Ok(Calibration {
        method,
        samples: count,
        batches,
        ranges,
    })
}

fn to_exec(e: PassError) -> whittle_exec::ExecError {
    whittle_exec::ExecError::msg(e.to_string())
}

/// Graph inputs are fed, not produced: observe them directly.
fn observe_feed(
    feed: &HashMap<String, Value>,
    observers: &mut HashMap<String, Observer>,
) -> Result<()> {
    for (name, v) in feed {
        if let (Some(obs), Some(vals)) = (observers.get_mut(name), float_values(v)?) {
            obs.update(&vals);
        }
    }
    Ok(())
}

/// A progress bar counting batches (hidden unless `visible`).
pub fn progress_bar(visible: bool, len: Option<usize>, what: &str) -> Result<ProgressBar> {
    if !visible {
        return Ok(ProgressBar::hidden());
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n as u64),
        None => ProgressBar::no_length(),
    };
    let style =
        ProgressStyle::with_template(&format!("{what} {{bar:40}} {{pos}}/{{len}} {{elapsed}}"))
            .map_err(|e| PassError::Invalid(e.to_string()))?;
    bar.set_style(style);
    Ok(bar)
}

//! Streaming calibration: runs the float model over the calibration samples and feeds
//! every watched tensor into its observers through the executor's hook.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use serde::Serialize;
use whittle_exec::{feed_samples, Executor, RunOptions, Value};
use whittle_ir::{Model, NodeAttrs};

use super::config::QuantConfig;
use super::observer::{clip_range, CalibrationMethod, Histogram, MinMax};
use super::verify::Captured;
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

    /// Folds a batch of values in; large batches are split over the CPU's threads (the
    /// counts are exact sums, so the result does not depend on the split).
    pub fn update(&mut self, values: &[f32]) {
        /// Values per parallel piece, and the size from which splitting pays.
        const PIECE: usize = 1 << 14;
        if values.len() < 4 * PIECE {
            self.minmax.update(values);
            if let Some(h) = &mut self.histogram {
                h.update_within(values, &self.minmax);
            }
            return;
        }
        let seen = values
            .par_chunks(PIECE)
            .map(|piece| {
                let mut m = MinMax::default();
                m.update(piece);
                m
            })
            .reduce(MinMax::default, MinMax::merged);
        self.minmax = self.minmax.merged(seen);
        if let Some(h) = &mut self.histogram {
            h.cover(&self.minmax);
            let (limit, bins) = (h.limit, h.counts.len());
            let (counts, zeros) = values
                .par_chunks(PIECE)
                .fold(
                    || (vec![0u64; bins], 0u64),
                    |(mut counts, zeros), piece| {
                        let z = Histogram::count(piece, limit, &mut counts);
                        (counts, zeros + z)
                    },
                )
                .reduce(
                    || (vec![0; bins], 0),
                    |(mut a, za), (b, zb)| {
                        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                        (a, za + zb)
                    },
                );
            h.zeros += zeros;
            h.counts.iter_mut().zip(counts).for_each(|(x, y)| *x += y);
        }
    }

    /// Folds a value in when it is a float tensor (others have no range), and its rows
    /// (the last axis) into the histogram's row weights when it keeps them.
    fn observe(&mut self, v: &Value) -> whittle_exec::Result<()> {
        if v.dtype().is_float() {
            let row_len = v.shape().last().copied().unwrap_or(1);
            v.with_f32(|values| {
                self.update(values);
                if let Some(h) = &mut self.histogram {
                    h.weigh_rows(values, row_len);
                }
            })?;
        }
        Ok(())
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
    /// Float values of the first [`QuantConfig::record_batches`] batches, per batch: the
    /// watched tensors and the graph outputs (a reference for [`super::verify::compare`]).
    #[serde(skip)]
    pub recorded: Vec<Captured>,
}

/// Runs `model` on every batch of `samples` and returns the clipping range of each tensor
/// in `watch` under the configured method, keeping the float values of the first
/// `cfg.record_batches` batches.
pub fn calibrate<I>(
    model: &Model,
    watch: &HashSet<String>,
    samples: I,
    cfg: &QuantConfig,
) -> Result<Calibration>
where
    I: IntoIterator<Item = HashMap<String, Value>>,
{
    let method = cfg.calibration;
    let exec = Executor::new(model)?;
    // MSE counts the errors of a tensor that a LayerNormalization normalizes relative to
    // each row, as the normalization sees them (see `RowWeights`).
    let normalized = match method {
        CalibrationMethod::Mse => normalized_rows(model)?,
        _ => HashMap::new(),
    };
    let mut observers: HashMap<String, Observer> = watch
        .iter()
        .map(|n| {
            let mut obs = Observer::new(&method, cfg.histogram_bins);
            if let Some(&epsilon) = normalized.get(n) {
                obs.histogram = obs.histogram.map(|h| h.weighing_rows(epsilon));
            }
            (n.clone(), obs)
        })
        .collect();
    let outputs: HashSet<&str> = model
        .graph()
        .output
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    // Recorded besides the watched tensors: what else quantization changes, the graph
    // outputs and the rows read from embedding tables.
    let mut also_record = outputs.clone();
    let nodes = &model.graph().node;
    for i in super::gather::eligible(model, &cfg.exclude)? {
        also_record.extend(nodes[i].output.iter().map(String::as_str));
    }
    let mut recorded = Vec::new();
    let (mut count, mut batches) = (0usize, 0usize);
    for feed in samples {
        let (first, size) = (count, feed_samples(&feed));
        count += size;
        let at = |place: NonFinite| place.error(first, batches + 1);
        for (name, v) in &feed {
            if let Some(place) = NonFinite::find(name, v, size)? {
                return Err(at(place));
            }
        }
        observe_feed(&feed, &mut observers)?;
        let mut record = (batches < cfg.record_batches).then(Captured::new);
        // The first watched tensor holding a non-finite value, in execution order.
        let mut bad = None;
        let mut hook = |name: &str, _: &whittle_ir::proto::NodeProto, v: &Value| {
            let observer = observers.get_mut(name);
            if let Some(kept) = record.as_mut() {
                if v.dtype().is_float() && (observer.is_some() || also_record.contains(name)) {
                    kept.insert(name.to_string(), v.clone());
                }
            }
            match observer {
                Some(_) if bad.is_some() => Ok(()),
                Some(obs) => match NonFinite::find(name, v, size)? {
                    Some(place) => {
                        bad = Some(place);
                        Ok(())
                    }
                    None => obs.observe(v),
                },
                None => Ok(()),
            }
        };
        let opts = RunOptions {
            hook: Some(&mut hook),
            ..Default::default()
        };
        exec.run_with(feed, opts)
            .map_err(|e| PassError::Invalid(format!("calibration batch {}: {e}", batches + 1)))?;
        if let Some(place) = bad {
            return Err(at(place));
        }
        recorded.extend(record);
        batches += 1;
    }
    if batches == 0 {
        bail!("the calibration data is empty");
    }
    // Graph outputs keep their full range: clipping saturates logits into ties.
    let scheme = cfg.activation_scheme();
    // The entropy and MSE searches take milliseconds per tensor: one tensor per thread.
    let ranges = observers
        .par_iter()
        .map(|(n, o)| {
            let m = if outputs.contains(n.as_str()) {
                CalibrationMethod::MinMax
            } else {
                method
            };
            (
                n.clone(),
                clip_range(&m, &o.minmax, o.histogram.as_ref(), &scheme),
            )
        })
        .collect();
    Ok(Calibration {
        method,
        samples: count,
        batches,
        ranges,
        recorded,
    })
}

/// Where a calibration tensor first holds a value that is not finite. A range over NaN
/// or infinity is meaningless (min/max skip NaN, so an all-NaN input would calibrate to a
/// made-up scale of 1 and pass verification against equally broken float outputs).
#[derive(Debug)]
struct NonFinite {
    /// The tensor.
    tensor: String,
    /// The offending value.
    value: f32,
    /// Its sample within the batch, when the tensor's first axis is the batch's.
    sample: Option<usize>,
}

impl NonFinite {
    /// The first non-finite element of `v`, if any, in a batch of `batch` samples.
    fn find(name: &str, v: &Value, batch: usize) -> whittle_exec::Result<Option<NonFinite>> {
        if !v.dtype().is_float() {
            return Ok(None);
        }
        let per_sample = v.numel() / batch.max(1);
        let batched = v.shape().first() == Some(&batch) && per_sample > 0;
        v.with_f32(|xs| {
            let at = xs.iter().position(|x| !x.is_finite())?;
            Some(NonFinite {
                tensor: name.to_string(),
                value: xs[at],
                sample: batched.then(|| at / per_sample),
            })
        })
    }

    /// The error naming the tensor, the batch and (when known) the sample: `first` is
    /// the number of samples before this batch.
    fn error(self, first: usize, batch: usize) -> PassError {
        let sample = self
            .sample
            .map_or(String::new(), |s| format!(" in sample {}", first + s + 1));
        PassError::Invalid(format!(
            "calibration batch {batch}: tensor '{}' holds {}{sample}; non-finite values give \
             no usable range: check the calibration data (and the model's weights)",
            self.tensor, self.value
        ))
    }
}

/// The tensors whose rows (last axis) a LayerNormalization over the last axis normalizes,
/// as its input or through the Add/Sub nodes before it (bias, residual), with that
/// normalization's epsilon.
fn normalized_rows(model: &Model) -> Result<HashMap<String, f32>> {
    let nodes = &model.graph().node;
    let producer: HashMap<&str, &whittle_ir::proto::NodeProto> = nodes
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let mut pending = Vec::new();
    for n in nodes.iter().filter(|n| n.op_type == "LayerNormalization") {
        if n.int_or("axis", -1)? == -1 {
            let epsilon = n.float_or("epsilon", 1e-5)?;
            pending.extend(n.input.first().map(|x| (x.as_str(), epsilon)));
        }
    }
    let mut rows = HashMap::new();
    while let Some((name, epsilon)) = pending.pop() {
        if rows.insert(name.to_string(), epsilon).is_some() {
            continue;
        }
        if let Some(p) = producer.get(name) {
            if matches!(p.op_type.as_str(), "Add" | "Sub") {
                pending.extend(p.input.iter().map(|x| (x.as_str(), epsilon)));
            }
        }
    }
    Ok(rows)
}

/// Graph inputs are fed, not produced: observe them directly.
fn observe_feed(
    feed: &HashMap<String, Value>,
    observers: &mut HashMap<String, Observer>,
) -> Result<()> {
    for (name, v) in feed {
        if let Some(obs) = observers.get_mut(name) {
            obs.observe(v)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::util::testing::{model, node, value};
    use whittle_ir::attr::make;
    use whittle_ir::TensorData;

    /// `y = op(x + b)` over `x: [100, 64]`, with `op` LayerNormalization (epsilon 0.01)
    /// or Relu.
    fn normalized_or_not(op: &str) -> Model {
        let mut last = node(op, &["s", "gamma", "b"], &["y"]);
        if op == "LayerNormalization" {
            last.attribute = vec![make::float("epsilon", 0.01)];
        } else {
            last.input.truncate(1);
        }
        let vector = |name: &str, v: f32| {
            TensorData::from_slice(vec![64], &[v; 64])
                .unwrap()
                .to_proto(name)
        };
        model(
            vec![node("Add", &["x", "b"], &["s"]), last],
            vec![value("x", &[100, 64])],
            vec![value("y", &[100, 64])],
            vec![vector("b", 0.0), vector("gamma", 1.0)],
        )
    }

    #[test]
    fn mse_weighs_rows_only_where_a_layer_norm_normalizes_them() {
        let ln = normalized_or_not("LayerNormalization");
        let rows = normalized_rows(&ln).unwrap();
        let names: HashSet<&str> = rows.keys().map(String::as_str).collect();
        assert_eq!(names, HashSet::from(["s", "x", "b"]));
        assert!(rows.values().all(|&e| e == 0.01));
        assert!(normalized_rows(&normalized_or_not("Relu"))
            .unwrap()
            .is_empty());
        // Values over [-1, 1] and one massive activation of 100 in the first row (the
        // case of `observer::tests::row_weights_let_mse_clip_...`): MSE keeps it in
        // absolute terms and clips it where a LayerNormalization sees the rows.
        let mut values: Vec<f32> = (0..6400)
            .map(|i| (i * 37 % 201) as f32 / 100.0 - 1.0)
            .collect();
        values[5] = 100.0;
        let x = Value::try_from(&TensorData::from_slice(vec![100, 64], &values).unwrap()).unwrap();
        let cfg = QuantConfig {
            calibration: CalibrationMethod::Mse,
            ..Default::default()
        };
        let watch = HashSet::from(["x".to_string(), "s".to_string()]);
        let range_with = |cfg: &QuantConfig, op: &str, tensor: &str| {
            let feed = HashMap::from([("x".to_string(), x.clone())]);
            calibrate(&normalized_or_not(op), &watch, [feed], cfg)
                .unwrap()
                .ranges[tensor]
        };
        let range = |op: &str, tensor: &str| range_with(&cfg, op, tensor);
        // The other calibrators keep their histograms: the 99.9th percentile clips.
        let percentile = QuantConfig {
            calibration: CalibrationMethod::Percentile { percentile: 99.9 },
            ..Default::default()
        };
        assert!(range_with(&percentile, "LayerNormalization", "x").1 < 1.5);
        for tensor in ["x", "s"] {
            let (kept, clipped) = (range("Relu", tensor), range("LayerNormalization", tensor));
            assert!(kept.1 > 95.0, "{tensor}: {kept:?}");
            assert!((15.0..30.0).contains(&clipped.1), "{tensor}: {clipped:?}");
        }
    }

    #[test]
    fn split_updates_count_exactly_like_one_pass() {
        // Large enough to be split over threads, with values outside the first range and
        // non-finite ones.
        let values: Vec<f32> = (0..300_000i64)
            .map(|i| match i % 1000 {
                7 => f32::NAN,
                11 => f32::INFINITY,
                _ => ((i * 7919) % 2001) as f32 / 100.0 - 10.0,
            })
            .collect();
        // A first, narrower batch: the split update must grow the histogram's range.
        let narrow: Vec<f32> = values[..1000].iter().map(|v| v * 0.1).collect();
        let method = CalibrationMethod::Percentile { percentile: 99.9 };
        let mut split = Observer::new(&method, 2048);
        split.update(&narrow);
        split.update(&values);
        let mut serial = Observer::new(&method, 2048);
        for piece in [&narrow[..], &values[..]] {
            serial.minmax.update(piece);
            let h = serial.histogram.as_mut().unwrap();
            h.update_within(piece, &serial.minmax);
        }
        assert_eq!(split.minmax, serial.minmax);
        assert_eq!(split.histogram, serial.histogram);
        assert_eq!(split.histogram.unwrap().total(), 1000 - 2 + 300_000 - 600);
    }
}

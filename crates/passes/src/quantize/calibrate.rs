//! Streaming calibration: runs the float model over the calibration samples and feeds
//! every watched tensor into its observers through the executor's hook.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;
use whittle_exec::{feed_samples, Executor, RunOptions, Value};
use whittle_ir::proto::NodeProto;
use whittle_ir::{Model, NodeAttrs};

use super::config::QuantConfig;
use super::observer::{clip_range, CalibrationMethod, Histogram, MinMax};
use super::verify::{Captured, FloatReference};
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

    /// Folds a batch of values in when every one is finite and returns whether they were
    /// (the observer is unchanged otherwise). Large batches are split over the CPU's
    /// threads (the counts are exact sums, so the result does not depend on the split).
    pub fn update(&mut self, values: &[f32]) -> bool {
        /// Values per parallel piece, and the size from which splitting pays.
        const PIECE: usize = 1 << 14;
        let mut seen = self.minmax;
        let finite = if values.len() < 4 * PIECE {
            seen.update_finite(values)
        } else {
            let pieces = values
                .par_chunks(PIECE)
                .map(|piece| {
                    let mut m = MinMax::default();
                    m.update_finite(piece).then_some(m)
                })
                .collect::<Option<Vec<MinMax>>>();
            pieces.is_some_and(|ms| {
                seen = ms.into_iter().fold(seen, MinMax::merged);
                true
            })
        };
        if !finite {
            return false;
        }
        self.minmax = seen;
        if let Some(h) = &mut self.histogram {
            if values.len() < 4 * PIECE {
                h.update_within(values, &self.minmax);
                return true;
            }
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
        true
    }

    /// Folds in the float `values` of a tensor of `shape` (rows, the last axis, go into
    /// the histogram's row weights when it keeps them); returns whether all were finite.
    fn observe(&mut self, shape: &[usize], values: &[f32]) -> bool {
        if !self.update(values) {
            return false;
        }
        if let Some(h) = &mut self.histogram {
            h.weigh_rows(values, shape.last().copied().unwrap_or(1));
        }
        true
    }
}

/// Samples per forward pass of calibration: batches of the calibration data are cut into
/// runs this long when calibrating with min/max (models whose inputs fix the first
/// dimension excepted). The executor's buffers (an encoder's attention scores and
/// feed-forward activations, every layer) grow with the run. On MiniLM-L3 (128 samples of
/// 128 tokens) runs of 8 peaked 40 MiB lower than runs of 32 and were the fastest of 4, 8,
/// 16 and 32, measured when the first run at a shape still went node by node (it shrank
/// with the run). Measured again once plans came from static shape inference (6134735), on
/// the 6-layer encoder of bench/quantize_vs_ort.py (128 sentences of 128 tokens, runs taking
/// turns, load 3): runs of 8, 16 and 32 took 5.8-6.1, 5.7-5.8 and 6.1 CPU seconds and peaked
/// at 384, 419-435 and 553 MiB (ONNX Runtime's quantizer: 542), so 8 stays. Ranges can move
/// in the last bit with the run length (at 32 samples 17-20 of MiniLM's 68 scales did,
/// 9e1ae8a): sums over other row counts round differently.
pub const RUN_SAMPLES: usize = 8;

/// The outcome of calibration: a clipping range per watched tensor.
#[derive(Clone, Debug, Serialize)]
pub struct Calibration {
    /// The method used.
    pub method: CalibrationMethod,
    /// Samples seen (sum of the first dimension of the first input over all batches).
    pub samples: usize,
    /// Batches run.
    pub batches: usize,
    /// Forward passes run: the batches cut into runs of at most [`RUN_SAMPLES`].
    pub runs: usize,
    /// `[min, max]` clipping range per tensor.
    #[serde(skip)]
    pub ranges: HashMap<String, (f32, f32)>,
    /// Float values of the first [`QuantConfig::record_samples`] samples (all of them when
    /// there are fewer), spilled to a temporary file, for
    /// [`super::verify::compare_recorded`]: the values quantization changes
    /// ([`super::changed_tensors`]). `None` when none were asked for, or
    /// when a run would have had to be cut where the method runs whole batches.
    #[serde(skip)]
    pub reference: Option<Arc<FloatReference>>,
}

/// Runs `model` on every batch of `samples` and returns the clipping range of each tensor
/// in `watch` under the configured method, spilling the float values in `record` of the
/// first `cfg.record_samples` samples (what verification compares, see
/// [`super::changed_tensors`]).
pub fn calibrate<I>(
    model: &Model,
    watch: &HashSet<String>,
    record: &HashSet<String>,
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
    let observers: HashMap<String, Observer> = watch
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
    let mut state = Watch {
        observers,
        record,
        reference: match cfg.record_samples {
            0 => None,
            _ => Some(FloatReference::new()?),
        },
        spilling: None,
        bad: None,
    };
    // A histogram takes its first range from the first run and doubles it as later runs
    // exceed it, so shorter runs bin differently: histogram methods keep whole batches.
    let most = match method.needs_histogram() {
        true => usize::MAX,
        false => super::verify::run_limit(&exec, RUN_SAMPLES),
    };
    let (mut count, mut batches, mut passes) = (0usize, 0usize, 0usize);
    for feed in samples {
        batches += 1;
        for run in runs_to(&feed, most, cfg.record_samples.saturating_sub(count))? {
            passes += 1;
            let (first, size) = (count, feed_samples(&run));
            count += size;
            let at = |place: NonFinite| place.error(first, batches);
            state.spilling = None;
            if first < cfg.record_samples {
                match count <= cfg.record_samples {
                    true => state.spilling = state.reference.as_mut().map(|r| r.start_run(&run)),
                    // The spilled samples would end inside this run: none are kept.
                    false => state.reference = None,
                }
            }
            state.observe_feed(&run, size)?;
            if let Some(place) = state.bad.take() {
                return Err(at(place));
            }
            // On a pool worker, so the run's parallel kernels fork and join inside the pool
            // instead of waking it from this thread each time (the hooks stay on that worker).
            rayon::scope(|_| {
                let cell = RefCell::new(&mut state);
                let mut hook = |name: &str, _: &NodeProto, v: &Value| -> whittle_exec::Result<()> {
                    if cell.borrow().wants(name) {
                        let mut w = cell.borrow_mut();
                        v.with_f32(|xs| {
                            w.spill(name, xs)?;
                            w.see(name, v.shape(), xs, size);
                            Ok::<_, whittle_exec::ExecError>(())
                        })??;
                    }
                    Ok(())
                };
                let mut borrowed = |name: &str,
                                    _: &NodeProto,
                                    shape: &[usize],
                                    xs: &[f32]|
                 -> whittle_exec::Result<()> {
                    if cell.borrow().wants(name) {
                        let mut w = cell.borrow_mut();
                        w.spill(name, xs)?;
                        w.see(name, shape, xs, size);
                    }
                    Ok(())
                };
                let opts = RunOptions {
                    hook: Some(&mut hook),
                    borrowed: Some(&mut borrowed),
                    floats_only: true,
                    ..Default::default()
                };
                exec.run_with(run, opts)
            })
            .map_err(|e| PassError::Invalid(format!("calibration batch {batches}: {e}")))?;
            if let Some(place) = state.bad.take() {
                return Err(at(place));
            }
        }
    }
    if batches == 0 {
        bail!("the calibration data is empty");
    }
    let mut reference = state.reference.take();
    if let Some(r) = reference.as_mut() {
        r.finish()?;
    }
    // Graph outputs keep their full range: clipping saturates logits into ties.
    let scheme = cfg.activation_scheme();
    // The entropy and MSE searches take milliseconds per tensor: one tensor per thread.
    let ranges = state
        .observers
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
        runs: passes,
        ranges,
        reference: reference.map(Arc::new),
    })
}

/// `feed` cut into calibration runs of at most `most` samples, and also after its first
/// `edge` samples when they end inside it, it may be cut (`most` is not unlimited) and
/// its inputs all hold the samples on their first axis (see
/// [`QuantConfig::record_samples`]).
fn runs_to(feed: &Captured, most: usize, edge: usize) -> Result<Vec<Captured>> {
    let n = feed_samples(feed);
    let batched = feed.values().all(|v| v.shape().first() == Some(&n));
    if most == usize::MAX || edge == 0 || edge >= n || !batched {
        return super::verify::runs_of(feed, most);
    }
    let rows = |start: usize, len: usize| -> whittle_exec::Result<Captured> {
        feed.iter()
            .map(|(name, v)| {
                Ok((
                    name.clone(),
                    v.with_tensor(v.tensor().narrow(0, start, len)?)?,
                ))
            })
            .collect()
    };
    let mut runs = super::verify::runs_of(&rows(0, edge)?, most)?;
    runs.extend(super::verify::runs_of(&rows(edge, n - edge)?, most)?);
    Ok(runs)
}

/// What calibration keeps while the model runs: the observers, the spill of the float
/// values of the first samples, and the first watched tensor found holding a non-finite value.
struct Watch<'a> {
    /// Observers by tensor name.
    observers: HashMap<String, Observer>,
    /// The values spilled (observed or not).
    record: &'a HashSet<String>,
    /// Where the float values of the first samples are spilled.
    reference: Option<FloatReference>,
    /// The index of this run in `reference`, when it is spilled.
    spilling: Option<usize>,
    /// The first watched tensor holding a non-finite value, in execution order.
    bad: Option<NonFinite>,
}

impl Watch<'_> {
    /// Whether the value `name` is observed or spilled (nothing is, after a non-finite
    /// value: the run fails).
    fn wants(&self, name: &str) -> bool {
        self.bad.is_none()
            && (self.observers.contains_key(name)
                || (self.spilling.is_some() && self.record.contains(name)))
    }

    /// Spills the float values `xs` of `name` when this run is spilled and `name` is recorded.
    fn spill(&mut self, name: &str, xs: &[f32]) -> whittle_exec::Result<()> {
        if !self.record.contains(name) {
            return Ok(());
        }
        match (self.spilling, self.reference.as_mut()) {
            (Some(run), Some(reference)) => reference.put(run, name, xs).map_err(|e| {
                whittle_exec::ExecError::msg(format!("verification's scratch file: {e}"))
            }),
            _ => Ok(()),
        }
    }

    /// Folds the values `xs` of tensor `name` (of `shape`, in a run of `batch` samples)
    /// into its observer, or notes where they are not finite.
    fn see(&mut self, name: &str, shape: &[usize], xs: &[f32], batch: usize) {
        if let Some(obs) = self.observers.get_mut(name) {
            if !obs.observe(shape, xs) {
                self.bad = NonFinite::find(name, shape, xs, batch);
            }
        }
    }

    /// Graph inputs are fed, not produced: observes them directly, and checks the float
    /// ones nothing observes for non-finite values too.
    fn observe_feed(
        &mut self,
        feed: &HashMap<String, Value>,
        batch: usize,
    ) -> whittle_exec::Result<()> {
        for (name, v) in feed.iter().filter(|(_, v)| v.dtype().is_float()) {
            v.with_f32(|xs| match self.observers.contains_key(name) {
                true => self.see(name, v.shape(), xs, batch),
                false => self.bad = NonFinite::find(name, v.shape(), xs, batch),
            })?;
            if self.bad.is_some() {
                break;
            }
        }
        Ok(())
    }
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
    /// The first non-finite element of `xs`, the values of tensor `name` of `shape`, if
    /// any, in a run of `batch` samples.
    fn find(name: &str, shape: &[usize], xs: &[f32], batch: usize) -> Option<NonFinite> {
        let per_sample = xs.len() / batch.max(1);
        let batched = shape.first() == Some(&batch) && per_sample > 0;
        let at = xs.iter().position(|x| !x.is_finite())?;
        Some(NonFinite {
            tensor: name.to_string(),
            value: xs[at],
            sample: batched.then(|| at / per_sample),
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

#[cfg(test)]
mod tests {
    use super::super::verify;
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
            calibrate(&normalized_or_not(op), &watch, &HashSet::new(), [feed], cfg)
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
    fn minmax_runs_batches_in_runs_of_run_samples_where_the_batch_axis_is_free() {
        // y = Relu(x - 10) over x: [N, 4]: every run's values reach the observers, the
        // error of a non-finite value names its sample across runs.
        let batch_of = |first: &str| {
            let dims = vec![
                whittle_ir::Dim::Symbol(first.into()),
                whittle_ir::Dim::Known(4),
            ];
            let x = whittle_ir::TensorType {
                dtype: Some(whittle_ir::DataType::Float),
                dims: Some(dims),
            };
            let shift = TensorData::from_slice(vec![1], &[10.0f32])
                .unwrap()
                .to_proto("ten");
            model(
                vec![
                    node("Sub", &["x", "ten"], &["s"]),
                    node("Relu", &["s"], &["y"]),
                ],
                vec![x.to_value_info("x")],
                vec![x.to_value_info("y")],
                vec![shift],
            )
        };
        let free = batch_of("N");
        let rows = 3 * RUN_SAMPLES + 2;
        let mut xs: Vec<f32> = (0..rows * 4).map(|i| i as f32).collect();
        let feed = |xs: &[f32]| {
            let x = TensorData::from_slice(vec![rows, 4], xs).unwrap();
            HashMap::from([("x".to_string(), Value::try_from(&x).unwrap())])
        };
        let watch = HashSet::from(["x".to_string(), "s".to_string()]);
        let cfg = QuantConfig::default();
        let exec = Executor::new(&free).unwrap();
        assert_eq!(verify::run_limit(&exec, RUN_SAMPLES), RUN_SAMPLES);
        let c = calibrate(&free, &watch, &HashSet::new(), [feed(&xs)], &cfg).unwrap();
        let last = (rows * 4 - 1) as f32;
        assert_eq!((c.samples, c.batches, c.runs), (rows, 1, 4));
        assert_eq!(c.ranges["x"], (0.0, last));
        assert_eq!(c.ranges["s"], (-10.0, last - 10.0));
        // Histogram methods keep whole batches (a shorter first run would bin otherwise).
        let percentile = QuantConfig {
            calibration: CalibrationMethod::Percentile { percentile: 99.9 },
            ..Default::default()
        };
        let c = calibrate(&free, &watch, &HashSet::new(), [feed(&xs)], &percentile).unwrap();
        assert_eq!((c.batches, c.runs), (1, 1));
        // The last run holds samples 25-26: a NaN in sample 26 is found there.
        xs[(rows - 1) * 4 + 2] = f32::NAN;
        let err = calibrate(&free, &watch, &HashSet::new(), [feed(&xs)], &cfg).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("batch 1: tensor 'x' holds NaN in sample {rows}")),
            "{msg}"
        );
        // A fixed first dimension is not cut.
        let fixed = normalized_or_not("Relu");
        let exec = Executor::new(&fixed).unwrap();
        assert_eq!(verify::run_limit(&exec, RUN_SAMPLES), usize::MAX);
        let x = TensorData::from_slice(vec![100, 64], &[0.5f32; 6400]).unwrap();
        let feed = HashMap::from([("x".to_string(), Value::try_from(&x).unwrap())]);
        let watch = HashSet::from(["x".to_string()]);
        let c = calibrate(&fixed, &watch, &HashSet::new(), [feed], &cfg).unwrap();
        assert_eq!((c.batches, c.runs), (1, 1));
    }

    #[test]
    fn split_updates_count_exactly_like_one_pass() {
        // Large enough to be split over threads, with values outside the first range.
        let mut values: Vec<f32> = (0..300_000i64)
            .map(|i| ((i * 7919) % 2001) as f32 / 100.0 - 10.0)
            .collect();
        // A first, narrower batch: the split update must grow the histogram's range.
        let narrow: Vec<f32> = values[..1000].iter().map(|v| v * 0.1).collect();
        let method = CalibrationMethod::Percentile { percentile: 99.9 };
        let mut split = Observer::new(&method, 2048);
        assert!(split.update(&narrow) && split.update(&values));
        let mut serial = Observer::new(&method, 2048);
        for piece in [&narrow[..], &values[..]] {
            serial.minmax.update(piece);
            let h = serial.histogram.as_mut().unwrap();
            h.update_within(piece, &serial.minmax);
        }
        assert_eq!(split.minmax, serial.minmax);
        assert_eq!(split.histogram, serial.histogram);
        assert_eq!(split.histogram.as_ref().unwrap().total(), 1000 + 300_000);
        // One non-finite value anywhere, split or not: refused, nothing counted.
        values[250_123] = f32::NAN;
        let before = split.clone();
        assert!(!split.update(&values));
        assert!(!split.update(&[1.0, f32::INFINITY]));
        assert_eq!(split.minmax, before.minmax);
        assert_eq!(split.histogram, before.histogram);
    }
}

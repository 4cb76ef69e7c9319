//! Verification: float and quantized models on the same samples, compared tensor by
//! tensor (SQNR, cosine) and output by output.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use serde::Serialize;
use whittle_exec::{feed_samples, Executor, RunOptions, Value};
use whittle_ir::graph::GraphEdit;
use whittle_ir::proto::NodeProto;
use whittle_ir::Model;

use crate::Result;

/// Cosine similarity the graph outputs must reach for verification to pass.
pub const OUTPUT_COSINE_TOLERANCE: f64 = 0.99;

/// Error of one tensor: quantized model against float model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorError {
    /// Tensor name.
    pub name: String,
    /// Signal-to-quantization-noise ratio, dB (`10 log10(|x|^2 / |x - q|^2)`).
    pub sqnr_db: f64,
    /// Cosine similarity of the flattened tensors.
    pub cosine: f64,
    /// Largest absolute difference.
    pub max_abs_diff: f64,
}

/// Sums that give SQNR and cosine in one pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorSums {
    xx: f64,
    qq: f64,
    xq: f64,
    dd: f64,
    max_abs: f64,
}

impl ErrorSums {
    /// Folds a pair of equally long slices in (reference `x`, approximation `q`). Large
    /// tensors are summed in pieces on all cores, then added in order, so the result does
    /// not depend on the thread count.
    pub fn add(&mut self, x: &[f32], q: &[f32]) {
        /// Values per parallel piece, and the size from which splitting pays.
        const PIECE: usize = 1 << 16;
        let of = |x: &[f32], q: &[f32]| {
            whittle_exec::kernels::dispatch(
                #[inline(always)]
                || ErrorSums::of(x, q),
            )
        };
        if x.len() <= PIECE {
            self.merge(of(x, q));
            return;
        }
        let pieces: Vec<ErrorSums> = x
            .par_chunks(PIECE)
            .zip(q.par_chunks(PIECE))
            .map(|(x, q)| of(x, q))
            .collect();
        pieces.into_iter().for_each(|p| self.merge(p));
    }

    /// The sums of one slice pair: f32 lanes over blocks of `BLOCK` values (so the loop
    /// vectorises, with the CPU's widest vectors under [`whittle_exec::kernels::dispatch`]),
    /// each block added to f64 totals (so long tensors keep their precision).
    #[inline(always)]
    fn of(x: &[f32], q: &[f32]) -> ErrorSums {
        const LANES: usize = 16;
        const BLOCK: usize = 32 * LANES;
        let mut sums = ErrorSums::default();
        for (xb, qb) in x.chunks(BLOCK).zip(q.chunks(BLOCK)) {
            let mut lanes = [[0f32; LANES]; 5];
            let (xs, qs) = (xb.chunks_exact(LANES), qb.chunks_exact(LANES));
            let rest = (xs.remainder(), qs.remainder());
            for (a, b) in xs.zip(qs) {
                for k in 0..LANES {
                    let d = a[k] - b[k];
                    lanes[0][k] += a[k] * a[k];
                    lanes[1][k] += b[k] * b[k];
                    lanes[2][k] += a[k] * b[k];
                    lanes[3][k] += d * d;
                    let e = d.abs();
                    lanes[4][k] = if e > lanes[4][k] { e } else { lanes[4][k] };
                }
            }
            let total = |l: &[f32; LANES]| l.iter().map(|&v| f64::from(v)).sum::<f64>();
            sums.xx += total(&lanes[0]);
            sums.qq += total(&lanes[1]);
            sums.xq += total(&lanes[2]);
            sums.dd += total(&lanes[3]);
            let block_max = lanes[4].iter().fold(0f32, |m, &v| m.max(v));
            sums.max_abs = sums.max_abs.max(f64::from(block_max));
            for (&a, &b) in rest.0.iter().zip(rest.1) {
                sums.add_pair(a, b);
            }
        }
        sums
    }

    /// Folds one pair in, in f64.
    fn add_pair(&mut self, a: f32, b: f32) {
        let (a, b) = (f64::from(a), f64::from(b));
        self.xx += a * a;
        self.qq += b * b;
        self.xq += a * b;
        self.dd += (a - b) * (a - b);
        self.max_abs = self.max_abs.max((a - b).abs());
    }

    /// Adds another set of sums.
    fn merge(&mut self, other: ErrorSums) {
        self.xx += other.xx;
        self.qq += other.qq;
        self.xq += other.xq;
        self.dd += other.dd;
        self.max_abs = self.max_abs.max(other.max_abs);
    }

    /// Sum of the squared differences (divided by the element count: the MSE).
    pub fn squared_error(&self) -> f64 {
        self.dd
    }

    /// The error figures of `name`.
    pub fn finish(&self, name: &str) -> TensorError {
        let sqnr_db = if self.dd == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.xx / self.dd).log10()
        };
        let norm = (self.xx * self.qq).sqrt();
        let cosine = if norm == 0.0 {
            f64::from(u8::from(self.dd == 0.0))
        } else {
            self.xq / norm
        };
        TensorError {
            name: name.to_string(),
            sqnr_db,
            cosine,
            // `max` drops NaN: a non-finite difference shows in the squared sum instead.
            max_abs_diff: if self.dd.is_finite() {
                self.max_abs
            } else {
                f64::INFINITY
            },
        }
    }
}

/// Outcome of verification.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// Samples compared.
    pub samples: usize,
    /// Graph outputs.
    pub outputs: Vec<TensorError>,
    /// Intermediate tensors present in both models, worst SQNR first.
    pub tensors: Vec<TensorError>,
    /// Required output cosine.
    pub cosine_tolerance: f64,
    /// Whether every output met the tolerance.
    pub passed: bool,
}

/// Tensors read only by a Relu: their quantized form is clipped at 0 on purpose (the Relu
/// is folded into the range), so the Relu's output is compared instead.
fn relu_inputs(model: &Model) -> HashSet<String> {
    let consumers = model.graph().consumers();
    let g = model.graph();
    consumers
        .into_iter()
        .filter(|(_, users)| users.iter().all(|&u| g.node[u].op_type == "Relu"))
        .map(|(name, _)| name)
        .collect()
}

/// Tensors worth comparing: the graph outputs and every value the quantized model computes
/// differently, i.e. whose producer has another op type or other inputs (quantized nodes,
/// nodes reading dequantized or cast values). Values downstream of those carry the same
/// error and are not captured, which keeps verification cheap on large models.
fn changed_values(float: &Model, quant: &Model) -> HashSet<String> {
    let (fg, qg) = (float.graph(), quant.graph());
    let quant_producers = &qg.producers();
    let changed = fg.node.iter().flat_map(|node| {
        node.output.iter().filter(move |name| {
            quant_producers.get(*name).is_none_or(|&i| {
                let q = &qg.node[i];
                q.op_type != node.op_type || q.input != node.input || q.domain != node.domain
            })
        })
    });
    changed
        .chain(fg.output.iter().map(|o| &o.name))
        .cloned()
        .collect()
}

/// Samples per verification run: calibration's runs, whose shapes the float model's
/// plan may already serve.
pub const RUN_SAMPLES: usize = super::calibrate::RUN_SAMPLES;

/// Runs both models on `batches` and compares the values [`changed_values`] picks: the
/// float model first on every sample, its values going to an unlinked temporary file
/// ([`FloatReference`]), and the quantized model after it, so that at most one model's
/// executor, plan and buffers are held at a time. Both run in runs of at most
/// [`RUN_SAMPLES`] samples on the planned path. Static quantization verifies on the
/// values calibration spilled instead ([`compare_recorded`]), without the float run.
pub fn compare(
    float: &Model,
    quant: &Model,
    batches: &[HashMap<String, Value>],
) -> Result<Verification> {
    let watched = changed_values(float, quant);
    let mut sums: HashMap<String, ErrorSums> = HashMap::new();
    let samples = batches.iter().map(feed_samples).sum();
    let mut reference = FloatReference::new()?;
    {
        let fx = Executor::new(float)?;
        let most = run_limit(&fx, RUN_SAMPLES);
        for batch in batches {
            for feed in runs_of(batch, most)? {
                let run = reference.start_run(&feed);
                capture(
                    &fx,
                    &feed,
                    &watched,
                    Reference::Spill(&mut reference, run),
                    &mut sums,
                )?;
            }
        }
    }
    reference.finish()?;
    compare_runs(quant, &reference, &watched, &mut sums)?;
    Ok(verification(float, sums, samples))
}

/// Runs the quantized model on the runs of `reference` (float values recorded by
/// calibration, see [`super::Calibration::reference`]) and compares the values
/// [`changed_values`] picks that the reference holds: the float model does not run.
pub fn compare_recorded(
    float: &Model,
    quant: &Model,
    reference: &FloatReference,
) -> Result<Verification> {
    let watched = changed_values(float, quant);
    let mut sums: HashMap<String, ErrorSums> = HashMap::new();
    compare_runs(quant, reference, &watched, &mut sums)?;
    Ok(verification(float, sums, reference.samples()))
}

/// Runs `quant` on every run of `reference`, folding the errors of `watched` into `sums`.
fn compare_runs(
    quant: &Model,
    reference: &FloatReference,
    watched: &HashSet<String>,
    sums: &mut HashMap<String, ErrorSums>,
) -> Result<()> {
    let qx = Executor::new(quant)?;
    for (run, feed) in reference.feeds.iter().enumerate() {
        let spilled = Reference::Spilled(reference, run, Vec::new(), Vec::new());
        capture(&qx, feed, watched, spilled, sums)?;
    }
    Ok(())
}

/// The verification of `float` from the error sums of its outputs and other tensors.
fn verification(float: &Model, sums: HashMap<String, ErrorSums>, samples: usize) -> Verification {
    let outputs: Vec<&String> = float.graph().output.iter().map(|o| &o.name).collect();
    let skip = relu_inputs(float);
    let (mut outs, mut tensors): (Vec<_>, Vec<_>) = sums
        .iter()
        .filter(|(n, _)| !skip.contains(*n))
        .map(|(n, s)| s.finish(n))
        .partition(|e| outputs.contains(&&e.name));
    tensors.sort_by(|a, b| a.sqnr_db.total_cmp(&b.sqnr_db));
    outs.sort_by(|a, b| a.name.cmp(&b.name));
    let passed = outs.iter().all(|o| o.cosine >= OUTPUT_COSINE_TOLERANCE);
    Verification {
        samples,
        outputs: outs,
        tensors,
        cosine_tolerance: OUTPUT_COSINE_TOLERANCE,
        passed,
    }
}

/// Float values of one run, by tensor name (the executor's values: keeping one shares its
/// buffer, no copy).
pub type Captured = HashMap<String, Value>;

/// Bytes per write of [`FloatReference`] (and its writer's buffer).
const SPILL_PIECE: usize = 1 << 20;

/// Float values of the reference model on a few runs (their feeds kept beside them),
/// written to a temporary file that is unlinked at once, so that they take no memory
/// while the quantized model is made and run: an encoder's attention scores and
/// feed-forward activations of every layer, for every verified sample. Calibration fills
/// one for its first samples ([`super::QuantConfig::record_samples`]); [`compare`] fills
/// one when nothing was recorded.
pub struct FloatReference {
    /// Appends values.
    writer: std::io::BufWriter<std::fs::File>,
    /// The bytes of the piece being written ([`SPILL_PIECE`] long).
    scratch: Vec<u8>,
    /// Reads them back at their offsets.
    reader: std::fs::File,
    /// Byte offset and element count of each value, by run and tensor name.
    index: HashMap<(usize, String), (u64, usize)>,
    /// Bytes written.
    end: u64,
    /// The feed of each run.
    feeds: Vec<Captured>,
}

impl std::fmt::Debug for FloatReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloatReference")
            .field("runs", &self.feeds.len())
            .field("samples", &self.samples())
            .field("values", &self.index.len())
            .field("bytes", &self.end)
            .finish()
    }
}

impl FloatReference {
    /// An empty reference, its file in the system's temporary folder.
    pub(super) fn new() -> Result<FloatReference> {
        let target = std::env::temp_dir().join("whittle-verify.f32");
        let (path, file) = whittle_ir::files::TempPath::create(&target)?;
        let reader = std::fs::File::open(path.path()).map_err(|e| {
            crate::PassError::Invalid(format!(
                "verification's scratch file {}: {e}",
                path.path().display()
            ))
        })?;
        // Unlinked now: the open handles keep the data, and nothing is left behind.
        drop(path);
        Ok(FloatReference {
            writer: std::io::BufWriter::with_capacity(SPILL_PIECE, file),
            scratch: vec![0; SPILL_PIECE],
            reader,
            index: HashMap::new(),
            end: 0,
            feeds: Vec::new(),
        })
    }

    /// Starts a run on `feed`; returns its index for [`FloatReference::put`].
    pub(super) fn start_run(&mut self, feed: &Captured) -> usize {
        self.feeds.push(feed.clone());
        self.feeds.len() - 1
    }

    /// Samples of all runs.
    pub fn samples(&self) -> usize {
        self.feeds.iter().map(feed_samples).sum()
    }

    /// Runs recorded.
    pub fn runs(&self) -> usize {
        self.feeds.len()
    }

    /// Appends the values `xs` of tensor `name` in run `run`.
    pub(super) fn put(&mut self, run: usize, name: &str, xs: &[f32]) -> std::io::Result<()> {
        use std::io::Write;
        // Pieces as long as the writer's buffer go to the file without a copy into it.
        for piece in xs.chunks(SPILL_PIECE / 4) {
            let bytes = &mut self.scratch[..4 * piece.len()];
            for (b, x) in bytes.chunks_exact_mut(4).zip(piece) {
                b.copy_from_slice(&x.to_le_bytes());
            }
            self.writer.write_all(bytes)?;
        }
        self.index
            .insert((run, name.to_string()), (self.end, xs.len()));
        self.end += 4 * xs.len() as u64;
        Ok(())
    }

    /// Reads the values of `name` in run `run` into `out`, [`SPILL_PIECE`] bytes at a time
    /// through `bytes` (both buffers reused from call to call); false when none were written.
    fn get(
        &self,
        run: usize,
        name: &str,
        bytes: &mut Vec<u8>,
        out: &mut Vec<f32>,
    ) -> std::io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let Some(&(mut at, len)) = self.index.get(&(run, name.to_string())) else {
            return Ok(false);
        };
        bytes.resize(SPILL_PIECE, 0);
        out.clear();
        while out.len() < len {
            let piece = &mut bytes[..4 * (len - out.len()).min(SPILL_PIECE / 4)];
            self.reader.read_exact_at(piece, at)?;
            at += piece.len() as u64;
            out.extend(
                piece
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        Ok(true)
    }

    /// Writes out what is buffered, so that it can be read.
    pub(super) fn finish(&mut self) -> Result<()> {
        use std::io::Write;
        self.writer
            .flush()
            .map_err(|e| crate::PassError::Invalid(format!("verification's scratch file: {e}")))
    }
}

/// What a run's values go to or are compared with.
enum Reference<'a> {
    /// The float model runs: its values are spilled, as run `usize`.
    Spill(&'a mut FloatReference, usize),
    /// The quantized model runs against run `usize` of the spill (the buffers read it).
    Spilled(&'a FloatReference, usize, Vec<u8>, Vec<f32>),
}

impl Reference<'_> {
    /// Spills `xs`, or folds their error against the reference's values of `name` into
    /// `sums` (nothing when the reference lacks them or their length differs).
    fn take(
        &mut self,
        name: &str,
        xs: &[f32],
        sums: &mut HashMap<String, ErrorSums>,
    ) -> whittle_exec::Result<()> {
        let io = |e: std::io::Error| whittle_exec::ExecError::msg(format!("verification: {e}"));
        match self {
            Reference::Spill(spill, run) => spill.put(*run, name, xs).map_err(io),
            Reference::Spilled(spill, run, bytes, buffer) => {
                if spill.get(*run, name, bytes, buffer).map_err(io)? && buffer.len() == xs.len() {
                    sums.entry(name.to_string()).or_default().add(buffer, xs);
                }
                Ok(())
            }
        }
    }
}

/// Runs `exec` on `feed` (planned: the first run at a shape records the plan node by node)
/// and hands each float value named in `watched` to `reference`, read in place where the
/// plan computes it in its own buffers.
fn capture(
    exec: &Executor,
    feed: &HashMap<String, Value>,
    watched: &HashSet<String>,
    reference: Reference,
    sums: &mut HashMap<String, ErrorSums>,
) -> Result<()> {
    let state = RefCell::new((reference, sums));
    let take = |name: &str, xs: &[f32]| -> whittle_exec::Result<()> {
        let mut st = state.borrow_mut();
        let (reference, sums) = &mut *st;
        reference.take(name, xs, sums)
    };
    let mut hook = |name: &str, _: &NodeProto, v: &Value| -> whittle_exec::Result<()> {
        if watched.contains(name) {
            v.with_f32(|xs| take(name, xs))??;
        }
        Ok(())
    };
    let mut borrowed =
        |name: &str, _: &NodeProto, _: &[usize], xs: &[f32]| match watched.contains(name) {
            true => take(name, xs),
            false => Ok(()),
        };
    let opts = RunOptions {
        hook: Some(&mut hook),
        borrowed: Some(&mut borrowed),
        floats_only: true,
        ..Default::default()
    };
    exec.run_with(feed.clone(), opts)?;
    Ok(())
}

/// `most`, or no limit when an input of `exec` declares a fixed first dimension (a run of
/// fewer samples would not fit it).
pub(super) fn run_limit(exec: &Executor, most: usize) -> usize {
    let free = |spec: &whittle_exec::InputSpec| {
        spec.dims
            .as_ref()
            .is_none_or(|dims| dims.first().is_some_and(Option::is_none))
    };
    match exec.inputs().iter().all(free) {
        true => most,
        false => usize::MAX,
    }
}

/// `feed` cut into runs of at most `most` samples along the first axis of every input;
/// as it is when it holds no more, or when an input's first axis is not the batch's.
pub(super) fn runs_of(feed: &Captured, most: usize) -> Result<Vec<Captured>> {
    let n = feed_samples(feed);
    let batched = feed.values().all(|v| v.shape().first() == Some(&n));
    if n <= most || !batched {
        return Ok(vec![feed.clone()]);
    }
    let rows = |v: &Value, start: usize| -> whittle_exec::Result<Value> {
        v.with_tensor(v.tensor().narrow(0, start, most.min(n - start))?)
    };
    (0..n)
        .step_by(most)
        .map(|start| {
            feed.iter()
                .map(|(name, v)| Ok((name.clone(), rows(v, start)?)))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqnr_and_cosine_match_hand_computation() {
        let mut s = ErrorSums::default();
        s.add(&[3.0, 4.0], &[3.0, 3.0]);
        let e = s.finish("t");
        // |x|^2 = 25, |x-q|^2 = 1 -> 10 log10 25 = 13.979 dB; cos = 21 / (5 * sqrt 18).
        assert!((e.sqnr_db - 13.979_400_086_720_377).abs() < 1e-9);
        assert!((e.cosine - 21.0 / (5.0 * 18f64.sqrt())).abs() < 1e-12);
        assert_eq!(e.max_abs_diff, 1.0);
    }

    #[test]
    fn a_nan_on_one_side_is_an_infinite_difference() {
        // In a vectorised block and in the remainder.
        for at in [3, 300] {
            let x = vec![1.0f32; 301];
            let mut q = x.clone();
            q[at] = f32::NAN;
            let mut s = ErrorSums::default();
            s.add(&x, &q);
            assert_eq!(s.finish("t").max_abs_diff, f64::INFINITY, "NaN at {at}");
        }
    }

    #[test]
    fn runs_of_cuts_batched_feeds_only() {
        let rows = |n: usize, width: usize| {
            let v: Vec<f32> = (0..n * width).map(|i| i as f32).collect();
            Value::try_from(&whittle_ir::TensorData::from_slice(vec![n, width], &v).unwrap())
                .unwrap()
        };
        let feed = HashMap::from([
            ("x".to_string(), rows(10, 3)),
            ("y".to_string(), rows(10, 2)),
        ]);
        let runs = runs_of(&feed, 4).unwrap();
        let sizes: Vec<usize> = runs.iter().map(feed_samples).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(
            runs[2]["x"].to_f32_vec().unwrap(),
            (24..30).map(|i| i as f32).collect::<Vec<_>>()
        );
        assert_eq!(runs[1]["y"].shape(), [4, 2]);
        // An input whose first axis is not the batch's: nothing to cut along.
        let mixed = HashMap::from([
            ("x".to_string(), rows(10, 3)),
            ("y".to_string(), rows(3, 2)),
        ]);
        assert_eq!(runs_of(&mixed, 4).unwrap().len(), 1);
    }

    #[test]
    fn long_tensors_sum_like_f64() {
        // Over several blocks and parallel pieces, with a remainder: agrees with a plain
        // f64 loop to float precision.
        let n = 200_003;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let q: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v + (i % 7) as f32 * 1e-3)
            .collect();
        let mut s = ErrorSums::default();
        s.add(&x, &q);
        let mut plain = ErrorSums::default();
        for (&a, &b) in x.iter().zip(&q) {
            plain.add_pair(a, b);
        }
        let (e, want) = (s.finish("t"), plain.finish("t"));
        assert!((e.sqnr_db - want.sqnr_db).abs() < 1e-4, "{e:?} {want:?}");
        assert!((e.cosine - want.cosine).abs() < 1e-7, "{e:?} {want:?}");
        assert!((e.max_abs_diff - want.max_abs_diff).abs() < 1e-6);
    }
}

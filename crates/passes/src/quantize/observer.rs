//! Calibration observers: running min/max and a symmetric histogram that re-bins as the
//! range grows (bounded memory for any number of samples), and the clipping-range methods
//! that read it: min/max, entropy (KL divergence), percentile and MSE.

use rayon::prelude::*;
use serde::Serialize;
use whittle_exec::ops::quant::round_small;

use super::scheme::Scheme;

/// How a tensor's clipping range is chosen from what calibration saw.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum CalibrationMethod {
    /// The smallest and largest value seen.
    MinMax,
    /// The threshold minimising the KL divergence between the float histogram and its
    /// quantized version (TensorRT, onnxruntime).
    Entropy,
    /// The given percentile (e.g. 99.99) of the values at each end.
    Percentile {
        /// Percent of the values kept inside the range, in (50, 100].
        percentile: f64,
    },
    /// The threshold minimising the expected quantization mean squared error.
    Mse,
}

impl CalibrationMethod {
    /// Whether the method needs histograms (everything but min/max).
    pub fn needs_histogram(&self) -> bool {
        !matches!(self, CalibrationMethod::MinMax)
    }
}

/// Values per rayon task of [`MinMax::update_finite`]'s scan: a few tens of microseconds of
/// work, so splitting pays off on an encoder's activations and is skipped for small tensors.
const SCAN_CHUNK: usize = 1 << 16;

/// The range of `values`, or `None` when one is not finite. One pass finds both (`v * 0` is
/// 0 for a finite `v` and NaN otherwise); comparisons instead of `f32::min`/`max` (whose NaN
/// rule costs a blend per lane) since a NaN is caught by the probe anyway. Inlined into
/// [`whittle_exec::kernels::dispatch`] so the lanes use the CPU's widest vectors.
#[inline(always)]
fn finite_range(values: &[f32]) -> Option<MinMax> {
    const LANES: usize = 16;
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    let (mut lo, mut hi) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
    let mut probe = [0f32; LANES];
    for chunk in chunks {
        for k in 0..LANES {
            let v = chunk[k];
            lo[k] = if v < lo[k] { v } else { lo[k] };
            hi[k] = if v > hi[k] { v } else { hi[k] };
            probe[k] += v * 0.0;
        }
    }
    for (k, &v) in rest.iter().enumerate() {
        lo[k] = if v < lo[k] { v } else { lo[k] };
        hi[k] = if v > hi[k] { v } else { hi[k] };
        probe[k] += v * 0.0;
    }
    if probe.iter().any(|&p| p != 0.0) {
        return None;
    }
    Some(MinMax {
        min: lo.into_iter().fold(f32::INFINITY, f32::min),
        max: hi.into_iter().fold(f32::NEG_INFINITY, f32::max),
    })
}

/// Folds `v` into the bounds `lo`, `hi` when it is finite; a non-finite value counts as
/// neutral (+inf for the minimum, -inf for the maximum), with no branch, so loops over
/// independent lanes vectorise.
#[inline(always)]
pub(super) fn fold_finite(lo: &mut f32, hi: &mut f32, v: f32) {
    let finite = v.is_finite();
    *lo = lo.min(if finite { v } else { f32::INFINITY });
    *hi = hi.max(if finite { v } else { f32::NEG_INFINITY });
}

/// Running minimum and maximum of the finite values seen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MinMax {
    /// Smallest value seen (+inf before any).
    pub min: f32,
    /// Largest value seen (-inf before any).
    pub max: f32,
}

impl Default for MinMax {
    fn default() -> Self {
        MinMax {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }
}

impl MinMax {
    /// Folds `values` in.
    #[inline(always)]
    pub fn update(&mut self, values: &[f32]) {
        // Independent lanes let the compiler vectorise; non-finite values count as
        // neutral (+inf for the minimum, -inf for the maximum).
        const LANES: usize = 16;
        let chunks = values.chunks_exact(LANES);
        let rest = chunks.remainder();
        if values.len() >= LANES {
            let (mut lo, mut hi) = ([self.min; LANES], [self.max; LANES]);
            for chunk in chunks {
                for k in 0..LANES {
                    fold_finite(&mut lo[k], &mut hi[k], chunk[k]);
                }
            }
            self.min = lo.into_iter().fold(f32::INFINITY, f32::min);
            self.max = hi.into_iter().fold(f32::NEG_INFINITY, f32::max);
        }
        rest.iter().for_each(|&v| self.add(v));
    }

    /// Folds `values` in when every one is finite and returns whether they were; leaves
    /// `self` unchanged otherwise. Calibration, which refuses non-finite values, reads each
    /// tensor once: [`finite_range`] over chunks of [`SCAN_CHUNK`] values on the rayon pool
    /// (the executor's hook calls this on one thread while the pool waits).
    pub fn update_finite(&mut self, values: &[f32]) -> bool {
        let scan = |xs: &[f32]| {
            whittle_exec::kernels::dispatch(
                #[inline(always)]
                || finite_range(xs),
            )
        };
        let found = match values.len() < 2 * SCAN_CHUNK {
            true => scan(values),
            false => values
                .par_chunks(SCAN_CHUNK)
                .map(scan)
                .reduce(|| Some(MinMax::default()), |a, b| Some(a?.merged(b?))),
        };
        match found {
            Some(range) => {
                *self = self.merged(range);
                true
            }
            None => false,
        }
    }

    /// The range covering both `self` and `other`.
    pub fn merged(self, other: MinMax) -> MinMax {
        MinMax {
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }

    /// Folds one value in (skipped unless finite).
    #[inline]
    pub fn add(&mut self, v: f32) {
        if v.is_finite() {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
    }

    /// `(min, max)`, or `(0, 0)` when nothing was seen.
    pub fn range(&self) -> (f32, f32) {
        if self.min > self.max {
            (0.0, 0.0)
        } else {
            (self.min, self.max)
        }
    }
}

/// A histogram over `[-limit, limit]` with a fixed, even number of bins. When a value
/// falls outside, `limit` doubles and pairs of bins merge, so counts stay exact per bin.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Count per bin; bin `i` covers `[-limit + i*w, -limit + (i+1)*w)`, `w = 2*limit/bins`.
    pub counts: Vec<u64>,
    /// Half-width of the covered range (0 until the first non-zero value).
    pub limit: f32,
    /// Exact zeros among the counts (all in bin `bins / 2`, the one starting at 0).
    pub zeros: u64,
    /// Row-relative weights per bin, when enabled ([`Histogram::weighing_rows`]).
    pub rows: Option<RowWeights>,
}

/// What the values of each bin weigh when errors count relative to the size of their
/// row (the vector along the last axis) rather than in absolute terms: the sum over the
/// bin's values of `1 / (mean square of the value's row + epsilon)`.
///
/// A LayerNormalization divides each row by its own spread, so an error matters in
/// proportion to its row's size. Transformers put "massive activations" of 150-200 in one
/// feature of a few tokens (MiniLM-L3's [CLS] and [SEP] after its first feed-forward
/// layer) beside values under 1 everywhere else: counted in absolute terms, clipping those
/// few values costs more than rounding every other value to a grid 40 times coarser, so
/// MSE kept them; counted relative to their rows, that rounding is the larger harm.
#[derive(Clone, Debug, PartialEq)]
pub struct RowWeights {
    /// Weight per bin (the bins of [`Histogram::counts`]).
    pub sums: Vec<f64>,
    /// Added to each row's mean square (the normalization's epsilon).
    pub epsilon: f32,
}

impl Histogram {
    /// Most bins a histogram has.
    pub const MAX_BINS: usize = 1 << 20;

    /// An empty histogram with `bins` bins (rounded up to a multiple of 4, at most
    /// [`Histogram::MAX_BINS`]).
    pub fn new(bins: usize) -> Self {
        Histogram {
            counts: vec![0; bins.clamp(4, Self::MAX_BINS).next_multiple_of(4)],
            limit: 0.0,
            zeros: 0,
            rows: None,
        }
    }

    /// This histogram, also keeping [`RowWeights`] with `epsilon` (add every batch with
    /// [`Histogram::weigh_rows`] after counting it).
    pub fn weighing_rows(mut self, epsilon: f32) -> Self {
        self.rows = Some(RowWeights {
            sums: vec![0.0; self.counts.len()],
            epsilon,
        });
        self
    }

    /// Adds `values`, already counted (so within the range), to the row weights: rows of
    /// `row_len` values (the last axis), each value weighing `1 / (mean square of its row
    /// + epsilon)`. Does nothing unless the histogram weighs rows.
    pub fn weigh_rows(&mut self, values: &[f32], row_len: usize) {
        let Some(rows) = self.rows.as_mut() else {
            return;
        };
        let n = rows.sums.len();
        let (scale, top) = (n as f32 / (2.0 * self.limit), (n - 1) as f32);
        for row in values.chunks(row_len.max(1)) {
            let finite = || row.iter().copied().filter(|v| v.is_finite());
            let square: f64 = finite().map(|v| f64::from(v) * f64::from(v)).sum();
            let weight = 1.0 / (square / row.len() as f64 + f64::from(rows.epsilon));
            for v in finite() {
                rows.sums[floor_small(((v + self.limit) * scale).clamp(0.0, top)) as usize] +=
                    weight;
            }
        }
    }

    /// What bin `i` weighs in the MSE: its row weight when kept, else its count.
    pub fn weight(&self, i: usize) -> f64 {
        self.rows
            .as_ref()
            .map_or(self.counts[i] as f64, |rows| rows.sums[i])
    }

    /// Width of one bin.
    pub fn bin_width(&self) -> f32 {
        2.0 * self.limit / self.counts.len() as f32
    }

    /// Centre of bin `i`.
    pub fn center(&self, i: usize) -> f32 {
        -self.limit + (i as f32 + 0.5) * self.bin_width()
    }

    /// Folds `values` in, growing the range first if they exceed it.
    pub fn update(&mut self, values: &[f32]) {
        let mut seen = MinMax::default();
        seen.update(values);
        self.update_within(values, &seen);
    }

    /// [`Histogram::update`] for a caller that already tracks the range: `seen` covers
    /// `values` (and may cover more, e.g. every earlier batch too).
    pub fn update_within(&mut self, values: &[f32], seen: &MinMax) {
        self.cover(seen);
        self.zeros += Self::count(values, self.limit, &mut self.counts);
    }

    /// Grows the range (doubling) until it covers `seen`.
    pub fn cover(&mut self, seen: &MinMax) {
        let (lo, hi) = seen.range();
        let absmax = lo.abs().max(hi.abs());
        if absmax == 0.0 && self.limit == 0.0 {
            self.limit = 1e-6;
        } else if self.limit == 0.0 {
            self.limit = absmax;
        }
        while absmax > self.limit {
            self.double();
        }
    }

    /// Adds the finite `values` (all within `[-limit, limit]`) to `counts`, bins of a
    /// histogram over that range; returns how many were exactly zero. Bin indices are
    /// computed a chunk at a time (a loop that vectorises), then counted.
    pub fn count(values: &[f32], limit: f32, counts: &mut [u64]) -> u64 {
        const CHUNK: usize = 256;
        let n = counts.len();
        let scale = n as f32 / (2.0 * limit);
        // Non-finite values get index n, past the last bin, and are not counted; exact
        // zeros (often half the values, all in bin n/2) are added at the end rather than
        // one by one into the same counter.
        let (top, skip) = ((n - 1) as f32, n as f32);
        let mut zeros = 0;
        let mut bins = [0u32; CHUNK];
        for chunk in values.chunks(CHUNK) {
            for (bin, &v) in bins.iter_mut().zip(chunk) {
                let x = if v.is_finite() && v != 0.0 {
                    ((v + limit) * scale).clamp(0.0, top)
                } else {
                    skip
                };
                *bin = floor_small(x);
                zeros += u64::from(v == 0.0);
            }
            for &bin in &bins[..chunk.len()] {
                if let Some(c) = counts.get_mut(bin as usize) {
                    *c += 1;
                }
            }
        }
        counts[n / 2] += zeros;
        zeros
    }

    /// Doubles the range: old bins fold pairwise into the middle half.
    fn double(&mut self) {
        let n = self.counts.len();
        let mut merged = vec![0u64; n];
        for (i, &c) in self.counts.iter().enumerate() {
            merged[n / 4 + i / 2] += c;
        }
        self.counts = merged;
        if let Some(rows) = self.rows.as_mut() {
            let mut merged = vec![0.0; n];
            for (i, &w) in rows.sums.iter().enumerate() {
                merged[n / 4 + i / 2] += w;
            }
            rows.sums = merged;
        }
        self.limit *= 2.0;
    }

    /// Total count.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The histogram of |x| over the non-zero values: `bins/2` bins over `[0, limit]`.
    /// Exact zeros are left out: the zero point represents them without error, and a spike
    /// at 0 (half of a Relu's outputs) would otherwise dominate the KL search, which then
    /// clips hard to give that spike a level of its own.
    pub fn folded(&self) -> Vec<u64> {
        let half = self.counts.len() / 2;
        let mut folded: Vec<u64> = (0..half)
            .map(|i| self.counts[half + i] + self.counts[half - 1 - i])
            .collect();
        folded[0] -= self.zeros.min(folded[0]);
        folded
    }

    /// The value below which a fraction `q` of the counts lie (bin-edge resolution).
    pub fn quantile(&self, q: f64) -> f32 {
        let target = q * self.total() as f64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen as f64 >= target && c > 0 {
                return -self.limit + (i + 1) as f32 * self.bin_width();
            }
        }
        self.limit
    }
}

/// `floor(x)` for `x` in `[0, 2^22)` without a saturating conversion, so loops vectorise:
/// the nearest integer ([`round_small`]), one step back where that rounded up.
#[inline]
fn floor_small(x: f32) -> u32 {
    let nearest = round_small(x);
    (nearest - i32::from(nearest as f32 > x)) as u32
}

/// The clipping range `[min, max]` of one tensor under `method`, clipped to what was seen.
pub fn clip_range(
    method: &CalibrationMethod,
    seen: &MinMax,
    hist: Option<&Histogram>,
    scheme: &Scheme,
) -> (f32, f32) {
    let (lo, hi) = seen.range();
    let Some(h) = hist.filter(|h| h.total() > 0) else {
        return (lo, hi);
    };
    let (a, b) = match method {
        CalibrationMethod::MinMax => (lo, hi),
        CalibrationMethod::Percentile { percentile } => {
            let tail = (1.0 - percentile / 100.0).max(0.0);
            (h.quantile(tail), h.quantile(1.0 - tail))
        }
        CalibrationMethod::Entropy => {
            let folded = without_point_masses(&h.folded());
            let t = entropy_threshold(&folded, h.limit, |t| entropy_levels(scheme, lo, hi, t));
            (-t, t)
        }
        CalibrationMethod::Mse => mse_range(h, lo, hi, scheme),
    };
    (a.max(lo), b.min(hi))
}

/// Integer levels that cover `[0, t]` when data seen over `[min, max]` is clipped at
/// `±t`: half of them for a symmetric scheme, and for an asymmetric one the share of
/// `[0, t]` in the clipped range (with 0 in it). Non-negative data (after a Relu) gets
/// all of them, and so does nearly: a SiLU's output, whose negative side ends at -0.28
/// while the positive side reaches 10, has 248 of uint8's 255 levels over `[0, 10]`, not
/// 127 (which made the KL search clip such tensors about twice as hard as it should).
pub fn entropy_levels(scheme: &Scheme, min: f32, max: f32, t: f32) -> usize {
    let (qmin, qmax) = scheme.qrange();
    let span = (qmax - qmin) as f32;
    let (lo, hi) = (min.max(-t).min(0.0), max.min(t).max(0.0));
    let width = if scheme.symmetric {
        2.0 * (-lo).max(hi)
    } else {
        hi - lo
    };
    if width <= 0.0 {
        return span as usize;
    }
    (span * t / width).round().clamp(1.0, span) as usize
}

/// `folded` with point masses levelled: a bin holding more than [`POINT_MASS_RATIO`] times
/// each of its neighbours gets the larger neighbour's count. A point mass
/// (a constant output, such as a convolution over a blank background) lands on one level
/// whatever the threshold, so it says nothing about the shape the KL search compares; left
/// in, the search shrinks the range until each such spike has a level of its own, as it
/// did for exact zeros (see [`Histogram::folded`]).
pub fn without_point_masses(folded: &[u64]) -> Vec<u64> {
    let mut out = folded.to_vec();
    for (j, slot) in out.iter_mut().enumerate() {
        let left = j.checked_sub(1).map_or(0, |k| folded[k]);
        let neighbour = left.max(folded.get(j + 1).copied().unwrap_or(0));
        if folded[j] > POINT_MASS_RATIO * neighbour.max(1) {
            *slot = neighbour;
        }
    }
    out
}

/// How many times each neighbour's count a bin must hold to count as a point mass.
pub const POINT_MASS_RATIO: u64 = 8;

/// The |x| threshold minimising KL(P || Q), where P is the |x| histogram clipped at the
/// threshold (outliers folded into the last bin) and Q is P squeezed into the
/// `levels_at(threshold)` levels that cover it (see [`entropy_levels`]). Thresholds whose
/// levels would be narrower than a bin are skipped; `limit` when none is left.
pub fn entropy_threshold(folded: &[u64], limit: f32, levels_at: impl Fn(f32) -> usize) -> f32 {
    let n = folded.len();
    let width = limit / n as f32;
    // Thresholds past the largest value clip nothing: the search ends at the bin holding it.
    let used = folded
        .iter()
        .rposition(|&c| c > 0)
        .map_or(n, |last| last + 1);
    let sums = PrefixSums::new(folded);
    let mut best = (f64::INFINITY, n);
    for i in 1..=used {
        let levels = levels_at(i as f32 * width);
        if levels > i {
            continue;
        }
        let kl = sums.clipped_kl(folded, i, levels);
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1 as f32 * width
}

/// KL divergence of the first `i` bins (tail added to bin `i-1`) against their
/// `levels`-level quantization, where each level spreads its mass evenly over its
/// non-empty bins.
pub fn clipped_kl(folded: &[u64], i: usize, levels: usize) -> f64 {
    PrefixSums::new(folded).clipped_kl(folded, i, levels)
}

/// Running sums over a folded histogram (counts, non-empty bins and `c ln c` before each
/// bin), so the KL divergence of a candidate takes one logarithm per level, not per bin.
struct PrefixSums {
    count: Vec<f64>,
    nonzero: Vec<usize>,
    c_ln_c: Vec<f64>,
}

/// `c ln c`, 0 for an empty bin.
fn c_ln_c(c: f64) -> f64 {
    if c > 0.0 {
        c * c.ln()
    } else {
        0.0
    }
}

impl PrefixSums {
    fn new(folded: &[u64]) -> Self {
        let n = folded.len();
        let mut sums = PrefixSums {
            count: Vec::with_capacity(n + 1),
            nonzero: Vec::with_capacity(n + 1),
            c_ln_c: Vec::with_capacity(n + 1),
        };
        let (mut count, mut nonzero, mut clnc) = (0.0, 0, 0.0);
        for &c in std::iter::once(&0).chain(folded) {
            let c = c as f64;
            (count, nonzero, clnc) = (count + c, nonzero + usize::from(c > 0.0), clnc + c_ln_c(c));
            sums.count.push(count);
            sums.nonzero.push(nonzero);
            sums.c_ln_c.push(clnc);
        }
        sums
    }

    /// [`clipped_kl`] from the sums: with P the clipped counts (total `ps`) and Q the
    /// level averages normalised by their total `qs`, `KL = (Σ p ln p - Σ p ln q) / ps -
    /// ln ps`, where every bin of a level shares one q (floored at 1e-12, as is a last bin
    /// that holds only the tail).
    fn clipped_kl(&self, folded: &[u64], i: usize, levels: usize) -> f64 {
        const FLOOR: f64 = 1e-12;
        let (ps, qs) = (self.count[folded.len()], self.count[i]);
        if ps == 0.0 || qs == 0.0 {
            return f64::INFINITY;
        }
        let last = folded[i - 1] as f64;
        let p_last = last + (ps - qs);
        let mut sum = 0.0;
        for l in 0..levels {
            let start = l * i / levels;
            let end = ((l + 1) * i / levels).max(start + 1).min(i);
            let nonzero = self.nonzero[end] - self.nonzero[start];
            if nonzero == 0 {
                continue;
            }
            let mass = self.count[end] - self.count[start];
            let ln_q = (mass / nonzero as f64 / qs).max(FLOOR).ln();
            let (mut m, mut clnc) = (mass, self.c_ln_c[end] - self.c_ln_c[start]);
            if end == i {
                // The last bin also holds the tail: counted on its own below.
                (m, clnc) = (m - last, clnc - c_ln_c(last));
                if last > 0.0 {
                    sum += c_ln_c(p_last) - p_last * ln_q;
                }
            }
            sum += clnc - m * ln_q;
        }
        if last == 0.0 && p_last > 0.0 {
            sum += c_ln_c(p_last) - p_last * FLOOR.ln();
        }
        sum / ps - ps.ln()
    }
}

/// The range `[max(lo, -t), min(hi, t)]` whose quantization with `scheme` gives the least
/// expected squared error on the histogram, over thresholds `t` on a grid of 200 steps.
pub fn mse_range(h: &Histogram, lo: f32, hi: f32, scheme: &Scheme) -> (f32, f32) {
    let absmax = lo.abs().max(hi.abs());
    let mut best = (f64::INFINITY, (lo, hi));
    for step in 1..=200 {
        let t = absmax * step as f32 / 200.0;
        let range = (lo.max(-t), hi.min(t));
        let err = quantization_mse(h, range, scheme);
        if err < best.0 {
            best = (err, range);
        }
    }
    best.1
}

/// Expected squared error of quantizing the histogram's bin centres into `range`, each bin
/// weighing [`Histogram::weight`] (its count, or its row weights: the error relative to
/// each row's size).
pub fn quantization_mse(h: &Histogram, range: (f32, f32), scheme: &Scheme) -> f64 {
    let p = scheme.params(range.0, range.1);
    let (qmin, qmax) = scheme.qrange();
    (0..h.counts.len())
        .map(|i| (i, h.weight(i)))
        .filter(|&(_, c)| c > 0.0)
        .map(|(i, c)| {
            let x = h.center(i);
            let q = ((x / p.scale).round_ties_even() as i64 + p.zero_point).clamp(qmin, qmax);
            let back = (q - p.zero_point) as f32 * p.scale;
            c * f64::from(x - back).powi(2)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::super::scheme::QuantType;
    use super::*;

    #[test]
    fn minmax_tracks_extremes_and_ignores_nan() {
        let mut m = MinMax::default();
        assert_eq!(m.range(), (0.0, 0.0));
        m.update(&[1.0, f32::NAN, -3.0]);
        m.update(&[2.5]);
        assert_eq!(m.range(), (-3.0, 2.5));
        // Long enough for the lane loop; non-finite values anywhere are skipped.
        let mut long: Vec<f32> = (0..37).map(|i| i as f32 * 0.25 - 4.0).collect();
        long[3] = f32::INFINITY;
        long[20] = f32::NEG_INFINITY;
        long[33] = f32::NAN;
        let mut m = MinMax::default();
        m.update(&long);
        assert_eq!(m.range(), (-4.0, 5.0));
        let mut only_inf = MinMax::default();
        only_inf.update(&[f32::INFINITY; 20]);
        assert_eq!(only_inf.range(), (0.0, 0.0));
    }

    #[test]
    fn update_finite_finds_the_range_or_refuses_non_finite_values() {
        let values: Vec<f32> = (0..37).map(|i| (i * 7 % 37) as f32 * 0.5 - 6.0).collect();
        let mut m = MinMax::default();
        assert!(m.update_finite(&values) && m.update_finite(&[-9.0]));
        assert_eq!(m.range(), (-9.0, 12.0));
        // A non-finite value in the lane loop or in the remainder: refused, unchanged.
        for at in [3, 35] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut with_bad = values.clone();
                with_bad[at] = bad;
                assert!(!m.update_finite(&with_bad), "{bad} at {at}");
                assert_eq!(m.range(), (-9.0, 12.0));
            }
        }
        // Long enough to be scanned in parallel chunks: the extremes sit in different
        // chunks, the non-finite value in a later one.
        let mut long: Vec<f32> = (0..3 * SCAN_CHUNK + 5)
            .map(|i| (i % 1000) as f32 * 0.01)
            .collect();
        (long[SCAN_CHUNK + 7], long[3 * SCAN_CHUNK + 2]) = (-20.0, 30.0);
        let mut m = MinMax::default();
        assert!(m.update_finite(&long));
        assert_eq!(m.range(), (-20.0, 30.0));
        long[2 * SCAN_CHUNK + 1] = f32::NAN;
        assert!(!m.update_finite(&long));
        assert_eq!(m.range(), (-20.0, 30.0));
    }

    #[test]
    fn floor_small_matches_floor() {
        let mut xs: Vec<f32> = (0..20_000).map(|i| i as f32 * 0.25).collect();
        xs.extend([0.0, 0.49999997, 0.5, 1.5, 2.5, 4_194_303.5, 4_194_303.0]);
        for x in xs {
            assert_eq!(floor_small(x), x.floor() as u32, "{x}");
        }
    }

    #[test]
    fn histogram_rebins_exactly_when_the_range_doubles() {
        let mut h = Histogram::new(8);
        h.update(&[0.1, -0.9, 0.9]);
        assert_eq!(h.limit, 0.9);
        // Bins of width 0.225 over [-0.9, 0.9]: 0.1 -> bin 4, -0.9 -> 0, 0.9 -> 7.
        assert_eq!(h.counts, vec![1, 0, 0, 0, 1, 0, 0, 1]);
        h.update(&[1.5]);
        // Limit 1.8, width 0.45: old bins fold pairwise into bins 2..6; 1.5 -> bin 7.
        assert_eq!(h.limit, 1.8);
        assert_eq!(h.counts, vec![0, 0, 1, 0, 1, 1, 0, 1]);
        assert_eq!(h.total(), 4);
        assert_eq!(h.folded(), vec![1, 2, 0, 1]);
    }

    #[test]
    fn percentile_cuts_the_tails() {
        let mut h = Histogram::new(2000);
        let values: Vec<f32> = (0..1000).map(|i| i as f32 / 999.0).collect();
        h.update(&values);
        // 1% of uniform [0, 1] lies above 0.99.
        let hi = h.quantile(0.99);
        assert!((hi - 0.99).abs() < 0.002, "{hi}");
        let s = Scheme::activations(QuantType::Uint8);
        let mut seen = MinMax::default();
        seen.update(&values);
        let method = CalibrationMethod::Percentile { percentile: 99.0 };
        let (lo, hi) = clip_range(&method, &seen, Some(&h), &s);
        assert!(lo.abs() < 0.012 && (hi - 0.99).abs() < 0.002, "{lo} {hi}");
    }

    #[test]
    fn kl_is_zero_when_quantization_loses_nothing_and_clips_outliers() {
        // Two levels over four bins, mass evenly spread: Q equals P.
        assert!(clipped_kl(&[5, 5, 3, 3], 4, 2).abs() < 1e-12);
        // Uneven bins in a level: P = (.8, .2), Q = (.5, .5):
        // KL = .8 ln 1.6 + .2 ln .4 = 0.192763...
        let kl = clipped_kl(&[8, 2], 2, 1);
        assert!((kl - (0.8f64 * 1.6f64.ln() + 0.2 * 0.4f64.ln())).abs() < 1e-9);
        // Dense mass near 0 and a lone far outlier: the threshold lands far below it.
        let mut folded = vec![0u64; 1024];
        for (i, c) in folded.iter_mut().take(200).enumerate() {
            *c = 1000 - 4 * i as u64;
        }
        folded[1023] = 1;
        let t = entropy_threshold(&folded, 10.24, |_| 128);
        assert!(t < 3.0, "{t}");
    }

    #[test]
    fn entropy_levels_follow_the_clipped_range() {
        let u8s = Scheme::activations(QuantType::Uint8);
        // After a Relu: all 255 levels over [0, t].
        assert_eq!(entropy_levels(&u8s, 0.0, 10.0, 4.0), 255);
        // Symmetric data clipped inside both ends: half of them.
        assert_eq!(entropy_levels(&u8s, -10.0, 10.0, 4.0), 128);
        // A SiLU's output, [-0.28, 10] clipped at 4: 255 * 4 / 4.28 levels over [0, 4].
        assert_eq!(entropy_levels(&u8s, -0.28, 10.0, 4.0), 238);
        // Mostly negative data: the clipped range is [-4, 0.5].
        assert_eq!(entropy_levels(&u8s, -10.0, 0.5, 4.0), 227);
        // A symmetric scheme always spends half of its levels on each side.
        let i8s = Scheme::activations(QuantType::Int8);
        assert_eq!(entropy_levels(&i8s, -0.28, 10.0, 4.0), 127);
        assert_eq!(entropy_levels(&i8s, 0.0, 10.0, 4.0), 127);
    }

    #[test]
    fn a_mostly_negative_silu_output_keeps_its_positive_tail() {
        // SiLU(x) for x = -3 + Laplace(1): most values lie in [-0.28, 0], a tail reaches 7.8
        // (YOLOv8's activations look like this). Folded, the negative mass sits below
        // 0.28, yet uint8's range [-0.28, t] spends nearly all 255 levels on [0, t]: a
        // search with 127 levels over [0, t] clips the tail harder and quantizes worse.
        let n = 50_000;
        let silu: Vec<f32> = (0..n)
            .map(|i| {
                let p = (i as f32 + 0.5) / n as f32;
                let z = if p < 0.5 {
                    (2.0 * p).ln()
                } else {
                    -(2.0 * (1.0 - p)).ln()
                };
                let x = z - 3.0;
                x / (1.0 + (-x).exp())
            })
            .collect();
        let mut h = Histogram::new(2048);
        h.update(&silu);
        let mut seen = MinMax::default();
        seen.update(&silu);
        let u8s = Scheme::activations(QuantType::Uint8);
        let (lo, hi) = clip_range(&CalibrationMethod::Entropy, &seen, Some(&h), &u8s);
        assert_eq!(lo, seen.min);
        let halved = entropy_threshold(&without_point_masses(&h.folded()), h.limit, |_| 127);
        assert!(hi > 1.2 * halved, "{hi} {halved}");
        let (err, err_halved) = (
            quantization_mse(&h, (lo, hi), &u8s),
            quantization_mse(&h, (lo, halved), &u8s),
        );
        assert!(err < 0.5 * err_halved, "{err} {err_halved}");
    }

    /// `n` exponentially distributed values (a Relu-like tail), by inverse CDF.
    fn exponential(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| -(1.0 - (i as f32 + 0.5) / n as f32).ln())
            .collect()
    }

    /// The entropy threshold of `values` over 2048 bins, the folded histogram passed
    /// through `prepare` first.
    fn threshold_of(values: &[f32], prepare: fn(&[u64]) -> Vec<u64>) -> f32 {
        let mut h = Histogram::new(2048);
        h.update(values);
        entropy_threshold(&prepare(&h.folded()), h.limit, |_| 255)
    }

    #[test]
    fn exact_zeros_do_not_move_the_entropy_threshold() {
        let tail = exponential(20_000);
        let mut with_zeros = tail.clone();
        with_zeros.extend(vec![0.0; tail.len()]);
        let as_is = |f: &[u64]| f.to_vec();
        let (t, tz) = (threshold_of(&tail, as_is), threshold_of(&with_zeros, as_is));
        assert_eq!(t, tz);
        // Nowhere near the bulk of the values (the largest is 10.6).
        assert!(t > 4.0, "{t}");
    }

    #[test]
    fn point_masses_do_not_pull_the_entropy_threshold_down() {
        // Exponential values, then the same plus 20 constants that hold two thirds of the
        // values (LeNet5's first convolution over a blank background looks like this).
        let tail = exponential(20_000);
        let mut spiky = tail.clone();
        for k in 0..20 {
            spiky.extend(vec![0.05 + 0.03 * k as f32; 2000]);
        }
        let (t, ts) = (
            threshold_of(&tail, without_point_masses),
            threshold_of(&spiky, without_point_masses),
        );
        assert!((ts - t).abs() < 0.05 * t, "{t} {ts}");
        // A smooth histogram is left as it is.
        let smooth: Vec<u64> = (0..100).map(|i| 1000 - 9 * i).collect();
        assert_eq!(without_point_masses(&smooth), smooth);
    }

    /// KL(P || Q) computed bin by bin, as [`clipped_kl`] defines it.
    fn kl_bin_by_bin(folded: &[u64], i: usize, levels: usize) -> f64 {
        let mut p: Vec<f64> = folded[..i].iter().map(|&c| c as f64).collect();
        p[i - 1] += folded[i..].iter().map(|&c| c as f64).sum::<f64>();
        let mut q = vec![0.0f64; i];
        for l in 0..levels {
            let start = l * i / levels;
            let end = ((l + 1) * i / levels).max(start + 1).min(i);
            let bins = &folded[start..end];
            let mass: f64 = bins.iter().map(|&c| c as f64).sum();
            let nonzero = bins.iter().filter(|&&c| c > 0).count();
            for (k, &c) in bins.iter().enumerate() {
                if c > 0 {
                    q[start + k] = mass / nonzero as f64;
                }
            }
        }
        let (ps, qs) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
        p.iter()
            .zip(&q)
            .filter(|(&pi, _)| pi > 0.0)
            .map(|(&pi, &qi)| {
                let (pi, qi) = (pi / ps, (qi / qs).max(1e-12));
                pi * (pi / qi).ln()
            })
            .sum()
    }

    #[test]
    fn kl_from_prefix_sums_matches_the_bin_by_bin_sum() {
        // Gaps, a spike, a tail and an empty last bin for some candidates.
        let folded: Vec<u64> = (0..300u64)
            .map(|k| match k % 17 {
                0 => 0,
                5 => 4000,
                _ => 1000 / (k + 1) + (k * 7919) % 13,
            })
            .collect();
        for levels in [4, 31, 127] {
            for i in (levels..=300).step_by(7) {
                let (fast, slow) = (
                    clipped_kl(&folded, i, levels),
                    kl_bin_by_bin(&folded, i, levels),
                );
                assert!(
                    (fast - slow).abs() < 1e-9 * (1.0 + slow),
                    "{i} {levels}: {fast} {slow}"
                );
            }
        }
    }

    #[test]
    fn mse_clips_rare_outliers_but_keeps_a_uniform_range() {
        let s = Scheme::activations(QuantType::Uint8);
        let mut uniform = Histogram::new(2048);
        let values: Vec<f32> = (0..4096).map(|i| i as f32 / 4095.0).collect();
        uniform.update(&values);
        let (_, hi) = mse_range(&uniform, 0.0, 1.0, &s);
        assert!(hi > 0.97, "{hi}");
        // 512k values evenly over [0, 1) and one at 2: clipping near 1 costs the outlier
        // (2 - 1)^2 = 1 but saves 512k * (2/255)^2 * 3/4 / 12 = 2.0 of rounding error.
        let mut spiky = Histogram::new(2048);
        spiky.update(&[-2.0, 2.0]);
        spiky.counts = vec![0; 2048];
        spiky.counts[1024..1536].fill(1000);
        spiky.counts[2047] = 1;
        let (_, hi) = mse_range(&spiky, 0.0, 2.0, &s);
        assert!((1.0..1.2).contains(&hi), "{hi}");
        // The chosen range has lower expected error than the full range.
        assert!(quantization_mse(&spiky, (0.0, hi), &s) < quantization_mse(&spiky, (0.0, 2.0), &s));
    }

    #[test]
    fn row_weights_let_mse_clip_a_massive_activation_that_absolute_mse_keeps() {
        // 100 rows of 64 values spread over [-1, 1] (mean square 1/3); row 0 also holds
        // one value of 100 (its mean square ~156). Clipping at t costs (100 - t)^2 and
        // rounding 6400 values to a step of (t + 1)/255 costs 6400 ((t + 1)/255)^2 / 12:
        // in absolute terms the least error is at t = 100 (84 against 9801 for t = 1).
        // Relative to the rows (weights 1/156 and 3) it is near t = 20, where the clip
        // costs 41 and the rounding 13, against 252 for keeping the outlier.
        let s = Scheme::activations(QuantType::Uint8);
        let mut values: Vec<f32> = (0..6400)
            .map(|i| (i * 37 % 201) as f32 / 100.0 - 1.0)
            .collect();
        values[5] = 100.0;
        let mut absolute = Histogram::new(2048);
        absolute.update(&values);
        let mut relative = Histogram::new(2048).weighing_rows(1e-5);
        relative.update(&values);
        relative.weigh_rows(&values, 64);
        assert!(absolute.rows.is_none() && relative.counts == absolute.counts);
        let (lo, hi) = (-1.0, 100.0);
        let kept = mse_range(&absolute, lo, hi, &s);
        let clipped = mse_range(&relative, lo, hi, &s);
        assert!(kept.1 > 95.0, "{kept:?}");
        assert!(
            (15.0..30.0).contains(&clipped.1) && clipped.0 == -1.0,
            "{clipped:?}"
        );
        // Each value weighs 1 / (its row's mean square + epsilon).
        let mean_square = |row: &[f32]| row.iter().map(|v| v * v).sum::<f32>() / 64.0;
        let want: f64 = values
            .chunks(64)
            .map(|row| 64.0 / f64::from(mean_square(row) + 1e-5))
            .sum();
        let got: f64 = (0..2048).map(|i| relative.weight(i)).sum();
        assert!((got / want - 1.0).abs() < 1e-5, "{got} {want}");
        // The weights follow the values when the range doubles.
        relative.update(&[300.0]);
        let moved: f64 = (0..2048).map(|i| relative.weight(i)).sum();
        assert!((moved - got).abs() < 1e-9 * got && relative.weight(2047) == 0.0);
    }
}

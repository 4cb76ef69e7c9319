//! A zero-cost proxy: how well an untrained candidate tells a batch of samples apart
//! (NASWOT, Mellor et al. 2021). Every rectifier's output is a binary code per sample (unit
//! active or not); two samples' codes agree on `units - hamming` units, and the score is
//! `ln |det K|` of that `N x N` agreement matrix. Computed in log space: `K` is divided by
//! the unit count (entries in `[0, 1]`), its determinant is the product of the LU pivots,
//! whose logs are summed, and `N ln units` is added back, so the score neither overflows
//! (`det K` reaches `units^N`, past f64 for a few thousand units and 32 samples) nor
//! vanishes. It runs one inference batch through whittle's executor.

use std::collections::HashMap;

use whittle_data::{Dataset, Split};
use whittle_exec::{Executor, RunOptions, Value};
use whittle_ir::Model;

use crate::nas::error::{At, NasError, Result};

/// Samples of the batch the proxy scores (the first ones of the training split).
pub const BATCH: usize = 32;

/// Operators whose output is positive exactly where their unit is active.
const RECTIFIERS: [&str; 6] = ["Relu", "LeakyRelu", "HardSwish", "Gelu", "Erf", "Clip"];

/// The first [`BATCH`] samples of the training split of `data` (a data SPEC).
pub fn batch(data: &str) -> Result<Dataset> {
    whittle_data::load(data, Split::Train, Some(BATCH))
        .at(|| format!("loading --data {data} for the zero-cost proxy"))
}

/// The NASWOT score of `model` on `batch`: `ln |det K|`, or `None` when `K` is singular
/// (two samples with the same code: the candidate cannot tell them apart, the worst score).
pub fn naswot(model: &Model, batch: &Dataset) -> Result<Option<f64>> {
    let keep: Vec<String> = model
        .graph()
        .node
        .iter()
        .filter(|n| RECTIFIERS.contains(&n.op_type.as_str()))
        .flat_map(|n| n.output.first().cloned())
        .collect();
    if keep.is_empty() {
        return Err(NasError::Refused(format!(
            "the zero-cost proxy needs rectifier activations ({}); the model has none",
            RECTIFIERS.join(", ")
        )));
    }
    let exec = Executor::new(model).at(|| "preparing the model for the proxy".into())?;
    let input = model
        .graph()
        .input
        .first()
        .map(|i| i.name.clone())
        .ok_or_else(|| NasError::Refused("the model has no input".into()))?;
    let x = Value::from_data(&batch.images, exec.device()).at(|| "the proxy's batch".into())?;
    // Batch statistics in BatchNormalization (as NASWOT scores a network): with an
    // untrained model's running statistics (mean 0, variance 1) a Conv on non-negative
    // pixels makes nearly the same units active for every sample.
    let opts = RunOptions {
        keep: keep.clone(),
        training: true,
        seed: Some(0),
        ..RunOptions::default()
    };
    let values = exec
        .run_with(HashMap::from([(input, x)]), opts)
        .at(|| "running the proxy's batch".into())?;
    let n = batch.labels.len();
    let mut codes = vec![Vec::<u64>::new(); n];
    let mut units = 0usize;
    for name in &keep {
        let v = values[name]
            .to_f32_vec()
            .at(|| format!("reading activation '{name}'"))?;
        let per = v.len() / n;
        for (sample, code) in codes.iter_mut().enumerate() {
            push_bits(code, units, &v[sample * per..(sample + 1) * per]);
        }
        units += per;
    }
    let mut k = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in i..n {
            let hamming: u32 = codes[i]
                .iter()
                .zip(&codes[j])
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            let agree = (units - hamming as usize) as f64 / units as f64;
            k[i][j] = agree;
            k[j][i] = agree;
        }
    }
    Ok(log_abs_det(k).map(|l| l + n as f64 * (units as f64).ln()))
}

/// Appends the signs (`> 0`) of `values` to the bit set `code`, which holds `len` bits.
fn push_bits(code: &mut Vec<u64>, len: usize, values: &[f32]) {
    code.resize((len + values.len()).div_ceil(64), 0);
    for (i, &v) in values.iter().enumerate() {
        if v > 0.0 {
            let bit = len + i;
            code[bit / 64] |= 1 << (bit % 64);
        }
    }
}

/// `ln |det a|` by LU decomposition with partial pivoting (the sum of the pivots' logs);
/// `None` when a pivot is zero at working precision.
pub fn log_abs_det(mut a: Vec<Vec<f64>>) -> Option<f64> {
    let n = a.len();
    let scale = a
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    let mut log = 0.0;
    for col in 0..n {
        let pivot = (col..n).max_by(|&r, &s| a[r][col].abs().total_cmp(&a[s][col].abs()))?;
        if a[pivot][col].abs() <= scale * 1e-12 * n as f64 {
            return None;
        }
        a.swap(col, pivot);
        log += a[col][col].abs().ln();
        let (top, rest) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for row in rest.iter_mut() {
            let f = row[col] / pivot_row[col];
            for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
        }
    }
    Some(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_det_is_exact_and_never_overflows() {
        let l = log_abs_det(vec![vec![4.0, 2.0], vec![2.0, 3.0]]).unwrap();
        assert!((l - 8f64.ln()).abs() < 1e-12, "{l}");
        assert!(
            (log_abs_det(vec![vec![0.0, 2.0], vec![3.0, 0.0]]).unwrap() - 6f64.ln()).abs() < 1e-12
        );
        assert_eq!(log_abs_det(vec![vec![1.0, 1.0], vec![1.0, 1.0]]), None);
        // det = 1e300^4, far past f64: its log is still exact.
        let big: Vec<Vec<f64>> = (0..4)
            .map(|i| (0..4).map(|j| if i == j { 1e300 } else { 0.0 }).collect())
            .collect();
        let l = log_abs_det(big).unwrap();
        assert!((l - 4.0 * 1e300f64.ln()).abs() < 1e-9, "{l}");
        let mut code = Vec::new();
        push_bits(&mut code, 0, &[1.0; 70]);
        push_bits(&mut code, 70, &[-1.0, 2.0]);
        assert_eq!(code.len(), 2);
        assert_eq!(code[1], ((1 << 6) - 1) | (1 << 7));
    }
}

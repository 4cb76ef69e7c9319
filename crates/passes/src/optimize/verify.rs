//! Output equivalence of two models: both run in whittle's executor on the same random
//! inputs built from the declared input specs, outputs compared by relative difference.

use std::collections::HashMap;

use whittle_bench::inputs;
use whittle_exec::{Executor, Value};
use whittle_ir::numeric::max_abs_diff;
use whittle_ir::{Model, TensorData};

use crate::error::Result;

/// How one output differs between the two models.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputDiff {
    /// Output name.
    pub name: String,
    /// `max |after - before| / max(1, max |before|)`: see [`relative_diff`].
    pub relative_diff: f64,
}

/// Random inputs for `model` from its declared input specs, by whittle's one synthetic-input
/// policy ([`whittle_bench::inputs::inputs_from_specs`] for the shapes: `shapes` gives an
/// input's full shape, else an open batch dimension is 1 and other open ones 16;
/// [`whittle_bench::inputs::random_inputs`] for the values), in the model's input order.
pub fn random_inputs(
    model: &Model,
    shapes: &HashMap<String, Vec<usize>>,
    seed: u64,
) -> Result<Vec<(String, TensorData)>> {
    let specs = Executor::new(model)?.inputs();
    let invalid = |e: whittle_bench::BenchError| crate::PassError::Invalid(e.to_string());
    let inputs = inputs::inputs_from_specs(&specs, shapes).map_err(invalid)?;
    let mut values = inputs::random_inputs(&inputs, seed).map_err(invalid)?;
    Ok(specs
        .iter()
        .filter_map(|spec| Some((spec.name.clone(), values.remove(&spec.name)?)))
        .collect())
}

/// Runs `model` in whittle's executor; outputs in graph order.
pub fn run_model(
    model: &Model,
    inputs: &[(String, TensorData)],
) -> Result<Vec<(String, TensorData)>> {
    let exec = Executor::new(model)?;
    let feed = inputs
        .iter()
        .map(|(n, d)| Ok((n.clone(), Value::try_from(d)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    let mut out = exec.run(feed)?;
    exec.output_names()
        .into_iter()
        .map(|name| {
            let value = out.remove(&name).map(|v| v.to_data()).transpose()?;
            match value {
                Some(v) => Ok((name, v)),
                None => crate::bail!("output '{name}' was not computed"),
            }
        })
        .collect()
}

/// `max |got - want| / max(1, max |want|)`: relative to the output's largest finite
/// magnitude, and absolute for outputs below 1 in magnitude (probabilities near 0 would
/// otherwise turn float rounding into huge ratios). Infinite when the shapes differ or when
/// a value is not finite on one side only (see [`whittle_ir::numeric::element_diff`]).
pub fn relative_diff(got: &TensorData, want: &TensorData) -> Result<f64> {
    if got.dims() != want.dims() {
        return Ok(f64::INFINITY);
    }
    let (g, w) = (got.to_f64_vec()?, want.to_f64_vec()?);
    let scale = w
        .iter()
        .filter(|v| v.is_finite())
        .fold(1.0f64, |m, v| m.max(v.abs()));
    Ok(max_abs_diff(g, w) / scale)
}

/// Runs both models on the same random inputs (see [`random_inputs`]) and returns how
/// each output of `before` differs in `after` (matched by name; a missing one is an error).
pub fn compare(
    before: &Model,
    after: &Model,
    shapes: &HashMap<String, Vec<usize>>,
) -> Result<Vec<OutputDiff>> {
    let inputs = random_inputs(before, shapes, 0x5eed)?;
    let want = run_model(before, &inputs)?;
    let got: HashMap<String, TensorData> = run_model(after, &inputs)?.into_iter().collect();
    want.iter()
        .map(|(name, w)| match got.get(name) {
            Some(g) => Ok(OutputDiff {
                name: name.clone(),
                relative_diff: relative_diff(g, w)?,
            }),
            None => crate::bail!("the optimized model lost output '{name}'"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_diff_is_scaled_by_the_reference() {
        let want = TensorData::from_slice(vec![2], &[2.0f32, -4.0]).unwrap();
        let got = TensorData::from_slice(vec![2], &[2.0f32, -4.4]).unwrap();
        let d = relative_diff(&got, &want).unwrap();
        assert!((d - 0.1).abs() < 1e-6, "{d}");
        assert_eq!(relative_diff(&want, &want).unwrap(), 0.0);
        let small = TensorData::from_slice(vec![1], &[0.001f32]).unwrap();
        let near = TensorData::from_slice(vec![1], &[0.0011f32]).unwrap();
        let d = relative_diff(&near, &small).unwrap();
        assert!((d - 1e-4).abs() < 1e-8, "absolute below magnitude 1: {d}");
        let other = TensorData::from_slice(vec![1, 2], &[2.0f32, -4.0]).unwrap();
        assert_eq!(relative_diff(&other, &want).unwrap(), f64::INFINITY);
    }

    #[test]
    fn non_finite_outputs_fail_the_comparison() {
        let want = TensorData::from_slice(vec![2], &[1.0f32, 2.0]).unwrap();
        let nan = TensorData::from_slice(vec![2], &[f32::NAN, f32::NAN]).unwrap();
        assert_eq!(relative_diff(&nan, &want).unwrap(), f64::INFINITY);
        assert_eq!(relative_diff(&want, &nan).unwrap(), f64::INFINITY);
        let inf = TensorData::from_slice(vec![2], &[1.0f32, f32::INFINITY]).unwrap();
        assert_eq!(relative_diff(&inf, &want).unwrap(), f64::INFINITY);
        assert_eq!(relative_diff(&inf, &inf).unwrap(), 0.0);
    }

    #[test]
    fn an_all_nan_output_fails_verification() {
        use super::super::util::testing::{model, node, value};
        let io = || (vec![value("x", &[8])], vec![value("y", &[8])]);
        let (inputs, outputs) = io();
        let before = model(vec![node("Abs", &["x"], &["y"])], inputs, outputs, vec![]);
        // sqrt(-exp(-|x|)) is NaN for every x (exp is positive).
        let (inputs, outputs) = io();
        let after = model(
            vec![
                node("Abs", &["x"], &["a"]),
                node("Neg", &["a"], &["n"]),
                node("Exp", &["n"], &["e"]),
                node("Neg", &["e"], &["m"]),
                node("Sqrt", &["m"], &["y"]),
            ],
            inputs,
            outputs,
            vec![],
        );
        let diffs = compare(&before, &after, &HashMap::new()).unwrap();
        assert_eq!(diffs.len(), 1);
        assert_eq!(diffs[0].relative_diff, f64::INFINITY);
    }
}

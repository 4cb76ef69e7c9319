//! Accuracy tools: per-layer sensitivity (quantize one layer at a time) and the accuracy
//! budget that keeps the most sensitive layers in float (mixed precision).

use std::collections::HashMap;

use serde::Serialize;
use whittle_exec::{feed_samples, Executor, Value};
use whittle_ir::{Model, TensorData};

use super::plan::{FloatNode, Target};
use super::verify::ErrorSums;
use crate::{bail, Result};

/// Evaluation data: batches feeding the model's inputs, with class labels when known.
/// With labels the yardstick is top-1 accuracy; without, the fidelity of the outputs to
/// the float model's (mean per-sample cosine, SQNR).
pub struct EvalSet {
    /// One run's inputs per batch, by input name.
    pub batches: Vec<HashMap<String, Value>>,
    /// Class label of every sample, in batch order, when known.
    pub labels: Option<Vec<i64>>,
}

/// How much quantizing a single layer costs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerSensitivity {
    /// Node name.
    pub name: String,
    /// `"accuracy_drop"` (labels given) or `"output_sqnr_db"`.
    pub metric: String,
    /// The figure (higher drop or lower SQNR = more sensitive).
    pub value: f64,
    /// Sensitivity as a score where higher means more sensitive.
    pub score: f64,
}

/// The score before and after quantization on the eval data: top-1 accuracy with labels,
/// else the mean per-sample cosine of the outputs to the float model's (1 for the float
/// model itself).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccuracyReport {
    /// `"top1"` or `"output_cosine"`.
    pub metric: String,
    /// Samples evaluated.
    pub samples: usize,
    /// Float model score, 0..1.
    pub float_accuracy: f64,
    /// Quantized model score, 0..1.
    pub quantized_accuracy: f64,
    /// `float - quantized`.
    pub accuracy_drop: f64,
    /// The budget asked for, if any.
    pub budget: Option<f64>,
}

/// The float model's outputs on every batch of an [`EvalSet`], by output name.
pub struct FloatOutputs(Vec<HashMap<String, Vec<f32>>>);

impl EvalSet {
    /// Rows of `data` (samples on the first axis) feeding `input`, `batch_size` per run.
    pub fn from_rows(
        input: &str,
        data: &TensorData,
        labels: Option<Vec<i64>>,
        batch_size: usize,
    ) -> Result<Self> {
        let values = Value::try_from(data)?;
        let n = data.dims().first().copied().unwrap_or(0);
        let size = batch_size.max(1);
        let batches = (0..n)
            .step_by(size)
            .map(|start| {
                let rows = values
                    .tensor()
                    .narrow(0, start, size.min(n - start))
                    .map_err(|e| crate::PassError::Invalid(format!("eval data: {e}")))?;
                let v = Value::new(rows, values.dtype())?;
                Ok(HashMap::from([(input.to_string(), v)]))
            })
            .collect::<Result<_>>()?;
        Ok(EvalSet { batches, labels })
    }

    /// Samples in the set.
    pub fn samples(&self) -> usize {
        self.batches.iter().map(feed_samples).sum()
    }

    /// Top-1 accuracy of `model` (first output = scores `[N, classes]`); needs labels.
    /// Ties go to the first maximum ([`whittle_ir::numeric::top1_correct`], the rule of every
    /// accuracy in whittle); scores that are not finite are refused, naming the output.
    pub fn accuracy(&self, model: &Model) -> Result<f64> {
        let Some(labels) = &self.labels else {
            bail!("the eval data has no labels");
        };
        let exec = Executor::new(model)?;
        let out = exec.output_names()[0].clone();
        let (mut correct, mut start) = (0usize, 0usize);
        for feed in &self.batches {
            let len = feed_samples(feed);
            let scores = exec.run(feed.clone())?[&out].to_f32_vec()?;
            let classes = scores.len() / len.max(1);
            let Some(truth) = labels.get(start..start + len) else {
                bail!("the eval data has {} labels for more samples", labels.len());
            };
            if let Some(at) = scores.iter().position(|s| !s.is_finite()) {
                bail!(
                    "the model's output '{out}' is not finite (NaN or infinite scores) for \
                     sample {}; no accuracy can be measured",
                    start + at / classes.max(1)
                );
            }
            correct += whittle_ir::numeric::top1_correct(&scores, classes, truth);
            start += len;
        }
        Ok(correct as f64 / labels.len().max(1) as f64)
    }

    /// `model`'s outputs on every batch (the reference for [`EvalSet::fidelity`]).
    pub fn outputs(&self, model: &Model) -> Result<FloatOutputs> {
        let exec = Executor::new(model)?;
        let runs = self
            .batches
            .iter()
            .map(|feed| {
                exec.run(feed.clone())?
                    .into_iter()
                    .map(|(name, v)| Ok((name, v.to_f32_vec()?)))
                    .collect()
            })
            .collect::<Result<_>>()?;
        Ok(FloatOutputs(runs))
    }

    /// `(SQNR dB, mean per-sample cosine)` of `model`'s outputs against `reference`.
    pub fn fidelity(&self, reference: &FloatOutputs, model: &Model) -> Result<(f64, f64)> {
        let exec = Executor::new(model)?;
        let mut sums = ErrorSums::default();
        let (mut cosines, mut rows) = (0.0, 0usize);
        for (feed, expected) in self.batches.iter().zip(&reference.0) {
            let len = feed_samples(feed).max(1);
            for (name, v) in exec.run(feed.clone())? {
                let (Some(x), got) = (expected.get(&name), v.to_f32_vec()?) else {
                    continue;
                };
                sums.add(x, &got);
                // One row per sample when the output has one; else the whole tensor.
                let width = if x.len() % len == 0 {
                    x.len() / len
                } else {
                    x.len()
                };
                for (a, b) in x.chunks(width.max(1)).zip(got.chunks(width.max(1))) {
                    let mut row = ErrorSums::default();
                    row.add(a, b);
                    cosines += row.finish(&name).cosine;
                    rows += 1;
                }
            }
        }
        Ok((sums.finish("outputs").sqnr_db, cosines / rows.max(1) as f64))
    }

    /// The yardstick of the budget: top-1 accuracy with labels, else the mean cosine of
    /// the outputs to `reference`.
    fn score(&self, reference: &FloatOutputs, model: &Model) -> Result<f64> {
        match self.labels {
            Some(_) => self.accuracy(model),
            None => Ok(self.fidelity(reference, model)?.1),
        }
    }

    /// The name of [`EvalSet::score`]'s metric.
    fn metric(&self) -> &'static str {
        match self.labels {
            Some(_) => "top1",
            None => "output_cosine",
        }
    }

    /// Scores `float` and `quant` ([`AccuracyReport`]); `budget` is recorded as given.
    pub fn compare(
        &self,
        float: &Model,
        quant: &Model,
        budget: Option<f64>,
    ) -> Result<AccuracyReport> {
        let (reference, f) = self.baseline(float)?;
        let q = self.score(&reference, quant)?;
        Ok(self.report(f, q, budget))
    }

    /// What [`EvalSet::score`] compares against, and the float model's own score: its
    /// outputs and 1 without labels (cosine to itself), nothing and its accuracy with.
    fn baseline(&self, float: &Model) -> Result<(FloatOutputs, f64)> {
        match self.labels {
            Some(_) => Ok((FloatOutputs(Vec::new()), self.accuracy(float)?)),
            None => Ok((self.outputs(float)?, 1.0)),
        }
    }

    fn report(&self, float: f64, quant: f64, budget: Option<f64>) -> AccuracyReport {
        AccuracyReport {
            metric: self.metric().into(),
            samples: self.samples(),
            float_accuracy: float,
            quantized_accuracy: quant,
            accuracy_drop: float - quant,
            budget,
        }
    }
}

/// Builds a model with only `targets` quantized.
pub type Exporter<'a> = dyn Fn(&[Target]) -> Result<Model> + 'a;

/// Quantizes each target alone and measures the damage, most sensitive first: the top-1
/// accuracy drop with labels, else the SQNR of the outputs.
pub fn layer_sensitivity(
    float: &Model,
    targets: &[Target],
    export: &Exporter,
    eval: &EvalSet,
) -> Result<Vec<LayerSensitivity>> {
    sensitivity_against(&eval.baseline(float)?, targets, export, eval)
}

/// [`layer_sensitivity`] with the float model's [`EvalSet::baseline`] already measured.
fn sensitivity_against(
    (reference, float_score): &(FloatOutputs, f64),
    targets: &[Target],
    export: &Exporter,
    eval: &EvalSet,
) -> Result<Vec<LayerSensitivity>> {
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let model = export(std::slice::from_ref(t))?;
        let (metric, value, score) = match eval.labels {
            Some(_) => {
                let drop = float_score - eval.accuracy(&model)?;
                ("accuracy_drop", drop, drop)
            }
            None => {
                let s = eval.fidelity(reference, &model)?.0;
                ("output_sqnr_db", s, -s)
            }
        };
        out.push(LayerSensitivity {
            name: t.name.clone(),
            metric: metric.into(),
            value,
            score,
        });
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(out)
}

/// The outcome of fitting an accuracy budget.
pub struct BudgetFit {
    /// The final model.
    pub model: Model,
    /// Targets still quantized.
    pub targets: Vec<Target>,
    /// Layers moved back to float, with the reason.
    pub kept_float: Vec<FloatNode>,
    /// Accuracy of the final model.
    pub accuracy: AccuracyReport,
    /// Per-layer sensitivity measured on the way.
    pub sensitivity: Vec<LayerSensitivity>,
}

/// Moves the most sensitive layers back to float, one at a time, until the drop of the
/// eval score ([`EvalSet`]: top-1 accuracy, or output cosine without labels) is at most
/// `budget` (0..1).
pub fn fit_budget(
    float: &Model,
    targets: &[Target],
    export: &Exporter,
    eval: &EvalSet,
    budget: f64,
) -> Result<BudgetFit> {
    let baseline = eval.baseline(float)?;
    let (reference, float_score) = (&baseline.0, baseline.1);
    let mut kept: Vec<Target> = targets.to_vec();
    let mut model = export(&kept)?;
    let mut score = eval.score(reference, &model)?;
    let mut kept_float = Vec::new();
    let sensitivity = if float_score - score > budget {
        sensitivity_against(&baseline, targets, export, eval)?
    } else {
        Vec::new()
    };
    for s in &sensitivity {
        if float_score - score <= budget || kept.len() <= 1 {
            break;
        }
        kept.retain(|t| t.name != s.name);
        let op_type = targets
            .iter()
            .find(|t| t.name == s.name)
            .map(|t| t.op_type.clone());
        let cost = match s.metric.as_str() {
            "accuracy_drop" => format!("costs {:.2}% accuracy", 100.0 * s.value),
            _ => format!("leaves an output SQNR of {:.1} dB", s.value),
        };
        kept_float.push(FloatNode {
            name: s.name.clone(),
            op_type: op_type.unwrap_or_default(),
            reason: format!(
                "{} budget {:.2}%: quantizing it alone {cost}",
                match eval.labels {
                    Some(_) => "accuracy",
                    None => "output cosine",
                },
                100.0 * budget,
            ),
        });
        model = export(&kept)?;
        score = eval.score(reference, &model)?;
    }
    Ok(BudgetFit {
        model,
        targets: kept,
        kept_float,
        accuracy: eval.report(float_score, score, Some(budget)),
        sensitivity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::util::testing::{model, node, value};

    /// A model whose class scores are its input rows.
    fn identity() -> Model {
        model(
            vec![node("Identity", &["x"], &["y"])],
            vec![value("x", &[2, 3])],
            vec![value("y", &[2, 3])],
            vec![],
        )
    }

    fn set(rows: &[f32], labels: Vec<i64>) -> EvalSet {
        let data = TensorData::from_slice(vec![2, 3], rows).unwrap();
        EvalSet::from_rows("x", &data, Some(labels), 2).unwrap()
    }

    #[test]
    fn accuracy_gives_ties_to_the_first_maximum() {
        let rows = [0.2f32, 0.7, 0.7, 0.9, 0.9, 0.1];
        assert_eq!(set(&rows, vec![1, 0]).accuracy(&identity()).unwrap(), 1.0);
        assert_eq!(set(&rows, vec![2, 1]).accuracy(&identity()).unwrap(), 0.0);
    }

    #[test]
    fn accuracy_refuses_scores_that_are_not_finite() {
        let rows = [0.2f32, 0.7, 0.1, 0.9, f32::NAN, 0.1];
        let err = set(&rows, vec![1, 0]).accuracy(&identity()).unwrap_err();
        assert!(
            err.to_string().contains("output 'y' is not finite"),
            "{err}"
        );
        assert!(err.to_string().contains("sample 1"), "{err}");
    }
}

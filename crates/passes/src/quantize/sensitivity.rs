//! Accuracy tools: per-layer sensitivity (quantize one layer at a time) and the accuracy
//! budget that keeps the most sensitive layers in float (mixed precision).

use std::collections::HashMap;

use serde::Serialize;
use whittle_exec::{Executor, Value};
use whittle_ir::{Model, TensorData};

use super::plan::{FloatNode, Target};
use super::verify::ErrorSums;
use crate::{bail, Result};

/// Evaluation data: one model input, optional labels (accuracy) else output SQNR.
pub struct EvalSet {
    /// Name of the model input the data feeds.
    pub input: String,
    /// Samples, first axis indexing them.
    pub data: TensorData,
    /// Class labels, when known.
    pub labels: Option<Vec<i64>>,
    /// Samples per run.
    pub batch_size: usize,
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

/// Accuracy before and after quantization on the eval data.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccuracyReport {
    /// Samples evaluated.
    pub samples: usize,
    /// Float model top-1 accuracy, 0..1.
    pub float_accuracy: f64,
    /// Quantized model top-1 accuracy, 0..1.
    pub quantized_accuracy: f64,
    /// `float - quantized`.
    pub accuracy_drop: f64,
    /// The budget asked for, if any.
    pub budget: Option<f64>,
}

/// One eval batch: the feed, its first row and its length.
type EvalBatch = (HashMap<String, Value>, usize, usize);

impl EvalSet {
    fn batches(&self) -> Result<Vec<EvalBatch>> {
        let images = Value::try_from(&self.data)?;
        let n = self.data.dims().first().copied().unwrap_or(0);
        let size = self.batch_size.max(1);
        (0..n)
            .step_by(size)
            .map(|start| {
                let len = size.min(n - start);
                let rows = images
                    .tensor()
                    .narrow(0, start, len)
                    .map_err(|e| crate::PassError::Invalid(format!("eval data: {e}")))?;
                let v = Value::new(rows, images.dtype())?;
                Ok((HashMap::from([(self.input.clone(), v)]), start, len))
            })
            .collect()
    }

    /// Top-1 accuracy of `model` (first output = scores `[N, classes]`); needs labels.
    pub fn accuracy(&self, model: &Model) -> Result<f64> {
        let Some(labels) = &self.labels else {
            bail!("the eval data has no labels");
        };
        let exec = Executor::new(model)?;
        let out = exec.output_names()[0].clone();
        let mut correct = 0usize;
        for (feed, start, len) in self.batches()? {
            let scores = exec.run(feed)?[&out].to_data()?.to_f64_vec()?;
            let classes = scores.len() / len.max(1);
            for (row, &label) in scores
                .chunks(classes.max(1))
                .zip(&labels[start..start + len])
            {
                let best = (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b]));
                correct += usize::from(best.is_some_and(|b| b as i64 == label));
            }
        }
        Ok(correct as f64 / labels.len().max(1) as f64)
    }

    /// SQNR (dB) of `model`'s outputs against `float`'s.
    pub fn output_sqnr(&self, float: &Model, model: &Model) -> Result<f64> {
        let (fx, qx) = (Executor::new(float)?, Executor::new(model)?);
        let mut sums = ErrorSums::default();
        for (feed, _, _) in self.batches()? {
            let (a, b) = (fx.run(feed.clone())?, qx.run(feed)?);
            for (name, v) in &a {
                sums.add(
                    &v.to_data()?.to_vec::<f32>()?,
                    &b[name].to_data()?.to_vec::<f32>()?,
                );
            }
        }
        Ok(sums.finish("outputs").sqnr_db)
    }
}

/// Builds a model with only `targets` quantized.
pub type Exporter<'a> = dyn Fn(&[Target]) -> Result<Model> + 'a;

/// Quantizes each target alone and measures the damage, most sensitive first.
pub fn layer_sensitivity(
    float: &Model,
    targets: &[Target],
    export: &Exporter,
    eval: &EvalSet,
) -> Result<Vec<LayerSensitivity>> {
    let base = eval
        .labels
        .as_ref()
        .map(|_| eval.accuracy(float))
        .transpose()?;
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let model = export(std::slice::from_ref(t))?;
        let (metric, value, score) = match base {
            Some(acc) => {
                let drop = acc - eval.accuracy(&model)?;
                ("accuracy_drop", drop, drop)
            }
            None => {
                let s = eval.output_sqnr(float, &model)?;
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

/// Moves the most sensitive layers back to float, one at a time, until the accuracy drop
/// on `eval` is at most `budget` (0..1).
pub fn fit_budget(
    float: &Model,
    targets: &[Target],
    export: &Exporter,
    eval: &EvalSet,
    budget: f64,
) -> Result<BudgetFit> {
    let float_accuracy = eval.accuracy(float)?;
    let mut kept: Vec<Target> = targets.to_vec();
    let mut model = export(&kept)?;
    let mut acc = eval.accuracy(&model)?;
    let mut kept_float = Vec::new();
    let sensitivity = if float_accuracy - acc > budget {
        layer_sensitivity(float, targets, export, eval)?
    } else {
        Vec::new()
    };
    for s in &sensitivity {
        if float_accuracy - acc <= budget || kept.len() <= 1 {
            break;
        }
        kept.retain(|t| t.name != s.name);
        let op_type = targets
            .iter()
            .find(|t| t.name == s.name)
            .map(|t| t.op_type.clone());
        kept_float.push(FloatNode {
            name: s.name.clone(),
            op_type: op_type.unwrap_or_default(),
            reason: format!(
                "accuracy budget {:.2}%: quantizing it alone costs {:.2}% accuracy",
                100.0 * budget,
                100.0 * s.value
            ),
        });
        model = export(&kept)?;
        acc = eval.accuracy(&model)?;
    }
    Ok(BudgetFit {
        model,
        targets: kept,
        kept_float,
        accuracy: AccuracyReport {
            samples: eval.labels.as_ref().map_or(0, Vec::len),
            float_accuracy,
            quantized_accuracy: acc,
            accuracy_drop: float_accuracy - acc,
            budget: Some(budget),
        },
        sensitivity,
    })
}

//! The `evaluate` step: measures the model (size, parameters, MACs; top-1/top-5 accuracy
//! on the test split of labelled data; optionally ONNX Runtime latency) and passes it on
//! unchanged. A recipe's `evaluate` table holds the same settings and measures the input
//! model and the model after every step ([`crate::runner`]).

use serde::{Deserialize, Serialize};
use whittle_data::Split;
use whittle_exec::model_inputs;
use whittle_ir::Model;

use super::{Ctx, Step, StepReport};
use crate::eval::{Evaluator, LatencyPlan, Metrics};
use crate::source::DataSource;
use crate::Result;

/// What to measure; size, parameters and MACs always.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Evaluate {
    /// Labelled data (a dataset SPEC; its test split) for top-1/top-5 accuracy; None: no
    /// accuracy.
    pub data: Option<String>,
    /// Test samples to measure accuracy on (the first ones).
    pub samples: usize,
    /// Samples per run.
    pub batch_size: usize,
    /// Time one-sample runs in ONNX Runtime (median of 15 after 3 warm-up runs).
    pub latency: bool,
}

impl Default for Evaluate {
    fn default() -> Self {
        Evaluate {
            data: None,
            samples: 1000,
            batch_size: 64,
            latency: false,
        }
    }
}

impl Evaluate {
    /// The metrics of `model`.
    pub fn measure(&self, ctx: &Ctx<'_>, model: &Model) -> Result<Metrics> {
        let mut evaluator = Evaluator::new().with_cost();
        if let Some(spec) = &self.data {
            let data = DataSource::new(spec.as_str())
                .with_role("evaluate `data`")
                .load(&model_inputs(model), Split::Test, Some(self.samples))?;
            evaluator = evaluator.with_labelled(data, self.batch_size);
        }
        if self.latency {
            evaluator = evaluator.with_latency(LatencyPlan {
                whittle: false,
                ..LatencyPlan::default()
            });
        }
        evaluator.evaluate(ctx, model)
    }
}

/// One line of `metrics` for a terminal.
pub fn describe(metrics: &Metrics) -> String {
    let mut parts = Vec::new();
    if let (Some(top1), Some(samples)) = (metrics.top1, metrics.samples) {
        parts.push(format!("top-1 {:.2}% on {samples} samples", 100.0 * top1));
    }
    if let Some(bytes) = metrics.size_bytes {
        parts.push(whittle_ir::memory::human_bytes(bytes));
    }
    if let Some(p) = metrics.parameters {
        parts.push(format!("{p} parameters"));
    }
    if let Some(m) = metrics.macs {
        parts.push(format!("{m} MACs"));
    }
    if let Some(ms) = metrics.latency_ms_ort {
        parts.push(format!("{ms:.3} ms in ONNX Runtime"));
    }
    parts.join(", ")
}

impl Step for Evaluate {
    fn name(&self) -> &'static str {
        "evaluate"
    }

    fn run(&self, ctx: &mut Ctx<'_>, model: Model) -> Result<(Model, StepReport)> {
        let metrics = self.measure(ctx, &model)?;
        let summary = vec![describe(&metrics)];
        Ok((model, StepReport::new(self.name(), &metrics, summary)?))
    }

    fn data_specs(&self) -> Vec<&str> {
        self.data.iter().map(String::as_str).collect()
    }
}

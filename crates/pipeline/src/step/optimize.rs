//! The `optimize` step: lossless graph optimization (folding, fusion, clean-up passes),
//! optionally checked by running both models on the same random inputs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use whittle_ir::Model;
use whittle_passes::optimize::{optimize, verify, Pipeline};

use super::{Ctx, Step, StepReport};
use crate::error::{Context, PipelineError, Result};
use crate::observer::Event;

/// Largest relative output difference the check accepts.
pub const VERIFY_TOLERANCE: f64 = 1e-5;

/// Configuration of the `optimize` step.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Optimize {
    /// Passes to run instead of the default pipeline (see
    /// [`whittle_passes::optimize::pass_names`]).
    pub passes: Option<Vec<String>>,
    /// Check that the optimized model's outputs agree with the original's.
    pub verify: bool,
    /// Full shape of inputs for the check, by input name (symbolic sizes are 1 otherwise).
    pub shapes: BTreeMap<String, Vec<usize>>,
}

/// One pass and how many changes it made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PassChanges {
    /// The pass.
    pub name: String,
    /// Changes it made (over every round).
    pub changes: usize,
}

/// What the `optimize` step did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OptimizeSummary {
    /// Nodes before.
    pub nodes_before: usize,
    /// Nodes after.
    pub nodes_after: usize,
    /// Parameters before.
    pub params_before: u64,
    /// Parameters after.
    pub params_after: u64,
    /// Changes per pass.
    pub passes: Vec<PassChanges>,
    /// Largest relative output difference (when checked).
    pub max_relative_diff: Option<f64>,
}

impl Optimize {
    /// Optimizes `model`; fails when the check finds an output that differs by more than
    /// [`VERIFY_TOLERANCE`].
    pub fn optimize(&self, ctx: &Ctx<'_>, model: &Model) -> Result<(Model, OptimizeSummary)> {
        let pipeline = match &self.passes {
            Some(names) => Pipeline::from_names(names).context(|| "passes".into())?,
            None => Pipeline::default_passes(),
        };
        let observer = ctx.observer;
        observer.event(&Event::Begin {
            task: "optimize".into(),
            total: Some(pipeline.len() as u64),
        });
        let mut done = 0;
        let result = optimize(model, &pipeline, &mut |name| {
            done += 1;
            observer.event(&Event::Progress {
                done,
                message: Some(name.to_string()),
            });
        });
        observer.event(&Event::End);
        let (optimized, report) = result.context(|| "optimizing the model".into())?;
        let max_relative_diff = if self.verify {
            Some(self.check(model, &optimized)?)
        } else {
            None
        };
        let summary = OptimizeSummary {
            nodes_before: report.before.nodes,
            nodes_after: report.after.nodes,
            params_before: report.before.params,
            params_after: report.after.params,
            passes: report
                .passes
                .iter()
                .map(|p| PassChanges {
                    name: p.name.to_string(),
                    changes: p.changes,
                })
                .collect(),
            max_relative_diff,
        };
        Ok((optimized, summary))
    }

    /// The largest relative output difference between `before` and `after`.
    fn check(&self, before: &Model, after: &Model) -> Result<f64> {
        let shapes = self.shapes.clone().into_iter().collect();
        let diffs =
            verify::compare(before, after, &shapes).context(|| "verifying outputs".into())?;
        if let Some(d) = diffs
            .iter()
            .find(|d| d.relative_diff.is_nan() || d.relative_diff > VERIFY_TOLERANCE)
        {
            return Err(PipelineError::invalid(
                "verification failed",
                format!(
                    "output '{}' differs by {:.3e} (relative), above {VERIFY_TOLERANCE:e}",
                    d.name, d.relative_diff
                ),
            ));
        }
        Ok(diffs.iter().fold(0.0, |m, d| m.max(d.relative_diff)))
    }
}

impl Step for Optimize {
    fn name(&self) -> &'static str {
        "optimize"
    }

    fn run(&self, ctx: &mut Ctx<'_>, model: Model) -> Result<(Model, StepReport)> {
        let (optimized, s) = self.optimize(ctx, &model)?;
        let mut lines = vec![format!(
            "nodes {} -> {}, parameters {} -> {}",
            s.nodes_before, s.nodes_after, s.params_before, s.params_after
        )];
        lines.extend(
            s.max_relative_diff
                .map(|d| format!("max relative output difference {d:.2e}")),
        );
        let report = StepReport::new(self.name(), &s, lines)?;
        Ok((optimized, report))
    }
}

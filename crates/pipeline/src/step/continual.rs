//! The `continual` step: continual learning of the model over a scenario's tasks (one run
//! per seed, the fine-tune and joint baselines beside), optionally with LoRA adapters per
//! task and compression of the final model; passes on the first seed's final model (the
//! uncompressed one) and reports the R matrix, the figures over seeds and the compressed
//! variants.

use serde::{Deserialize, Serialize};
use whittle_ir::Model;
use whittle_train::continual::NoHook;
use whittle_train::schedule::Schedule;

use super::{Ctx, Step, StepReport};
use crate::continual::{run_continual, ContinualSpec};
use crate::error::{PipelineError, Result};

/// The learning-rate schedules a continual run takes by name (the CLI's `--lr-schedule`,
/// the UI form's `lr_schedule`).
pub const LR_SCHEDULES: [&str; 2] = ["constant", "cosine"];

/// The schedule within each task that `name` (one of [`LR_SCHEDULES`]) means: `constant`,
/// or `cosine` from the peak rate down to 0 over the task's steps, without warmup. The
/// error names `what`, the option or field that gave `name`.
pub fn lr_schedule(what: &str, name: &str) -> Result<Schedule> {
    match name {
        "constant" => Ok(Schedule::Constant),
        "cosine" => Ok(Schedule::WarmupCosine {
            warmup: 0,
            min_lr: 0.0,
        }),
        other => Err(PipelineError::invalid(
            what,
            format!("{other}: choose {}", LR_SCHEDULES.join(" or ")),
        )),
    }
}

/// Configuration of the `continual` step: the keys of [`ContinualSpec`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContinualStep {
    /// What to run.
    pub spec: ContinualSpec,
}

impl Step for ContinualStep {
    fn name(&self) -> &'static str {
        "continual"
    }

    fn data_specs(&self) -> Vec<&str> {
        vec![self.spec.data.as_str()]
    }

    fn run(&self, ctx: &mut Ctx<'_>, model: Model) -> Result<(Model, StepReport)> {
        let (trained, report, _) = run_continual(ctx, model, &self.spec, &mut NoHook)?;
        let pct = |v: f64| format!("{:.1}%", 100.0 * v);
        let mut summary = vec![format!(
            "{} {}: average accuracy {}, forgetting {} points over {} seed(s)",
            report.scenario,
            report.strategy,
            pct(report.summary.average_accuracy),
            pct(report.summary.forgetting).trim_end_matches('%'),
            report.seeds.len()
        )];
        summary.extend(report.compressed.iter().map(|(name, m)| {
            format!(
                "{name}: average accuracy {}, forgetting {} points, {} bytes",
                pct(m.average_accuracy),
                pct(m.forgetting).trim_end_matches('%'),
                m.size_bytes
            )
        }));
        Ok((trained, StepReport::new(self.name(), &report, summary)?))
    }
}

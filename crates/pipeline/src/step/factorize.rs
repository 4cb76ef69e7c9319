//! The `factorize` step: low-rank factorization of Gemm/MatMul/Conv weights by truncated
//! SVD, with the model's accuracy before and after on optional labelled data.

use serde::{Deserialize, Serialize};
use whittle_ir::Model;
use whittle_passes::factorize::{factorize, FactorizeConfig, FactorizeReport, RankRule};

use super::train::TestSet;
use super::{Ctx, Step, StepReport};
use crate::error::{Context, Result};
use crate::refuse;

/// Configuration of the `factorize` step (the options of `whittle factorize`); exactly one
/// of `rank_ratio` and `energy` chooses the ranks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Factorize {
    /// Rank as a fraction of min(in, out), in (0, 1]: r = ceil(R · min(in, out)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank_ratio: Option<f64>,
    /// Smallest rank keeping this fraction of the spectral energy Σσ², in (0, 1].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy: Option<f64>,
    /// Only these layers (node names; unnamed nodes go by their first output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<String>>,
    /// Labelled data (its test split) to measure accuracy on before and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_data: Option<String>,
    /// Eval samples to use (None: the whole test split).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_samples: Option<usize>,
}

/// What a `factorize` step did.
#[derive(Clone, Debug, Serialize)]
pub struct FactorizeOutcome {
    /// Every candidate layer and the parameters before and after.
    #[serde(flatten)]
    pub report: FactorizeReport,
    /// Accuracy before, with eval data.
    pub accuracy_before: Option<f64>,
    /// Accuracy after, with eval data.
    pub accuracy_after: Option<f64>,
}

impl Factorize {
    /// The rank rule (exactly one of `rank_ratio` and `energy`).
    pub fn rank(&self) -> Result<RankRule> {
        match (self.rank_ratio, self.energy) {
            (Some(r), None) => Ok(RankRule::Ratio(r)),
            (None, Some(e)) => Ok(RankRule::Energy(e)),
            _ => refuse!("give exactly one of `rank_ratio` and `energy`"),
        }
    }

    /// Factorizes `model`.
    pub fn factorize(&self, ctx: &Ctx<'_>, model: &Model) -> Result<(Model, FactorizeOutcome)> {
        let cfg = FactorizeConfig {
            layers: self.layers.clone(),
            ..FactorizeConfig::new(self.rank()?)
        };
        let test = match &self.eval_data {
            Some(spec) => Some(TestSet::load(
                spec,
                "`eval_data`",
                model,
                self.eval_samples,
            )?),
            None => None,
        };
        let (factorized, report) = factorize(model, &cfg).context(|| "factorizing".into())?;
        let (accuracy_before, accuracy_after) = match &test {
            Some(t) => (
                Some(t.accuracy(ctx, model)?),
                Some(t.accuracy(ctx, &factorized)?),
            ),
            None => (None, None),
        };
        Ok((
            factorized,
            FactorizeOutcome {
                report,
                accuracy_before,
                accuracy_after,
            },
        ))
    }
}

impl Step for Factorize {
    fn name(&self) -> &'static str {
        "factorize"
    }

    fn run(&self, ctx: &mut Ctx<'_>, model: Model) -> Result<(Model, StepReport)> {
        let (model, outcome) = self.factorize(ctx, &model)?;
        let r = &outcome.report;
        let done = r.layers.iter().filter(|l| l.skipped_reason.is_none());
        let mut summary = vec![format!(
            "factorized {} of {} layers: {} -> {} parameters",
            done.count(),
            r.layers.len(),
            r.params_before,
            r.params_after
        )];
        if let (Some(b), Some(a)) = (outcome.accuracy_before, outcome.accuracy_after) {
            summary.push(format!("accuracy {:.2}% -> {:.2}%", 100.0 * b, 100.0 * a));
        }
        Ok((model, StepReport::new(self.name(), &outcome, summary)?))
    }

    fn data_specs(&self) -> Vec<&str> {
        self.eval_data.as_deref().into_iter().collect()
    }
}

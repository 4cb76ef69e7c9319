//! The auto-optimizer form: whittle-search's [`AutoConfig`] from the page's fields, with the
//! model and data confined to the allowed folders and the best model kept in the job's
//! folder.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use whittle_pipeline::{DataSource, ModelSource};
use whittle_search::auto::config::{parse_duration, DEFAULT_TIME};
use whittle_search::auto::{AutoConfig, Budget, Target};

use crate::api::ApiError;
use crate::fields::{self, bad};
use crate::security::Roots;

/// The auto-optimizer form's fields (those of `whittle auto`, `-` as `_`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AutoForm {
    /// An ONNX file under an allowed folder, or `zoo:NAME[:opts]`.
    pub model: String,
    /// Labelled data (a dataset SPEC): its train split calibrates and fine-tunes.
    pub data: String,
    /// Labelled data whose test split measures accuracy; none: `data`.
    #[serde(default)]
    pub eval_data: Option<String>,
    /// `speed`, `size`, `accuracy` or `balanced`.
    pub target: String,
    /// Largest top-1 accuracy drop allowed, in percentage points.
    #[serde(default = "default_drop")]
    pub max_accuracy_drop: f64,
    /// Largest ONNX Runtime latency at batch 1, milliseconds.
    #[serde(default)]
    pub max_latency_ms: Option<f64>,
    /// Largest model file, megabytes (10^6 bytes).
    #[serde(default)]
    pub max_size_mb: Option<f64>,
    /// Trials at most.
    #[serde(default)]
    pub max_trials: Option<usize>,
    /// Time budget (`90s`, `20m`, `1.5h`); with neither this nor `max_trials`, 20 minutes.
    #[serde(default)]
    pub budget: Option<String>,
    /// Fine-tuning epochs of pruned or factorized candidates.
    #[serde(default = "default_finetune_epochs")]
    pub finetune_epochs: usize,
    /// Seed of every random choice.
    #[serde(default)]
    pub seed: u64,
}

fn default_drop() -> f64 {
    1.0
}

fn default_finetune_epochs() -> usize {
    1
}

impl AutoForm {
    /// The search the form describes, its paths confined to `roots`; bad values are 400
    /// naming the field. Its work folder and output are left empty: the job sets them.
    pub fn config(&self, roots: &Roots) -> Result<AutoConfig, ApiError> {
        fields::model(&self.model)?;
        let model = match ModelSource::parse(&self.model) {
            ModelSource::File(path) => {
                ModelSource::File(roots.confine("model", &path.display().to_string())?)
            }
            zoo => zoo,
        };
        let data = |field: &str, spec: &str| -> Result<DataSource, ApiError> {
            fields::data(field, spec)?;
            let spec = roots.confine_spec(field, spec)?;
            Ok(DataSource::new(spec.as_str()).with_role(field))
        };
        let train = data("data", &self.data)?;
        let eval = match &self.eval_data {
            Some(spec) if !spec.trim().is_empty() => data("eval_data", spec)?,
            _ => train.clone(),
        };
        let target = (self.target.parse::<Target>()).map_err(|e| bad("target", e))?;
        let time = match (&self.budget, self.max_trials) {
            (Some(text), _) if !text.trim().is_empty() => {
                Some(parse_duration(text.trim()).map_err(|e| bad("budget", e))?)
            }
            (_, None) => Some(DEFAULT_TIME),
            _ => None,
        };
        let max_size_bytes = match self.max_size_mb {
            Some(mb) if !(mb.is_finite() && mb > 0.0) => {
                return Err(bad("max_size_mb", format!("must be positive, got {mb}")))
            }
            mb => mb.map(|mb| (mb * 1e6) as u64),
        };
        let config = AutoConfig {
            model,
            data: train,
            eval_data: eval,
            target,
            max_accuracy_drop: self.max_accuracy_drop,
            max_latency_ms: self.max_latency_ms,
            max_size_bytes,
            budget: Budget {
                time,
                trials: self.max_trials,
            },
            finetune_epochs: self.finetune_epochs,
            threads: 1,
            seed: self.seed,
            exhaustive: false,
            actions: None,
            work_dir: PathBuf::new(),
            output: PathBuf::new(),
        };
        config
            .validate()
            .map_err(|e| ApiError::bad_request(field_names(&e.to_string())))?;
        Ok(config)
    }
}

/// `message` with the CLI's option names (`--max-accuracy-drop`) written as the form's
/// fields (`max_accuracy_drop`).
fn field_names(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("--") {
        out.push_str(&rest[..at]);
        let option = &rest[at + 2..];
        let len = option
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(option.len());
        out.push_str(&option[..len].replace('-', "_"));
        rest = &option[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::field_names;

    #[test]
    fn option_names_become_field_names() {
        assert_eq!(
            field_names("--max-accuracy-drop: must be between 0 and 100 points, got 101"),
            "max_accuracy_drop: must be between 0 and 100 points, got 101"
        );
        assert_eq!(
            field_names("--data/--eval-data: no labels"),
            "data/eval_data: no labels"
        );
    }
}

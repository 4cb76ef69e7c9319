//! The compress form, turned into the pipeline's [`Recipe`]; recipes from either source have
//! their paths confined to the allowed folders before they run.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use whittle_pipeline::recipe::{Format, Recipe};

use crate::api::ApiError;
use crate::fields::{self, bad};
use crate::security::Roots;

/// Numeric precision of the final model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Keep float32.
    #[default]
    Float,
    /// Static INT8 (per-channel, calibrated on the data).
    Int8,
    /// Half-precision floats.
    Fp16,
}

/// The compress form's fields.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Form {
    /// An ONNX file (a path under an allowed folder, or an upload) or `zoo:NAME[:opts]`.
    pub model: String,
    /// A labelled dataset SPEC (`mnist:DIR`, ...): training, calibration and evaluation.
    pub data: String,
    /// Enable hardware optimization: the lossless graph `optimize` step.
    #[serde(default)]
    pub optimize: bool,
    /// INT8 or FP16 (or float).
    #[serde(default)]
    pub precision: Precision,
    /// Fraction of weights to prune by magnitude, in [0, 1); 0: no pruning.
    #[serde(default)]
    pub sparsity: f64,
    /// Epochs of fine-tuning (pruned weights stay zero); 0: none.
    #[serde(default)]
    pub finetune_epochs: usize,
    /// Epochs of training from scratch, zoo models only; 0: none.
    #[serde(default)]
    pub train_epochs: usize,
    /// Training samples to use (the first ones); none: all.
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// Test samples the accuracy is measured on.
    #[serde(default = "default_eval_samples")]
    pub eval_samples: usize,
    /// Seed of every random choice.
    #[serde(default)]
    pub seed: u64,
}

fn default_eval_samples() -> usize {
    1000
}

impl Form {
    /// The recipe the form describes (as JSON, the keys of docs/RECIPES.md): train (zoo
    /// models), prune, fine-tune, optimize, INT8 or FP16, measuring the input and every
    /// step's model on the data with ONNX Runtime latency.
    pub fn recipe(&self) -> Result<Value, ApiError> {
        fields::model(&self.model)?;
        fields::data("data", &self.data)?;
        if !(0.0..1.0).contains(&self.sparsity) {
            return Err(bad(
                "sparsity",
                format!("{} is not in [0, 1)", self.sparsity),
            ));
        }
        fields::epochs("finetune_epochs", self.finetune_epochs, 0)?;
        fields::epochs("train_epochs", self.train_epochs, 0)?;
        if self.train_epochs > 0 && !self.model.starts_with(whittle_zoo::PREFIX) {
            return Err(bad(
                "train_epochs",
                "training from scratch is for zoo models (zoo:NAME); fine-tune a file instead",
            ));
        }
        fields::samples("eval_samples", Some(self.eval_samples))?;
        fields::samples("train_limit", self.train_limit)?;
        let training = |epochs: usize| {
            json!({ "step": "train", "data": self.data, "limit": self.train_limit,
                    "training": { "epochs": epochs } })
        };
        let mut steps = Vec::new();
        if self.train_epochs > 0 {
            steps.push(training(self.train_epochs));
        }
        if self.sparsity > 0.0 {
            steps.push(json!({ "step": "prune", "method": "magnitude",
                               "sparsity": self.sparsity, "data": self.data }));
        }
        if self.finetune_epochs > 0 {
            let mut step = training(self.finetune_epochs);
            step["step"] = "finetune".into();
            step["keep_zeros"] = (self.sparsity > 0.0).into();
            steps.push(step);
        }
        if self.optimize {
            steps.push(json!({ "step": "optimize" }));
        }
        match self.precision {
            Precision::Float => {}
            Precision::Int8 => steps.push(json!({ "step": "quantize", "calib_data": self.data,
                "calib_samples": 256, "per_channel": true, "no_latency": true })),
            Precision::Fp16 => steps.push(json!({ "step": "fp16", "no_latency": true })),
        }
        if steps.is_empty() {
            return Err(bad(
                "form",
                "nothing to do: enable optimization, INT8 or FP16, pruning or training",
            ));
        }
        Ok(json!({
            "model": self.model,
            "seed": self.seed,
            "evaluate": { "data": self.data, "samples": self.eval_samples, "latency": true },
            "steps": steps,
        }))
    }
}

/// Keys of a recipe (at any depth) that name a file or folder.
const PATH_KEYS: &[&str] = &["model", "teacher", "checkpoint_dir", "resume"];
/// Keys of a recipe (at any depth) that hold a dataset SPEC.
const SPEC_KEYS: &[&str] = &["data", "calib_data", "eval_data"];

/// `recipe` with its paths confined to `roots` and made absolute, parsed by the pipeline
/// (its errors name the step and key at fault). A zoo model needs no file.
pub fn confined_recipe(mut recipe: Value, roots: &Roots) -> Result<(Value, Recipe), ApiError> {
    if !recipe.is_object() {
        return Err(ApiError::bad_request("recipe: expected a JSON object"));
    }
    if recipe.get("output").is_some() {
        return Err(ApiError::bad_request(
            "recipe: `output` is not taken: the UI keeps the model in the job's folder \
             (download it from /api/jobs/{id}/model)",
        ));
    }
    confine_values(&mut recipe, roots, "recipe")?;
    let text = recipe.to_string();
    if let Some(at) = text.find("${") {
        let name: String = text[at..].chars().take_while(|&c| c != '}').collect();
        return Err(ApiError::bad_request(format!(
            "recipe: {name}}}: variables are not expanded here; give the path"
        )));
    }
    // A JSON text is YAML, so the pipeline's own parser reads it (and words its errors).
    let parsed =
        Recipe::parse(&text, Format::Yaml).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((recipe, parsed))
}

/// Confines every path and dataset SPEC under `value` (named `at` in errors).
fn confine_values(value: &mut Value, roots: &Roots, at: &str) -> Result<(), ApiError> {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let what = format!("{at}.{key}");
                match item {
                    Value::String(text) if PATH_KEYS.contains(&key.as_str()) => {
                        if !text.starts_with(whittle_zoo::PREFIX) {
                            *text = roots.confine(&what, text)?.display().to_string();
                        }
                    }
                    Value::String(text) if SPEC_KEYS.contains(&key.as_str()) => {
                        *text = roots.confine_spec(&what, text)?;
                    }
                    _ => confine_values(item, roots, &what)?,
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                confine_values(item, roots, &format!("{at}[{}]", i + 1))?;
            }
        }
        _ => {}
    }
    Ok(())
}

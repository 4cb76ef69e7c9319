//! Recipes: a model source, settings and ordered steps, read from TOML or YAML. A file
//! with a `training:` table (the training-config layout of similar tools) is translated
//! into the same steps (see [`training`]).
//!
//! `${NAME}` in a recipe is replaced by the environment variable NAME before parsing;
//! `${WHITTLE_ASSETS}` falls back to whittle's assets folder.

pub mod training;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result};
use crate::source::ModelSource;
use crate::step::evaluate::Evaluate;
use crate::step::StepConfig;

/// An ordered list of steps applied to a model.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The model to start from: an ONNX file or `zoo:NAME[:opts]`.
    pub model: ModelSource,
    /// Where to write the final model (the command line's `-o` wins).
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// Seed of every random choice.
    #[serde(default)]
    pub seed: u64,
    /// Threads for the executor and ONNX Runtime (None: one per core).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Measure the input model and the model after every step with these settings.
    #[serde(default)]
    pub evaluate: Option<Evaluate>,
    /// The steps, in order.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
}

/// The formats a recipe is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// TOML.
    Toml,
    /// YAML.
    Yaml,
}

impl Format {
    /// The format of `path`, by its extension.
    pub fn of(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Ok(Format::Toml),
            Some("yaml" | "yml") => Ok(Format::Yaml),
            _ => Err(PipelineError::invalid(
                path.display().to_string(),
                "a recipe must end in .toml, .yaml or .yml",
            )),
        }
    }
}

impl Recipe {
    /// Reads the recipe at `path` (TOML or YAML by extension).
    pub fn load(path: &Path) -> Result<Recipe> {
        let format = Format::of(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            PipelineError::invalid(format!("reading {}", path.display()), e.to_string())
        })?;
        Recipe::parse(&text, format).map_err(|e| match e {
            PipelineError::Invalid { what, reason } => {
                PipelineError::invalid(format!("{}: {what}", path.display()), reason)
            }
            other => PipelineError::invalid(path.display().to_string(), other.to_string()),
        })
    }

    /// Parses a recipe from `text` in `format`: a list of steps, or the training layout.
    pub fn parse(text: &str, format: Format) -> Result<Recipe> {
        let text = expand_vars(text)?;
        let value: serde_json::Value = match format {
            Format::Toml => toml::from_str(&text).map_err(|e| syntax(e.message(), e.span()))?,
            Format::Yaml => serde_norway::from_str(&text)
                .map_err(|e| PipelineError::invalid("YAML", e.to_string()))?,
        };
        let mut value = if value.get("training").is_some() {
            training::translate(value)?
        } else {
            value
        };
        let steps = match value.as_object_mut().and_then(|o| o.remove("steps")) {
            Some(serde_json::Value::Array(steps)) => steps,
            _ => return Err(PipelineError::invalid("recipe", "no list of `steps`")),
        };
        let mut recipe: Recipe = serde_json::from_value(value)
            .map_err(|e| PipelineError::invalid("recipe", e.to_string()))?;
        for (i, step) in steps.into_iter().enumerate() {
            let kind = step.get("step").and_then(|s| s.as_str()).unwrap_or("?");
            let what = format!("steps[{}] ({kind})", i + 1);
            let config = serde_json::from_value(step.clone())
                .map_err(|e| PipelineError::invalid(what, e.to_string()))?;
            recipe.steps.push(config);
        }
        if recipe.steps.is_empty() {
            return Err(PipelineError::invalid("recipe", "`steps` is empty"));
        }
        Ok(recipe)
    }
}

/// A TOML syntax error with its byte span.
fn syntax(message: &str, span: Option<std::ops::Range<usize>>) -> PipelineError {
    let at = span.map_or(String::new(), |s| format!(" (at byte {})", s.start));
    PipelineError::invalid(format!("TOML{at}"), message.to_string())
}

/// Replaces every `${NAME}` of `text` with the environment variable NAME
/// (`WHITTLE_ASSETS` falls back to whittle's assets folder).
fn expand_vars(text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(PipelineError::invalid(
                "recipe",
                "`${` without a closing `}`",
            ));
        };
        let name = &after[..end];
        let value = match std::env::var(name) {
            Ok(v) => v,
            Err(_) if name == "WHITTLE_ASSETS" => whittle_data::assets_dir().display().to_string(),
            Err(_) => {
                return Err(PipelineError::invalid(
                    format!("recipe variable ${{{name}}}"),
                    "not set in the environment",
                ))
            }
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_and_unknown_ones_are_named() {
        std::env::set_var("WHITTLE_RECIPE_TEST_DIR", "/data");
        assert_eq!(
            expand_vars("a = \"${WHITTLE_RECIPE_TEST_DIR}/x\"").unwrap(),
            "a = \"/data/x\""
        );
        let err = expand_vars("${WHITTLE_NOT_SET_ANYWHERE}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "recipe variable ${WHITTLE_NOT_SET_ANYWHERE}: not set in the environment"
        );
    }
}

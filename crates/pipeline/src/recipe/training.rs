//! The training-config layout that users of similar tools write, translated into steps:
//!
//! ```yaml
//! model: zoo:lenet
//! data: mnist:DIR            # training and calibration data
//! eval_data: mnist:DIR       # optional: accuracy before/after
//! training:
//!   epochs: 2
//!   lr_schedule: {enabled: true, type: warmup_cosine, warmup_epochs: 1, min_lr: 1.0e-6}
//!   pruning: {enabled: true, type: magnitude, target_sparsity: 0.5, during_training: true,
//!             schedule: polynomial, start_step: 0, end_step: 100, frequency: 10}
//!   quantization: {enabled: true, type: post_training, format: int8,
//!                  optimize_for_inference: true, measure_performance: true}
//! ```
//!
//! Pruning becomes a `prune` step (`structured`: channel pruning; `during_training`: a
//! gradual schedule while fine-tuning), else an enabled `lr_schedule` a `finetune` step;
//! `optimize_for_inference` an `optimize` step; quantization a `quantize` step (`format:
//! float16`: `fp16`; `type: during_training`: `qat`); `measure_performance` gives the
//! quantization step the eval data and ONNX Runtime latency (QAT: the eval data).
//! `training.limit` limits the training data of the step it becomes; a top-level
//! `evaluate` table is the recipe's ([`crate::step::evaluate::Evaluate`]).

use serde_json::{json, Map, Value};

use crate::error::{PipelineError, Result};

/// Keys of the layout besides `training` that the recipe keeps.
const KEPT: [&str; 5] = ["model", "output", "seed", "threads", "evaluate"];

/// Translates the layout in `value` into a recipe value with `steps`.
pub fn translate(value: Value) -> Result<Value> {
    let Value::Object(top) = value else {
        return Err(invalid("the file", "must be a table"));
    };
    let mut recipe = Map::new();
    for (key, v) in &top {
        match key.as_str() {
            k if KEPT.contains(&k) => {
                recipe.insert(key.clone(), v.clone());
            }
            "data" | "eval_data" | "training" => {}
            other => {
                return Err(invalid(
                    other,
                    "unknown key of the training layout (model, output, seed, threads, evaluate, \
                     data, eval_data, training)",
                ))
            }
        }
    }
    let data = top.get("data").and_then(Value::as_str);
    let eval_data = top.get("eval_data").and_then(Value::as_str);
    let training = table(&top, "training")?.unwrap_or_default();
    let mut steps = Vec::new();
    steps.extend(train_step(&training, data)?);
    steps.extend(quantization_steps(&training, data, eval_data)?);
    if steps.is_empty() {
        return Err(invalid("training", "enables nothing to do"));
    }
    recipe.insert("steps".into(), Value::Array(steps));
    Ok(Value::Object(recipe))
}

fn invalid(what: &str, reason: &str) -> PipelineError {
    PipelineError::invalid(format!("training layout: {what}"), reason)
}

/// The table at `key` of `parent` when it is there (refused when not a table).
fn table(parent: &Map<String, Value>, key: &str) -> Result<Option<Map<String, Value>>> {
    match parent.get(key) {
        None => Ok(None),
        Some(Value::Object(t)) => Ok(Some(t.clone())),
        Some(_) => Err(invalid(key, "must be a table")),
    }
}

/// The table at `key` of `training` when it is there and `enabled` (default true), without
/// its `enabled` flag.
fn enabled(training: &Map<String, Value>, key: &str) -> Result<Option<Map<String, Value>>> {
    let Some(mut t) = table(training, key)? else {
        return Ok(None);
    };
    let on = match t.remove("enabled") {
        None => true,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(invalid(&format!("{key}.enabled"), "must be true or false")),
    };
    Ok(on.then_some(t))
}

/// Removes `key` from `t` as a string.
fn take_str(t: &mut Map<String, Value>, key: &str, what: &str) -> Result<Option<String>> {
    match t.remove(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(&format!("{what}.{key}"), "must be a string")),
    }
}

/// Refuses keys of `t` that the translation does not know.
fn no_more(t: &Map<String, Value>, what: &str) -> Result<()> {
    match t.keys().next() {
        Some(k) => Err(invalid(&format!("{what}.{k}"), "unknown key")),
        None => Ok(()),
    }
}

/// The `data` key every training step needs.
fn need_data<'d>(data: Option<&'d str>, what: &str) -> Result<&'d str> {
    data.ok_or_else(|| invalid(what, "needs the layout's `data` (a dataset SPEC)"))
}

/// The training settings (epochs, learning rate, ...) with the LR schedule, if enabled.
fn training_settings(training: &Map<String, Value>) -> Result<Map<String, Value>> {
    let mut settings: Map<String, Value> = training
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "lr_schedule" | "pruning" | "quantization" | "limit"
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(schedule) = enabled(training, "lr_schedule")? {
        settings.insert("lr_schedule".into(), Value::Object(schedule));
    }
    Ok(settings)
}

/// A training step of `training`: `step` with `training.limit` (use only the first N
/// samples) as the step's `limit`.
fn with_limit(mut step: Value, training: &Map<String, Value>) -> Value {
    if let Some(limit) = training.get("limit") {
        step["limit"] = limit.clone();
    }
    step
}

/// Keys of `pruning` that shape a gradual (`during_training`) schedule.
const GRADUAL: [&str; 5] = [
    "start_step",
    "end_step",
    "frequency",
    "initial_sparsity",
    "steps",
];

/// A `prune` step (pruning enabled) or a `finetune` step (an enabled LR schedule).
fn train_step(training: &Map<String, Value>, data: Option<&str>) -> Result<Option<Value>> {
    let settings = training_settings(training)?;
    let step = if let Some(mut pruning) = enabled(training, "pruning")? {
        let data = need_data(data, "pruning")?;
        let method = take_str(&mut pruning, "type", "pruning")?;
        let curve = take_str(&mut pruning, "schedule", "pruning")?;
        let during = match pruning.remove("during_training") {
            None => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(invalid("pruning.during_training", "must be true or false")),
        };
        let mut schedule = Map::new();
        for key in GRADUAL {
            if let Some(v) = pruning.remove(key) {
                schedule.insert(key.into(), v);
            }
        }
        if let Some(curve) = curve {
            schedule.insert("curve".into(), json!(curve));
        }
        let kind = match (
            during,
            schedule.keys().find(|k| *k != "curve" && *k != "steps"),
        ) {
            (true, _) => "gradual",
            (false, Some(key)) => {
                return Err(invalid(
                    &format!("pruning.{key}"),
                    "shapes a schedule during training; set `during_training: true`",
                ))
            }
            (false, None) if schedule.is_empty() => "oneshot",
            (false, None) => "iterative",
        };
        schedule.insert("kind".into(), json!(kind));
        let mut step = json!({
            "step": "prune",
            "data": data,
            "method": method.as_deref().unwrap_or("magnitude"),
            "schedule": schedule,
            "finetune": settings,
        });
        // The rest (target_sparsity, n, m, criterion, exclude, ...) are the step's keys.
        for (key, v) in pruning {
            step[key.as_str()] = v;
        }
        step
    } else if settings.contains_key("lr_schedule") {
        let data = need_data(data, "lr_schedule")?;
        json!({"step": "finetune", "data": data, "training": settings})
    } else {
        return Ok(None);
    };
    Ok(Some(with_limit(step, training)))
}

/// The `optimize` and quantization steps of an enabled `quantization` table.
fn quantization_steps(
    training: &Map<String, Value>,
    data: Option<&str>,
    eval_data: Option<&str>,
) -> Result<Vec<Value>> {
    let Some(mut q) = enabled(training, "quantization")? else {
        return Ok(Vec::new());
    };
    let what = "quantization";
    let flag = |q: &mut Map<String, Value>, key: &str| match q.remove(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(invalid(&format!("{what}.{key}"), "must be true or false")),
    };
    let optimize = flag(&mut q, "optimize_for_inference")?;
    let measure = flag(&mut q, "measure_performance")?;
    let kind = take_str(&mut q, "type", what)?.unwrap_or_else(|| "post_training".into());
    let format = take_str(&mut q, "format", what)?.unwrap_or_else(|| "int8".into());
    no_more(&q, what)?;
    let mut steps = Vec::new();
    if optimize {
        steps.push(json!({"step": "optimize"}));
    }
    let mut step = match (kind.as_str(), format.as_str()) {
        ("post_training", "int8") => {
            let calib = need_data(data, "quantization (static int8 calibrates on it)")?;
            json!({"step": "quantize", "calib_data": calib})
        }
        ("post_training", "float16" | "fp16") => json!({"step": "fp16"}),
        ("post_training", "int4") => json!({"step": "int4"}),
        ("during_training", "int8") => {
            let data = need_data(data, "quantization (QAT trains on it)")?;
            let step =
                json!({"step": "qat", "data": data, "training": training_settings(training)?});
            with_limit(step, training)
        }
        (kind, format) => {
            return Err(invalid(
                what,
                &format!(
                    "type {kind} with format {format} is not supported (post_training: int8, \
                     float16 or int4; during_training: int8)"
                ),
            ))
        }
    };
    match (measure, eval_data) {
        (true, Some(eval)) => step["eval_data"] = json!(eval),
        (true, None) => {}
        // QAT measures no latency.
        (false, _) if step["step"] == "qat" => {}
        (false, _) => step["no_latency"] = json!(true),
    }
    steps.push(step);
    Ok(steps)
}

//! Accuracy per task of a scenario: class-IL (the top class among all outputs) and task-IL
//! (the top class among the sample's own task's classes), from one inference pass.

use std::collections::HashMap;

use whittle_data::scenario::Scenario;
use whittle_exec::{Executor, Value};
use whittle_ir::numeric::argmax;
use whittle_ir::Model;

use crate::bail;
use crate::error::Result;

/// Test samples per inference batch.
const EVAL_BATCH: usize = 1000;

/// Accuracy of each task of a scenario, both ways.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskAccuracies {
    /// Top-1 among all classes, per task.
    pub plain: Vec<f64>,
    /// Top-1 among each task's own classes, per task.
    pub masked: Vec<f64>,
}

/// Both accuracies of `model` on each task's test set of `scenario` (one inference pass).
pub fn task_accuracies(model: &Model, scenario: &Scenario) -> Result<TaskAccuracies> {
    evaluate(&Executor::new(model)?, scenario)
}

/// Both accuracies of the executor's model on every task of `scenario`.
pub fn evaluate(exec: &Executor, scenario: &Scenario) -> Result<TaskAccuracies> {
    let inputs = exec.inputs();
    let [input] = inputs.as_slice() else {
        bail!(
            "continual learning needs a model with one input, this one has {}",
            inputs.len()
        );
    };
    let output = exec.output_names().first().cloned().unwrap_or_default();
    let mut result = TaskAccuracies {
        plain: Vec::new(),
        masked: Vec::new(),
    };
    for task in &scenario.tasks {
        let (mut plain, mut masked) = (0usize, 0usize);
        for batch in task.test.batches(EVAL_BATCH) {
            let (images, labels) = batch?;
            let feed = HashMap::from([(input.name.clone(), Value::try_from(&images)?)]);
            let out = exec.run(feed)?;
            let Some(scores) = out.get(&output) else {
                bail!("the model did not produce its output '{output}'");
            };
            let classes = scores.shape().last().copied().unwrap_or(0);
            if scores.rank() != 2 || classes < scenario.num_classes {
                bail!(
                    "the model's output '{output}' is {:?}; continual learning needs class scores [N, {}]",
                    scores.shape(),
                    scenario.num_classes
                );
            }
            let flat = scores.to_f32_vec()?;
            for (row, &label) in flat.chunks(classes).zip(labels) {
                plain += usize::from(argmax(row) as i64 == label);
                let own: Vec<f32> = task.classes.iter().map(|&c| row[c as usize]).collect();
                masked += usize::from(task.classes[argmax(&own)] == label);
            }
        }
        let n = task.test.len().max(1) as f64;
        result.plain.push(plain as f64 / n);
        result.masked.push(masked as f64 / n);
    }
    Ok(result)
}

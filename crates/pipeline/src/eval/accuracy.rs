//! Classification accuracy: top-1 / top-5 with one tie rule ([`whittle_ir::numeric::rank`]:
//! falling score, ties to the lower class, so top-1 is numpy's / ONNX Runtime's argmax),
//! per class and as a confusion matrix.

use serde::{Deserialize, Serialize};
use whittle_ir::numeric::rank;
use whittle_ir::TensorData;

use crate::error::{Context, Result};
use crate::refuse;

/// Accuracy figures of one evaluation.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Accuracy {
    /// Top-1 accuracy, 0..1.
    pub accuracy: f64,
    /// Top-5 accuracy, 0..1 (equals top-1 when there are 5 classes or fewer).
    pub top5: f64,
    /// Samples evaluated.
    pub samples: usize,
    /// Correct top-1 predictions.
    pub correct: usize,
    /// Top-1 figures of each class the model scores, in class order.
    pub per_class: Vec<ClassAccuracy>,
    /// Sample counts by true class (rows) and top-1 predicted class (columns).
    pub confusion: Vec<Vec<usize>>,
}

/// Top-1 figures of the samples of one true class.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ClassAccuracy {
    /// The class index.
    pub class: usize,
    /// The class name, when the dataset names its classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Samples of this class.
    pub samples: usize,
    /// Those predicted as this class.
    pub correct: usize,
    /// `correct / samples`, or `None` (JSON null) when the class has no samples.
    pub accuracy: Option<f64>,
}

/// Running counts of a classification evaluation.
#[derive(Default, Debug, Clone)]
pub struct Tally {
    /// Correct top-5 predictions.
    correct5: usize,
    /// Counts by true class (rows) and predicted class (columns); sized by the first row.
    confusion: Vec<Vec<usize>>,
    /// The first sample whose scores are not all finite, and how many such samples.
    not_finite: Option<(usize, usize)>,
    /// Samples seen, counted or not.
    seen: usize,
}

impl Tally {
    /// Counts one sample of class `label` with class scores `row`; a row with a score that
    /// is not finite is set aside (see [`Tally::finish`]).
    pub fn add(&mut self, row: &[f64], label: i64) -> Result<()> {
        let sample = self.seen;
        self.seen += 1;
        if !row.iter().all(|s| s.is_finite()) {
            self.not_finite.get_or_insert((sample, 0)).1 += 1;
            return Ok(());
        }
        let class = usize::try_from(label).ok().filter(|&l| l < row.len());
        let Some(class) = class else {
            refuse!(
                "label {label} is out of range for a model with {} classes",
                row.len()
            );
        };
        if self.confusion.is_empty() {
            self.confusion = vec![vec![0; row.len()]; row.len()];
        }
        if self.confusion.len() != row.len() {
            refuse!(
                "the model scored {} classes, then {}",
                self.confusion.len(),
                row.len()
            );
        }
        let predicted = whittle_ir::numeric::argmax(row);
        self.confusion[class][predicted] += 1;
        self.correct5 += usize::from(rank(row, class) < 5);
        Ok(())
    }

    /// The figures of the samples counted, with `class_names` (may be empty). Fails,
    /// saying how many samples, when some scores were not all finite (a ranking of NaN
    /// means nothing); `output` names the scores.
    pub fn finish(self, class_names: &[String], output: &str) -> Result<Accuracy> {
        if let Some((first, count)) = self.not_finite {
            refuse!(
                "the model's output '{output}' is not finite (NaN or infinite scores) for \
                 {count} of {} samples (the first is sample {first}); no accuracy can be measured",
                self.seen
            );
        }
        let per_class: Vec<ClassAccuracy> = self
            .confusion
            .iter()
            .enumerate()
            .map(|(class, row)| {
                let (samples, correct) = (row.iter().sum::<usize>(), row[class]);
                ClassAccuracy {
                    class,
                    name: class_names.get(class).cloned(),
                    samples,
                    correct,
                    accuracy: (samples > 0).then(|| correct as f64 / samples as f64),
                }
            })
            .collect();
        let samples = per_class.iter().map(|c| c.samples).sum::<usize>();
        let correct = per_class.iter().map(|c| c.correct).sum::<usize>();
        let total = samples.max(1) as f64;
        Ok(Accuracy {
            accuracy: correct as f64 / total,
            top5: self.correct5 as f64 / total,
            samples,
            correct,
            per_class,
            confusion: self.confusion,
        })
    }
}

/// Splits class scores [N, C] into rows, checking the shape.
pub fn scores_2d(scores: &TensorData, n: usize) -> Result<Vec<Vec<f64>>> {
    let dims = scores.dims();
    if dims.len() != 2 || dims[0] != n {
        refuse!("the model's output has shape {dims:?}, expected [{n}, classes]");
    }
    let v = scores
        .to_f64_vec()
        .context(|| "reading class scores".into())?;
    Ok(v.chunks(dims[1].max(1)).map(<[f64]>::to_vec).collect())
}

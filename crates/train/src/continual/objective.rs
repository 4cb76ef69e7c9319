//! The loss of one continual-learning step as a sum of terms over row ranges of one batch
//! (new samples first, then replayed ones): cross-entropy on labels (on task-IL masked
//! scores), MSE to stored logits (DER++), distillation of a previous model's scores (LwF).

use std::ops::Range;

use candle_core::{Device, Tensor};

use crate::bail;
use crate::error::Result;
use crate::loss::{cross_entropy, kl_divergence, mse};
use crate::step::{LossFn, LossInput};

/// Added to the scores of classes outside a sample's task under task-IL masking: far below
/// any real score, so softmax gives them nothing (and no gradient), yet finite.
const MASKED: f32 = -1e4;

/// One term of the loss.
pub enum Term {
    /// `weight` x mean cross-entropy of rows `rows` against their labels.
    CrossEntropy {
        /// The rows.
        rows: Range<usize>,
        /// The weight.
        weight: f64,
        /// Added to these rows' scores (`[rows, C]`) besides the task-IL mask: ER-ACE's
        /// restriction of new samples to the classes of their batch ([`batch_mask`]).
        mask: Option<Tensor>,
    },
    /// `weight` x MSE between the raw scores of rows `rows` and `target` (`[rows, C]`).
    Logits {
        /// The rows.
        rows: Range<usize>,
        /// The stored scores.
        target: Tensor,
        /// The weight.
        weight: f64,
    },
    /// `weight` x distillation (temperature `temperature`) of `target`'s scores on the
    /// classes `classes` into those of rows `rows`.
    Distill {
        /// The rows.
        rows: Range<usize>,
        /// The classes distilled (column indices, u32).
        classes: Tensor,
        /// The teacher's scores `[rows, C]`.
        target: Tensor,
        /// The weight.
        weight: f64,
        /// The temperature.
        temperature: f64,
    },
}

/// A task-IL mask for `labels`: `[N, C]`, 0 on the classes of each label's task
/// (`task_of_class`), [`MASKED`] elsewhere.
pub fn task_mask(labels: &[i64], task_of_class: &[Option<usize>]) -> Result<Tensor> {
    let classes = task_of_class.len();
    let mut mask = vec![MASKED; labels.len() * classes];
    for (row, &label) in labels.iter().enumerate() {
        let task = task_of_class.get(label as usize).copied().flatten();
        for (c, owner) in task_of_class.iter().enumerate() {
            if task.is_some() && *owner == task {
                mask[row * classes + c] = 0.0;
            }
        }
    }
    Ok(Tensor::from_vec(
        mask,
        (labels.len(), classes),
        &Device::Cpu,
    )?)
}

/// ER-ACE's mask of a batch of new samples (Caccia et al., 2022): `[N, C]`, 0 on the
/// classes among `labels`, [`MASKED`] elsewhere, so that their cross-entropy pushes down
/// no class they do not show (the old classes' scores are left to the replayed rows).
pub fn batch_mask(labels: &[i64], classes: usize) -> Result<Tensor> {
    let mut present = vec![MASKED; classes];
    for &label in labels {
        if let Some(p) = usize::try_from(label).ok().and_then(|l| present.get_mut(l)) {
            *p = 0.0;
        }
    }
    let mask = present.repeat(labels.len());
    Ok(Tensor::from_vec(
        mask,
        (labels.len(), classes),
        &Device::Cpu,
    )?)
}

/// The loss of `terms` on the graph output `output`, with `mask` added to the scores that
/// cross-entropy sees.
pub fn loss(output: String, terms: Vec<Term>, mask: Option<Tensor>) -> LossFn {
    Box::new(move |x: &LossInput| {
        let Some(scores) = x.outputs.get(&output) else {
            bail!("the model did not produce its output '{output}'");
        };
        let raw = scores.tensor();
        let masked = match &mask {
            Some(m) => raw.to_dtype(candle_core::DType::F32)?.broadcast_add(m)?,
            None => raw.clone(),
        };
        let mut total: Option<Tensor> = None;
        for term in &terms {
            let value = match term {
                Term::CrossEntropy { rows, weight, mask } => {
                    let mut part = masked.narrow(0, rows.start, rows.len())?;
                    if let Some(m) = mask {
                        part = part.to_dtype(candle_core::DType::F32)?.broadcast_add(m)?;
                    }
                    (cross_entropy(&part, &x.labels[rows.clone()], 0.0)? * *weight)?
                }
                Term::Logits {
                    rows,
                    target,
                    weight,
                } => {
                    let part = raw.narrow(0, rows.start, rows.len())?;
                    (mse(&part.to_dtype(candle_core::DType::F32)?, target)? * *weight)?
                }
                Term::Distill {
                    rows,
                    classes,
                    target,
                    weight,
                    temperature,
                } => {
                    let part = raw
                        .narrow(0, rows.start, rows.len())?
                        .index_select(classes, 1)?;
                    let teacher = target.index_select(classes, 1)?;
                    (kl_divergence(&part, &teacher, *temperature)? * *weight)?
                }
            };
            total = Some(match total {
                Some(t) => (t + value)?,
                None => value,
            });
        }
        match total {
            Some(t) => Ok(t),
            None => bail!("a continual-learning step without loss terms"),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use whittle_exec::Value;

    use super::*;

    fn run(loss_fn: &mut LossFn, scores: &[f32], labels: &[i64]) -> f64 {
        let n = labels.len();
        let t = Tensor::from_vec(scores.to_vec(), (n, scores.len() / n), &Device::Cpu).unwrap();
        let outputs = HashMap::from([("y".to_string(), Value::f32(t).unwrap())]);
        let inputs = HashMap::new();
        let v = loss_fn(&LossInput {
            outputs: &outputs,
            inputs: &inputs,
            labels,
        })
        .unwrap();
        v.to_scalar::<f32>().unwrap() as f64
    }

    #[test]
    fn task_mask_keeps_only_the_labels_task() {
        let owner = [Some(0), Some(0), Some(1), Some(1)];
        let m = task_mask(&[3, 0], &owner)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(
            m,
            vec![
                vec![MASKED, MASKED, 0.0, 0.0],
                vec![0.0, 0.0, MASKED, MASKED]
            ]
        );
        // Masked cross-entropy of label 3 sees only classes 2 and 3: log 2 for equal scores,
        // however high class 0 scores.
        let mask = task_mask(&[3], &owner).unwrap();
        let terms = vec![Term::CrossEntropy {
            rows: 0..1,
            weight: 1.0,
            mask: None,
        }];
        let mut f = loss("y".into(), terms, Some(mask));
        let v = run(&mut f, &[9.0, 0.0, 1.0, 1.0], &[3]);
        assert!((v - 2f64.ln()).abs() < 1e-5, "{v}");
    }

    #[test]
    fn batch_mask_leaves_only_the_batchs_classes_to_new_rows() {
        let m = batch_mask(&[2, 3, 2], 4).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m, vec![vec![MASKED, MASKED, 0.0, 0.0]; 3]);
        // Row 0 (new, label 3) sees classes 2 and 3 only: log 2 however high class 0
        // scores; row 1 (replayed, label 0) sees all four classes.
        let terms = vec![
            Term::CrossEntropy {
                rows: 0..1,
                weight: 1.0,
                mask: Some(batch_mask(&[3, 2], 4).unwrap().narrow(0, 0, 1).unwrap()),
            },
            Term::CrossEntropy {
                rows: 1..2,
                weight: 1.0,
                mask: None,
            },
        ];
        let mut f = loss("y".into(), terms, None);
        let v = run(&mut f, &[9.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], &[3, 0]);
        let want = 2f64.ln() + 4f64.ln();
        assert!((v - want).abs() < 1e-5, "{v} vs {want}");
    }

    #[test]
    fn terms_add_with_their_weights() {
        // Row 0: CE of [0, ln 3] on label 1 = -ln 0.75; row 1: MSE of [1, 2] to [0, 4] = 2.5.
        let target = Tensor::new(&[[0f32, 4.0]], &Device::Cpu).unwrap();
        let terms = vec![
            Term::CrossEntropy {
                rows: 0..1,
                weight: 2.0,
                mask: None,
            },
            Term::Logits {
                rows: 1..2,
                target,
                weight: 0.5,
            },
        ];
        let mut f = loss("y".into(), terms, None);
        let v = run(&mut f, &[0.0, 3f32.ln(), 1.0, 2.0], &[1, 0]);
        let want = 2.0 * -(0.75f64.ln()) + 0.5 * 2.5;
        assert!((v - want).abs() < 1e-5, "{v} vs {want}");
        // Distillation of identical scores on the chosen classes is 0.
        let same = Tensor::new(&[[5f32, 1.0, 2.0]], &Device::Cpu).unwrap();
        let classes = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
        let terms = vec![Term::Distill {
            rows: 0..1,
            classes,
            target: same,
            weight: 1.0,
            temperature: 2.0,
        }];
        let mut f = loss("y".into(), terms, None);
        assert!(run(&mut f, &[5.0, -7.0, 2.0], &[0]).abs() < 1e-6);
    }
}

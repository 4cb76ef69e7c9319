//! Schedule drivers: one-shot pruning (then fine-tuning), iterative pruning (K steps with
//! fine-tuning between), and gradual pruning (masks updated during training).

use std::cell::RefCell;
use std::rc::Rc;

use whittle_data::Dataset;
use whittle_ir::Model;
use whittle_train::distill::{DistillConfig, Distiller};
use whittle_train::{TrainConfig, Trainer};

use super::finetune::{
    apply_to_params, mask_tensors, masked_finetune, read_params, to_train_error,
};
use super::mask::{apply, Mask};
use super::schedule::{iterative_targets, Curve, GradualSchedule};
use super::unstructured::Unstructured;
use super::{Pruned, Pruner};
use crate::{bail, Result};

/// Fine-tuning data and settings (`config.epochs` per fine-tune: after a one-shot prune,
/// between iterative steps, or in total for gradual pruning).
pub struct FineTune<'a> {
    /// Training data.
    pub train: &'a Dataset,
    /// Trainer settings.
    pub config: TrainConfig,
    /// Distil from this teacher (typically the unpruned model) instead of training on the
    /// labels alone.
    pub teacher: Option<(&'a Model, DistillConfig)>,
}

impl FineTune<'_> {
    /// A trainer for `model` with these settings and, with a teacher, the distillation loss.
    pub fn trainer(&self, model: &Model) -> Result<Trainer> {
        let trainer = Trainer::new(model, self.config.clone())?;
        let Some((teacher, cfg)) = &self.teacher else {
            return Ok(trainer);
        };
        let Some(scores) = trainer.executor().output_names().first().cloned() else {
            bail!("the pruned model has no output");
        };
        let mut distiller = Distiller::new(teacher, &scores, cfg.clone())?;
        Ok(trainer.with_loss(move |x| distiller.loss(x)))
    }
}

/// Prunes once to `sparsity`, then fine-tunes with the masks kept when `finetune` is given.
pub fn oneshot(
    pruner: &dyn Pruner,
    model: &Model,
    sparsity: f64,
    finetune: Option<&FineTune>,
) -> Result<Pruned> {
    let pruned = pruner.prune(model, sparsity)?;
    finetune_pruned(pruned, finetune)
}

/// Prunes in `steps` steps to `sparsity` (step k to `curve.at(0, sparsity, k/steps)`),
/// fine-tuning after each step when `finetune` is given.
pub fn iterative(
    pruner: &dyn Pruner,
    model: &Model,
    sparsity: f64,
    steps: usize,
    curve: Curve,
    finetune: Option<&FineTune>,
) -> Result<Pruned> {
    if pruner.fixed_sparsity() {
        bail!("this method sets its own sparsity; iterative schedules do not apply (use the one-shot schedule)");
    }
    let mut current = model.clone();
    let mut notes = Vec::new();
    let mut last = None;
    for (k, target) in iterative_targets(sparsity, steps, curve)?
        .into_iter()
        .enumerate()
    {
        let pruned = finetune_pruned(pruner.prune(&current, target)?, finetune)?;
        notes.push(format!(
            "step {}/{steps}: pruned to {:.2}%",
            k + 1,
            100.0 * target
        ));
        notes.extend(pruned.notes.iter().cloned());
        current = pruned.model.clone();
        last = Some(pruned);
    }
    let Some(last) = last else {
        bail!("iterative pruning took no step");
    };
    Ok(Pruned { notes, ..last })
}

/// Trains with `finetune` while the masks follow `schedule`: at each update step the
/// pruner recomputes them from the current weights at the curve's sparsity; after every
/// step they are re-applied.
pub fn gradual(
    pruner: &Unstructured,
    model: &Model,
    schedule: &GradualSchedule,
    finetune: &FineTune,
) -> Result<Pruned> {
    schedule.check()?;
    if pruner.fixed_sparsity() {
        bail!("this method sets its own sparsity; gradual schedules do not apply (use the one-shot schedule)");
    }
    let layers = pruner.layers(model)?;
    let state: Rc<RefCell<(Vec<Mask>, Vec<String>)>> = Rc::default();
    let shared = Rc::clone(&state);
    let (hook_pruner, sched) = (pruner.clone(), *schedule);
    let mut tensors = Vec::new();
    let mut trainer = finetune.trainer(model)?.with_step_hook(move |c| {
        if let Some(s) = sched.update_at(c.step) {
            let weights = read_params(c.exec, &layers)?;
            let (masks, notes) = hook_pruner.masks(&weights, s).map_err(to_train_error)?;
            tensors = mask_tensors(&masks, c.exec.device())?;
            *shared.borrow_mut() = (masks, notes);
        }
        apply_to_params(c.exec, &tensors)
    });
    let report = trainer.fit(finetune.train, None)?;
    let (masks, mut notes) = state.take();
    if report.steps < schedule.end {
        notes.push(format!(
            "training took {} steps, fewer than the schedule's end step {}: the final sparsity was not reached",
            report.steps, schedule.end
        ));
    }
    Ok(Pruned {
        model: apply(&trainer.model()?, &masks)?,
        masks,
        notes,
    })
}

/// `pruned` fine-tuned with its masks, when `finetune` is given.
fn finetune_pruned(pruned: Pruned, finetune: Option<&FineTune>) -> Result<Pruned> {
    let Some(ft) = finetune else {
        return Ok(pruned);
    };
    let (model, _) = masked_finetune(&pruned.model, &pruned.masks, ft)?;
    Ok(Pruned { model, ..pruned })
}

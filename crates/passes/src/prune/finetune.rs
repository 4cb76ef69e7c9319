//! Fine-tuning that keeps pruned weights at zero: after every optimizer step a trainer
//! hook multiplies each masked parameter by its 0/1 mask.

use candle_core::{Device, Tensor};
use whittle_exec::Executor;
use whittle_ir::Model;
use whittle_train::{TrainError, TrainReport};

use super::driver::FineTune;
use super::layers::{LayerWeights, PrunableLayer};
use super::mask::Mask;
use crate::Result;

/// A mask as a tensor, by weight name.
pub type MaskTensor = (String, Tensor);

/// The masks as 0/1 float tensors on `device`.
pub fn mask_tensors(masks: &[Mask], device: &Device) -> whittle_train::Result<Vec<MaskTensor>> {
    masks
        .iter()
        .map(|m| {
            let t = Tensor::from_vec(m.as_f32(), m.dims.as_slice(), device)?;
            Ok((m.weight.clone(), t))
        })
        .collect()
}

/// Multiplies every trainable parameter that has a mask by it (frozen weights cannot
/// change, so their zeros hold).
pub fn apply_to_params(exec: &Executor, masks: &[MaskTensor]) -> whittle_train::Result<()> {
    for (weight, mask) in masks {
        if let Some(var) = exec.params().get(weight) {
            let masked = var.as_tensor().mul(mask)?;
            var.set(&masked)?;
        }
    }
    Ok(())
}

/// The current values of `layers`' weights in `exec`.
pub fn read_params(
    exec: &Executor,
    layers: &[PrunableLayer],
) -> whittle_train::Result<Vec<LayerWeights>> {
    layers
        .iter()
        .map(|layer| {
            let Some(value) = exec.initializer(&layer.weight) else {
                whittle_train::bail!(
                    "weight {} of {} is not in the executor",
                    layer.weight,
                    layer.name
                );
            };
            Ok(LayerWeights {
                layer: layer.clone(),
                values: value.to_data()?.to_vec::<f32>()?,
            })
        })
        .collect()
}

/// Masks that keep the zeros `model`'s prunable layers already have (a pruned model's
/// sparsity pattern), for a later fine-tune that must not train them back; layers without
/// zeros get no mask.
pub fn zero_masks(model: &Model) -> Result<Vec<Mask>> {
    let layers = super::layers::prunable_layers(model, &[])?;
    let weights = super::layers::read_weights(model, &layers)?;
    Ok(weights
        .into_iter()
        .filter(|w| w.values.contains(&0.0))
        .map(|w| Mask {
            weight: w.layer.weight.clone(),
            dims: w.layer.dims.clone(),
            keep: w.values.iter().map(|v| *v != 0.0).collect(),
        })
        .collect())
}

/// A pass error as a training error (for hooks, which return training errors).
pub fn to_train_error(e: crate::PassError) -> TrainError {
    TrainError::Invalid(e.to_string())
}

/// Fine-tunes the pruned `model` as `finetune` says, re-applying `masks` after every
/// optimizer step, so that the pruned weights are exactly zero in the result.
pub fn masked_finetune(
    model: &Model,
    masks: &[Mask],
    finetune: &FineTune,
) -> Result<(Model, TrainReport)> {
    let trainer = finetune.trainer(model)?;
    let tensors = mask_tensors(masks, trainer.executor().device())?;
    let mut trainer = trainer.with_step_hook(move |c| apply_to_params(c.exec, &tensors));
    let report = trainer.fit(finetune.train, None)?;
    Ok((trainer.model()?, report))
}

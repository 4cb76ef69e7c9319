//! The unstructured pruner: zeroes single weights (per-layer or global magnitude, random,
//! N:M) and keeps their masks for fine-tuning.

use whittle_ir::Model;

use super::layers::{prunable_layers, read_weights, LayerWeights, PrunableLayer};
use super::magnitude::{global, magnitude_scores, per_layer, random};
use super::mask::{apply, check_sparsity, Mask};
use super::nm::{check_nm, nm_masks};
use super::{Pruned, Pruner};
use crate::{bail, Result};

/// How weights are chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Each layer to the target sparsity by |w|.
    Magnitude,
    /// One |w| threshold across all prunable layers.
    Global,
    /// Seeded random choice per layer (the baseline).
    Random {
        /// Seed of the choice.
        seed: u64,
    },
    /// N of every M consecutive weights along the reduction dimension are kept.
    NM {
        /// Weights kept per group.
        n: usize,
        /// Group size.
        m: usize,
    },
}

/// Unstructured pruning of the Conv/Gemm/MatMul weights not excluded.
#[derive(Clone, Debug, PartialEq)]
pub struct Unstructured {
    /// How weights are chosen.
    pub method: Method,
    /// Node or weight names left dense.
    pub exclude: Vec<String>,
}

impl Unstructured {
    /// A pruner; fails on an invalid N:M.
    pub fn new(method: Method, exclude: Vec<String>) -> Result<Self> {
        if let Method::NM { n, m } = method {
            check_nm(n, m)?;
        }
        Ok(Unstructured { method, exclude })
    }

    /// Masks of `weights` for `sparsity`, with notes for the user.
    pub fn masks(
        &self,
        weights: &[LayerWeights],
        sparsity: f64,
    ) -> Result<(Vec<Mask>, Vec<String>)> {
        check_sparsity(sparsity)?;
        Ok(match self.method {
            Method::Magnitude => (per_layer(weights, sparsity, magnitude_scores), Vec::new()),
            Method::Global => global(weights, sparsity),
            Method::Random { seed } => (random(weights, sparsity, seed), Vec::new()),
            Method::NM { n, m } => nm_masks(weights, n, m)?,
        })
    }

    /// The layers this pruner prunes in `model`; fails when there is none.
    pub fn layers(&self, model: &Model) -> Result<Vec<PrunableLayer>> {
        let layers = prunable_layers(model, &self.exclude)?;
        if layers.is_empty() {
            bail!("the model has no prunable layer (float Conv, Gemm or MatMul weight initializer) left to prune");
        }
        Ok(layers)
    }
}

impl Pruner for Unstructured {
    fn prune(&self, model: &Model, sparsity: f64) -> Result<Pruned> {
        let weights = read_weights(model, &self.layers(model)?)?;
        let (masks, notes) = self.masks(&weights, sparsity)?;
        Ok(Pruned {
            model: apply(model, &masks)?,
            masks,
            notes,
        })
    }

    fn fixed_sparsity(&self) -> bool {
        matches!(self.method, Method::NM { .. })
    }
}

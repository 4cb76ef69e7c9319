//! Pruning masks: which elements of a weight are kept, how they are chosen from scores,
//! and how they zero the weights of a model.

use whittle_ir::{Model, TensorData};

use crate::{bail, Result};

/// The kept elements of one weight initializer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    /// Name of the weight initializer.
    pub weight: String,
    /// Its shape.
    pub dims: Vec<usize>,
    /// Row-major, true where the element is kept.
    pub keep: Vec<bool>,
}

impl Mask {
    /// Number of pruned elements.
    pub fn pruned(&self) -> usize {
        self.keep.iter().filter(|&&k| !k).count()
    }

    /// The mask as 1.0 (kept) and 0.0 (pruned).
    pub fn as_f32(&self) -> Vec<f32> {
        self.keep.iter().map(|&k| f32::from(u8::from(k))).collect()
    }
}

/// Keep-flags that prune the `count` lowest `scores` (ties: the lower index is pruned
/// first), so exactly `count` elements are pruned.
pub fn prune_lowest(scores: &[f32], count: usize) -> Vec<bool> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut keep = vec![true; scores.len()];
    for &i in order.iter().take(count) {
        keep[i] = false;
    }
    keep
}

/// The number of elements of `numel` to prune for `sparsity`: `round(sparsity * numel)`
/// (halves round away from zero).
pub fn pruned_count(sparsity: f64, numel: usize) -> usize {
    ((sparsity * numel as f64).round() as usize).min(numel)
}

/// Fails unless `sparsity` is in [0, 1).
pub fn check_sparsity(sparsity: f64) -> Result<()> {
    if !(0.0..1.0).contains(&sparsity) {
        bail!("sparsity {sparsity} must be in [0, 1)");
    }
    Ok(())
}

/// A copy of `model` with the pruned elements of every masked weight set to 0.
pub fn apply(model: &Model, masks: &[Mask]) -> Result<Model> {
    let mut out = model.clone();
    let graph = out.graph_mut();
    for mask in masks {
        let Some(init) = graph.initializer.iter_mut().find(|t| t.name == mask.weight) else {
            bail!("masked weight {} is not an initializer", mask.weight);
        };
        let data = TensorData::from_proto(init, None)?;
        if data.dims() != mask.dims.as_slice() {
            bail!(
                "mask of {} has shape {:?}, the weight {:?}",
                mask.weight,
                mask.dims,
                data.dims()
            );
        }
        let mut values = data.to_vec::<f32>()?;
        for (v, &keep) in values.iter_mut().zip(&mask.keep) {
            if !keep {
                *v = 0.0;
            }
        }
        *init = TensorData::from_slice(mask.dims.clone(), &values)?.to_proto(&mask.weight);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prunes_exactly_the_lowest_with_ties_by_index() {
        let keep = prune_lowest(&[0.5, 0.1, 0.1, 0.9, 0.1], 2);
        assert_eq!(keep, vec![true, false, false, true, true]);
    }

    #[test]
    fn counts_round_to_nearest() {
        assert_eq!(pruned_count(0.5, 9), 5);
        assert_eq!(pruned_count(0.3, 10), 3);
        assert_eq!(pruned_count(0.0, 7), 0);
        assert!(check_sparsity(1.0).is_err());
        assert!(check_sparsity(-0.1).is_err());
    }
}

//! Unstructured selection by score: per layer (each layer to the target sparsity), global
//! (one magnitude threshold across layers) and the seeded random baseline. Weights that
//! are already zero score lowest, so pruning a pruned model again only adds to its mask.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::layers::LayerWeights;
use super::mask::{prune_lowest, pruned_count, Mask};

/// Share of a layer above which the global method reports it as almost fully pruned.
const NEAR_FULL: f64 = 0.95;

/// |w| of every weight.
pub fn magnitude_scores(values: &[f32]) -> Vec<f32> {
    values.iter().map(|v| v.abs()).collect()
}

/// Uniform random scores in [0, 1) from `rng`; weights already zero score -1.
pub fn random_scores(values: &[f32], rng: &mut ChaCha8Rng) -> Vec<f32> {
    values
        .iter()
        .map(|&v| if v == 0.0 { -1.0 } else { rng.random::<f32>() })
        .collect()
}

/// Each layer pruned to `sparsity` by `score` (lowest pruned first).
pub fn per_layer(
    weights: &[LayerWeights],
    sparsity: f64,
    mut score: impl FnMut(&[f32]) -> Vec<f32>,
) -> Vec<Mask> {
    weights
        .iter()
        .map(|w| {
            let count = pruned_count(sparsity, w.values.len());
            mask_of(w, prune_lowest(&score(&w.values), count))
        })
        .collect()
}

/// Seeded random pruning of each layer to `sparsity` (the baseline).
pub fn random(weights: &[LayerWeights], sparsity: f64, seed: u64) -> Vec<Mask> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    per_layer(weights, sparsity, |v| random_scores(v, &mut rng))
}

/// One |w| threshold across all layers prunes `round(sparsity * total)` weights. A layer
/// is never emptied: an output channel the threshold would prune entirely keeps its
/// largest weight. Returns the masks and notes on restored channels and near-empty layers.
pub fn global(weights: &[LayerWeights], sparsity: f64) -> (Vec<Mask>, Vec<String>) {
    let offsets: Vec<usize> = weights
        .iter()
        .scan(0, |acc, w| {
            let start = *acc;
            *acc += w.values.len();
            Some(start)
        })
        .collect();
    let scores: Vec<f32> = weights
        .iter()
        .flat_map(|w| magnitude_scores(&w.values))
        .collect();
    let keep = prune_lowest(&scores, pruned_count(sparsity, scores.len()));
    let mut notes = Vec::new();
    let masks = weights
        .iter()
        .zip(&offsets)
        .map(|(w, &start)| {
            let mut keep = keep[start..start + w.values.len()].to_vec();
            let restored = restore_empty_channels(w, &mut keep);
            let mask = mask_of(w, keep);
            let share = mask.pruned() as f64 / w.values.len().max(1) as f64;
            if restored > 0 {
                notes.push(format!(
                    "{}: the global threshold pruned {restored} output channel(s) entirely; kept the largest weight of each",
                    w.layer.name
                ));
            }
            if share >= NEAR_FULL {
                notes.push(format!(
                    "{}: {:.1}% of the layer is pruned by the global threshold",
                    w.layer.name,
                    100.0 * share
                ));
            }
            mask
        })
        .collect();
    (masks, notes)
}

/// Keeps the largest-|w| element of every output channel that has none kept; returns
/// how many channels it restored.
fn restore_empty_channels(w: &LayerWeights, keep: &mut [bool]) -> usize {
    let channels = w.layer.dims[w.layer.out_axis];
    let mut any_kept = vec![false; channels];
    let mut largest: Vec<Option<usize>> = vec![None; channels];
    for (i, (&k, v)) in keep.iter().zip(&w.values).enumerate() {
        let c = w.layer.out_channel(i);
        any_kept[c] |= k;
        if largest[c].is_none_or(|j| v.abs() > w.values[j].abs()) {
            largest[c] = Some(i);
        }
    }
    let mut restored = 0;
    for (c, best) in largest.into_iter().enumerate() {
        if let (false, Some(i)) = (any_kept[c], best) {
            keep[i] = true;
            restored += 1;
        }
    }
    restored
}

/// The mask of `w` from keep-flags.
fn mask_of(w: &LayerWeights, keep: Vec<bool>) -> Mask {
    Mask {
        weight: w.layer.weight.clone(),
        dims: w.layer.dims.clone(),
        keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prune::layers::PrunableLayer;

    fn layer(name: &str, dims: Vec<usize>, values: Vec<f32>) -> LayerWeights {
        LayerWeights {
            layer: PrunableLayer {
                name: name.into(),
                op_type: "Gemm".into(),
                weight: name.into(),
                dims,
                out_axis: 0,
                reduce_axis: 1,
            },
            values,
        }
    }

    #[test]
    fn global_uses_one_threshold_and_keeps_a_weight_per_channel() {
        // Channel 1 of "a" holds the four smallest weights: a 50% global threshold
        // prunes it entirely, so its largest (0.4) is kept.
        let a = layer("a", vec![2, 2], vec![5.0, 6.0, 0.1, 0.4]);
        let b = layer("b", vec![2, 2], vec![0.2, 7.0, 0.3, 8.0]);
        let (masks, notes) = global(&[a, b], 0.5);
        assert_eq!(masks[0].keep, vec![true, true, false, true]);
        assert_eq!(masks[1].keep, vec![false, true, false, true]);
        assert_eq!(notes.len(), 1, "{notes:?}");
    }

    #[test]
    fn random_is_seeded_and_exact() {
        let w = layer("a", vec![4, 5], (1..=20).map(|v| v as f32).collect());
        let first = random(std::slice::from_ref(&w), 0.3, 7);
        assert_eq!(first, random(std::slice::from_ref(&w), 0.3, 7));
        assert_eq!(first[0].pruned(), 6);
        assert_ne!(first, random(&[w], 0.3, 8));
    }
}

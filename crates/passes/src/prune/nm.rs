//! N:M semi-structured sparsity: along the reduction dimension (Conv input channels at
//! each (output channel, kh, kw); Gemm/MatMul K at each output column), every group of M
//! consecutive weights keeps its N largest |w|. A layer whose reduction dimension is not
//! a multiple of M (the 1- or 3-channel first convolution of most CNNs) cannot hold the
//! pattern: [`nm_masks`] leaves it dense with a note, as NVIDIA's ASP does.

use super::layers::{LayerWeights, PrunableLayer};
use super::mask::Mask;
use crate::{bail, Result};

/// Fails unless 1 <= `n` < `m`.
pub fn check_nm(n: usize, m: usize) -> Result<()> {
    if n < 1 || n >= m {
        bail!("N:M sparsity needs 1 <= N < M, got N={n}, M={m}");
    }
    Ok(())
}

/// The N:M masks of the layers of `weights` that can hold the pattern, and a note naming
/// those left dense; fails when no layer can.
pub fn nm_masks(weights: &[LayerWeights], n: usize, m: usize) -> Result<(Vec<Mask>, Vec<String>)> {
    check_nm(n, m)?;
    let (fit, unfit): (Vec<&LayerWeights>, Vec<&LayerWeights>) =
        weights.iter().partition(|w| fits(&w.layer, m));
    let describe = |ws: &[&LayerWeights]| {
        let parts: Vec<String> = ws
            .iter()
            .map(|w| {
                let l = &w.layer;
                format!("{} ({} elements)", l.name, l.dims[l.reduce_axis])
            })
            .collect();
        parts.join(", ")
    };
    if fit.is_empty() {
        bail!(
            "{n}:{m} pruning needs a reduction dimension that is a multiple of {m}; no prunable layer has one: {}",
            describe(&unfit)
        );
    }
    let masks = fit
        .iter()
        .map(|w| nm_mask(w, n, m))
        .collect::<Result<_>>()?;
    let notes = if unfit.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "left dense: the reduction dimension of {} is not a multiple of {m}, so it cannot hold {n}:{m} sparsity",
            describe(&unfit)
        )]
    };
    Ok((masks, notes))
}

/// Whether `layer`'s reduction dimension splits into groups of `m`.
fn fits(layer: &PrunableLayer, m: usize) -> bool {
    layer.dims[layer.reduce_axis].is_multiple_of(m)
}

/// The N:M mask of one layer; fails when its reduction dimension is not a multiple of M.
pub fn nm_mask(w: &LayerWeights, n: usize, m: usize) -> Result<Mask> {
    check_nm(n, m)?;
    let layer = &w.layer;
    let axis = layer.reduce_axis;
    let k = layer.dims[axis];
    if !fits(layer, m) {
        bail!(
            "{n}:{m} pruning of {}: its reduction dimension (axis {axis} of {} {:?}) has {k} elements, not a multiple of {m}; leave the layer dense with `exclude` {}",
            layer.name,
            layer.weight,
            layer.dims,
            layer.name
        );
    }
    let inner = layer.stride(axis);
    let outer = w.values.len() / (k * inner).max(1);
    let mut keep = vec![false; w.values.len()];
    for o in 0..outer {
        for i in 0..inner {
            for g in 0..k / m {
                let index = |j: usize| (o * k + g * m + j) * inner + i;
                let mut group: Vec<usize> = (0..m).collect();
                group.sort_by(|&a, &b| {
                    let (va, vb) = (w.values[index(a)].abs(), w.values[index(b)].abs());
                    vb.total_cmp(&va).then(a.cmp(&b))
                });
                for &j in &group[..n] {
                    keep[index(j)] = true;
                }
            }
        }
    }
    Ok(Mask {
        weight: layer.weight.clone(),
        dims: layer.dims.clone(),
        keep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(dims: Vec<usize>, reduce_axis: usize, values: Vec<f32>) -> LayerWeights {
        named("fc", dims, reduce_axis, values)
    }

    fn named(name: &str, dims: Vec<usize>, reduce_axis: usize, values: Vec<f32>) -> LayerWeights {
        LayerWeights {
            layer: PrunableLayer {
                name: name.into(),
                op_type: "MatMul".into(),
                weight: "w".into(),
                dims,
                out_axis: 1 - reduce_axis,
                reduce_axis,
            },
            values,
        }
    }

    #[test]
    fn groups_run_along_the_reduction_axis() {
        // MatMul B [K=4, N=2]: groups are the columns (stride 2).
        let w = weights(
            vec![4, 2],
            0,
            vec![1.0, -8.0, -5.0, 1.0, 2.0, 3.0, 0.5, -2.0],
        );
        let mask = nm_mask(&w, 2, 4).unwrap();
        assert_eq!(
            mask.keep,
            vec![false, true, true, false, true, true, false, false]
        );
    }

    #[test]
    fn rejects_bad_groups() {
        let w = weights(vec![2, 6], 1, vec![1.0; 12]);
        let err = nm_mask(&w, 2, 4).unwrap_err().to_string();
        assert!(
            err.contains("fc") && err.contains("not a multiple of 4"),
            "{err}"
        );
        assert!(check_nm(4, 4).is_err() && check_nm(0, 4).is_err());
    }

    #[test]
    fn layers_that_cannot_hold_the_pattern_stay_dense_with_a_note() {
        // Conv [out 2, in 1, 1, 1]: one input channel, like the first layer of a CNN.
        let stem = named("conv1", vec![2, 1, 1, 1], 1, vec![1.0, 2.0]);
        let fc = named("fc2", vec![4, 1], 0, vec![4.0, -1.0, 3.0, 0.5]);
        let (masks, notes) = nm_masks(&[stem.clone(), fc], 2, 4).unwrap();
        assert_eq!(masks.len(), 1);
        assert_eq!(masks[0].keep, vec![true, false, true, false]);
        assert!(
            notes.len() == 1 && notes[0].contains("conv1 (1 elements)"),
            "{notes:?}"
        );
        let err = nm_masks(&[stem], 2, 4).unwrap_err().to_string();
        assert!(
            err.contains("no prunable layer") && err.contains("conv1"),
            "{err}"
        );
    }
}

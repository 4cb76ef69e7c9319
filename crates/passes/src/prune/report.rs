//! What pruning achieved: exact zeros per layer and in total, parameter counts, and the
//! size of the serialised model before and after gzip -6.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Serialize;
use whittle_ir::{DataType, Model, TensorData};

use super::layers::{read_weights, PrunableLayer};
use crate::Result;

/// Exact sparsity of one prunable layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerSparsity {
    /// Node name (or weight name when the node has none).
    pub name: String,
    /// Operator.
    pub op_type: String,
    /// Weights of the layer.
    pub params: usize,
    /// Weights exactly zero.
    pub zeros: usize,
    /// `zeros / params`.
    pub sparsity: f64,
}

/// Sparsity of a model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SparsityReport {
    /// Every prunable layer.
    pub layers: Vec<LayerSparsity>,
    /// Zeros / weights over the prunable layers.
    pub sparsity: f64,
    /// Elements of all float initializers (weights, biases, norms).
    pub params: usize,
    /// Of those, the non-zero ones.
    pub nonzero_params: usize,
}

/// The sparsity of `layers` (and parameter counts of all float initializers) in `model`.
pub fn sparsity_report(model: &Model, layers: &[PrunableLayer]) -> Result<SparsityReport> {
    let layers: Vec<LayerSparsity> = read_weights(model, layers)?
        .into_iter()
        .map(|w| {
            let zeros = w.values.iter().filter(|&&v| v == 0.0).count();
            LayerSparsity {
                name: w.layer.name,
                op_type: w.layer.op_type,
                params: w.values.len(),
                zeros,
                sparsity: zeros as f64 / w.values.len().max(1) as f64,
            }
        })
        .collect();
    let (total, zeros) = layers
        .iter()
        .fold((0, 0), |(t, z), l| (t + l.params, z + l.zeros));
    let (mut params, mut nonzero_params) = (0, 0);
    for init in &model.graph().initializer {
        let dtype = DataType::from_code(init.data_type);
        if dtype.is_some_and(|d| d.is_float()) {
            let values = TensorData::from_proto(init, None)?.to_f64_vec()?;
            params += values.len();
            nonzero_params += values.iter().filter(|&&v| v != 0.0).count();
        }
    }
    Ok(SparsityReport {
        layers,
        sparsity: zeros as f64 / total.max(1) as f64,
        params,
        nonzero_params,
    })
}

/// Size of `bytes` compressed with gzip at level 6 (the `gzip -6` default).
pub fn gzip_size(bytes: &[u8]) -> usize {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::new(6));
    // Writing to a Vec cannot fail.
    let written = encoder.write_all(bytes).and_then(|()| encoder.finish());
    written.map_or(0, |v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_compress_better_than_noise() {
        let zeros = vec![0u8; 10_000];
        let mut noise = vec![0u8; 10_000];
        rand::RngCore::fill_bytes(
            &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1),
            &mut noise,
        );
        assert!(gzip_size(&zeros) < 100);
        // Random bytes do not compress: gzip adds its header and block framing.
        assert!(gzip_size(&noise) > 10_000);
    }
}

//! Output fidelity of a model to a reference model: MSE, cosine similarity and SQNR of
//! each output over all samples, summed in one pass by the quantizer's
//! [`ErrorSums`] (the one definition of SQNR and cosine).

use serde::{Deserialize, Serialize};
use whittle_ir::TensorData;
use whittle_passes::quantize::verify::ErrorSums;

use crate::error::{Context, Result};
use crate::refuse;

/// Fidelity of one output to the reference's.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct OutputFidelity {
    /// Output name.
    pub name: String,
    /// Mean squared difference.
    pub mse: f64,
    /// Cosine similarity of the flattened outputs (1 when both are zero).
    pub cosine: f64,
    /// Signal-to-quantization-noise ratio in dB (infinite when identical).
    pub sqnr_db: f64,
}

/// Running sums of one output's differences to the reference.
#[derive(Clone, Debug)]
pub struct Fidelity {
    name: String,
    sums: ErrorSums,
    elements: u64,
}

impl Fidelity {
    /// Sums for the output called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Fidelity {
            name: name.into(),
            sums: ErrorSums::default(),
            elements: 0,
        }
    }

    /// Adds one batch: `reference` and `got` must hold the same number of elements.
    pub fn add(&mut self, reference: &TensorData, got: &TensorData) -> Result<()> {
        let values = |t: &TensorData| -> Result<Vec<f32>> {
            let v = t
                .to_f64_vec()
                .context(|| format!("reading output '{}'", self.name))?;
            Ok(v.into_iter().map(|x| x as f32).collect())
        };
        let (a, b) = (values(reference)?, values(got)?);
        if a.len() != b.len() {
            refuse!(
                "output '{}' has {} elements in the reference, {} in the model",
                self.name,
                a.len(),
                b.len()
            );
        }
        self.add_values(&a, &b);
        Ok(())
    }

    /// Adds equally long reference and model values.
    pub fn add_values(&mut self, reference: &[f32], got: &[f32]) {
        self.sums.add(reference, got);
        self.elements += reference.len() as u64;
    }

    /// The figures of the batches added.
    pub fn finish(&self) -> OutputFidelity {
        let error = self.sums.finish(&self.name);
        OutputFidelity {
            name: self.name.clone(),
            mse: self.sums.squared_error() / self.elements.max(1) as f64,
            cosine: error.cosine,
            sqnr_db: error.sqnr_db,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fidelity(a: &[f32], b: &[f32]) -> OutputFidelity {
        let mut f = Fidelity::new("y");
        f.add_values(a, b);
        f.finish()
    }

    #[test]
    fn identical_outputs_have_an_infinite_sqnr_even_when_zero() {
        let zero = fidelity(&[0.0, 0.0], &[0.0, 0.0]);
        assert_eq!(
            (zero.mse, zero.cosine, zero.sqnr_db),
            (0.0, 1.0, f64::INFINITY)
        );
        let noisy = fidelity(&[1.0, 1.0], &[1.0, 0.5]);
        assert_eq!(noisy.mse, 0.125);
        assert!((noisy.sqnr_db - 10.0 * (2.0f64 / 0.25).log10()).abs() < 1e-9);
        assert!((noisy.cosine - 1.5 / (2.0f64.sqrt() * 1.25f64.sqrt())).abs() < 1e-7);
    }
}

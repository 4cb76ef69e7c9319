//! Weight initialisation, deterministic from a seed.
//!
//! Conv and linear layers follow PyTorch's defaults: weights from
//! `kaiming_uniform_(a = √5)`, which is uniform in ±1/√fan_in, and biases uniform in the
//! same range. Embeddings are truncated normals (±2σ), as in ViT.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The random source of one model.
pub struct Init {
    rng: ChaCha8Rng,
}

impl Init {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Init {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// `n` samples uniform in `[-bound, bound)`.
    pub fn uniform(&mut self, n: usize, bound: f32) -> Vec<f32> {
        (0..n)
            .map(|_| (self.rng.random::<f32>() * 2.0 - 1.0) * bound)
            .collect()
    }

    /// `n` samples of PyTorch's default for a layer with `fan_in` inputs per output.
    pub fn fan_in(&mut self, n: usize, fan_in: usize) -> Vec<f32> {
        self.uniform(n, 1.0 / (fan_in as f32).sqrt())
    }

    /// `n` samples of a normal of deviation `std`, redrawn outside ±2σ.
    pub fn truncated_normal(&mut self, n: usize, std: f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            // Box–Muller: two uniforms in (0, 1] give a standard normal.
            let u1 = 1.0 - self.rng.random::<f64>();
            let u2 = self.rng.random::<f64>();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            if z.abs() <= 2.0 {
                out.push(z as f32 * std);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_stay_in_range_and_repeat_with_the_seed() {
        let a = Init::new(3).fan_in(1000, 25);
        assert!(a.iter().all(|v| v.abs() <= 0.2));
        // Uniform in ±0.2 has mean ~0 and deviation 0.2/√3.
        let mean = a.iter().sum::<f32>() / 1000.0;
        let std = (a.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 1000.0).sqrt();
        assert!(
            mean.abs() < 0.02 && (std - 0.1155).abs() < 0.01,
            "{mean} {std}"
        );
        assert_eq!(a, Init::new(3).fan_in(1000, 25));
        assert_ne!(a, Init::new(4).fan_in(1000, 25));
        let n = Init::new(3).truncated_normal(4000, 0.02);
        assert!(n.iter().all(|v| v.abs() <= 0.04));
        let std = (n.iter().map(|v| v * v).sum::<f32>() / 4000.0).sqrt();
        // A normal truncated at ±2σ has deviation 0.88σ.
        assert!((std - 0.0176).abs() < 0.001, "{std}");
    }
}

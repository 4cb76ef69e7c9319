//! Seed derivation shared by every seeded draw in whittle (data order, Dropout masks, replay),
//! and the splitmix64 generator that tests use for reproducible values.
//!
//! One definition, so that a run seeded with `s` draws the same numbers wherever it runs.

/// The golden-ratio increment of splitmix64 (2^64 / φ, odd).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The seed of draw `k` (an epoch, a graph node, a task phase) of a run seeded with `seed`.
///
/// Distinct `k` give well-separated seeds for the same `seed`; `k = 0` gives `seed` itself.
pub fn derive(seed: u64, k: u64) -> u64 {
    seed ^ k.wrapping_mul(GOLDEN_GAMMA)
}

/// The splitmix64 generator (Steele, Lea and Flood 2014): tiny, fast, and the same on every
/// platform, for reproducible test and benchmark values.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose first draw depends on `seed` only.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next value uniform in `[0, 1)`, with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` values uniform in `[lo, hi)`.
    pub fn uniform(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| lo + (hi - lo) * self.next_f64()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // The first outputs of the reference C implementation seeded with 1234567.
        let mut g = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..3).map(|_| g.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423
            ]
        );
    }

    #[test]
    fn uniform_values_lie_in_the_range_and_derive_separates_draws() {
        let v = SplitMix64::new(7).uniform(1000, -1.0, 1.0);
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.1, "mean {mean}");
        assert_eq!(derive(42, 0), 42);
        assert_ne!(derive(42, 1), derive(42, 2));
        assert_eq!(derive(42, 1), 42 ^ GOLDEN_GAMMA);
    }
}

//! Sparsity schedules: the curve from an initial to a final sparsity, the targets of
//! iterative pruning, and when gradual pruning updates its masks during training.

use serde::Serialize;

use crate::{bail, Result};

/// How sparsity rises from `initial` to `final` as progress `p` goes from 0 to 1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "curve")]
pub enum Curve {
    /// The final sparsity throughout.
    Constant,
    /// `s_i + (s_f - s_i) p`.
    Linear,
    /// Zhu & Gupta (2017): `s_f + (s_i - s_f) (1 - p)^3`.
    Cubic,
    /// Density falls geometrically: `1 - (1 - s_i) ((1 - s_f) / (1 - s_i))^p`.
    Exponential,
    /// `s_f + (s_i - s_f) (1 - p)^power` (power 3 is the cubic rule).
    Polynomial {
        /// The exponent.
        power: f64,
    },
}

impl Curve {
    /// Sparsity at progress `p` (clamped to [0, 1]) from `initial` to `last`.
    pub fn at(&self, initial: f64, last: f64, p: f64) -> f64 {
        let p = p.clamp(0.0, 1.0);
        let poly = |power: f64| last + (initial - last) * (1.0 - p).powf(power);
        match *self {
            Curve::Constant => last,
            Curve::Linear => poly(1.0),
            Curve::Cubic => poly(3.0),
            Curve::Polynomial { power } => poly(power),
            Curve::Exponential => 1.0 - (1.0 - initial) * ((1.0 - last) / (1.0 - initial)).powf(p),
        }
    }
}

/// Targets of iterative pruning in `steps` steps to `sparsity`: step k (1-based) prunes to
/// `curve.at(0, sparsity, k / steps)`.
pub fn iterative_targets(sparsity: f64, steps: usize, curve: Curve) -> Result<Vec<f64>> {
    if steps == 0 {
        bail!("iterative pruning needs at least one step (`steps`)");
    }
    Ok((1..=steps)
        .map(|k| curve.at(0.0, sparsity, k as f64 / steps as f64))
        .collect())
}

/// Gradual pruning during training: from optimizer step `start` to `end`, every
/// `frequency` steps (and at `end`), masks are recomputed at the curve's sparsity.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GradualSchedule {
    /// Sparsity curve.
    #[serde(flatten)]
    pub curve: Curve,
    /// Sparsity at `start` (s_i).
    pub initial: f64,
    /// Sparsity reached at `end` (s_f).
    pub last: f64,
    /// First optimizer step that prunes (t0).
    pub start: u64,
    /// Step at which the final sparsity is reached (t0 + n·Δt).
    pub end: u64,
    /// Optimizer steps between mask updates (Δt).
    pub frequency: u64,
}

impl GradualSchedule {
    /// Fails on an empty window, a zero frequency or sparsities outside [0, 1).
    pub fn check(&self) -> Result<()> {
        if self.end <= self.start {
            bail!(
                "gradual pruning: the end step {} must come after the start step {}",
                self.end,
                self.start
            );
        }
        if self.frequency == 0 {
            bail!("gradual pruning: `frequency` must be at least 1");
        }
        super::mask::check_sparsity(self.initial)?;
        super::mask::check_sparsity(self.last)
    }

    /// The sparsity to prune to after optimizer step `step`, or `None` when the masks
    /// are not updated at this step.
    pub fn update_at(&self, step: u64) -> Option<f64> {
        if step < self.start || step > self.end {
            return None;
        }
        if step != self.end && !(step - self.start).is_multiple_of(self.frequency) {
            return None;
        }
        let p = (step - self.start) as f64 / (self.end - self.start) as f64;
        Some(self.curve.at(self.initial, self.last, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn curves_match_hand_computed_points() {
        close(Curve::Constant.at(0.0, 0.8, 0.3), 0.8);
        close(Curve::Linear.at(0.0, 0.8, 0.25), 0.2);
        close(Curve::Linear.at(0.2, 0.8, 0.5), 0.5);
        // 0.8 + (0 - 0.8) * 0.5^3 = 0.7
        close(Curve::Cubic.at(0.0, 0.8, 0.5), 0.7);
        // 0.9 + (0.1 - 0.9) * 0.75^3 = 0.5625
        close(Curve::Cubic.at(0.1, 0.9, 0.25), 0.5625);
        // 0.8 - 0.8 * 0.5^2 = 0.6
        close(Curve::Polynomial { power: 2.0 }.at(0.0, 0.8, 0.5), 0.6);
        // density 1 -> 0.04 geometrically: at p = 0.5 it is 0.2.
        close(Curve::Exponential.at(0.0, 0.96, 0.5), 0.8);
        close(Curve::Exponential.at(0.0, 0.96, 1.0), 0.96);
        close(Curve::Cubic.at(0.0, 0.8, 2.0), 0.8);
    }

    #[test]
    fn iterative_targets_follow_the_curve() {
        let t = iterative_targets(0.9, 3, Curve::Linear).unwrap();
        for (a, b) in t.iter().zip([0.3, 0.6, 0.9]) {
            close(*a, b);
        }
        // 0.8 * (1 - (1 - k/2)^3): k=1 -> 0.7, k=2 -> 0.8
        let c = iterative_targets(0.8, 2, Curve::Cubic).unwrap();
        close(c[0], 0.7);
        close(c[1], 0.8);
        assert!(iterative_targets(0.5, 0, Curve::Linear).is_err());
    }

    #[test]
    fn gradual_updates_every_frequency_steps_until_the_end() {
        let s = GradualSchedule {
            curve: Curve::Cubic,
            initial: 0.0,
            last: 0.8,
            start: 10,
            end: 20,
            frequency: 4,
        };
        s.check().unwrap();
        assert_eq!(s.update_at(9), None);
        close(s.update_at(10).unwrap(), 0.0);
        assert_eq!(s.update_at(11), None);
        // p = 0.4: 0.8 - 0.8 * 0.6^3 = 0.6272
        close(s.update_at(14).unwrap(), 0.6272);
        close(s.update_at(20).unwrap(), 0.8);
        assert_eq!(s.update_at(22), None);
    }
}

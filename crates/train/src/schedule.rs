//! Learning-rate schedules: pure functions of the optimizer step, with their parameters
//! checked before training starts.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::bail;
use crate::error::Result;

/// The shape of a learning-rate schedule; the peak rate is [`LrSchedule::base_lr`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Schedule {
    /// `base_lr` throughout.
    Constant,
    /// `base_lr * gamma^floor(step / step_size)`.
    Step {
        /// Steps between decays.
        step_size: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// `(base_lr - end_lr) * (1 - step / total)^power + end_lr`.
    Polynomial {
        /// Exponent of the decay.
        power: f64,
        /// Rate at the last step.
        end_lr: f64,
    },
    /// Linear warmup from `base_lr / warmup` to `base_lr`, then cosine decay to `min_lr`.
    WarmupCosine {
        /// Warmup steps.
        warmup: usize,
        /// Rate at the end.
        min_lr: f64,
    },
    /// Linear warmup, then `base_lr * gamma^(step - warmup)`.
    WarmupExponential {
        /// Warmup steps.
        warmup: usize,
        /// Decay per step.
        gamma: f64,
    },
    /// Linear warmup, then `base_lr * gamma^floor((step - warmup) / step_size)`.
    WarmupStep {
        /// Warmup steps.
        warmup: usize,
        /// Steps between decays.
        step_size: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// One-cycle policy (cosine annealing): from `base_lr / div_factor` up to `base_lr` over
    /// the first `pct_start` of the steps, then down to `min_lr` (default
    /// `base_lr / div_factor / final_div_factor`).
    OneCycle {
        /// Initial rate is `base_lr / div_factor`.
        div_factor: f64,
        /// Fraction of the steps spent rising.
        pct_start: f64,
        /// Final rate is the initial rate divided by this (unless `min_lr` is given).
        final_div_factor: f64,
        /// Final rate, overriding `final_div_factor`.
        min_lr: Option<f64>,
    },
}

/// A schedule with its peak rate and length: `lr(step)` for `step` in `0..total_steps`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// The peak (or constant) learning rate.
    pub base_lr: f64,
    /// Optimizer steps in the whole run.
    pub total_steps: usize,
    /// The schedule's shape.
    pub schedule: Schedule,
}

/// Cosine interpolation from `start` (at `pct` 0) to `end` (at `pct` 1).
fn cosine(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * (1.0 + (PI * pct.clamp(0.0, 1.0)).cos())
}

impl LrSchedule {
    /// A checked schedule: every parameter in range for `total_steps` steps.
    pub fn new(base_lr: f64, total_steps: usize, schedule: Schedule) -> Result<Self> {
        let s = LrSchedule {
            base_lr,
            total_steps,
            schedule,
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks the parameters; the error names the one at fault.
    pub fn validate(&self) -> Result<()> {
        let (lr, total) = (self.base_lr, self.total_steps);
        if !(lr > 0.0 && lr.is_finite()) {
            bail!("learning rate {lr} must be positive");
        }
        if total == 0 {
            bail!("the schedule has no steps (empty data or zero epochs)");
        }
        let gamma_ok = |g: f64| {
            if !(g > 0.0 && g <= 1.0) {
                bail!("schedule gamma {g} must be in (0, 1]");
            }
            Ok(())
        };
        let warmup_ok = |w: usize| {
            if w >= total {
                bail!("warmup of {w} steps leaves nothing of the {total} training steps");
            }
            Ok(())
        };
        let floor_ok = |what: &str, v: f64| {
            if !(0.0..=lr).contains(&v) {
                bail!("{what} {v} must be in [0, learning rate {lr}]");
            }
            Ok(())
        };
        match &self.schedule {
            Schedule::Constant => Ok(()),
            Schedule::Step { step_size, gamma } => step_size_ok(*step_size).and(gamma_ok(*gamma)),
            Schedule::Polynomial { power, end_lr } => {
                if !(*power > 0.0 && power.is_finite()) {
                    bail!("polynomial power {power} must be positive");
                }
                floor_ok("end learning rate", *end_lr)
            }
            Schedule::WarmupCosine { warmup, min_lr } => {
                warmup_ok(*warmup).and(floor_ok("minimum learning rate", *min_lr))
            }
            Schedule::WarmupExponential { warmup, gamma } => {
                warmup_ok(*warmup).and(gamma_ok(*gamma))
            }
            Schedule::WarmupStep {
                warmup,
                step_size,
                gamma,
            } => warmup_ok(*warmup)
                .and(step_size_ok(*step_size))
                .and(gamma_ok(*gamma)),
            Schedule::OneCycle { .. } => self.one_cycle_ok(),
        }
    }

    fn one_cycle_ok(&self) -> Result<()> {
        let Schedule::OneCycle {
            div_factor,
            pct_start,
            final_div_factor,
            min_lr,
        } = self.schedule
        else {
            return Ok(());
        };
        if !(div_factor >= 1.0 && div_factor.is_finite()) {
            bail!("one-cycle div_factor {div_factor} must be at least 1");
        }
        if !(final_div_factor >= 1.0 && final_div_factor.is_finite()) {
            bail!("one-cycle final_div_factor {final_div_factor} must be at least 1");
        }
        if !(pct_start > 0.0 && pct_start < 1.0) {
            bail!("one-cycle pct_start {pct_start} must be in (0, 1)");
        }
        let rise = self.rise_end();
        if rise < 1.0 || rise >= (self.total_steps - 1) as f64 {
            bail!(
                "one-cycle pct_start {pct_start} of {} steps leaves no rising or falling phase",
                self.total_steps
            );
        }
        if let Some(m) = min_lr {
            if !(0.0..=self.base_lr / div_factor).contains(&m) {
                bail!(
                    "one-cycle min_lr {m} must be in [0, initial rate {}]",
                    self.base_lr / div_factor
                );
            }
        }
        Ok(())
    }

    /// The last step of the one-cycle rising phase.
    fn rise_end(&self) -> f64 {
        match self.schedule {
            Schedule::OneCycle { pct_start, .. } => pct_start * self.total_steps as f64 - 1.0,
            _ => 0.0,
        }
    }

    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        let lr = self.base_lr;
        let warm = |warmup: usize, after: &dyn Fn(usize) -> f64| {
            if step < warmup {
                lr * (step + 1) as f64 / warmup as f64
            } else {
                after(step - warmup)
            }
        };
        match self.schedule {
            Schedule::Constant => lr,
            Schedule::Step { step_size, gamma } => lr * gamma.powi((step / step_size) as i32),
            Schedule::Polynomial { power, end_lr } => {
                let left = 1.0 - (step as f64 / self.total_steps as f64).min(1.0);
                (lr - end_lr) * left.powf(power) + end_lr
            }
            Schedule::WarmupCosine { warmup, min_lr } => warm(warmup, &|s| {
                cosine(lr, min_lr, s as f64 / (self.total_steps - warmup) as f64)
            }),
            Schedule::WarmupExponential { warmup, gamma } => {
                warm(warmup, &|s| lr * gamma.powi(s as i32))
            }
            Schedule::WarmupStep {
                warmup,
                step_size,
                gamma,
            } => warm(warmup, &|s| lr * gamma.powi((s / step_size) as i32)),
            Schedule::OneCycle {
                div_factor,
                final_div_factor,
                min_lr,
                ..
            } => {
                let initial = lr / div_factor;
                let last = min_lr.unwrap_or(initial / final_div_factor);
                let (rise, s) = (self.rise_end(), step as f64);
                if s <= rise {
                    cosine(initial, lr, s / rise)
                } else {
                    cosine(
                        lr,
                        last,
                        (s - rise) / ((self.total_steps - 1) as f64 - rise),
                    )
                }
            }
        }
    }
}

fn step_size_ok(step_size: usize) -> Result<()> {
    if step_size == 0 {
        bail!("schedule step_size must be at least 1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(s: Schedule, total: usize, steps: &[usize]) -> Vec<f64> {
        let s = LrSchedule::new(0.1, total, s).unwrap();
        steps.iter().map(|&i| s.lr(i)).collect()
    }

    fn close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn step_polynomial_and_constant_schedules() {
        close(&points(Schedule::Constant, 10, &[0, 9]), &[0.1, 0.1]);
        let step = Schedule::Step {
            step_size: 3,
            gamma: 0.5,
        };
        close(&points(step, 10, &[0, 2, 3, 7]), &[0.1, 0.1, 0.05, 0.025]);
        let poly = Schedule::Polynomial {
            power: 2.0,
            end_lr: 0.0,
        };
        // (1 - 5/10)^2 = 0.25.
        close(&points(poly, 10, &[0, 5, 10]), &[0.1, 0.025, 0.0]);
    }

    #[test]
    fn warmup_schedules() {
        let cos = Schedule::WarmupCosine {
            warmup: 4,
            min_lr: 0.0,
        };
        // Warmup 0.025, 0.05, ...; then cosine over 8 steps: half-way (step 8) = 0.05.
        close(&points(cos, 12, &[0, 3, 4, 8]), &[0.025, 0.1, 0.1, 0.05]);
        let exp = Schedule::WarmupExponential {
            warmup: 2,
            gamma: 0.5,
        };
        close(&points(exp, 10, &[0, 1, 2, 4]), &[0.05, 0.1, 0.1, 0.025]);
        let step = Schedule::WarmupStep {
            warmup: 2,
            step_size: 2,
            gamma: 0.1,
        };
        close(&points(step, 10, &[1, 3, 4]), &[0.1, 0.1, 0.01]);
    }

    #[test]
    fn one_cycle_rises_to_the_peak_and_falls_to_the_floor() {
        let s = Schedule::OneCycle {
            div_factor: 10.0,
            pct_start: 0.25,
            final_div_factor: 100.0,
            min_lr: None,
        };
        // 21 steps: rising phase ends at 0.25 * 21 - 1 = 4.25; last step 20.
        let got = points(s, 21, &[0, 20]);
        close(&got, &[0.01, 0.0001]);
        let s = Schedule::OneCycle {
            div_factor: 10.0,
            pct_start: 0.5,
            final_div_factor: 1.0,
            min_lr: Some(0.0),
        };
        // 10 steps: rise ends at 4 (peak), middle of the rise (step 2) = 0.055.
        close(&points(s, 10, &[2, 4, 9]), &[0.055, 0.1, 0.0]);
    }

    #[test]
    fn impossible_parameters_are_rejected() {
        let bad = [
            (Schedule::Constant, 0),
            (
                Schedule::Step {
                    step_size: 0,
                    gamma: 0.5,
                },
                10,
            ),
            (
                Schedule::WarmupCosine {
                    warmup: 10,
                    min_lr: 0.0,
                },
                10,
            ),
            (
                Schedule::WarmupCosine {
                    warmup: 1,
                    min_lr: 0.5,
                },
                10,
            ),
            (
                Schedule::WarmupExponential {
                    warmup: 1,
                    gamma: 1.5,
                },
                10,
            ),
            (
                Schedule::Polynomial {
                    power: -1.0,
                    end_lr: 0.0,
                },
                10,
            ),
            (
                Schedule::OneCycle {
                    div_factor: 0.5,
                    pct_start: 0.3,
                    final_div_factor: 10.0,
                    min_lr: None,
                },
                10,
            ),
            (
                Schedule::OneCycle {
                    div_factor: 10.0,
                    pct_start: 0.01,
                    final_div_factor: 10.0,
                    min_lr: None,
                },
                10,
            ),
        ];
        for (s, total) in bad {
            assert!(LrSchedule::new(0.1, total, s.clone()).is_err(), "{s:?}");
        }
        assert!(LrSchedule::new(-0.1, 10, Schedule::Constant).is_err());
    }
}

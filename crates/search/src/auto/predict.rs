//! Predicting a candidate before it runs: its latency and size ratios to the baseline are
//! the product of its actions' measured ratios (each action measured alone, in ONNX
//! Runtime, not counted in bits), its accuracy drop the sum of the actions' drops measured
//! on the hard subset. Every measured candidate refits the three corrections: latency,
//! drop, and how much of a drop fine-tuning recovers.

use std::collections::HashMap;

use serde::Serialize;

use super::space::Candidate;

/// What a candidate is expected to give.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Prediction {
    /// Latency over the baseline's.
    pub latency_ratio: f64,
    /// Size over the baseline's.
    pub size_ratio: f64,
    /// Top-1 accuracy lost, percentage points.
    pub drop_pts: f64,
}

/// An action measured alone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Effect {
    /// Latency over the baseline's.
    pub latency_ratio: f64,
    /// Size over the baseline's.
    pub size_ratio: f64,
    /// Drop estimated from the hard subset, points of the full test set.
    pub drop_pts: f64,
}

/// One measured candidate, for refitting.
#[derive(Clone, Copy, Debug)]
pub struct Observed {
    /// The candidate.
    pub candidate: Candidate,
    /// What it was predicted to give (before the refit).
    pub predicted: Prediction,
    /// Its measured latency ratio.
    pub latency_ratio: f64,
    /// Its drop estimated from the hard subset, points.
    pub subset_drop_pts: f64,
    /// Its drop on the full test set, when measured.
    pub drop_pts: Option<f64>,
}

/// Fine-tuning's recovery before any tuned candidate was measured: the drop left.
const PRIOR_RECOVERY: f64 = 0.3;

/// The predictor: the actions' effects and the corrections fitted so far.
#[derive(Clone, Debug, Default)]
pub struct Predictor {
    effects: HashMap<Candidate, Effect>,
    failed: HashMap<Candidate, String>,
    /// Measured over predicted latency, per measured composite (geometric mean).
    latency_logs: Vec<f64>,
    /// Full drop over subset-estimated drop, per fully measured candidate.
    drop_ratios: Vec<f64>,
    /// Tuned drop over untuned drop of the same composition.
    recoveries: Vec<f64>,
    untuned_drops: HashMap<Candidate, f64>,
}

impl Predictor {
    /// Records `action` measured alone.
    pub fn measured_action(&mut self, action: Candidate, effect: Effect) {
        self.effects.insert(action, effect);
    }

    /// Records that `action` could not be applied (why).
    pub fn failed_action(&mut self, action: Candidate, why: String) {
        self.failed.insert(action, why);
    }

    /// Why a candidate cannot run: one of its actions failed alone.
    pub fn blocked(&self, candidate: &Candidate) -> Option<String> {
        candidate.actions().iter().find_map(|a| {
            self.failed
                .get(a)
                .map(|why| format!("{} failed alone: {why}", a.name()))
        })
    }

    /// The actions of `candidate` not yet measured alone.
    pub fn unknown(&self, candidate: &Candidate) -> Vec<Candidate> {
        (candidate.actions().into_iter())
            .filter(|a| !self.effects.contains_key(a) && !self.failed.contains_key(a))
            .collect()
    }

    /// The prediction for `candidate` (None while an action is unmeasured or failed).
    pub fn predict(&self, candidate: &Candidate) -> Option<Prediction> {
        if self.blocked(candidate).is_some() {
            return None;
        }
        let mut p = Prediction {
            latency_ratio: 1.0,
            size_ratio: 1.0,
            drop_pts: 0.0,
        };
        for action in candidate.actions() {
            let e = self.effects.get(&action)?;
            p.latency_ratio *= e.latency_ratio;
            p.size_ratio *= e.size_ratio;
            p.drop_pts += e.drop_pts.max(0.0);
        }
        if candidate.actions().len() > 1 {
            p.latency_ratio *= self.latency_fit();
        }
        p.drop_pts *= self.drop_fit();
        if candidate.tuned {
            // Fine-tuning recovers the pruning's or factorization's share.
            let base = self
                .untuned_drops
                .get(&candidate.untuned())
                .copied()
                .unwrap_or(p.drop_pts);
            p.drop_pts = base * self.recovery();
        }
        if let Some(h) = candidate.mixed {
            // Layers left float until the quantization's drop is within its budget.
            p.drop_pts = p.drop_pts.min(f64::from(h) / 100.0);
            p.latency_ratio = 1f64.min(p.latency_ratio * 1.15);
        }
        Some(p)
    }

    /// Refits the corrections with a measured candidate.
    pub fn observe(&mut self, o: Observed) {
        if o.candidate.actions().len() > 1
            && o.predicted.latency_ratio > 0.0
            && o.latency_ratio.is_finite()
            && o.latency_ratio > 0.0
        {
            // Compare with the uncorrected product.
            let raw = o.predicted.latency_ratio / self.latency_fit();
            self.latency_logs.push((o.latency_ratio / raw).ln());
        }
        let drop = o.drop_pts.unwrap_or(o.subset_drop_pts);
        if let Some(full) = o.drop_pts {
            if o.subset_drop_pts > 0.05 {
                self.drop_ratios
                    .push((full / o.subset_drop_pts).clamp(0.2, 5.0));
            }
        }
        if !o.candidate.tuned && o.candidate.mixed.is_none() {
            self.untuned_drops.insert(o.candidate, drop);
        } else if o.candidate.tuned && o.candidate.mixed.is_none() {
            if let Some(&before) = self.untuned_drops.get(&o.candidate.untuned()) {
                if before > 0.1 {
                    self.recoveries
                        .push((drop.max(0.0) / before).clamp(0.0, 1.5));
                }
            }
        }
    }

    fn latency_fit(&self) -> f64 {
        mean(&self.latency_logs).map_or(1.0, f64::exp)
    }

    fn drop_fit(&self) -> f64 {
        mean(&self.drop_ratios).unwrap_or(1.0)
    }

    fn recovery(&self) -> f64 {
        mean(&self.recoveries).unwrap_or(PRIOR_RECOVERY)
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::super::space::{Prune, Quant};
    use super::*;

    fn int8() -> Candidate {
        Candidate {
            quant: Quant::Int8Static,
            ..Candidate::IDENTITY
        }
    }

    fn channel() -> Candidate {
        Candidate {
            prune: Prune::Channel { percent: 50 },
            ..Candidate::IDENTITY
        }
    }

    fn predictor() -> Predictor {
        let mut p = Predictor::default();
        let effect = |l, s, d| Effect {
            latency_ratio: l,
            size_ratio: s,
            drop_pts: d,
        };
        p.measured_action(int8(), effect(0.5, 0.25, 0.2));
        p.measured_action(channel(), effect(0.4, 0.5, 3.0));
        p
    }

    #[test]
    fn compositions_multiply_ratios_and_add_drops() {
        let p = predictor();
        let both = Candidate {
            quant: Quant::Int8Static,
            ..channel()
        };
        let got = p.predict(&both).unwrap();
        assert!((got.latency_ratio - 0.2).abs() < 1e-12);
        assert!((got.size_ratio - 0.125).abs() < 1e-12);
        assert!((got.drop_pts - 3.2).abs() < 1e-12);
        // Tuned: the prior recovery until a tuned candidate is measured.
        let tuned = p.predict(&both.tuned()).unwrap();
        assert!((tuned.drop_pts - 3.2 * PRIOR_RECOVERY).abs() < 1e-12);
        let fp16 = Candidate {
            quant: Quant::Fp16,
            ..Candidate::IDENTITY
        };
        assert_eq!(p.predict(&fp16), None);
        assert_eq!(p.unknown(&fp16), [fp16]);
    }

    #[test]
    fn measurements_refit_latency_drop_and_recovery() {
        let mut p = predictor();
        let both = Candidate {
            quant: Quant::Int8Static,
            ..channel()
        };
        let predicted = p.predict(&both).unwrap();
        // Measured twice as slow as predicted, the full drop half the subset estimate.
        p.observe(Observed {
            candidate: both,
            predicted,
            latency_ratio: 0.4,
            subset_drop_pts: 3.2,
            drop_pts: Some(1.6),
        });
        let again = p.predict(&both).unwrap();
        assert!((again.latency_ratio - 0.4).abs() < 1e-9, "{again:?}");
        assert!((again.drop_pts - 1.6).abs() < 1e-9, "{again:?}");
        // The tuned variant then recovers three quarters of its untuned drop.
        p.observe(Observed {
            candidate: both.tuned(),
            predicted: p.predict(&both.tuned()).unwrap(),
            latency_ratio: 0.4,
            subset_drop_pts: 0.4,
            drop_pts: Some(0.4),
        });
        let tuned = p.predict(&both.tuned()).unwrap();
        assert!((tuned.drop_pts - 0.4).abs() < 1e-9, "{tuned:?}");
        p.failed_action(int8(), "no Conv".into());
        assert!(p
            .blocked(&both)
            .unwrap()
            .contains("int8-static failed alone: no Conv"));
        assert_eq!(p.predict(&both), None);
    }
}

//! Predicting a candidate before it runs: its latency and size ratios to the baseline are
//! the product of its actions' measured ratios (each action measured alone, in ONNX
//! Runtime, not counted in bits), its accuracy drop the sum of the actions' drops measured
//! on the hard subset. A channel ratio the search refines (not measured alone) is
//! interpolated between the measured ratios, or extrapolated past the largest; QAT takes
//! static INT8's ratios and a share of its drop. Every measured candidate refits the
//! three corrections: latency, drop, and how much of a drop fine-tuning recovers.

use std::collections::HashMap;

use serde::Serialize;

use super::space::{Candidate, Prune, Quant};

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
/// The share of static INT8's own drop that quantization-aware training is expected to
/// leave.
const QAT_LEFT: f64 = 0.3;

/// The predictor: the actions' effects and the corrections fitted so far.
#[derive(Clone, Debug, Default)]
pub struct Predictor {
    effects: HashMap<Candidate, Effect>,
    /// Actions that failed alone or are not worth trying, and why.
    excluded: HashMap<Candidate, String>,
    /// Measured over predicted latency, per measured composite (geometric mean).
    latency_logs: Vec<f64>,
    /// Full drop over subset-estimated drop, per fully measured candidate.
    drop_ratios: Vec<f64>,
    /// Tuned drop over untuned drop of the same composition.
    recoveries: Vec<f64>,
    /// The drop of every measured candidate (full set, else subset), points.
    drops: HashMap<Candidate, f64>,
}

impl Predictor {
    /// Records `action` measured alone.
    pub fn measured_action(&mut self, action: Candidate, effect: Effect) {
        self.effects.insert(action, effect);
    }

    /// Leaves `action` and every candidate composing it out: it failed alone, or it
    /// cannot gain anything (`why` says which).
    pub fn exclude(&mut self, action: Candidate, why: String) {
        self.excluded.insert(action, why);
    }

    /// Why a candidate is not run: one of its actions is excluded.
    pub fn blocked(&self, candidate: &Candidate) -> Option<String> {
        candidate.actions().iter().find_map(|a| {
            self.excluded
                .get(a)
                .map(|why| format!("{}: {why}", a.name()))
        })
    }

    /// The actions of `candidate` not yet measured alone.
    pub fn unknown(&self, candidate: &Candidate) -> Vec<Candidate> {
        (candidate.actions().into_iter())
            .filter(|a| !self.effects.contains_key(a) && !self.excluded.contains_key(a))
            .collect()
    }

    /// The effect of one action: measured alone; for a channel ratio not measured,
    /// interpolated linearly between the measured ratios (the identity is 0%) or
    /// extrapolated from the two largest; for QAT, static INT8's with [`QAT_LEFT`] of
    /// its drop.
    fn effect(&self, action: &Candidate) -> Option<Effect> {
        if let Some(e) = self.effects.get(action) {
            return Some(*e);
        }
        match (action.prune, action.quant) {
            (Prune::Channel { percent }, _) => self.channel_effect(f64::from(percent)),
            (_, Quant::Qat) => {
                let int8 = self.effects.get(&Candidate {
                    quant: Quant::Int8Static,
                    ..*action
                })?;
                Some(Effect {
                    drop_pts: int8.drop_pts * QAT_LEFT,
                    ..*int8
                })
            }
            _ => None,
        }
    }

    fn channel_effect(&self, percent: f64) -> Option<Effect> {
        let mut known: Vec<(f64, Effect)> = vec![(
            0.0,
            Effect {
                latency_ratio: 1.0,
                size_ratio: 1.0,
                drop_pts: 0.0,
            },
        )];
        known.extend(self.effects.iter().filter_map(|(c, e)| match c.prune {
            Prune::Channel { percent } => Some((f64::from(percent), *e)),
            _ => None,
        }));
        known.sort_by(|a, b| a.0.total_cmp(&b.0));
        let upper = known.iter().position(|(p, _)| *p >= percent);
        let (a, b) = match upper {
            Some(0) => return Some(known[0].1),
            Some(i) => (known[i - 1], known[i]),
            None if known.len() >= 2 => (known[known.len() - 2], known[known.len() - 1]),
            None => return None,
        };
        let t = (percent - a.0) / (b.0 - a.0);
        let at = |x: f64, y: f64| x + t * (y - x);
        Some(Effect {
            latency_ratio: at(a.1.latency_ratio, b.1.latency_ratio).max(0.05),
            size_ratio: at(a.1.size_ratio, b.1.size_ratio).max(0.01),
            drop_pts: at(a.1.drop_pts, b.1.drop_pts).max(0.0),
        })
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
            let e = self.effect(&action)?;
            p.latency_ratio *= e.latency_ratio;
            p.size_ratio *= e.size_ratio;
            p.drop_pts += e.drop_pts.max(0.0);
        }
        if candidate.actions().len() > 1 {
            p.latency_ratio *= self.latency_fit();
        }
        p.drop_pts *= self.drop_fit();
        if candidate.quant == Quant::Qat {
            // The float model measured, plus what QAT leaves of the quantization's drop.
            let float = Candidate {
                quant: Quant::None,
                ..*candidate
            };
            if let (Some(&before), Some(q)) = (self.drops.get(&float), self.effect(&float_qat())) {
                p.drop_pts = before.max(0.0) + q.drop_pts;
                return Some(p);
            }
        }
        if candidate.tuned {
            // Fine-tuning recovers the pruning's or factorization's share.
            let base = self
                .drops
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
        self.drops.insert(o.candidate, drop);
        if o.candidate.tuned && o.candidate.mixed.is_none() {
            if let Some(&before) = self.drops.get(&o.candidate.untuned()) {
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

/// QAT alone (the action whose effect a QAT candidate adds to its float model's).
fn float_qat() -> Candidate {
    Candidate {
        quant: Quant::Qat,
        ..Candidate::IDENTITY
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
        p.exclude(int8(), "failed alone: no Conv".into());
        assert!(p
            .blocked(&both)
            .unwrap()
            .contains("int8-static: failed alone: no Conv"));
        assert_eq!(p.predict(&both), None);
    }

    #[test]
    fn refined_channel_ratios_interpolate_and_extrapolate() {
        let mut p = predictor();
        let at = |p: &Predictor, percent| {
            p.predict(&Candidate {
                prune: Prune::Channel { percent },
                ..Candidate::IDENTITY
            })
            .unwrap()
        };
        // Between the identity (0%: 1, 1, 0) and 50% (0.4, 0.5, 3.0).
        let quarter = at(&p, 25);
        assert!((quarter.latency_ratio - 0.7).abs() < 1e-12, "{quarter:?}");
        assert!((quarter.drop_pts - 1.5).abs() < 1e-12, "{quarter:?}");
        // Past 50%: the line through 30% and 50%.
        p.measured_action(
            Candidate {
                prune: Prune::Channel { percent: 30 },
                ..Candidate::IDENTITY
            },
            Effect {
                latency_ratio: 0.6,
                size_ratio: 0.7,
                drop_pts: 1.0,
            },
        );
        let seventy = at(&p, 70);
        assert!((seventy.latency_ratio - 0.2).abs() < 1e-12, "{seventy:?}");
        assert!((seventy.size_ratio - 0.3).abs() < 1e-12, "{seventy:?}");
        assert!((seventy.drop_pts - 5.0).abs() < 1e-12, "{seventy:?}");
    }

    #[test]
    fn qat_adds_a_share_of_int8s_drop_to_its_float_model() {
        let mut p = predictor();
        let qat = Candidate {
            quant: Quant::Qat,
            ..channel().tuned()
        };
        // Before the float model is measured: the sum, the tuning's prior recovery.
        let before = p.predict(&qat).unwrap();
        assert!((before.latency_ratio - 0.2).abs() < 1e-12, "{before:?}");
        assert!((before.drop_pts - (3.0 + 0.2 * QAT_LEFT) * PRIOR_RECOVERY).abs() < 1e-12);
        p.observe(Observed {
            candidate: channel().tuned(),
            predicted: p.predict(&channel().tuned()).unwrap(),
            latency_ratio: 0.4,
            subset_drop_pts: 0.5,
            drop_pts: Some(0.6),
        });
        let after = p.predict(&qat).unwrap();
        assert!(
            (after.drop_pts - (0.6 + 0.2 * QAT_LEFT)).abs() < 1e-12,
            "{after:?}"
        );
    }
}

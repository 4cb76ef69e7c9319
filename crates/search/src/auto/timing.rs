//! How long a trial will take, estimated before it starts so that no trial overruns the
//! time budget: the sum of its steps' times (a step whose model an earlier trial already
//! made is cached and free) and of its measurements. Each kind of step starts from a
//! prior in units of one full-set evaluation of the baseline and is refitted with every
//! trial's measured times.

use std::collections::HashMap;

use whittle_pipeline::step::train::Training;
use whittle_pipeline::step::StepConfig;

use super::trial::Trial;

/// The measurements of a candidate (the full set, the hard subset, the latency), in
/// full-set evaluations of the baseline before any was timed.
const MEASURE_EVALS: f64 = 1.5;
/// Seconds added to every estimate (loading, saving, ONNX Runtime sessions).
const OVERHEAD_S: f64 = 2.0;
/// An evaluation is taken to last at least this long (a journal from before the baseline
/// kept its evaluation time says 0).
const MIN_EVAL_S: f64 = 1.0;

/// The kinds of steps whose times are learnt apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    /// Pruning or training that fine-tunes.
    Tune,
    /// Quantization-aware training.
    Qat,
    /// Static INT8 with layers left float until a budget is met.
    Mixed,
    /// Everything else.
    Other,
}

impl Kind {
    /// The kind of `step` and how many units of it it runs: its epochs when it trains
    /// (learnt per epoch, since the search gives heavier pruning more epochs), else 1.
    fn of(step: &StepConfig) -> (Kind, f64) {
        let epochs = |t: &Training| t.epochs.max(1) as f64;
        match step {
            StepConfig::Prune(p) => match &p.finetune {
                Some(t) => (Kind::Tune, epochs(t)),
                None => (Kind::Other, 1.0),
            },
            StepConfig::Train(t) => (Kind::Tune, epochs(&t.training)),
            StepConfig::Distill(d) => (Kind::Tune, epochs(&d.training)),
            StepConfig::Qat(q) => (Kind::Qat, epochs(&q.training)),
            StepConfig::Quantize(q) if q.accuracy_budget.is_some() => (Kind::Mixed, 1.0),
            _ => (Kind::Other, 1.0),
        }
    }

    /// The prior of a step of this kind, in full-set evaluations of the baseline (per
    /// epoch for the ones that train).
    fn prior_evals(self) -> f64 {
        match self {
            // About six times as many training as test samples, forward and backward.
            Kind::Tune => 25.0,
            // The same with fake quantization on top.
            Kind::Qat => 40.0,
            // Quantizing, then evaluating on a subset per layer left float.
            Kind::Mixed => 10.0,
            // Graph rewrites, calibration on a few hundred samples.
            Kind::Other => 1.0,
        }
    }
}

/// Measured step and measurement times, and the priors they replace.
#[derive(Clone, Debug)]
pub struct Timing {
    eval_s: f64,
    /// Measured seconds per unit (epoch, or step) of each kind.
    steps: HashMap<Kind, Vec<f64>>,
    measures: Vec<f64>,
    /// Every trial's steps, serialized, to tell which steps of a candidate are cached.
    done: Vec<Vec<String>>,
}

impl Timing {
    /// Priors from one full-set evaluation of the baseline taking `eval_s` seconds.
    pub fn new(eval_s: f64) -> Timing {
        Timing {
            eval_s: eval_s.max(MIN_EVAL_S),
            steps: HashMap::new(),
            measures: Vec::new(),
            done: Vec::new(),
        }
    }

    /// Learns from a finished trial (one run in this process or replayed).
    pub fn observe(&mut self, trial: &Trial) {
        for (step, &seconds) in trial.steps.iter().zip(&trial.step_seconds) {
            if seconds > 0.0 {
                let (kind, units) = Kind::of(step);
                self.steps.entry(kind).or_default().push(seconds / units);
            }
        }
        if trial.accuracy.is_some() && trial.measure_seconds > 0.0 {
            self.measures.push(trial.measure_seconds);
        }
        self.done.push(serialized(&trial.steps));
    }

    /// Seconds a trial of `steps` is expected to take.
    pub fn estimate(&self, steps: &[StepConfig]) -> f64 {
        let mine = serialized(steps);
        let cached = (self.done.iter())
            .map(|d| d.iter().zip(&mine).take_while(|(a, b)| a == b).count())
            .max()
            .unwrap_or(0);
        let steps: f64 = steps.iter().skip(cached).map(|s| self.step(s)).sum();
        let measure = mean(&self.measures).unwrap_or(MEASURE_EVALS * self.eval_s);
        OVERHEAD_S + steps + measure
    }

    /// [`Timing::estimate`] in fine-tuning epochs (measured, else the prior).
    pub fn in_epochs(&self, steps: &[StepConfig]) -> f64 {
        self.estimate(steps) / self.per_unit(Kind::Tune)
    }

    fn step(&self, step: &StepConfig) -> f64 {
        let (kind, units) = Kind::of(step);
        self.per_unit(kind) * units
    }

    /// Seconds per epoch (of the kinds that train) or per step.
    fn per_unit(&self, kind: Kind) -> f64 {
        (self.steps.get(&kind).and_then(|s| mean(s)))
            .unwrap_or_else(|| self.eval_s * kind.prior_evals())
    }
}

fn serialized(steps: &[StepConfig]) -> Vec<String> {
    (steps.iter())
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect()
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::super::space::{Candidate, Prune, Quant, Settings};
    use super::super::trial::Verdict;
    use super::*;

    fn trial(c: Candidate, step_seconds: Vec<f64>, measure_seconds: f64) -> Trial {
        Trial {
            key: String::new(),
            number: 1,
            candidate: c,
            name: c.name(),
            steps: c.steps(&Settings::example()),
            model: None,
            predicted: None,
            cost: None,
            subset_drop_pts: None,
            accuracy: Some(0.9),
            verdict: Verdict::Measured,
            reason: String::new(),
            seconds: 0.0,
            step_seconds,
            measure_seconds,
        }
    }

    #[test]
    fn priors_are_refitted_and_cached_steps_are_free() {
        let mut t = Timing::new(4.0);
        let tuned = Candidate {
            prune: Prune::Channel { percent: 50 },
            ..Candidate::IDENTITY
        }
        .tuned();
        let int8 = Candidate {
            quant: Quant::Int8Static,
            ..tuned
        };
        // optimize + tuned prune (2 epochs, x3 at 50%) + quantize: 1 + 25 x 6 + 1
        // evaluations, and 1.5 to measure.
        let prior = t.estimate(&int8.steps(&Settings::example()));
        assert!((prior - (OVERHEAD_S + 4.0 * (1.0 + 150.0 + 1.0 + 1.5))).abs() < 1e-9);
        // The optimize step measured at 1 s, the tuned prune at 30 s, the measurements at
        // 3 s: its INT8 variant only quantizes (a step like optimize, now 1 s; the optimize
        // and prune steps are cached).
        t.observe(&trial(tuned, vec![1.0, 30.0], 3.0));
        let refit = t.estimate(&int8.steps(&Settings::example()));
        assert!((refit - (OVERHEAD_S + 1.0 + 3.0)).abs() < 1e-9, "{refit}");
        // Another ratio shares only the optimize step and pays the measured 5 s per
        // epoch: 8 epochs at 75%.
        let other = Candidate {
            prune: Prune::Channel { percent: 75 },
            ..tuned
        };
        let fresh = t.estimate(&other.steps(&Settings::example()));
        assert!((fresh - (OVERHEAD_S + 40.0 + 3.0)).abs() < 1e-9, "{fresh}");
        // In epochs of 5 s, for the search's priority.
        let epochs = t.in_epochs(&other.steps(&Settings::example()));
        assert!((epochs - 45.0 / 5.0).abs() < 1e-9, "{epochs}");
    }
}

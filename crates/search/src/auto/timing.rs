//! How long a trial will take, estimated before it starts so that no trial overruns the
//! time budget: the sum of its steps' times (a step whose model an earlier trial already
//! made is cached and free) and of its measurements. Each kind of step starts from a
//! prior in units of one full-set evaluation of the baseline and is refitted with every
//! trial's measured times.

use std::collections::HashMap;

use whittle_pipeline::step::StepConfig;

use super::trial::Trial;

/// Priors, in full-set evaluations of the baseline: a fine-tuning epoch (about six times
/// as many training as test samples, forward and backward) ...
const TUNE_EPOCH_EVALS: f64 = 25.0;
/// ... an epoch of quantization-aware training (fake quantization on top) ...
const QAT_EPOCH_EVALS: f64 = 40.0;
/// ... mixed precision (quantizing, then evaluating on a subset per layer left float) ...
const MIXED_EVALS: f64 = 10.0;
/// ... any other step (graph rewrites, calibration on a few hundred samples) ...
const STEP_EVALS: f64 = 1.0;
/// ... and the measurements of a candidate: the full set, the hard subset, the latency.
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

fn kind(step: &StepConfig) -> Kind {
    match step {
        StepConfig::Prune(p) if p.finetune.is_some() => Kind::Tune,
        StepConfig::Train(_) | StepConfig::Distill(_) => Kind::Tune,
        StepConfig::Qat(_) => Kind::Qat,
        StepConfig::Quantize(q) if q.accuracy_budget.is_some() => Kind::Mixed,
        _ => Kind::Other,
    }
}

/// Measured step and measurement times, and the priors they replace.
#[derive(Clone, Debug)]
pub struct Timing {
    eval_s: f64,
    epochs: f64,
    steps: HashMap<Kind, Vec<f64>>,
    measures: Vec<f64>,
    /// Every trial's steps, serialized, to tell which steps of a candidate are cached.
    done: Vec<Vec<String>>,
}

impl Timing {
    /// Priors from one full-set evaluation of the baseline taking `eval_s` seconds, and
    /// fine-tuning for `epochs` epochs.
    pub fn new(eval_s: f64, epochs: usize) -> Timing {
        Timing {
            eval_s: eval_s.max(MIN_EVAL_S),
            epochs: epochs.max(1) as f64,
            steps: HashMap::new(),
            measures: Vec::new(),
            done: Vec::new(),
        }
    }

    /// Learns from a finished trial (one run in this process or replayed).
    pub fn observe(&mut self, trial: &Trial) {
        for (step, &seconds) in trial.steps.iter().zip(&trial.step_seconds) {
            if seconds > 0.0 {
                self.steps.entry(kind(step)).or_default().push(seconds);
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
        let steps: f64 = steps.iter().skip(cached).map(|s| self.step(kind(s))).sum();
        let measure = mean(&self.measures).unwrap_or(MEASURE_EVALS * self.eval_s);
        OVERHEAD_S + steps + measure
    }

    fn step(&self, kind: Kind) -> f64 {
        if let Some(seen) = self.steps.get(&kind).and_then(|s| mean(s)) {
            return seen;
        }
        self.eval_s
            * match kind {
                Kind::Tune => TUNE_EPOCH_EVALS * self.epochs,
                Kind::Qat => QAT_EPOCH_EVALS * self.epochs,
                Kind::Mixed => MIXED_EVALS,
                Kind::Other => STEP_EVALS,
            }
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

    fn settings() -> Settings {
        Settings {
            data: "mnist:D".into(),
            eval_data: "mnist:E".into(),
            finetune_epochs: 2,
            seed: 0,
        }
    }

    fn trial(c: Candidate, step_seconds: Vec<f64>, measure_seconds: f64) -> Trial {
        Trial {
            key: String::new(),
            number: 1,
            candidate: c,
            name: c.name(),
            steps: c.steps(&settings()),
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
        let mut t = Timing::new(4.0, 2);
        let tuned = Candidate {
            prune: Prune::Channel { percent: 50 },
            ..Candidate::IDENTITY
        }
        .tuned();
        let int8 = Candidate {
            quant: Quant::Int8Static,
            ..tuned
        };
        // optimize + tuned prune + quantize: 1 + 25 x 2 + 1 evaluations, and 1.5 to measure.
        let prior = t.estimate(&int8.steps(&settings()));
        assert!((prior - (OVERHEAD_S + 4.0 * (1.0 + 50.0 + 1.0 + 1.5))).abs() < 1e-9);
        // The optimize step measured at 1 s, the tuned prune at 30 s, the measurements at
        // 3 s: its INT8 variant only quantizes (a step like optimize, now 1 s; the optimize
        // and prune steps are cached).
        t.observe(&trial(tuned, vec![1.0, 30.0], 3.0));
        let refit = t.estimate(&int8.steps(&settings()));
        assert!((refit - (OVERHEAD_S + 1.0 + 3.0)).abs() < 1e-9, "{refit}");
        // Another ratio shares only the optimize step and pays the measured 30 s.
        let other = Candidate {
            prune: Prune::Channel { percent: 70 },
            ..tuned
        };
        let fresh = t.estimate(&other.steps(&settings()));
        assert!((fresh - (OVERHEAD_S + 30.0 + 3.0)).abs() < 1e-9, "{fresh}");
    }
}

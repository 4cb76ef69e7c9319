//! How long a trial will take, estimated before it starts so that no trial overruns the
//! time budget: the sum of its steps' times (a step whose model an earlier trial already
//! made is cached and free) and of its measurements. Each kind of step, and the
//! measurement on each evaluation engine, starts from a prior in units of one full-set
//! evaluation of the baseline and is replaced by the slowest time measured for it: the
//! machine's load varies from trial to trial, and a trial must not overrun.

use std::collections::HashMap;

use whittle_pipeline::step::quantize::Mode;
use whittle_pipeline::step::train::Training;
use whittle_pipeline::step::StepConfig;

use super::trial::Trial;

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

/// The kernels ONNX Runtime runs a candidate's model with, which set how long measuring
/// it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Engine {
    /// Float32 kernels.
    Float,
    /// Quantize-dequantize pairs, fused into integer kernels (static INT8, QAT, INT4).
    Qdq,
    /// Integer kernels quantizing activations at run time (ConvInteger, MatMulInteger).
    Dynamic,
    /// Float16 weights and activations.
    Fp16,
}

impl Engine {
    /// The engine of a candidate made by `steps`: its last quantization's.
    fn of(steps: &[StepConfig]) -> Engine {
        (steps.iter().rev())
            .find_map(|step| match step {
                StepConfig::Quantize(q) if q.mode == Mode::Dynamic => Some(Engine::Dynamic),
                StepConfig::Quantize(_) | StepConfig::Qat(_) | StepConfig::Int4(_) => {
                    Some(Engine::Qdq)
                }
                StepConfig::Fp16(_) => Some(Engine::Fp16),
                _ => None,
            })
            .unwrap_or(Engine::Float)
    }

    /// The prior of the measurements (the full set, the hard subset, the latency, all in
    /// ONNX Runtime) on this engine, in full-set evaluations of the baseline: the full set
    /// and the subset are 1.1 evaluations at the baseline's speed; zoo:cnn's dynamic INT8
    /// runs 2.4 times slower than its float model (ConvInteger).
    fn prior_evals(self) -> f64 {
        match self {
            Engine::Float | Engine::Qdq => 1.5,
            Engine::Fp16 | Engine::Dynamic => 3.0,
        }
    }
}

/// Measured step and measurement times, and the priors they replace.
#[derive(Clone, Debug)]
pub struct Timing {
    eval_s: f64,
    /// The slowest measured seconds per unit (epoch, or step) of each kind.
    steps: HashMap<Kind, f64>,
    /// The slowest measurement of a candidate on each engine, seconds.
    measures: HashMap<Engine, f64>,
    /// Every trial's steps, serialized, to tell which steps of a candidate are cached.
    done: Vec<Vec<String>>,
}

impl Timing {
    /// Priors from one full-set evaluation of the baseline taking `eval_s` seconds.
    pub fn new(eval_s: f64) -> Timing {
        Timing {
            eval_s: eval_s.max(MIN_EVAL_S),
            steps: HashMap::new(),
            measures: HashMap::new(),
            done: Vec::new(),
        }
    }

    /// Learns from a finished trial (one run in this process or replayed).
    pub fn observe(&mut self, trial: &Trial) {
        for (step, &seconds) in trial.steps.iter().zip(&trial.step_seconds) {
            if seconds > 0.0 {
                let (kind, units) = Kind::of(step);
                slowest(self.steps.entry(kind).or_default(), seconds / units);
            }
        }
        if trial.accuracy.is_some() && trial.measure_seconds > 0.0 {
            let engine = Engine::of(&trial.steps);
            slowest(
                self.measures.entry(engine).or_default(),
                trial.measure_seconds,
            );
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
        let engine = Engine::of(steps);
        let measure = (self.measures.get(&engine).copied())
            .unwrap_or_else(|| engine.prior_evals() * self.eval_s);
        let steps: f64 = steps.iter().skip(cached).map(|s| self.step(s)).sum();
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
        (self.steps.get(&kind).copied()).unwrap_or_else(|| self.eval_s * kind.prior_evals())
    }
}

fn serialized(steps: &[StepConfig]) -> Vec<String> {
    (steps.iter())
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect()
}

/// Keeps the larger of `kept` and `seconds`.
fn slowest(kept: &mut f64, seconds: f64) {
    *kept = kept.max(seconds);
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
        // tuned prune (2 epochs, x3 at 50%) + optimize + quantize: 25 x 6 + 1 + 1
        // evaluations, and 1.5 to measure a static INT8 model.
        let prior = t.estimate(&int8.steps(&Settings::example()));
        assert!((prior - (OVERHEAD_S + 4.0 * (1.0 + 150.0 + 1.0 + 1.5))).abs() < 1e-9);
        // The tuned prune measured at 30 s, the optimize step at 1 s, the measurements at
        // 3 s: its INT8 variant only quantizes (a step like optimize, now 1 s; the prune
        // and optimize steps are cached), and its INT8 measurement keeps its prior.
        t.observe(&trial(tuned, vec![30.0, 1.0], 3.0));
        let refit = t.estimate(&int8.steps(&Settings::example()));
        assert!((refit - (OVERHEAD_S + 1.0 + 6.0)).abs() < 1e-9, "{refit}");
        // Another ratio shares no step: it pays the measured 5 s per epoch (8 epochs at
        // 75%) and the optimize step's 1 s.
        let other = Candidate {
            prune: Prune::Channel { percent: 75 },
            ..tuned
        };
        let fresh = t.estimate(&other.steps(&Settings::example()));
        assert!(
            (fresh - (OVERHEAD_S + 40.0 + 1.0 + 3.0)).abs() < 1e-9,
            "{fresh}"
        );
        // In epochs of 5 s, for the search's priority.
        let epochs = t.in_epochs(&other.steps(&Settings::example()));
        assert!((epochs - 46.0 / 5.0).abs() < 1e-9, "{epochs}");
    }

    #[test]
    fn the_slowest_time_of_each_kind_and_engine_is_kept() {
        let mut t = Timing::new(1.0);
        let settings = Settings::example();
        let pruned = |percent| Candidate {
            prune: Prune::Channel { percent },
            ..Candidate::IDENTITY
        };
        let dynamic = |c: Candidate| Candidate {
            quant: Quant::Int8Dynamic,
            ..c
        };
        // Dynamic INT8 measured in 80 s, a tuned 30% prune (4 epochs) at 10 s then, under
        // more load, 20 s per epoch, and its float model measured in 3 s.
        t.observe(&trial(dynamic(Candidate::IDENTITY), vec![1.0, 1.0], 80.0));
        t.observe(&trial(pruned(30).tuned(), vec![40.0, 1.0], 3.0));
        t.observe(&trial(pruned(25).tuned(), vec![80.0, 1.0], 2.0));
        // A tuned 50% prune (6 epochs) with dynamic INT8: its own epochs at the slowest
        // 20 s, the optimize and quantize steps at 1 s, the dynamic engine's 80 s to
        // measure.
        let c = dynamic(pruned(50).tuned());
        let estimate = t.estimate(&c.steps(&settings));
        assert!(
            (estimate - (OVERHEAD_S + 120.0 + 2.0 + 80.0)).abs() < 1e-9,
            "{estimate}"
        );
        // Its float variant is measured at the slowest float time, 3 s.
        let float = t.estimate(&pruned(50).tuned().steps(&settings));
        assert!(
            (float - (OVERHEAD_S + 120.0 + 1.0 + 3.0)).abs() < 1e-9,
            "{float}"
        );
    }
}

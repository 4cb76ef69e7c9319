//! The search loop: measure the baseline once, try the identity and each action alone,
//! then the candidate of highest predicted gain per cost, refitting after every trial,
//! until the budget is spent or no candidate left is predicted to beat the best; after
//! every trial the best model so far is written to the output. A candidate whose
//! estimated time does not fit in what is left of the time budget is not started. A rerun
//! with the same work folder replays the journalled trials instead of running them.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use sha2::{Digest, Sha256};
use whittle_exec::model_inputs;
use whittle_ir::{ExternalData, Model};
use whittle_pipeline::error::Context;
use whittle_pipeline::journal::Journal;
use whittle_pipeline::{cache, Ctx, Level, Observer, Result};

use super::config::{AutoConfig, Target};
use super::measure::{Baseline, Meter, ACCURACY_ENGINE};
use super::outcome::{Outcome, Skipped, Status};
use super::predict::{Effect, Observed, Predictor};
use super::space::{
    grid, Candidate, Prune, Quant, Settings, ACTIONS, CHANNEL_MAX, CHANNEL_STEP, PRUNES, QUANTS,
};
use super::timing::Timing;
use super::trial::{Bench, Plan, Trial, Verdict};
use crate::pareto::{Direction, Objectives};

/// A candidate stopped on the hard subset once its estimate passes the budget by this
/// factor (the estimate ignores the easy samples, which rarely flip).
const CONFIDENT: f64 = 1.25;
/// A candidate is skipped when even this much better than predicted it would not beat
/// the best (speed, size, balanced: a factor of the score).
const OPTIMISM: f64 = 0.85;
/// Mixed precision and QAT are tried when the quantization itself loses more than this
/// many points (less is within the measurement's noise).
const MIXED_MIN_SHARE: f64 = 0.2;
/// When latency matters to the target, a candidate this many times slower than the
/// baseline stops after its latency.
const SLOW: f64 = 1.5;
/// Estimated trial times are stretched by this factor against the time left (the
/// estimates are means; a trial must not overrun).
const TIME_MARGIN: f64 = 1.15;
/// INT4 is not tried when MatMul and Gemm weights (all it quantizes; it leaves Convs as
/// they are) hold less than this share of the parameters.
const INT4_MIN_SHARE: f64 = 0.1;
/// Dynamic INT8 is not tried for speed or balance when Convs (which ONNX Runtime runs as
/// ConvInteger, several times slower) take more than this share of the time.
const CONV_SLOW_SHARE: f64 = 0.3;

/// Runs the search of `config`, reporting to `observer`.
pub fn run(config: &AutoConfig, observer: &dyn Observer) -> Result<Outcome> {
    config.validate()?;
    let start = Instant::now();
    let work = &config.work_dir;
    std::fs::create_dir_all(work)
        .context(|| format!("creating the work folder {}", work.display()))?;
    let model = config.model.load()?;
    let inputs = model_inputs(&model);
    config.data.check_inputs(&inputs)?;
    let hash = cache::model_hash(&model);
    let baseline_path = work.join("baseline.onnx");
    if !baseline_path.is_file()
        || cache::model_hash(
            &Model::load(&baseline_path).context(|| baseline_path.display().to_string())?,
        ) != hash
    {
        model
            .save(&baseline_path, &ExternalData::Auto)
            .context(|| format!("saving {}", baseline_path.display()))?;
    }
    let mut ctx = Ctx::new(observer);
    ctx.seed = config.seed;
    ctx.threads = Some(config.threads);
    let test = Meter::load(&config.eval_data, &model)?;
    let mut baselines = Journal::<Baseline>::open(work)?;
    // Journalled figures are keyed by the model and how accuracy is measured.
    let key = format!("{hash}|{ACCURACY_ENGINE}");
    let (baseline, meter) = match baselines.find(&key) {
        Some(b) => {
            observer.log(Level::Info, "baseline: measured before");
            let meter = Meter::new(&ctx, &model, test, &b.hard, config.threads)?;
            (b.clone(), meter)
        }
        None => {
            observer.log(Level::Info, "baseline: measuring");
            let (b, meter) = Meter::baseline(&ctx, key.clone(), &model, test, config.threads)?;
            baselines.append(b.clone())?;
            (b, meter)
        }
    };
    drop(model);
    let settings = Settings {
        data: config.data.spec.clone(),
        eval_data: config.eval_data.spec.clone(),
        finetune_epochs: config.finetune_epochs,
        seed: config.seed,
        prune_stem: config.target == Target::Speed,
    };
    let allowed = config.actions.as_deref();
    let space = grid(allowed);
    let plan = plan_lines(config, &settings, &baseline, space.len());
    for line in &plan {
        observer.log(Level::Info, line.clone());
    }
    let bench = Bench {
        baseline: &baseline_path,
        hard_accuracy: baseline.hard_accuracy,
        latency_ms: baseline.cost.latency_ms,
        meter: &meter,
        work_dir: work,
        seed: config.seed,
        threads: config.threads,
        observer,
    };
    let mut search = Search::new(config, &baseline, settings);
    // The actions named in --actions are tried even where the profile says they cannot
    // gain anything.
    if !config.exhaustive && allowed.is_none() {
        for (action, why) in pointless(config.target, &baseline) {
            observer.log(Level::Info, format!("not tried: {}: {why}", action.name()));
            search.predictor.exclude(action, why);
        }
    }
    if !config.data.is_labelled() {
        observer.log(
            Level::Info,
            format!(
                "not tried: fine-tuning, QAT and mixed precision: {} has no labels; accuracy is the outputs' cosine to the baseline's",
                config.data.spec
            ),
        );
    }
    let mut journal = Journal::<Trial>::open(work)?;
    let mut settings_key = format!(
        "{}|{}|{}|{}|{}",
        search.settings.data,
        search.settings.eval_data,
        search.settings.finetune_epochs,
        search.settings.seed,
        config.max_accuracy_drop
    );
    if search.settings.prune_stem {
        settings_key.push_str("|stem");
    }
    let slow_limit = (!config.exhaustive && config.target != Target::Size).then_some(SLOW);
    let stop = loop {
        if let Some(why) = search.spent(start) {
            break why;
        }
        let left = config
            .budget
            .time
            .map(|t| t.as_secs_f64() - start.elapsed().as_secs_f64());
        let Some((candidate, predicted)) = search.next(&space, left) else {
            break if !search.too_long.is_empty() {
                format!(
                    "no candidate left fits in the {:.0} s left of the time budget",
                    left.unwrap_or(0.0)
                )
            } else if config.exhaustive {
                "every point of the grid was evaluated".to_string()
            } else {
                "no candidate left is predicted to beat the best".to_string()
            };
        };
        let key = trial_key(&baseline.key, &candidate, &settings_key);
        let number = search.trials.len() + 1;
        let trial = match journal.find(&key) {
            Some(done) => {
                observer.log(
                    Level::Info,
                    format!("trial {number}: {} done before", done.name),
                );
                Trial {
                    number,
                    ..done.clone()
                }
            }
            None => {
                observer.log(Level::Info, format!("trial {number}: {}", candidate.name()));
                let drop_limit =
                    (!config.exhaustive).then_some(config.max_accuracy_drop * CONFIDENT);
                let trial = bench.run(Plan {
                    key,
                    number,
                    candidate,
                    steps: candidate.steps(&search.settings),
                    predicted,
                    drop_limit,
                    slow_limit,
                });
                journal.append(trial.clone())?;
                trial
            }
        };
        observer.log(Level::Info, search.describe(&trial));
        if search.record(trial) {
            search.write_best()?;
        }
    };
    observer.log(Level::Info, format!("search ended: {stop}"));
    if search.best.is_none() {
        // Nothing ran to a model: the output is the (optimized-or-not) baseline itself.
        let model = Model::load(&baseline_path).context(|| baseline_path.display().to_string())?;
        model
            .save(&config.output, &ExternalData::Auto)
            .context(|| format!("writing {}", config.output.display()))?;
    }
    Ok(search.finish(plan, stop, start.elapsed().as_secs_f64(), space.len()))
}

/// The trial key: the baseline, the candidate and the settings its figures depend on.
fn trial_key(baseline: &str, candidate: &Candidate, settings: &str) -> String {
    let candidate = serde_json::to_string(candidate).unwrap_or_default();
    let mut h = Sha256::new();
    for part in [baseline, &candidate, settings] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What is printed before the search starts: the space, the budget, the plan.
fn plan_lines(
    config: &AutoConfig,
    settings: &Settings,
    baseline: &Baseline,
    space: usize,
) -> Vec<String> {
    let budget = match (config.budget.time, config.budget.trials) {
        (Some(t), Some(n)) => format!("{:.0} s or {n} trials", t.as_secs_f64()),
        (Some(t), None) => format!("{:.0} s", t.as_secs_f64()),
        (None, Some(n)) => format!("{n} trials"),
        (None, None) => "none".into(),
    };
    let top = (baseline.op_latency.ops.iter().take(3))
        .map(|o| format!("{} {:.0}%", o.op_type, 100.0 * o.share))
        .collect::<Vec<_>>()
        .join(", ");
    let labelled = config.data.is_labelled();
    let (measure, drop, subset) = if labelled {
        (
            format!("top-1 {:.2}%", 100.0 * baseline.accuracy),
            format!(
                "at most {} points of accuracy lost",
                config.max_accuracy_drop
            ),
            format!("accuracy on the {} hardest samples", baseline.hard.len()),
        )
    } else {
        (
            "outputs compared by cosine".to_string(),
            format!(
                "a cosine of the outputs to the baseline's of at least {:.5}",
                1.0 - config.max_accuracy_drop / 100.0
            ),
            "cosine on every feed".to_string(),
        )
    };
    let restricted = match &config.actions {
        Some(actions) => {
            let names: Vec<&str> = (ACTIONS.iter())
                .filter(|(_, a)| actions.contains(a))
                .map(|(n, _)| *n)
                .collect();
            format!(
                "; only the points that use --actions {} (tried even where the profile says they cannot gain)",
                names.join(",")
            )
        }
        None => String::new(),
    };
    let mut lines = vec![
        format!(
            "baseline: {measure} on {} samples, {} bytes, {:.3} ms in ONNX Runtime ({} thread(s)); time by operator: {top}",
            baseline.samples,
            baseline.cost.size_bytes,
            baseline.cost.latency_ms,
            config.threads
        ),
        format!(
            "search space: {space} candidates ({} prunings x 2 factorizations x {} quantizations, and a fine-tuned variant of each that prunes or factorizes{restricted}), plus refinements: mixed precision and QAT when INT8 loses too much, finer channel ratios around the best (bisection, up to {CHANNEL_MAX}%){}",
            PRUNES.len(),
            QUANTS.len(),
            if settings.prune_stem {
                "; channel pruning removes the stem's output channels too"
            } else {
                ""
            }
        ),
        format!(
            "target {:?}, {drop}{}{}; budget {budget}",
            config.target,
            config.max_latency_ms.map_or(String::new(), |ms| format!(", at most {ms} ms")),
            config.max_size_bytes.map_or(String::new(), |b| format!(", at most {b} bytes")),
        ),
    ];
    lines.push(if config.exhaustive {
        "plan: every point of the grid in order, each measured in full".into()
    } else {
        format!(
            "plan: the graph optimization, then each action alone (latency and size in ONNX Runtime, {subset}), then candidates by predicted gain per cost, refitting after each; fine-tuning and QAT only for candidates on the predicted Pareto front; mixed precision or QAT when INT8 loses too much; no trial started that is estimated to overrun the time budget"
        )
    });
    lines
}

/// The search's state.
struct Search<'a> {
    config: &'a AutoConfig,
    objectives: Objectives,
    baseline: &'a Baseline,
    predictor: Predictor,
    timing: Timing,
    settings: Settings,
    trials: Vec<Trial>,
    tried: HashSet<Candidate>,
    best: Option<usize>,
    skipped: Vec<Skipped>,
    /// Candidates left out because their estimated time did not fit in the budget's
    /// rest (the last time they were considered), and why.
    too_long: HashMap<Candidate, String>,
}

impl<'a> Search<'a> {
    fn new(config: &'a AutoConfig, baseline: &'a Baseline, settings: Settings) -> Search<'a> {
        Search {
            config,
            objectives: config.objectives(baseline.accuracy),
            baseline,
            predictor: Predictor::default(),
            timing: Timing::new(baseline.eval_seconds),
            settings,
            trials: Vec::new(),
            tried: HashSet::new(),
            best: None,
            skipped: Vec::new(),
            too_long: HashMap::new(),
        }
    }

    /// Why the budget is spent, if it is.
    fn spent(&self, start: Instant) -> Option<String> {
        let budget = self.config.budget;
        if let Some(n) = budget.trials.filter(|n| self.trials.len() >= *n) {
            return Some(format!("{n} trials done (--max-trials)"));
        }
        let time = budget.time.filter(|t| start.elapsed() >= *t)?;
        Some(format!("{:.0} s spent (--budget)", time.as_secs_f64()))
    }

    /// Whether a trial of `c` is expected to finish within `left` seconds (None: no time
    /// budget); if not, it is noted as too long.
    fn fits(&mut self, c: &Candidate, left: Option<f64>) -> bool {
        let Some(left) = left else {
            return true;
        };
        let estimate = self.timing.estimate(&c.steps(&self.settings));
        if estimate * TIME_MARGIN <= left {
            self.too_long.remove(c);
            return true;
        }
        self.too_long.insert(
            *c,
            format!("estimated at {estimate:.0} s, {left:.0} s of the time budget left"),
        );
        false
    }

    /// The candidate to try next and its prediction, among those expected to finish in
    /// the `left` seconds of the time budget.
    fn next(
        &mut self,
        space: &[Candidate],
        left: Option<f64>,
    ) -> Option<(Candidate, Option<super::predict::Prediction>)> {
        self.too_long.clear();
        let untried = |s: &Self, c: &Candidate| !s.tried.contains(c);
        let unlabelled: Vec<Candidate> = (space.iter().copied())
            .chain(self.refinements())
            .filter(|c| untried(self, c) && c.needs_labels() && !self.config.data.is_labelled())
            .collect();
        for c in unlabelled {
            let why = format!(
                "fine-tuning, QAT and mixed precision need labels; {} has none",
                self.config.data.spec
            );
            self.skip(c, why);
        }
        if self.config.exhaustive {
            let grid: Vec<Candidate> = space.iter().filter(|c| untried(self, c)).copied().collect();
            return grid
                .into_iter()
                .find(|c| self.fits(c, left))
                .map(|c| (c, None));
        }
        if untried(self, &Candidate::IDENTITY) && self.fits(&Candidate::IDENTITY, left) {
            return Some((Candidate::IDENTITY, None));
        }
        // Each action alone, before any composition that needs its effect.
        let alone: Vec<Candidate> = (space.iter())
            .filter(|c| c.actions().len() == 1 && !c.tuned && untried(self, c))
            .filter(|c| !self.predictor.unknown(c).is_empty())
            .copied()
            .collect();
        if let Some(action) = alone.into_iter().find(|c| self.fits(c, left)) {
            return Some((action, None));
        }
        let mut options: Vec<Candidate> = space.to_vec();
        options.extend(self.refinements());
        let best_score = self.best_feasible_score();
        let mut chosen: Option<(f64, Candidate, super::predict::Prediction)> = None;
        let options: Vec<Candidate> = options.into_iter().filter(|c| untried(self, c)).collect();
        for c in options {
            if let Some(why) = self.predictor.blocked(&c) {
                self.skip(c, why);
                continue;
            }
            let Some(p) = self.predictor.predict(&c) else {
                continue;
            };
            if c.trains() && !self.worth_tuning(&p) {
                continue;
            }
            let score = self
                .config
                .target
                .score(p.latency_ratio, p.size_ratio, p.drop_pts);
            if best_score.is_some_and(|b| optimistic(self.config.target, score) >= b) {
                continue;
            }
            let priority = self.priority(&c, &p, score);
            if chosen.as_ref().is_none_or(|(best, _, _)| priority > *best) && self.fits(&c, left) {
                chosen = Some((priority, c, p));
            }
        }
        chosen.map(|(_, c, p)| (c, Some(p)))
    }

    fn skip(&mut self, candidate: Candidate, reason: String) {
        self.tried.insert(candidate);
        self.skipped.push(Skipped {
            name: candidate.name(),
            reason,
        });
    }

    /// Predicted gain per cost: the score's improvement on the baseline's over the
    /// accuracy it spends and its estimated time (in fine-tuning epochs, so that cheap
    /// trials go first); predicted outside the constraints, a hundredth of that.
    fn priority(&self, c: &Candidate, p: &super::predict::Prediction, score: f64) -> f64 {
        let target = self.config.target;
        let gain = (target.score(1.0, 1.0, 0.0) - score).max(1e-3);
        let budget = self.config.max_accuracy_drop.max(0.05);
        let time = self.timing.in_epochs(&c.steps(&self.settings));
        let cost = 1.0 + p.drop_pts.max(0.0) / budget + time;
        let point = self.point_of(p);
        let outside = p.drop_pts > budget * CONFIDENT || self.objectives.distance(&point) > 0.1;
        gain / cost * if outside { 0.01 } else { 1.0 }
    }

    fn point_of(&self, p: &super::predict::Prediction) -> [f64; 3] {
        let b = self.baseline;
        [
            p.latency_ratio * b.cost.latency_ms,
            p.size_ratio * b.cost.size_bytes as f64,
            b.accuracy - p.drop_pts / 100.0,
        ]
    }

    /// Whether fine-tuning is worth its time: the predicted latency and size are on the
    /// Pareto front of what was measured within the constraints.
    fn worth_tuning(&self, p: &super::predict::Prediction) -> bool {
        let cost = Objectives::new([
            ("latency_ms", Direction::Min),
            ("size_bytes", Direction::Min),
        ]);
        let point = self.point_of(p);
        let mine = [point[0], point[1]];
        !self.trials.iter().filter(|t| self.feasible(t)).any(|t| {
            let c = t.cost.as_ref().expect("a feasible trial was measured");
            cost.dominates(&[c.latency_ms, c.size_bytes as f64], &mine)
        })
    }

    /// The refinements outside the grid (mixed precision and QAT, finer channel ratios)
    /// that use only the allowed actions.
    fn refinements(&self) -> Vec<Candidate> {
        let mut all = self.quant_refinements();
        all.extend(self.channel_refinements());
        all.retain(|c| c.allowed(self.config.actions.as_deref()));
        all
    }

    /// Static INT8 candidates measured outside the accuracy budget because of their
    /// quantization (their float counterpart, measured too, is within it), again with the
    /// most sensitive layers left float until the quantization's own drop fits what the
    /// float part leaves of the budget, and with quantization-aware training instead.
    fn quant_refinements(&self) -> Vec<Candidate> {
        let budget = self.config.max_accuracy_drop;
        let acc = self.baseline.accuracy;
        let quantized = |t: &&Trial| {
            t.candidate.quant == Quant::Int8Static
                && t.candidate.mixed.is_none()
                && (t.candidate.tuned || !t.candidate.changes_weights())
        };
        let mut refinements = Vec::new();
        for t in self.trials.iter().filter(quantized) {
            let float = Candidate {
                quant: Quant::None,
                ..t.candidate
            };
            let float_drop = (self.trials.iter())
                .find(|f| f.candidate == float)
                .and_then(|f| f.drop_pts(acc))
                .map(|d| d.max(0.0));
            let (Some(drop), Some(float_drop)) = (t.drop_pts(acc), float_drop) else {
                continue;
            };
            if drop > budget && float_drop < budget && drop - float_drop > MIXED_MIN_SHARE {
                let left = ((budget - float_drop) * 100.0).round().max(1.0) as u16;
                refinements.push(Candidate {
                    mixed: Some(left),
                    ..t.candidate
                });
                refinements.push(Candidate {
                    quant: Quant::Qat,
                    ..t.candidate
                });
            }
        }
        refinements
    }

    /// Finer channel ratios for every fine-tuned composition that prunes channels, from
    /// the largest ratio measured within the constraints: that composition's own, else
    /// the largest of any composition (a float model pruned 50% within the budget makes
    /// its INT8 variant worth trying further too). The next ratio is halfway to the
    /// smallest larger ratio of the composition that missed the accuracy budget, or
    /// [`CHANNEL_STEP`]s further up to [`CHANNEL_MAX`] when none missed it yet (a
    /// bisection on the ratio; none once the two are [`CHANNEL_STEP`] apart).
    fn channel_refinements(&self) -> Vec<Candidate> {
        let budget = self.config.max_accuracy_drop;
        let acc = self.baseline.accuracy;
        let ratio = |c: &Candidate| match c.prune {
            Prune::Channel { percent } if c.tuned && c.mixed.is_none() => Some(percent),
            _ => None,
        };
        // The composition of a channel-pruned candidate: the candidate at 0%.
        let composition = |c: &Candidate| Candidate {
            prune: Prune::Channel { percent: 0 },
            ..*c
        };
        let feasible_ratio = |of: Option<Candidate>| {
            (self.trials.iter())
                .filter(|t| self.feasible(t))
                .filter(|t| of.is_none_or(|c| composition(&t.candidate) == c))
                .filter_map(|t| ratio(&t.candidate))
                .max()
        };
        let Some(any) = feasible_ratio(None) else {
            return Vec::new();
        };
        let compositions: HashSet<Candidate> = (self.trials.iter())
            .filter(|t| ratio(&t.candidate).is_some())
            .map(|t| composition(&t.candidate))
            .collect();
        let mut refinements = Vec::new();
        for comp in compositions {
            let own = feasible_ratio(Some(comp));
            let kept = own.unwrap_or(any);
            let missed = |above: u8| {
                (self.trials.iter())
                    .filter(|t| composition(&t.candidate) == comp)
                    .filter(|t| t.drop_pts(acc).is_some_and(|d| d > budget))
                    .filter_map(|t| ratio(&t.candidate))
                    .filter(|&p| p > above)
                    .min()
            };
            if own.is_none() && missed(0).is_some_and(|p| p <= kept) {
                // Missed at or below the ratio another composition kept: nothing above.
                continue;
            }
            let missed = missed(kept);
            let next = match missed {
                Some(out) => kept.midpoint(out) / CHANNEL_STEP * CHANNEL_STEP,
                None => (kept + 4 * CHANNEL_STEP).min(CHANNEL_MAX),
            };
            if next > kept && missed.is_none_or(|out| next < out) {
                refinements.push(Candidate {
                    prune: Prune::Channel { percent: next },
                    ..comp
                });
            }
        }
        refinements.sort_by_key(Candidate::name);
        refinements
    }

    /// A trial's point: latency, size and accuracy (estimated from the subset when it
    /// was dropped there; not finite when it failed).
    fn point(&self, t: &Trial) -> [f64; 3] {
        match &t.cost {
            Some(c) => [
                c.latency_ms,
                c.size_bytes as f64,
                t.accuracy
                    .or(t
                        .subset_drop_pts
                        .map(|d| self.baseline.accuracy - d / 100.0))
                    .unwrap_or(f64::NAN),
            ],
            None => [f64::NAN; 3],
        }
    }

    /// Measured in full and within every constraint.
    fn feasible(&self, t: &Trial) -> bool {
        t.verdict == Verdict::Measured && self.objectives.feasible(&self.point(t))
    }

    /// The target's score of a trial (smaller is better).
    fn score(&self, t: &Trial) -> f64 {
        let [latency, size, accuracy] = self.point(t);
        let b = self.baseline;
        self.config.target.score(
            latency / b.cost.latency_ms,
            size / b.cost.size_bytes as f64,
            100.0 * (b.accuracy - accuracy),
        )
    }

    fn best_feasible_score(&self) -> Option<f64> {
        let best = &self.trials[self.best?];
        self.feasible(best).then(|| self.score(best))
    }

    /// Whether `a` is a better result than `b`: feasible first, then the score; among
    /// infeasible ones the smaller distance to the constraints.
    fn better(&self, a: &Trial, b: &Trial) -> bool {
        match (self.feasible(a), self.feasible(b)) {
            (true, false) => true,
            (false, true) => false,
            (true, true) => self.score(a) < self.score(b),
            (false, false) => {
                let (da, db) = (
                    self.objectives.distance(&self.point(a)),
                    self.objectives.distance(&self.point(b)),
                );
                da < db || (da == db && self.score(a) < self.score(b))
            }
        }
    }

    /// Takes a finished trial into the state; whether it is the new best.
    fn record(&mut self, trial: Trial) -> bool {
        self.tried.insert(trial.candidate);
        self.timing.observe(&trial);
        let b = self.baseline;
        if let Some(c) = &trial.cost {
            let latency_ratio = c.latency_ms / b.cost.latency_ms;
            let subset = trial.subset_drop_pts.unwrap_or(0.0);
            if trial.candidate.actions().len() == 1
                && !trial.candidate.tuned
                && trial.candidate.mixed.is_none()
            {
                self.predictor.measured_action(
                    trial.candidate,
                    Effect {
                        latency_ratio,
                        size_ratio: c.size_bytes as f64 / b.cost.size_bytes as f64,
                        drop_pts: subset,
                    },
                );
            }
            if let Some(predicted) = trial.predicted {
                self.predictor.observe(Observed {
                    candidate: trial.candidate,
                    predicted,
                    latency_ratio,
                    subset_drop_pts: subset,
                    drop_pts: trial.accuracy.map(|a| 100.0 * (b.accuracy - a)),
                });
            }
        } else if trial.candidate.actions().len() == 1 {
            self.predictor
                .exclude(trial.candidate, format!("failed alone: {}", trial.reason));
        }
        let usable = trial.model.is_some() && trial.cost.is_some();
        self.trials.push(trial);
        let new = self.trials.len() - 1;
        if !usable {
            return false;
        }
        let improves = match self.best {
            None => true,
            Some(i) => self.better(&self.trials[new], &self.trials[i]),
        };
        if improves {
            self.best = Some(new);
        }
        improves
    }

    /// Writes the best model so far to the output, atomically.
    fn write_best(&self) -> Result<()> {
        let Some(path) = self.best.and_then(|i| self.trials[i].model.clone()) else {
            return Ok(());
        };
        let model = Model::load(&path).context(|| path.display().to_string())?;
        let out = &self.config.output;
        model
            .save(out, &ExternalData::Auto)
            .context(|| format!("writing {}", out.display()))
    }

    /// One line about a finished trial.
    fn describe(&self, t: &Trial) -> String {
        let b = self.baseline;
        match (&t.cost, t.verdict) {
            (_, Verdict::Failed) | (None, _) => format!("  {}: failed: {}", t.name, t.reason),
            (Some(c), verdict) => {
                let accuracy = match (t.accuracy, verdict) {
                    (Some(a), _) => format!(
                        "top-1 {:.2}% ({:+.2} pt)",
                        100.0 * a,
                        100.0 * (a - b.accuracy)
                    ),
                    _ => format!("dropped: {}", t.reason),
                };
                format!(
                    "  {}: {:.3} ms ({:.2}x faster), {} bytes ({:.2}x smaller), {accuracy} [{:.1} s]",
                    t.name,
                    c.latency_ms,
                    b.cost.latency_ms / c.latency_ms,
                    c.size_bytes,
                    b.cost.size_bytes as f64 / c.size_bytes as f64,
                    t.seconds
                )
            }
        }
    }

    fn finish(mut self, plan: Vec<String>, stop: String, elapsed_s: f64, space: usize) -> Outcome {
        let mut too_long: Vec<(Candidate, String)> = self.too_long.drain().collect();
        too_long.sort_by_key(|(c, _)| c.name());
        self.skipped
            .extend(too_long.into_iter().map(|(c, why)| Skipped {
                name: c.name(),
                reason: format!("not started, it would overrun the time budget: {why}"),
            }));
        let best = self.best;
        let feasible: Vec<bool> = self.trials.iter().map(|t| self.feasible(t)).collect();
        let status = match best {
            Some(i) if feasible[i] => Status::Ok,
            _ => Status::BudgetNotMet,
        };
        let excess = best.map(|i| self.objectives.excess(&self.point(&self.trials[i])));
        let scores = self.trials.iter().map(|t| self.score(t)).collect();
        Outcome {
            status,
            output: self.config.output.clone(),
            work_dir: self.config.work_dir.clone(),
            target: self.config.target,
            objectives: self.objectives,
            baseline: self.baseline.clone(),
            best,
            trials: self.trials,
            feasible,
            scores,
            excess: excess.unwrap_or_default(),
            skipped: self.skipped,
            search_space: space,
            plan,
            stop,
            elapsed_s,
        }
    }
}

/// Actions left out before the search starts, and why: they cannot gain anything on the
/// target for this model. 2:4 zeros are stored dense and ONNX Runtime runs them dense;
/// INT4 only quantizes MatMul and Gemm weights; dynamic INT8 runs Convs as ConvInteger.
fn pointless(target: Target, baseline: &Baseline) -> Vec<(Candidate, String)> {
    let alone = |prune, quant| Candidate {
        prune,
        quant,
        ..Candidate::IDENTITY
    };
    let mut out = vec![(
        alone(Prune::Nm24, Quant::None),
        "its zeros are stored dense and ONNX Runtime runs it dense: no size or latency gain"
            .to_string(),
    )];
    if baseline.matmul_share < INT4_MIN_SHARE {
        out.push((
            alone(Prune::None, Quant::Int4),
            format!(
                "it quantizes only MatMul and Gemm weights, {:.1}% of the parameters here (Convs stay float)",
                100.0 * baseline.matmul_share
            ),
        ));
    }
    let conv: f64 = (baseline.op_latency.ops.iter())
        .filter(|o| o.op_type == "Conv")
        .map(|o| o.share)
        .sum();
    if target != Target::Size && conv > CONV_SLOW_SHARE {
        out.push((
            alone(Prune::None, Quant::Int8Dynamic),
            format!(
                "ONNX Runtime runs its Convs as ConvInteger, several times slower, and Convs take {:.0}% of the time here",
                100.0 * conv
            ),
        ));
    }
    out
}

/// The best score `score` could turn out to be.
fn optimistic(target: Target, score: f64) -> f64 {
    match target {
        Target::Accuracy => score - 0.1,
        _ => score * OPTIMISM,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use whittle_pipeline::{DataSource, ModelSource};

    use super::super::config::Budget;
    use super::super::measure::Cost;
    use super::*;

    fn config() -> AutoConfig {
        AutoConfig {
            model: ModelSource::parse("m.onnx"),
            data: DataSource::new("mnist:D"),
            eval_data: DataSource::new("mnist:D"),
            target: Target::Speed,
            max_accuracy_drop: 2.0,
            max_latency_ms: None,
            max_size_bytes: None,
            budget: Budget {
                time: None,
                trials: None,
            },
            finetune_epochs: 1,
            threads: 1,
            seed: 0,
            exhaustive: false,
            actions: None,
            work_dir: PathBuf::from("w"),
            output: PathBuf::from("o.onnx"),
        }
    }

    fn baseline() -> Baseline {
        Baseline {
            key: "b".into(),
            cost: Cost {
                size_bytes: 1000,
                parameters: 100,
                macs: 100,
                latency_ms: 1.0,
            },
            accuracy: 0.9,
            samples: 100,
            hard: Vec::new(),
            hard_accuracy: 0.5,
            op_latency: Default::default(),
            eval_seconds: 1.0,
            matmul_share: 0.0,
        }
    }

    /// A trial of `c` measured in full at `drop` points lost and `ratio` of the
    /// baseline's latency and size.
    fn measured(c: Candidate, drop: f64, ratio: f64) -> Trial {
        Trial {
            key: c.name(),
            number: 1,
            candidate: c,
            name: c.name(),
            steps: Vec::new(),
            model: Some(PathBuf::from("m.onnx")),
            predicted: None,
            cost: Some(Cost {
                size_bytes: (1000.0 * ratio) as u64,
                parameters: 50,
                macs: 50,
                latency_ms: ratio,
            }),
            subset_drop_pts: Some(drop),
            accuracy: Some(0.9 - drop / 100.0),
            verdict: Verdict::Measured,
            reason: String::new(),
            seconds: 1.0,
            step_seconds: Vec::new(),
            measure_seconds: 1.0,
        }
    }

    fn channel(percent: u8, quant: Quant) -> Candidate {
        Candidate {
            prune: Prune::Channel { percent },
            quant,
            ..Candidate::IDENTITY
        }
        .tuned()
    }

    #[test]
    fn channel_ratios_bisect_every_tuned_composition_from_the_largest_kept() {
        let (config, baseline) = (config(), baseline());
        let mut search = Search::new(&config, &baseline, Settings::example());
        // INT8 alone is the best (fastest within the budget); the float model pruned 50%
        // is within it, its INT8 variant not (2.5 points lost).
        search.record(measured(Candidate::IDENTITY, 0.0, 1.0));
        search.record(measured(channel(30, Quant::Int8Static), 0.6, 0.6));
        search.record(measured(channel(50, Quant::None), 1.4, 0.5));
        search.record(measured(channel(50, Quant::Int8Static), 2.5, 0.45));
        let names: Vec<String> = (search.channel_refinements().iter())
            .map(Candidate::name)
            .collect();
        // The float composition goes on up from its own 50%; the INT8 one bisects between
        // its 30% kept and its 50% missed.
        assert_eq!(
            names,
            ["channel-40% + tune -> int8-static", "channel-70% + tune"]
        );
        // An FP16 composition that missed at the 50% another composition kept goes
        // nowhere.
        search.record(measured(channel(50, Quant::Fp16), 2.3, 0.5));
        assert_eq!(search.channel_refinements().len(), 2);
        // One missed at 70% too: the float composition bisects to 60%.
        search.record(measured(channel(70, Quant::None), 2.2, 0.4));
        let names: Vec<String> = (search.channel_refinements().iter())
            .map(Candidate::name)
            .collect();
        assert_eq!(
            names,
            ["channel-40% + tune -> int8-static", "channel-60% + tune"]
        );
    }

    #[test]
    fn int8_that_loses_too_much_comes_back_as_mixed_precision_and_qat() {
        let (config, baseline) = (config(), baseline());
        let mut search = Search::new(&config, &baseline, Settings::example());
        let int8 = Candidate {
            quant: Quant::Int8Static,
            ..Candidate::IDENTITY
        };
        search.record(measured(Candidate::IDENTITY, 0.3, 1.0));
        search.record(measured(int8, 2.6, 0.5));
        // The float model spent 0.3 of the 2 points: the quantization gets 1.7.
        let refined = search.quant_refinements();
        assert_eq!(
            refined,
            [
                Candidate {
                    mixed: Some(170),
                    ..int8
                },
                Candidate {
                    quant: Quant::Qat,
                    ..int8
                }
            ]
        );
        // --actions int8-static: the QAT refinement is left out, mixed precision stays.
        let restricted = AutoConfig {
            actions: Some(vec![super::super::space::Action::Int8Static]),
            ..config.clone()
        };
        let mut only = Search::new(&restricted, &baseline, Settings::example());
        only.record(measured(Candidate::IDENTITY, 0.3, 1.0));
        only.record(measured(int8, 2.6, 0.5));
        assert_eq!(only.refinements(), [refined[0]]);
        // Within the budget, or lost by the float part already: none.
        let mut search = Search::new(&config, &baseline, Settings::example());
        search.record(measured(Candidate::IDENTITY, 2.1, 1.0));
        search.record(measured(int8, 2.6, 0.5));
        assert!(search.quant_refinements().is_empty());
    }
}

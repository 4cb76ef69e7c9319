//! The search itself: generations of candidates are measured, the feasible ones trained at
//! the first rung, evolution proposes the next generation from the Pareto front, and
//! successive halving picks the few that train fully; the best of those that still meets
//! the limits when measured again, trained, is the result.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use whittle_data::Split;
use whittle_ir::Model;
use whittle_pipeline::step::train::TestSet;
use whittle_pipeline::{Ctx, Level, Observer};

use crate::nas::candidate::Candidate;
use crate::nas::error::{At, NasError, Result};
use crate::nas::evolution::{self, Scored};
use crate::nas::halving::{self, Rung};
use crate::nas::measure::{measure, Limits, Measurement, MB};
use crate::nas::recheck::{first_passing, recheck, Recheck, Reference, Stage};
use crate::nas::runner::{Job, Runner};
use crate::nas::shrink::Source;
use crate::nas::space::{Family, Space};
use crate::nas::trials::{model_path, proxy_key, trained_key, JobSettings, Measured, Task, Trials};

/// How the next candidates are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Evolution on the Pareto front (the search).
    #[default]
    Evolution,
    /// Uniform samples (the baseline the search is compared with).
    Random,
}

/// Everything a search needs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The architecture family.
    pub space: Family,
    /// Labelled training data SPEC.
    pub data: String,
    /// Labelled data whose test split checks the result (default: `data`).
    pub eval_data: Option<String>,
    /// What the result must meet.
    pub limits: Limits,
    /// Candidates trained at the first rung.
    pub iterations: usize,
    /// Wall-clock safety stop: no new candidate is proposed once half of it has passed,
    /// and a later rung that starts after all of it trains only its best candidate. Short
    /// of that, how many candidates train at each rung depends on `iterations` alone.
    pub budget: Option<Duration>,
    /// ONNX Runtime threads of latency measurements.
    pub threads: usize,
    /// Seed of proposals, initial weights, data order and validation splits.
    pub seed: u64,
    /// Folder of the journals and candidate models.
    pub work_dir: PathBuf,
    /// Where the best model is written.
    pub output: PathBuf,
    /// Evolution or random search.
    pub strategy: Strategy,
    /// Warm start of evolution (random search ignores it): the first generation draws
    /// [`WARM_START`] times as many candidates and trains the feasible ones this zero-cost
    /// proxy ranks best.
    pub warm_start: Option<WarmStart>,
    /// The trained model to shrink (`--from`; `space` is then [`Family::Pruned`]).
    pub from: Option<PathBuf>,
}

/// The zero-cost proxy that ranks a warm start's first generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WarmStart {
    /// The parameter count, measured anyway (most first): its Spearman correlation with
    /// rung accuracy was 0.73-0.86 on Fashion-MNIST's cnn space.
    #[default]
    Params,
    /// NASWOT ([`crate::nas::proxy`]), a job of its own: 0.08-0.48 there.
    Naswot,
}

/// Candidates the first generation draws per one it trains, with `warm_start`.
pub const WARM_START: usize = 4;

/// Candidates each generation proposes: a quarter of the iterations, at least 4.
fn generation_size(iterations: usize) -> usize {
    iterations.div_ceil(4).max(4)
}

/// Candidates measured at most per candidate trained, before the search gives up looking
/// for feasible ones.
const TRIES_PER_ITERATION: usize = 8;

/// Whether a model was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A model meeting every limit was written.
    Ok,
    /// None met every limit; `nearest` says which came closest.
    Infeasible,
}

/// One candidate in the results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Candidate id.
    pub id: String,
    /// Its zoo spec.
    pub spec: String,
    /// Its measurements before training.
    #[serde(flatten)]
    pub measurement: Measurement,
    /// Whether it meets the measured limits.
    pub feasible: bool,
    /// Limits it exceeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<String>,
    /// Validation accuracy at each rung it reached.
    pub rung_accuracy: Vec<f64>,
    /// Whether it is on the Pareto front of first-rung accuracy and latency.
    pub pareto: bool,
    /// Its zero-cost proxy score, when it was scored (warm start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<f64>,
}

/// The result of a search (`whittle nas --json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NasResult {
    /// ok or infeasible.
    pub status: Status,
    /// The model written, when one met every limit.
    pub output: Option<String>,
    /// Why the status is infeasible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The best candidate (or, infeasible, the nearest).
    pub id: Option<String>,
    /// Its zoo spec.
    pub spec: Option<String>,
    /// Its median ONNX Runtime latency at batch 1, ms (measured again after training,
    /// taking turns with the reference; of the nearest candidate, its first measurement).
    pub latency_ms: Option<f64>,
    /// The 90th percentile of the same runs (what `--max-latency-ms` is checked against
    /// at the end).
    pub latency_p90_ms: Option<f64>,
    /// Its FP32 size, MB.
    pub size_mb: Option<f64>,
    /// Its size with INT8 weights, MB.
    pub int8_size_mb: Option<f64>,
    /// Its MACs per sample.
    pub macs: Option<u64>,
    /// Its parameters.
    pub parameters: Option<u64>,
    /// Its top-1 accuracy on the test split of the evaluation data.
    pub accuracy: Option<f64>,
    /// The nearest candidate, when infeasible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nearest: Option<Trial>,
    /// Candidates measured.
    pub candidates: usize,
    /// Candidates trained (at any rung).
    pub trained: usize,
    /// Candidates that did not meet the measured limits (never trained).
    pub infeasible: usize,
    /// The search space.
    pub space: Family,
    /// The data's sample shape `[C, H, W]`.
    pub input: [usize; 3],
    /// The data's classes.
    pub classes: usize,
    /// The seed.
    pub seed: u64,
    /// Seconds the search took (this run; a resumed run counts from its restart).
    pub seconds: f64,
    /// The `--from` model, measured and tested the same way as the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceModel>,
    /// The model every re-measurement took turns with, as measured when the search
    /// started.
    pub reference: Reference,
    /// The re-measurements at the end, in order: the candidates that would train at the
    /// last rung, then the trained finalists until one passed.
    pub rechecks: Vec<Recheck>,
    /// Where `--budget` stopped the search, in order. Empty when it did not: then which
    /// candidates trained did not depend on the clock. Otherwise the result depends on the
    /// machine's speed and load.
    #[serde(default)]
    pub budget_stops: Vec<String>,
    /// Every candidate measured, in order.
    pub trials: Vec<Trial>,
}

/// The model a `--from` search shrank, as measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceModel {
    /// Its path.
    pub path: String,
    /// Its measurements.
    #[serde(flatten)]
    pub measurement: Measurement,
    /// Its top-1 accuracy on the test split of the evaluation data.
    pub accuracy: f64,
}

/// Runs the search of `settings`, running jobs through `runner`.
pub fn search(
    settings: &Settings,
    observer: &dyn Observer,
    runner: &dyn Runner,
) -> Result<NasResult> {
    let start = Instant::now();
    settings.limits.validate()?;
    if settings.iterations == 0 {
        return Err(NasError::Refused("--iterations must be at least 1".into()));
    }
    let data = whittle_data::load(&settings.data, Split::Train, None)
        .at(|| format!("loading --data {}", settings.data))?;
    let input: [usize; 3] = data.sample_dims().try_into().map_err(|_| {
        NasError::Refused(format!(
            "--data {}: samples of shape {:?}; architecture search needs images [C, H, W]",
            settings.data,
            data.sample_dims()
        ))
    })?;
    let rungs = halving::rungs(data.len());
    drop(data);
    let classes = data_classes(settings)?;
    let source = match (&settings.from, settings.space) {
        (Some(path), Family::Pruned) => Some(Source::load(path)?),
        (Some(_), family) => {
            return Err(NasError::Refused(format!(
                "--from MODEL searches the model's channel-pruning ratios; leave out --space                  {family}"
            )))
        }
        (None, _) => None,
    };
    let space = match &source {
        Some(source) => Space::pruned(source, input, classes, settings.seed),
        None => Space::new(settings.space, input, classes, settings.seed)?,
    };
    let mut trials = Trials::open(&settings.work_dir)?;
    let reference = match (&source, &settings.from) {
        (Some(source), Some(path)) => Reference::file(&source.model, path, settings.threads)?,
        _ => Reference::zoo(input, classes, settings.threads, &settings.work_dir)?,
    };
    let max_latency = settings.limits.max_latency_ms;
    let mut rechecks = Vec::new();
    let jobs = JobSettings {
        data: settings.data.clone(),
        threads: settings.threads,
        seed: settings.seed,
        from: settings.from.clone(),
    };
    let run = |trials: &mut Trials, batch: Vec<Job>| -> Result<()> {
        let todo: Vec<Job> = batch.into_iter().filter(|j| !done(trials, j)).collect();
        if todo.is_empty() {
            return Ok(());
        }
        for outcome in runner.run(&jobs, &todo)? {
            trials.record(outcome)?;
        }
        Ok(())
    };

    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let mut seen = HashSet::new();
    let mut order: Vec<Candidate> = Vec::new();
    let mut scored: Vec<Scored> = Vec::new();
    let mut budget_stops = Vec::new();
    let mut stop = |text: String| {
        observer.log(Level::Warn, text.clone());
        budget_stops.push(text);
    };
    let max_tries = settings.iterations * TRIES_PER_ITERATION;
    while scored.len() < settings.iterations && order.len() < max_tries {
        // The safety stop lets the first generation train, so that a model comes out.
        let spent = budget_spent(settings.budget, start, 0.5).filter(|_| !scored.is_empty());
        if let Some(spent) = spent {
            stop(format!(
                "{spent}: half of it passed, no candidate proposed after {} of {} trained at \
                 rung 0",
                scored.len(),
                settings.iterations
            ));
            break;
        }
        // Random search, the baseline, is never warm-started.
        let warm = (settings.warm_start)
            .filter(|_| order.is_empty() && settings.strategy == Strategy::Evolution);
        let trains = generation_size(settings.iterations);
        let draws = if warm.is_some() { WARM_START } else { 1 };
        let size = (trains * draws).min(max_tries - order.len());
        let mut generation = Vec::new();
        for _ in 0..size {
            let genome = match settings.strategy {
                Strategy::Evolution if scored.len() >= trains => {
                    evolution::propose(&space, &scored, &seen, &mut rng)
                }
                _ => evolution::fresh(&space, &seen, &mut rng),
            };
            let candidate = Candidate::new(&space, &genome);
            if seen.insert(candidate.id.clone()) {
                generation.push(candidate);
            }
        }
        if generation.is_empty() {
            break;
        }
        run(
            &mut trials,
            generation
                .iter()
                .map(|c| Job::new(c, Task::Measure, false))
                .collect(),
        )?;
        let mut feasible = Vec::new();
        for candidate in &generation {
            let m = measured(&trials, candidate)?;
            let violations = settings.limits.violations(&m.measurement);
            observer.log(
                Level::Info,
                format!(
                    "candidate {} {}: {:.3} ms, {:.3} MB, {} MACs{}",
                    candidate.short(),
                    candidate.spec,
                    m.measurement.latency_ms,
                    m.measurement.size_bytes as f64 / MB,
                    m.measurement.macs,
                    if violations.is_empty() {
                        String::new()
                    } else {
                        format!(" - infeasible: {}", violations.join(", "))
                    }
                ),
            );
            if violations.is_empty() {
                feasible.push(candidate.clone());
            }
        }
        if let Some(proxy) = warm {
            feasible = by_proxy(&mut trials, &run, feasible, trains, proxy)?;
        }
        let mut to_train = feasible;
        to_train.truncate(settings.iterations - scored.len());
        run(
            &mut trials,
            to_train
                .iter()
                .map(|c| Job::new(c, Task::Train(rungs[0]), false))
                .collect(),
        )?;
        for candidate in to_train {
            let accuracy = trained(&trials, &candidate.id, &rungs[0])?;
            let latency_ms = measured(&trials, &candidate)?.measurement.latency_ms;
            scored.push(Scored {
                candidate,
                accuracy,
                latency_ms,
            });
        }
        order.extend(generation);
    }

    // Successive halving over the first rung's results.
    let mut ranked = first_rung(&scored);
    for (i, rung) in rungs.iter().enumerate().skip(1) {
        let mut keep = halving::survivors(ranked.len(), i - 1, rungs.len());
        if let Some(spent) = budget_spent(settings.budget, start, 1.0).filter(|_| keep > 1) {
            stop(format!(
                "{spent}: spent before rung {i}, where 1 of {keep} candidates trains"
            ));
            keep = 1;
        }
        let last = i + 1 == rungs.len();
        let ids = match max_latency.filter(|_| last) {
            // Before the longest training: the best whose latency still meets the limit.
            Some(_) => {
                let pool = halving::best(&ranked, ranked.len()).into_iter().chain(
                    halving::best(&first_rung(&scored), scored.len())
                        .into_iter()
                        .filter(|id| !ranked.iter().any(|(r, _)| r == id)),
                );
                let check = |id: &str| {
                    let path = model_path(&settings.work_dir, id);
                    let threads = settings.threads;
                    Ok((
                        recheck(id, Stage::Finalist, &path, &reference, threads, max_latency)?,
                        (),
                    ))
                };
                let passing = first_passing(pool, keep, check, observer, &mut rechecks)?;
                passing.into_iter().map(|(id, ())| id).collect()
            }
            None => halving::best(&ranked, keep),
        };
        let batch = ids
            .iter()
            .map(|id| Job::new(find(&order, id), Task::Train(*rung), last))
            .collect();
        run(&mut trials, batch)?;
        ranked = ids
            .iter()
            .map(|id| Ok((id.clone(), trained(&trials, id, rung)?)))
            .collect::<Result<_>>()?;
    }
    let last = rungs[rungs.len() - 1];
    let finalists = halving::best(&ranked, ranked.len());
    let rows = rows(settings, &trials, &order, &scored, &rungs);
    let mut result = NasResult {
        status: Status::Infeasible,
        output: None,
        reason: None,
        id: None,
        spec: None,
        latency_ms: None,
        latency_p90_ms: None,
        size_mb: None,
        int8_size_mb: None,
        macs: None,
        parameters: None,
        accuracy: None,
        nearest: None,
        candidates: order.len(),
        trained: scored.len(),
        infeasible: rows.iter().filter(|r| !r.feasible).count(),
        space: settings.space,
        input,
        classes: space.classes,
        seed: settings.seed,
        seconds: 0.0,
        trials: rows,
        source: None,
        reference: reference.clone(),
        rechecks: Vec::new(),
        budget_stops,
    };
    let ctx = Ctx::new(observer);
    let eval = settings.eval_data.as_deref().unwrap_or(&settings.data);
    let role = if settings.eval_data.is_some() {
        "--eval-data"
    } else {
        "--data"
    };
    let test_accuracy = |model: &Model| -> Result<f64> {
        Ok(TestSet::load(eval, role, model, None)?.accuracy(&ctx, model)?)
    };
    if let (Some(source), Some(path)) = (&source, &settings.from) {
        result.source = Some(SourceModel {
            path: path.display().to_string(),
            measurement: measure(&source.model, path, settings.threads)?,
            accuracy: test_accuracy(&source.model)?,
        });
    }
    // The best finalist whose trained model still meets the limits.
    let check = |id: &str| {
        let path = model_path(&settings.work_dir, &trained_key(id, last.index));
        let model = Model::load(&path).at(|| format!("reading {}", path.display()))?;
        let mut m = measure(&model, &path, settings.threads)?;
        let mut check = recheck(
            id,
            Stage::Result,
            &path,
            &reference,
            settings.threads,
            max_latency,
        )?;
        (m.latency_ms, m.latency_p90_ms, m.runs) =
            (check.latency_ms, check.latency_p90_ms, check.runs);
        check.passed &= settings.limits.violations(&m).is_empty();
        Ok((check, (m, model)))
    };
    let chosen = first_passing(finalists, 1, check, observer, &mut rechecks)?.pop();
    result.rechecks = rechecks;
    match chosen {
        Some((id, (m, model))) => {
            let accuracy = test_accuracy(&model)?;
            let candidate = find(&order, &id);
            result.id = Some(id.clone());
            result.spec = Some(candidate.spec.clone());
            result.set_measurement(&m);
            result.accuracy = Some(accuracy);
            match settings.limits.min_accuracy.filter(|&min| accuracy < min) {
                Some(min) => {
                    result.reason = Some(format!(
                        "the best model's test accuracy {accuracy:.4} is below --min-accuracy {min}"
                    ));
                    result.nearest = result.trials.iter().find(|t| t.id == id).cloned();
                }
                None => {
                    model
                        .save(&settings.output, &Default::default())
                        .at(|| format!("writing {}", settings.output.display()))?;
                    result.status = Status::Ok;
                    result.output = Some(settings.output.display().to_string());
                }
            }
        }
        None => {
            let nearest = result.trials.iter().min_by(|a, b| {
                let d = |t: &Trial| settings.limits.distance(&t.measurement);
                d(a).total_cmp(&d(b)).then_with(|| a.id.cmp(&b.id))
            });
            result.reason = Some(match nearest {
                Some(n) if !n.feasible => format!(
                    "no candidate meets the limits; the nearest exceeds {}",
                    n.violations.join(", ")
                ),
                _ => no_finalist(&result.rechecks, max_latency),
            });
            if let Some(n) = nearest.cloned() {
                result.id = Some(n.id.clone());
                result.spec = Some(n.spec.clone());
                result.set_measurement(&n.measurement);
                result.nearest = Some(n);
            }
        }
    }
    result.seconds = start.elapsed().as_secs_f64();
    Ok(result)
}

impl NasResult {
    fn set_measurement(&mut self, m: &Measurement) {
        self.latency_ms = Some(m.latency_ms);
        self.latency_p90_ms = Some(m.latency_p90_ms);
        self.size_mb = Some(m.size_bytes as f64 / MB);
        self.int8_size_mb = Some(m.int8_size_bytes as f64 / MB);
        self.macs = Some(m.macs);
        self.parameters = Some(m.parameters);
    }
}

/// The `--budget` safety stop: once `share` of it has passed since `start`, what to say
/// (`--budget 1800 s (1802 s elapsed)`); `None` before, or without a budget.
fn budget_spent(budget: Option<Duration>, start: Instant, share: f64) -> Option<String> {
    let (budget, elapsed) = (budget?.as_secs_f64(), start.elapsed().as_secs_f64());
    (elapsed >= share * budget).then(|| format!("--budget {budget:.0} s ({elapsed:.0} s elapsed)"))
}

/// Every first-rung result as (id, accuracy).
fn first_rung(scored: &[Scored]) -> Vec<(String, f64)> {
    scored
        .iter()
        .map(|s| (s.candidate.id.clone(), s.accuracy))
        .collect()
}

/// Why no model was returned when every candidate met the limits at first.
fn no_finalist(rechecks: &[Recheck], max_latency: Option<f64>) -> String {
    let lowest = (rechecks.iter())
        .filter(|c| !c.passed)
        .map(|c| c.latency_p90_ms - c.load_tail_ms)
        .min_by(f64::total_cmp);
    match (lowest, max_latency) {
        (Some(p90), Some(limit)) => format!(
            "no candidate's 90th-percentile latency (less the load's tail) stayed within \
             --max-latency-ms {limit} when measured again (the lowest: {p90:.3} ms)"
        ),
        _ => "no candidate met the limits once trained and measured again".into(),
    }
}

/// Classes of the training data (the zoo models' logits).
fn data_classes(settings: &Settings) -> Result<usize> {
    let data = whittle_data::load(&settings.data, Split::Train, Some(1))
        .at(|| format!("loading --data {}", settings.data))?;
    Ok(data.num_classes)
}

/// The `keep` candidates of `feasible` with the best `proxy` scores (most parameters, or
/// the highest NASWOT score with a singular one last; ties by id), after scoring those the
/// journals lack through `run`.
fn by_proxy(
    trials: &mut Trials,
    run: &dyn Fn(&mut Trials, Vec<Job>) -> Result<()>,
    feasible: Vec<Candidate>,
    keep: usize,
    proxy: WarmStart,
) -> Result<Vec<Candidate>> {
    if proxy == WarmStart::Naswot {
        run(
            trials,
            feasible
                .iter()
                .map(|c| Job::new(c, Task::Proxy, false))
                .collect(),
        )?;
    }
    let mut scored = feasible
        .into_iter()
        .map(|c| {
            let score = match proxy {
                WarmStart::Params => measured(trials, &c)?.measurement.parameters as f64,
                WarmStart::Naswot => trials
                    .proxied
                    .find(&proxy_key(&c.id))
                    .ok_or_else(|| missing(&c.id, "proxy"))?
                    .score
                    .unwrap_or(f64::NEG_INFINITY),
            };
            Ok((c, score))
        })
        .collect::<Result<Vec<_>>>()?;
    scored.sort_by(|(a, x), (b, y)| y.total_cmp(x).then_with(|| a.id.cmp(&b.id)));
    Ok(scored.into_iter().take(keep).map(|(c, _)| c).collect())
}

/// Whether the journals hold `job`'s result.
fn done(trials: &Trials, job: &Job) -> bool {
    match job.task {
        Task::Measure => trials.measured.find(&job.candidate.id).is_some(),
        Task::Proxy => trials.proxied.find(&proxy_key(&job.candidate.id)).is_some(),
        Task::Train(rung) => trials
            .trained
            .find(&trained_key(&job.candidate.id, rung.index))
            .is_some(),
    }
}

fn measured<'t>(trials: &'t Trials, candidate: &Candidate) -> Result<&'t Measured> {
    trials
        .measured
        .find(&candidate.id)
        .ok_or_else(|| missing(&candidate.id, "measurement"))
}

fn trained(trials: &Trials, id: &str, rung: &Rung) -> Result<f64> {
    trials
        .trained
        .find(&trained_key(id, rung.index))
        .map(|t| t.accuracy)
        .ok_or_else(|| missing(id, &format!("rung {} training", rung.index)))
}

fn missing(id: &str, what: &str) -> NasError {
    NasError::Refused(format!(
        "candidate {id}: the job ran but left no {what} result"
    ))
}

fn find<'c>(order: &'c [Candidate], id: &str) -> &'c Candidate {
    order
        .iter()
        .find(|c| c.id == id)
        .expect("every ranked id was proposed")
}

/// One row per candidate measured, in order.
fn rows(
    settings: &Settings,
    trials: &Trials,
    order: &[Candidate],
    scored: &[Scored],
    rungs: &[Rung],
) -> Vec<Trial> {
    let front: HashSet<&str> = evolution::front(scored)
        .into_iter()
        .map(|i| scored[i].candidate.id.as_str())
        .collect();
    order
        .iter()
        .filter_map(|c| {
            let m = trials.measured.find(&c.id)?;
            let violations = settings.limits.violations(&m.measurement);
            Some(Trial {
                id: c.id.clone(),
                spec: c.spec.clone(),
                measurement: m.measurement.clone(),
                feasible: violations.is_empty(),
                violations,
                rung_accuracy: rungs
                    .iter()
                    .map_while(|r| trials.trained.find(&trained_key(&c.id, r.index)))
                    .map(|t| t.accuracy)
                    .collect(),
                pareto: front.contains(c.id.as_str()),
                proxy: trials.proxied.find(&proxy_key(&c.id)).and_then(|p| p.score),
            })
        })
        .collect()
}

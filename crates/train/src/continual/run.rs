//! The task loop: for each task, steps of new samples (joined by replayed ones for ER and
//! DER++) through the graph-level backward and the optimizer, the buffer filled from the
//! stream, then the accuracy on every task's test set as one row of the R matrix.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use whittle_data::scenario::{Scenario, ScenarioKind};
use whittle_data::Dataset;
use whittle_exec::{Executor, Value};
use whittle_ir::Model;

use super::augment::Augment;
use super::buffer::ReplayBuffer;
use super::eval::{evaluate, TaskAccuracies};
use super::ewc::Ewc;
use super::metrics;
use super::ncm::ncm_after_task;
use super::objective::{batch_mask, loss, task_mask, Term};
use super::{ContinualConfig, Strategy, TaskHook, TaskStart};
use crate::bail;
use crate::error::Result;
use crate::optim::Optimizer;
use crate::params::{select_trainable, NamePattern};
use crate::progress::TrainEvent;
use crate::schedule::LrSchedule;
use crate::step::{Backward, PassOptions};
use crate::trainer::EpochReport;

/// Steps between two progress events.
const PROGRESS_EVERY: usize = 20;

/// Largest shift of a replayed image by `--replay-augment`, in pixels.
const AUGMENT_SHIFT: usize = 2;

/// Mixed into the seed of the augmentation's choices (apart from the buffer's).
const AUGMENT_STREAM: u64 = 0xA6_6E17;

/// The result of one continual-learning run (one seed).
#[derive(Clone, Debug)]
pub struct ContinualRun {
    /// The strategy that ran.
    pub strategy: Strategy,
    /// The scenario it ran in.
    pub kind: ScenarioKind,
    /// `R[i][j]`: accuracy on task `j` after training task `i` (task-IL masked in a
    /// task-IL scenario); joint training has one row.
    pub r_matrix: Vec<Vec<f64>>,
    /// The same models scored task-IL (class-IL scenarios only).
    pub task_il_matrix: Option<Vec<Vec<f64>>>,
    /// Accuracy per task of the untrained model, as `r_matrix` scores it.
    pub initial: Vec<f64>,
    /// Accuracy per task of the untrained model, task-IL.
    pub initial_task_il: Vec<f64>,
    /// The final model (as the last [`TaskHook::end_task`] returned it).
    pub model: Model,
    /// The replay buffer at the end (ER, DER++).
    pub buffer: Option<ReplayBuffer>,
    /// Trained values per task.
    pub trainable_per_task: Vec<usize>,
    /// Optimizer steps of the run.
    pub steps: u64,
    /// Wall time of the run, evaluation included.
    pub seconds: f64,
}

/// The figures of a run (fractions 0..1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RunMetrics {
    /// Mean final accuracy over all tasks.
    pub average_accuracy: f64,
    /// Forgetting (Chaudhry et al.).
    pub forgetting: f64,
    /// Backward transfer.
    pub bwt: f64,
    /// Mean final task-IL accuracy (class-IL and task-IL scenarios).
    pub task_il_accuracy: Option<f64>,
    /// Forward transfer, task-IL scored where the scenario has tasks of their own classes
    /// (None for joint training).
    pub fwt: Option<f64>,
}

impl ContinualRun {
    /// The run's metrics.
    pub fn metrics(&self) -> RunMetrics {
        let r = &self.r_matrix;
        // Task-IL scores: the extra matrix of a class-IL run, else the R matrix itself.
        let (til, til_initial) = match &self.task_il_matrix {
            Some(m) => (m, &self.initial_task_il),
            None => (r, &self.initial),
        };
        RunMetrics {
            average_accuracy: metrics::average_accuracy(r),
            forgetting: metrics::forgetting(r),
            bwt: metrics::bwt(r),
            task_il_accuracy: (self.kind != ScenarioKind::DomainIl)
                .then(|| metrics::average_accuracy(til)),
            fwt: (r.len() > 1).then(|| metrics::fwt(til, til_initial)),
        }
    }
}

/// Trains `model` on the tasks of `scenario` in order with `config`'s strategy, `hook`
/// changing the model around each task, and scores every task after each.
pub fn run(
    model: &Model,
    scenario: &Scenario,
    config: &ContinualConfig,
    hook: &mut dyn TaskHook,
) -> Result<ContinualRun> {
    config.validate()?;
    let Some(last) = scenario.tasks.len().checked_sub(1) else {
        bail!("the scenario has no tasks");
    };
    let start = Instant::now();
    let task_il = scenario.kind == ScenarioKind::TaskIl;
    let owners = scenario.task_of_class();
    let initial = evaluate(&Executor::new(model)?, scenario)?;
    let sample_dims = scenario.tasks[0].train.sample_dims().to_vec();
    let row_len = sample_dims.iter().product();
    let range = config.strategy.replays().then(|| value_range(scenario));
    let mut buffer = range.map(|range| {
        ReplayBuffer::new(
            config.buffer,
            config.buffer_policy,
            row_len,
            range,
            config.seed,
        )
    });
    let mut augment = match range {
        Some((background, _)) if config.replay_augment => Some(Augment::new(
            &sample_dims,
            AUGMENT_SHIFT,
            background,
            config.seed ^ AUGMENT_STREAM,
        )?),
        _ => None,
    };
    let mut ewc = (config.strategy == Strategy::Ewc).then(|| Ewc::new(config.ewc_lambda));
    let joint;
    let phases: Vec<&Dataset> = if config.strategy == Strategy::Joint {
        joint = scenario.joint_train(last)?;
        vec![&joint]
    } else {
        scenario.tasks.iter().map(|t| &t.train).collect()
    };
    let mut model = model.clone();
    let mut rows: Vec<TaskAccuracies> = Vec::new();
    let mut trainable_per_task = Vec::new();
    let mut steps = 0;
    // With `ncm`, the last task's model with its nearest-class-mean head (the model a
    // task ends with trains on; this one is scored and returned).
    let mut scored_model = None;
    for (t, data) in phases.iter().enumerate() {
        let before = model.clone();
        let start = TaskStart {
            task: t,
            tasks: phases.len(),
            train: data,
            buffer: buffer.as_ref(),
            num_classes: scenario.num_classes,
        };
        let (task_model, freeze) = hook.begin_task(&start, model)?;
        let patterns = freeze
            .iter()
            .map(|p| NamePattern::new(p))
            .collect::<Result<Vec<_>>>()?;
        let mut exec = Executor::new(&task_model)?;
        exec.set_trainable(&select_trainable(&task_model, &patterns)?)?;
        trainable_per_task.push(exec.params().values().map(|v| v.elem_count()).sum());
        let teacher = match config.strategy {
            Strategy::Lwf if t > 0 => Some(Executor::new(&before)?),
            _ => None,
        };
        let old_classes: Vec<u32> = (0..owners.len())
            .filter(|&c| owners[c].is_some_and(|o| o < t))
            .map(|c| c as u32)
            .collect();
        let mut task = TaskRun {
            exec: &mut exec,
            config,
            phase: t,
            phases: phases.len(),
            sample_dims: &sample_dims,
            classes: owners.len(),
            mask_owners: task_il.then_some(owners.as_slice()),
            buffer: buffer.as_mut(),
            augment: augment.as_mut(),
            teacher: teacher.as_ref(),
            old_classes: Tensor::new(old_classes.as_slice(), &Device::Cpu)?,
            ewc: ewc.as_ref(),
            hook: &mut *hook,
            steps: 0,
        };
        let started = Instant::now();
        let loss = task.train(data)?;
        let images_per_sec =
            (data.len() * config.epochs_per_task) as f64 / started.elapsed().as_secs_f64();
        steps += task.steps;
        model = hook.end_task(t, exec.export(&task_model)?)?;
        if config.ncm.is_on() {
            let head = ncm_after_task(
                &model,
                buffer.as_ref(),
                data,
                scenario.num_classes,
                config.ncm,
            )?;
            scored_model = Some(head);
        }
        let mut scored = Executor::new(scored_model.as_ref().unwrap_or(&model))?;
        let row = evaluate(&scored, scenario)?;
        let seen = if config.strategy == Strategy::Joint {
            last
        } else {
            t
        };
        let row_of = |r: &TaskAccuracies| {
            if task_il {
                r.masked.clone()
            } else {
                r.plain.clone()
            }
        };
        let mean_seen = row_of(&row)[..=seen].iter().sum::<f64>() / (seen + 1) as f64;
        config.progress.send(TrainEvent::EpochEnded {
            report: EpochReport {
                epoch: (t + 1) * config.epochs_per_task,
                loss,
                accuracy: None,
                val_loss: None,
                val_accuracy: Some(mean_seen),
                lr: config.lr,
                images_per_sec,
            },
            epochs: phases.len() * config.epochs_per_task,
        });
        rows.push(row);
        if let Some(ewc) = ewc.as_mut() {
            if scored_model.is_some() {
                scored = Executor::new(&model)?;
            }
            scored.set_trainable(&select_trainable(&model, &[])?)?;
            let masks = task_il.then_some(owners.as_slice());
            ewc.consolidate(&scored, data, config.fisher_samples, masks)?;
        }
    }
    let plain = |r: &TaskAccuracies| r.plain.clone();
    let masked = |r: &TaskAccuracies| r.masked.clone();
    let (r_matrix, task_il_matrix, initial_row) = match scenario.kind {
        ScenarioKind::TaskIl => (
            rows.iter().map(masked).collect(),
            None,
            initial.masked.clone(),
        ),
        ScenarioKind::ClassIl => (
            rows.iter().map(plain).collect(),
            Some(rows.iter().map(masked).collect()),
            initial.plain.clone(),
        ),
        ScenarioKind::DomainIl => (
            rows.iter().map(plain).collect(),
            None,
            initial.plain.clone(),
        ),
    };
    Ok(ContinualRun {
        strategy: config.strategy,
        kind: scenario.kind,
        r_matrix,
        task_il_matrix,
        initial: initial_row,
        initial_task_il: initial.masked,
        model: scored_model.unwrap_or(model),
        buffer,
        trainable_per_task,
        steps,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The lowest and highest input value of every task's training data (the buffer's code
/// range).
fn value_range(scenario: &Scenario) -> (f32, f32) {
    let mut range = (f32::INFINITY, f32::NEG_INFINITY);
    for task in &scenario.tasks {
        for chunk in task
            .train
            .images
            .bytes()
            .unwrap_or_default()
            .chunks_exact(4)
        {
            let v = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            range = (range.0.min(v), range.1.max(v));
        }
    }
    range
}

/// The training of one task (or of the joint data).
struct TaskRun<'a> {
    exec: &'a mut Executor,
    config: &'a ContinualConfig,
    phase: usize,
    phases: usize,
    sample_dims: &'a [usize],
    /// Classes of the label space.
    classes: usize,
    /// Task owners of each class, when scores are task-IL masked.
    mask_owners: Option<&'a [Option<usize>]>,
    buffer: Option<&'a mut ReplayBuffer>,
    augment: Option<&'a mut Augment>,
    teacher: Option<&'a Executor>,
    old_classes: Tensor,
    ewc: Option<&'a Ewc>,
    hook: &'a mut dyn TaskHook,
    steps: u64,
}

impl TaskRun<'_> {
    /// Trains on one task's data; returns the mean loss of its last epoch.
    fn train(&mut self, data: &Dataset) -> Result<f64> {
        let c = self.config;
        let pixels = data.images.to_vec::<f32>()?;
        let row_len: usize = self.sample_dims.iter().product();
        let input = self
            .exec
            .inputs()
            .first()
            .map(|i| i.name.clone())
            .unwrap_or_default();
        let output = self
            .exec
            .output_names()
            .first()
            .cloned()
            .unwrap_or_default();
        let backward = Backward::default();
        let mut optimizer = Optimizer::new(c.optimizer.clone())?;
        let batches = data.len().div_ceil(c.batch_size);
        let schedule = LrSchedule::new(c.lr, batches * c.epochs_per_task, c.schedule.clone())?;
        let mut task_steps = 0;
        let mut last_loss = f64::NAN;
        for epoch in 0..c.epochs_per_task {
            let mut rng = ChaCha8Rng::seed_from_u64(whittle_ir::seed::derive(
                c.seed,
                (self.phase * c.epochs_per_task + epoch) as u64 + 1,
            ));
            let mut order: Vec<usize> = (0..data.len()).collect();
            order.shuffle(&mut rng);
            c.progress.send(TrainEvent::EpochStarted {
                epoch: self.phase * c.epochs_per_task + epoch + 1,
                epochs: self.phases * c.epochs_per_task,
                batches,
            });
            let mut loss_sum = 0.0;
            for (i, chunk) in order.chunks(c.batch_size).enumerate() {
                let mut values = Vec::with_capacity((chunk.len() + 2 * c.replay_batch) * row_len);
                let mut labels = Vec::with_capacity(chunk.len() + 2 * c.replay_batch);
                for &r in chunk {
                    values.extend_from_slice(&pixels[r * row_len..(r + 1) * row_len]);
                    labels.push(data.labels[r]);
                }
                let fresh = chunk.len();
                let mut terms = self.replay_terms(fresh, &mut values, &mut labels)?;
                if let Some(augment) = self.augment.as_deref_mut() {
                    augment.apply(&mut values[fresh * row_len..]);
                }
                let mut dims = vec![labels.len()];
                dims.extend_from_slice(self.sample_dims);
                let x = Value::f32(Tensor::from_slice(&values, dims, &Device::Cpu)?)?;
                let feed = HashMap::from([(input.clone(), x)]);
                if let Some(teacher) = self.teacher.filter(|_| self.old_classes.elem_count() > 0) {
                    let old = teacher.run(feed.clone())?;
                    let Some(scores) = old.get(&output) else {
                        bail!("the previous model did not produce its output '{output}'");
                    };
                    terms.push(Term::Distill {
                        rows: 0..fresh,
                        classes: self.old_classes.clone(),
                        target: scores.tensor().detach().to_dtype(candle_core::DType::F32)?,
                        weight: c.lwf_alpha,
                        temperature: c.temperature,
                    });
                }
                let mask = self
                    .mask_owners
                    .map(|o| task_mask(&labels, o))
                    .transpose()?;
                let mut objective = loss(output.clone(), terms, mask);
                let mut stats = HashMap::new();
                let pass = backward.pass(
                    self.exec,
                    feed,
                    &labels,
                    &mut objective,
                    PassOptions {
                        seed: c.seed ^ self.steps.wrapping_mul(0xD1B5_4A32_D192_ED03),
                        segments: None,
                        running_stats: Some(&mut stats),
                    },
                )?;
                if !pass.loss.is_finite() {
                    bail!(
                        "continual training diverged in task {}, step {}: the loss is {}; lower --lr (now {:e})",
                        self.phase + 1,
                        i + 1,
                        pass.loss,
                        c.lr
                    );
                }
                for (name, v) in stats {
                    self.exec.set_initializer(&name, v)?;
                }
                let mut grads = pass.grads;
                if let Some(ewc) = self.ewc {
                    ewc.add_gradient(self.exec.params(), &mut grads)?;
                }
                optimizer.step(self.exec.params(), &grads, schedule.lr(task_steps))?;
                task_steps += 1;
                self.steps += 1;
                self.hook.after_step(self.exec)?;
                if let Some(buffer) = self.buffer.as_deref_mut() {
                    let scores = match c.strategy {
                        Strategy::Derpp => match pass.outputs.get(&output) {
                            Some(s) => s.to_f32_vec()?,
                            None => bail!("the model did not produce its output '{output}'"),
                        },
                        _ => Vec::new(),
                    };
                    let classes = scores.len() / labels.len().max(1);
                    for k in 0..fresh {
                        let logits = (classes > 0).then(|| &scores[k * classes..(k + 1) * classes]);
                        buffer.add(&values[k * row_len..(k + 1) * row_len], labels[k], logits);
                    }
                }
                loss_sum += pass.loss;
                if (i + 1) % PROGRESS_EVERY == 0 || i + 1 == batches {
                    c.progress.send(TrainEvent::Batch {
                        done: i + 1,
                        loss: loss_sum / (i + 1) as f64,
                    });
                }
            }
            last_loss = loss_sum / batches.max(1) as f64;
        }
        Ok(last_loss)
    }

    /// Appends the replayed samples of this step to `values` and `labels` (after the
    /// `fresh` new ones) and returns the loss terms over all rows.
    fn replay_terms(
        &mut self,
        fresh: usize,
        values: &mut Vec<f32>,
        labels: &mut Vec<i64>,
    ) -> Result<Vec<Term>> {
        let c = self.config;
        let ace = c.ace && c.strategy.replays();
        let new_only = vec![Term::CrossEntropy {
            rows: 0..fresh,
            weight: 1.0,
            mask: ace
                .then(|| batch_mask(&labels[..fresh], self.classes))
                .transpose()?,
        }];
        let Some(buffer) = self.buffer.as_deref_mut().filter(|b| !b.is_empty()) else {
            return Ok(new_only);
        };
        match c.strategy {
            Strategy::Er => {
                buffer.draw_into(c.replay_batch, values, labels);
                // Plain ER: one cross-entropy over new and replayed rows together.
                let (mut terms, first) = if ace {
                    (new_only, fresh)
                } else {
                    (Vec::new(), 0)
                };
                terms.push(Term::CrossEntropy {
                    rows: first..labels.len(),
                    weight: 1.0,
                    mask: None,
                });
                Ok(terms)
            }
            Strategy::Derpp => {
                let first = buffer.draw_into(c.replay_batch, values, labels);
                let classes = buffer.logits(first[0]).len();
                let mut stored = Vec::with_capacity(first.len() * classes);
                for &s in &first {
                    stored.extend_from_slice(buffer.logits(s));
                }
                let target = Tensor::from_vec(stored, (first.len(), classes), &Device::Cpu)?;
                let split = labels.len();
                buffer.draw_into(c.replay_batch, values, labels);
                let mut terms = new_only;
                terms.push(Term::Logits {
                    rows: fresh..split,
                    target,
                    weight: c.alpha,
                });
                terms.push(Term::CrossEntropy {
                    rows: split..labels.len(),
                    weight: c.beta,
                    mask: None,
                });
                Ok(terms)
            }
            _ => Ok(new_only),
        }
    }
}

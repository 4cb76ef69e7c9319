//! Continual-learning scenarios: a dataset cut into a sequence of tasks. Split scenarios
//! give task `t` the classes `k t .. k t + k - 1` (`k` classes per task, in a chosen task
//! order); permuted scenarios give every task all classes with its own fixed permutation of
//! the input pixels (task 0 keeps the original pixels).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use whittle_ir::TensorData;

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// How tasks relate to the model's outputs (van de Ven's three scenarios).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScenarioKind {
    /// One head over all classes seen so far, no task identity at test time.
    ClassIl,
    /// The same model, but each sample is scored only among its own task's classes.
    TaskIl,
    /// The same classes in every task, each task with its own input distribution.
    DomainIl,
}

impl ScenarioKind {
    /// The scenario's name as the CLI spells it (`class-il`, `task-il`, `domain-il`).
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::ClassIl => "class-il",
            ScenarioKind::TaskIl => "task-il",
            ScenarioKind::DomainIl => "domain-il",
        }
    }
}

impl std::str::FromStr for ScenarioKind {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        [
            ScenarioKind::ClassIl,
            ScenarioKind::TaskIl,
            ScenarioKind::DomainIl,
        ]
        .into_iter()
        .find(|k| k.name() == s)
        .ok_or_else(|| {
            DataError::Invalid(format!(
                "unknown scenario '{s}': use class-il, task-il or domain-il"
            ))
        })
    }
}

/// One task: its training and test samples and the classes it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// Training samples of the task.
    pub train: Dataset,
    /// Test samples of the task.
    pub test: Dataset,
    /// The classes of the task, ascending (all classes in a permuted scenario).
    pub classes: Vec<i64>,
}

/// A sequence of tasks over one label space of `num_classes` classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// How the tasks share the model's outputs.
    pub kind: ScenarioKind,
    /// The tasks in training order.
    pub tasks: Vec<Task>,
    /// Classes of the whole label space (the model's outputs).
    pub num_classes: usize,
}

impl Scenario {
    /// Splits `train` and `test` by class: `classes_per_task` classes per task, `tasks`
    /// tasks (default: as many as the classes fill, which `classes_per_task` must then
    /// divide), trained in `order` (a permutation of `0..tasks`; default ascending).
    /// `kind` is class-IL or task-IL.
    pub fn split(
        kind: ScenarioKind,
        train: &Dataset,
        test: &Dataset,
        classes_per_task: usize,
        tasks: Option<usize>,
        order: Option<&[usize]>,
    ) -> Result<Scenario> {
        let classes = train.num_classes;
        if kind == ScenarioKind::DomainIl {
            return invalid(
                "a domain-il scenario permutes pixels: use --permutations K, not a class split"
                    .into(),
            );
        }
        if test.num_classes != classes {
            return invalid(format!(
                "the training data has {classes} classes and the test data {}",
                test.num_classes
            ));
        }
        if classes_per_task == 0 {
            return invalid("--classes-per-task must be at least 1".into());
        }
        let count = match tasks {
            Some(0) => return invalid("--tasks must be at least 1".into()),
            Some(t) if t * classes_per_task > classes => {
                return invalid(format!(
                    "--tasks {t} x --classes-per-task {classes_per_task} needs {} classes, the data has {classes}",
                    t * classes_per_task
                ))
            }
            Some(t) => t,
            None if !classes.is_multiple_of(classes_per_task) => {
                return invalid(format!(
                    "--classes-per-task {classes_per_task} does not divide the {classes} classes of the data (or give --tasks)"
                ))
            }
            None => classes / classes_per_task,
        };
        let order = task_order(order, count)?;
        let tasks = order
            .iter()
            .map(|&t| {
                let wanted: Vec<i64> = (t * classes_per_task..(t + 1) * classes_per_task)
                    .map(|c| c as i64)
                    .collect();
                Ok(Task {
                    train: of_classes(train, &wanted, "training")?,
                    test: of_classes(test, &wanted, "test")?,
                    classes: wanted,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Scenario {
            kind,
            tasks,
            num_classes: classes,
        })
    }

    /// `permutations` domain-incremental tasks over all classes: task 0 keeps the
    /// original pixels, each later task applies its own random pixel permutation (from
    /// `seed`) to every sample of `train` and `test`.
    pub fn permuted(
        train: &Dataset,
        test: &Dataset,
        permutations: usize,
        seed: u64,
    ) -> Result<Scenario> {
        if permutations == 0 {
            return invalid("--permutations must be at least 1".into());
        }
        if train.sample_dims() != test.sample_dims() {
            return invalid(format!(
                "training samples are {:?} and test samples {:?}",
                train.sample_dims(),
                test.sample_dims()
            ));
        }
        let pixels: usize = train.sample_dims().iter().product();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let classes: Vec<i64> = (0..train.num_classes as i64).collect();
        let tasks = (0..permutations)
            .map(|t| {
                let mut perm: Vec<usize> = (0..pixels).collect();
                if t > 0 {
                    perm.shuffle(&mut rng);
                }
                Ok(Task {
                    train: permute_pixels(train, &perm)?,
                    test: permute_pixels(test, &perm)?,
                    classes: classes.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Scenario {
            kind: ScenarioKind::DomainIl,
            tasks,
            num_classes: train.num_classes,
        })
    }

    /// For each class, the first task holding it (`None` for classes no task holds).
    pub fn task_of_class(&self) -> Vec<Option<usize>> {
        let mut owner = vec![None; self.num_classes];
        for (t, task) in self.tasks.iter().enumerate() {
            for &c in &task.classes {
                if let Some(slot) = owner.get_mut(c as usize).filter(|s| s.is_none()) {
                    *slot = Some(t);
                }
            }
        }
        owner
    }

    /// The training samples of tasks `0..=last` as one dataset (joint training).
    pub fn joint_train(&self, last: usize) -> Result<Dataset> {
        let parts: Vec<&Dataset> = self.tasks[..=last].iter().map(|t| &t.train).collect();
        concat(&parts)
    }
}

fn invalid<T>(reason: String) -> Result<T> {
    Err(DataError::Invalid(reason))
}

/// `order` checked to be a permutation of `0..count`, or `0..count` itself.
fn task_order(order: Option<&[usize]>, count: usize) -> Result<Vec<usize>> {
    let Some(order) = order else {
        return Ok((0..count).collect());
    };
    let mut sorted = order.to_vec();
    sorted.sort_unstable();
    if sorted != (0..count).collect::<Vec<_>>() {
        return invalid(format!(
            "--task-order {order:?} is not an ordering of the {count} tasks 0..{}",
            count.saturating_sub(1)
        ));
    }
    Ok(order.to_vec())
}

/// The samples of `data` whose label is in `classes` (an error names `what` if none are).
fn of_classes(data: &Dataset, classes: &[i64], what: &str) -> Result<Dataset> {
    let rows: Vec<usize> = (0..data.len())
        .filter(|&r| classes.contains(&data.labels[r]))
        .collect();
    if rows.is_empty() {
        return invalid(format!(
            "the {what} data has no sample of classes {classes:?}"
        ));
    }
    let (images, labels) = data.gather(&rows)?;
    named_like(Dataset::new(images, labels, data.num_classes)?, data)
}

/// `data` with the class names of `like`, when it has any.
fn named_like(data: Dataset, like: &Dataset) -> Result<Dataset> {
    match like.class_names.is_empty() {
        true => Ok(data),
        false => data.with_class_names(like.class_names.clone()),
    }
}

/// `data` with the flattened pixels of every sample reordered: output pixel `i` is input
/// pixel `perm[i]`.
fn permute_pixels(data: &Dataset, perm: &[usize]) -> Result<Dataset> {
    let values = data.images.to_vec::<f32>()?;
    let mut out = Vec::with_capacity(values.len());
    for row in values.chunks(perm.len()) {
        out.extend(perm.iter().map(|&p| row[p]));
    }
    let images = TensorData::from_slice(data.images.dims().to_vec(), &out)?;
    named_like(
        Dataset::new(images, data.labels.clone(), data.num_classes)?,
        data,
    )
}

/// The samples of `parts` one after another (same sample shape and classes).
pub fn concat(parts: &[&Dataset]) -> Result<Dataset> {
    let Some(first) = parts.first() else {
        return invalid("no datasets to join".into());
    };
    let mut bytes = Vec::new();
    let mut labels = Vec::new();
    for part in parts {
        if part.sample_dims() != first.sample_dims() || part.num_classes != first.num_classes {
            return invalid(format!(
                "cannot join samples {:?} of {} classes with samples {:?} of {} classes",
                first.sample_dims(),
                first.num_classes,
                part.sample_dims(),
                part.num_classes
            ));
        }
        bytes.extend_from_slice(part.images.bytes().unwrap_or_default());
        labels.extend_from_slice(&part.labels);
    }
    let mut dims = first.images.dims().to_vec();
    dims[0] = labels.len();
    let images = TensorData::from_bytes(first.images.dtype(), dims, bytes)?;
    named_like(Dataset::new(images, labels, first.num_classes)?, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` samples of 4 pixels; sample `i` has label `i % classes` and pixels `i, i+0.25, ...`.
    fn data(n: usize, classes: usize) -> Dataset {
        let px: Vec<f32> = (0..n * 4).map(|v| v as f32 / 4.0).collect();
        let labels = (0..n).map(|i| (i % classes) as i64).collect();
        Dataset::new(
            TensorData::from_slice(vec![n, 4], &px).unwrap(),
            labels,
            classes,
        )
        .unwrap()
    }

    #[test]
    fn split_gives_each_task_its_classes_in_the_chosen_order() {
        let (train, test) = (data(40, 10), data(20, 10));
        let s = Scenario::split(ScenarioKind::ClassIl, &train, &test, 2, None, None).unwrap();
        assert_eq!(s.tasks.len(), 5);
        assert_eq!(s.tasks[3].classes, vec![6, 7]);
        assert!(s.tasks[3].train.labels.iter().all(|l| [6, 7].contains(l)));
        assert_eq!(s.tasks[3].train.len(), 8);
        assert_eq!(s.tasks[3].test.len(), 4);
        let order = [4, 3, 2, 1, 0];
        let r = Scenario::split(ScenarioKind::TaskIl, &train, &test, 2, None, Some(&order));
        let r = r.unwrap();
        assert_eq!(r.tasks[0].classes, vec![8, 9]);
        assert_eq!(r.task_of_class()[8], Some(0));
        assert_eq!(r.task_of_class()[0], Some(4));
        assert_eq!(r.joint_train(1).unwrap().len(), 16);
    }

    #[test]
    fn split_refuses_bad_options_by_name() {
        let (train, test) = (data(40, 10), data(20, 10));
        let kind = ScenarioKind::ClassIl;
        let err = |r: Result<Scenario>| r.unwrap_err().to_string();
        let e = err(Scenario::split(kind, &train, &test, 3, None, None));
        assert!(
            e.contains("--classes-per-task 3 does not divide the 10 classes"),
            "{e}"
        );
        // Three tasks of three classes are fine: class 9 is left out.
        assert_eq!(
            Scenario::split(kind, &train, &test, 3, Some(3), None)
                .unwrap()
                .tasks
                .len(),
            3
        );
        let e = err(Scenario::split(kind, &train, &test, 2, Some(6), None));
        assert!(e.contains("--tasks 6"), "{e}");
        let e = err(Scenario::split(
            kind,
            &train,
            &test,
            2,
            None,
            Some(&[0, 1, 2, 3, 3]),
        ));
        assert!(e.contains("--task-order"), "{e}");
        let e = err(Scenario::split(kind, &train, &test, 0, None, None));
        assert!(e.contains("--classes-per-task must be at least 1"), "{e}");
        assert!("class-il".parse::<ScenarioKind>().is_ok());
        let e = "class-incremental"
            .parse::<ScenarioKind>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown scenario 'class-incremental'"), "{e}");
    }

    #[test]
    fn permuted_tasks_reorder_pixels_and_keep_labels() {
        let (train, test) = (data(6, 3), data(3, 3));
        let s = Scenario::permuted(&train, &test, 3, 7).unwrap();
        assert_eq!(s.kind, ScenarioKind::DomainIl);
        assert_eq!(s.tasks[0].train, train);
        for task in &s.tasks[1..] {
            assert_eq!(task.train.labels, train.labels);
            assert_eq!(task.classes, vec![0, 1, 2]);
            let row = &task.train.images.to_vec::<f32>().unwrap()[4..8];
            let mut sorted = row.to_vec();
            sorted.sort_by(f32::total_cmp);
            assert_eq!(sorted, vec![1.0, 1.25, 1.5, 1.75]);
        }
        assert_ne!(s.tasks[1].train.images, s.tasks[2].train.images);
        assert!(Scenario::permuted(&train, &test, 0, 7).is_err());
    }
}

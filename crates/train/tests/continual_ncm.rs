//! The nearest-class-mean head (`ncm`) on real data (Split MNIST, a small MLP): its Gemm
//! scores each class as `2 mu . f - ||mu||^2` of the class's mean penultimate feature, so it
//! picks the nearest mean; classes without samples are never picked; a run with it scores
//! and returns the mean-head model and forgets less than plain ER; a model whose output is
//! not a linear head is refused by node name.

use std::collections::HashMap;

use whittle_data::scenario::{Scenario, ScenarioKind};
use whittle_data::{Dataset, Split};
use whittle_exec::{Executor, RunOptions, Value};
use whittle_ir::numeric::argmax;
use whittle_ir::{GraphEdit, Model};
use whittle_train::continual::ncm::ncm_head;
use whittle_train::continual::{run, task_accuracies, ContinualConfig, NoHook};

fn mnist(split: Split, count: usize) -> Dataset {
    let dir = whittle_data::assets_dir().join("mnist");
    assert!(
        dir.is_dir(),
        "{} missing: run scripts/fetch-assets.sh",
        dir.display()
    );
    whittle_data::load(&format!("mnist:{}", dir.display()), split, Some(count)).unwrap()
}

fn split_mnist(train: usize, test: usize) -> Scenario {
    let (train, test) = (mnist(Split::Train, train), mnist(Split::Test, test));
    Scenario::split(ScenarioKind::ClassIl, &train, &test, 2, None, None).unwrap()
}

/// The head Gemm's input (the penultimate features) and the model's output, for `data`:
/// features `[N][F]`, scores `[N][classes]`, labels.
fn features_and_scores(model: &Model, data: &Dataset) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let graph = model.graph();
    let output = graph.output[0].name.clone();
    let head = &graph.node[graph.producers()[&output]];
    let features = head.input[0].clone();
    let exec = Executor::new(model).unwrap();
    let input = exec.inputs()[0].name.clone();
    let (mut f, mut s) = (Vec::new(), Vec::new());
    for batch in data.batches(500) {
        let (images, _) = batch.unwrap();
        let feed = HashMap::from([(input.clone(), Value::try_from(&images).unwrap())]);
        let opts = RunOptions {
            keep: vec![features.clone()],
            ..RunOptions::default()
        };
        let out = exec.run_with(feed, opts).unwrap();
        for (name, rows) in [(&features, &mut f), (&output, &mut s)] {
            let v = &out[name];
            let width = *v.shape().last().unwrap();
            rows.extend(v.to_f32_vec().unwrap().chunks(width).map(<[f32]>::to_vec));
        }
    }
    (f, s)
}

#[test]
fn the_mean_head_scores_the_distance_to_each_class_mean_and_picks_the_nearest() {
    let scenario = split_mnist(600, 400);
    let model = whittle_zoo::build("mlp:hidden=32").unwrap();
    // Means from tasks 0 and 1 (classes 0-3); classes 4-9 have none.
    let seen: Vec<&Dataset> = scenario.tasks[..2].iter().map(|t| &t.train).collect();
    let ncm = ncm_head(&model, &seen).unwrap();
    let mut means = vec![(vec![0f64; 32], 0usize); 4];
    for set in &seen {
        let (features, _) = features_and_scores(&model, set);
        for (f, &label) in features.iter().zip(&set.labels) {
            let (sum, n) = &mut means[label as usize];
            sum.iter_mut().zip(f).for_each(|(s, &v)| *s += f64::from(v));
            *n += 1;
        }
    }
    let means: Vec<Vec<f64>> = means
        .into_iter()
        .map(|(sum, n)| sum.iter().map(|s| s / n as f64).collect())
        .collect();
    // On test samples of every task: the head's score of each seen class is ||f||^2 less
    // than minus the squared distance to its mean, the top class is the nearest mean, and
    // an unseen class is never on top.
    let mut checked = 0;
    for task in &scenario.tasks {
        let (features, scores) = features_and_scores(&ncm, &task.test);
        for (f, s) in features.iter().zip(&scores) {
            let norm: f64 = f.iter().map(|&v| f64::from(v).powi(2)).sum();
            let distances: Vec<f64> = means
                .iter()
                .map(|m| {
                    m.iter()
                        .zip(f)
                        .map(|(a, &b)| (a - f64::from(b)).powi(2))
                        .sum()
                })
                .collect();
            for (c, d) in distances.iter().enumerate() {
                let want = norm - d;
                let got = f64::from(s[c]);
                assert!(
                    (got - want).abs() <= 1e-3 * want.abs().max(1.0),
                    "class {c}: score {got}, want {want}"
                );
            }
            assert!(s[4..].iter().all(|&v| v <= -1e8), "unseen classes: {s:?}");
            let nearest = (0..4)
                .min_by(|&a, &b| distances[a].total_cmp(&distances[b]))
                .unwrap();
            assert_eq!(argmax(s), nearest, "{s:?} {distances:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 400);
}

#[test]
fn a_run_with_the_mean_head_scores_and_returns_it_and_forgets_less_than_er() {
    let scenario = split_mnist(3000, 1000);
    let model = whittle_zoo::build("mlp:hidden=100").unwrap();
    let config = |ncm| ContinualConfig {
        replay_batch: 32,
        ncm,
        ..ContinualConfig::default()
    };
    let er = run(&model, &scenario, &config(false), &mut NoHook).unwrap();
    let ncm = run(&model, &scenario, &config(true), &mut NoHook).unwrap();
    let (m_er, m_ncm) = (er.metrics(), ncm.metrics());
    println!("er {m_er:?}\nncm {m_ncm:?}\n{:?}", ncm.r_matrix);
    // The returned model is the scored one: its accuracies are the R matrix's last row.
    let last = task_accuracies(&ncm.model, &scenario).unwrap().plain;
    assert_eq!(&last, ncm.r_matrix.last().unwrap());
    // The same training, scored by the means: after task 1 only its classes have means in
    // the buffer and its data, so it is all but perfect; old tasks are forgotten less.
    assert!(ncm.r_matrix[0][0] > 0.95, "{:?}", ncm.r_matrix);
    assert!(m_ncm.forgetting < m_er.forgetting, "{m_er:?} {m_ncm:?}");
    assert!(m_ncm.average_accuracy > 0.7, "{m_ncm:?}");
}

#[test]
fn a_model_without_a_linear_head_is_refused_by_node() {
    let scenario = split_mnist(200, 100);
    let mut model = whittle_zoo::build("mlp:hidden=8").unwrap();
    let graph = model.graph_mut();
    let output = graph.output[0].name.clone();
    let at = graph.producers()[&output];
    graph.node[at].op_type = "MatMul".into();
    graph.node[at].input.truncate(2);
    let name = graph.node[at].name.clone();
    let e = ncm_head(&model, &[&scenario.tasks[0].train])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("node '{name}' (MatMul)")) && e.contains("--ncm"),
        "{e}"
    );
}

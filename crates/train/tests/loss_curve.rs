//! Pins the trainer on the graph-level backward: zoo:cnn on Fashion-MNIST with a fixed seed
//! takes the graph path, its gradients equal candle's tape's, and its first losses equal
//! the tape's run step by step (`WHITTLE_BACKWARD=tape` forces the tape). One test, since
//! it sets that variable for the process.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use whittle_exec::{Executor, Value};
use whittle_train::loss::cross_entropy;
use whittle_train::step::{forward_backward, GradientPath, LossFn, LossInput, PassOptions};
use whittle_train::{TrainConfig, Trainer};

/// Steps of the pinned curve (batches of 64).
const STEPS: usize = 12;

fn fashion(count: usize) -> whittle_data::Dataset {
    let dir = whittle_data::assets_dir().join("fashion-mnist");
    assert!(
        dir.is_dir(),
        "{} missing: run scripts/fetch-assets.sh",
        dir.display()
    );
    let spec = format!("fashion-mnist:{}", dir.display());
    whittle_data::load(&spec, whittle_data::Split::Train, Some(count)).unwrap()
}

fn set_tape(on: bool) {
    if on {
        std::env::set_var("WHITTLE_BACKWARD", "tape");
    } else {
        std::env::remove_var("WHITTLE_BACKWARD");
    }
}

/// The per-step losses of a fixed-seed run of zoo:cnn.
fn losses(data: &whittle_data::Dataset) -> Vec<f64> {
    let model = whittle_zoo::build("cnn").unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let record = seen.clone();
    let config = TrainConfig {
        batch_size: 64,
        seed: 0,
        ..Default::default()
    };
    let mut trainer = Trainer::new(&model, config)
        .unwrap()
        .with_loss(move |x: &LossInput| {
            let scores = x.outputs.values().next().unwrap();
            let l = cross_entropy(scores.tensor(), x.labels, 0.0)?;
            record
                .borrow_mut()
                .push(l.to_scalar::<f32>().unwrap() as f64);
            Ok(l)
        });
    trainer.fit(data, None).unwrap();
    let v = seen.borrow().clone();
    v
}

/// One pass of zoo:cnn on the first 64 images: the path taken and the gradients.
fn one_pass(data: &whittle_data::Dataset) -> (GradientPath, HashMap<String, Vec<f32>>) {
    let model = whittle_zoo::build("cnn").unwrap();
    let mut exec = Executor::new(&model).unwrap();
    let names = whittle_train::params::trainable_initializers(model.graph());
    exec.set_trainable(&names).unwrap();
    let rows: Vec<usize> = (0..64).collect();
    let (images, labels) = data.gather(&rows).unwrap();
    let input = exec.inputs()[0].name.clone();
    let feed = HashMap::from([(input, Value::try_from(&images).unwrap())]);
    let mut loss: LossFn = Box::new(|x: &LossInput| {
        let scores = x.outputs.values().next().unwrap();
        cross_entropy(scores.tensor(), x.labels, 0.0)
    });
    let opts = PassOptions {
        seed: 3,
        segments: None,
        running_stats: None,
    };
    let pass = forward_backward(&exec, feed, &labels, &mut loss, opts).unwrap();
    let grads = pass
        .grads
        .iter()
        .map(|(n, g)| {
            (
                n.clone(),
                g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect();
    (pass.path, grads)
}

#[test]
fn zoo_cnn_trains_on_the_graph_backward_as_on_the_tape() {
    let data = fashion(64 * STEPS);

    set_tape(false);
    let (path, graph) = one_pass(&data);
    assert_eq!(path, GradientPath::Graph);
    set_tape(true);
    let (path, tape) = one_pass(&data);
    assert!(matches!(path, GradientPath::Tape(_)), "{path:?}");
    assert_eq!(graph.len(), tape.len());
    assert!(graph.len() >= 11, "{} parameters", graph.len());
    for (name, t) in &tape {
        let g = &graph[name];
        let scale = t.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6) as f64;
        let diff = whittle_ir::numeric::max_abs_diff(g.iter().copied(), t.iter().copied());
        assert!(
            diff / scale < 1e-4,
            "{name}: {diff:e} off (largest {scale:e})"
        );
    }

    set_tape(false);
    let on_graph = losses(&data);
    set_tape(true);
    let on_tape = losses(&data);
    set_tape(false);
    // The trainer's preflight pass plus one loss per step.
    assert!(on_graph.len() > STEPS, "{} losses", on_graph.len());
    assert_eq!(on_graph.len(), on_tape.len());
    for (i, (g, t)) in on_graph.iter().zip(&on_tape).enumerate() {
        assert!(
            (g - t).abs() <= 1e-4 * t.abs().max(1.0),
            "loss {i}: graph {g} vs tape {t}"
        );
    }
    // The curve moves: the run trains.
    assert!(
        on_graph[on_graph.len() - 1] < on_graph[1] - 0.1,
        "{on_graph:?}"
    );
}

//! The zoo's deeper models on the graph-level backward: every parameter's gradient equals
//! candle's tape's (training mode: batch statistics, seeded Dropout), so none of them falls
//! back to the tape. LeNet5 and zoo:cnn are pinned in exec's `backward` and in `loss_curve`.

#[path = "common/graph_vs_tape.rs"]
mod graph_vs_tape;

use std::collections::HashMap;

use graph_vs_tape::{assert_graph_matches_tape, input};
use whittle_exec::Executor;
use whittle_train::params::trainable_initializers;

/// Builds `spec` from the zoo, trains all its parameters, and compares one batch of
/// `batch` random 1x28x28 images; returns the number of parameters compared.
fn compare(spec: &str, batch: usize, tol: f64) -> usize {
    let model = whittle_zoo::build(spec).unwrap();
    let mut exec = Executor::new(&model).unwrap();
    exec.set_trainable(&trainable_initializers(model.graph()))
        .unwrap();
    let name = exec.inputs()[0].name.clone();
    let feed = HashMap::from([(name, input(&[batch, 1, 28, 28], 1))]);
    assert_graph_matches_tape(&exec, feed, tol)
}

#[test]
fn resnet_gradients_equal_the_tape() {
    // Stem, 3 stages of one basic block (one with a projection shortcut), classifier.
    assert!(compare("resnet", 4, 1e-4) >= 20);
}

#[test]
fn mobilenetv3_small_gradients_equal_the_tape() {
    assert!(compare("mobilenetv3-small", 4, 1e-4) >= 100);
}

#[test]
fn vit_tiny_gradients_equal_the_tape() {
    assert!(compare("vit-tiny", 4, 1e-4) >= 60);
}

/// Gradients, outputs and BatchNormalization running statistics of one pass of `spec` on
/// a batch of 32 random images in a pool of `threads`, and the number of parts it ran in.
type Pass = (
    HashMap<String, Vec<f32>>,
    HashMap<String, Vec<f32>>,
    HashMap<String, Vec<f32>>,
    usize,
);

fn pass_on(spec: &str, threads: usize) -> Pass {
    let model = whittle_zoo::build(spec).unwrap();
    let mut exec = Executor::new(&model).unwrap();
    exec.set_trainable(&trainable_initializers(model.graph()))
        .unwrap();
    let name = exec.inputs()[0].name.clone();
    let feed = HashMap::from([(name, input(&[32, 1, 28, 28], 3))]);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let gb = whittle_exec::backward::GraphBackward::new(&exec).unwrap();
    let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    pool.install(|| {
        let mut stats = HashMap::new();
        let rec = gb.forward(&exec, feed, 7, Some(&mut stats)).unwrap();
        let seeds = rec
            .outputs
            .iter()
            .enumerate()
            .map(|(k, (name, v))| {
                let r = graph_vs_tape::uniform(v.shape().iter().product(), 50 + k as u64);
                let r = candle_core::Tensor::from_vec(r, v.shape(), exec.device()).unwrap();
                (name.clone(), r)
            })
            .collect();
        let grads = gb.backward(&exec, &rec, seeds).unwrap();
        let each = |m: HashMap<String, whittle_exec::Value>| {
            m.into_iter()
                .map(|(n, v)| (n, flat(v.tensor())))
                .collect::<HashMap<_, _>>()
        };
        let grads = grads.iter().map(|(n, g)| (n.clone(), flat(g))).collect();
        (grads, each(rec.outputs.clone()), each(stats), rec.parts())
    })
}

/// Every entry of `b` equals `a`'s to `tol` relative to the largest magnitude in `a`'s
/// entry (at least a thousandth of `a`'s largest overall).
fn assert_close(
    what: &str,
    a: &HashMap<String, Vec<f32>>,
    b: &HashMap<String, Vec<f32>>,
    tol: f64,
) {
    assert_eq!(a.len(), b.len(), "{what}: entries");
    let largest = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let floor = 1e-3 * a.values().map(|v| largest(v)).fold(0.0, f64::max);
    for (name, x) in a {
        let y = &b[name];
        let diff = whittle_ir::numeric::max_abs_diff(x.iter().copied(), y.iter().copied());
        let scale = largest(x).max(floor).max(1e-12);
        assert!(
            diff / scale < tol,
            "{what} '{name}': {diff:e} off (largest {scale:e})"
        );
    }
}

/// On two threads a batch of 32 runs in two parts side by side, meeting at every
/// BatchNormalization: the gradients, outputs and running statistics are those of one run
/// over the whole batch (on one thread), up to rounding. zoo:cnn has MaxPool, zoo:resnet
/// residual Adds and a projection shortcut; neither has Dropout, whose masks are drawn per
/// part. vit-tiny's reshapes and attention are refused: it runs whole.
#[test]
fn passes_in_parts_of_the_batch_equal_one_pass_over_it() {
    for spec in ["cnn", "resnet"] {
        let (g1, y1, s1, parts1) = pass_on(spec, 1);
        let (g2, y2, s2, parts2) = pass_on(spec, 2);
        assert_eq!((parts1, parts2), (1, 2), "{spec}");
        assert!(g1.len() >= 10 && s1.len() >= 6, "{spec}");
        assert_close(spec, &g1, &g2, 1e-4);
        assert_close(spec, &y1, &y2, 1e-5);
        assert_close(spec, &s1, &s2, 1e-5);
    }
    assert_eq!(pass_on("vit-tiny", 2).3, 1);
}

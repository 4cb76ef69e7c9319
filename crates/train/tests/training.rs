//! The trainer end to end: LeNet5 learns MNIST, a checkpointed run resumes bit-exactly,
//! BatchNormalization statistics update and serve inference, gradient checkpointing gives
//! the same gradients, and bad input fails before training.

mod common;

use std::collections::HashMap;

use common::{float_info, ints_attr, model, node, random_f32};
use whittle_data::Dataset;
use whittle_exec::{Executor, RunOptions, Value};
use whittle_ir::attr::make;
use whittle_ir::{Model, TensorData};
use whittle_testkit::scratch;
use whittle_train::step::{forward_backward, segment_bounds, LossFn, PassOptions};
use whittle_train::{
    loss, split_validation, OptimizerConfig, OptimizerKind, Schedule, TrainConfig, Trainer,
};

/// Conv(1->4, 3x3, stride 2) -> BatchNormalization -> Relu -> Dropout(0.3) ->
/// GlobalAveragePool -> Flatten -> Gemm(4 -> 10), on [N, 1, 28, 28].
fn small_bn_net() -> Model {
    let nodes = vec![
        node(
            "Conv",
            &["x", "w", "b"],
            &["c"],
            vec![ints_attr("strides", &[2, 2])],
        ),
        node(
            "BatchNormalization",
            &["c", "gamma", "beta", "mean", "var"],
            &["n"],
            vec![],
        ),
        node("Relu", &["n"], &["r"], vec![]),
        node("Dropout", &["r", "ratio"], &["d"], vec![]),
        node("GlobalAveragePool", &["d"], &["g"], vec![]),
        node("Flatten", &["g"], &["f"], vec![]),
        node(
            "Gemm",
            &["f", "fc", "fcb"],
            &["logits"],
            vec![make::int("transB", 1)],
        ),
    ];
    let ones = TensorData::from_slice(vec![4], &[1.0f32; 4]).unwrap();
    let zeros = TensorData::from_slice(vec![4], &[0.0f32; 4]).unwrap();
    let inits = vec![
        ("w", random_f32(&[4, 1, 3, 3], -0.5, 0.5, 1)),
        ("b", random_f32(&[4], -0.1, 0.1, 2)),
        ("gamma", ones.clone()),
        ("beta", zeros.clone()),
        ("mean", zeros),
        ("var", ones),
        ("ratio", TensorData::from_slice(vec![], &[0.3f32]).unwrap()),
        ("fc", random_f32(&[10, 4], -0.5, 0.5, 3)),
        ("fcb", random_f32(&[10], -0.1, 0.1, 4)),
    ];
    let input = float_info("x", &[None, Some(1), Some(28), Some(28)]);
    model(nodes, inits, vec![input], &["logits"], 13)
}

fn initializer(m: &Model, name: &str) -> TensorData {
    let t = m
        .graph()
        .initializer
        .iter()
        .find(|t| t.name == name)
        .unwrap();
    TensorData::from_proto(t, None).unwrap()
}

#[test]
fn step_hooks_run_after_every_step_and_the_best_epoch_is_restored() {
    let data = common::mnist(600);
    let (train, val) = split_validation(&data, 0.25, 2).unwrap();
    let config = TrainConfig {
        epochs: 3,
        batch_size: 50,
        lr: 0.05,
        optimizer: sgd(0.0),
        schedule: Schedule::Constant,
        freeze: vec!["conv*".into()],
        ..Default::default()
    };
    let calls = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let seen = calls.clone();
    // From the second epoch on, the hook wipes the classifier: epoch 1 stays the best.
    let mut trainer = Trainer::new(&common::lenet5_fresh_head(), config)
        .unwrap()
        .with_step_hook(move |c| {
            seen.set(seen.get() + 1);
            assert_eq!(c.step, seen.get());
            assert_eq!(c.total_steps, 27);
            if c.epoch >= 1 {
                for (name, var) in c.exec.params() {
                    if name.starts_with("linear2") {
                        var.set(&var.as_tensor().zeros_like()?)?;
                    }
                }
            }
            Ok(())
        });
    let report = trainer.fit(&train, Some(&val)).unwrap();
    assert_eq!(calls.get(), 27);
    let val_acc: Vec<f64> = report
        .epochs
        .iter()
        .map(|e| e.val_accuracy.unwrap())
        .collect();
    assert!(val_acc[0] > 0.5 && val_acc[2] < 0.2, "{val_acc:?}");
    assert_eq!(report.best_epoch, Some(1));
    let restored = trainer.evaluate(&val).unwrap();
    assert_eq!(restored.accuracy, val_acc[0]);
}

/// SGD with `momentum`.
fn sgd(momentum: f64) -> OptimizerConfig {
    OptimizerConfig {
        kind: OptimizerKind::Sgd,
        momentum,
        ..Default::default()
    }
}

#[test]
fn lenet5_with_a_fresh_head_learns_mnist() {
    let data = common::mnist(2500);
    let (train, test) = split_validation(&data, 0.2, 5).unwrap();
    let config = TrainConfig {
        epochs: 2,
        batch_size: 64,
        lr: 0.05,
        optimizer: sgd(0.9),
        schedule: Schedule::WarmupCosine {
            warmup: 5,
            min_lr: 0.0,
        },
        freeze: vec!["conv*".into()],
        restore_best: false,
        ..Default::default()
    };
    let mut trainer = Trainer::new(&common::lenet5_fresh_head(), config).unwrap();
    assert!(trainer.trainable().iter().all(|n| n.starts_with("linear")));
    let before = trainer.evaluate(&test).unwrap();
    let report = trainer.fit(&train, Some(&test)).unwrap();
    let after = trainer.evaluate(&test).unwrap();
    assert!(before.accuracy < 0.3, "a random head guesses: {before:?}");
    assert!(
        report.epochs[1].loss < report.epochs[0].loss,
        "{:?}",
        report.epochs
    );
    assert!(after.loss < 0.5 * before.loss, "{before:?} -> {after:?}");
    assert!(after.accuracy > 0.9, "{after:?}");
    assert_eq!(report.epochs[1].val_accuracy, Some(after.accuracy));
    // Frozen convolutions are unchanged in the exported model.
    let original = common::lenet5_fresh_head();
    let exported = trainer.model().unwrap();
    let conv = original
        .graph()
        .initializer
        .iter()
        .find(|t| t.name.starts_with("conv"))
        .unwrap();
    assert_eq!(
        initializer(&exported, &conv.name),
        initializer(&original, &conv.name)
    );
}

fn resume_config(dir: &std::path::Path) -> TrainConfig {
    TrainConfig {
        epochs: 3,
        batch_size: 32,
        lr: 0.01,
        optimizer: OptimizerConfig {
            kind: OptimizerKind::AdamW,
            weight_decay: 0.01,
            ..Default::default()
        },
        schedule: Schedule::OneCycle {
            div_factor: 10.0,
            pct_start: 0.3,
            final_div_factor: 100.0,
            min_lr: None,
        },
        accumulate: 2,
        clip_grad_norm: Some(1.0),
        checkpoint_dir: Some(dir.to_path_buf()),
        seed: 7,
        ..Default::default()
    }
}

fn all_initializers(m: &Model) -> Vec<(String, TensorData)> {
    m.graph()
        .initializer
        .iter()
        .map(|t| (t.name.clone(), TensorData::from_proto(t, None).unwrap()))
        .collect()
}

#[test]
fn resuming_a_checkpoint_reproduces_the_uninterrupted_run_exactly() {
    let data = common::mnist(300);
    let net = small_bn_net();
    let (dir_a, dir_b) = (scratch("resume-a"), scratch("resume-b"));
    let mut full = Trainer::new(&net, resume_config(&dir_a)).unwrap();
    let full_report = full.fit(&data, None).unwrap();
    let mut first = Trainer::new(&net, resume_config(&dir_b)).unwrap();
    first.fit_until(&data, None, 1).unwrap();
    drop(first);
    let mut sgd_config = resume_config(&dir_b);
    sgd_config.optimizer = sgd(0.9);
    let refused = Trainer::resume(&dir_b, sgd_config)
        .err()
        .unwrap()
        .to_string();
    assert!(refused.contains("`optimizer` adamw"), "{refused}");
    let mut resumed = Trainer::resume(&dir_b, resume_config(&dir_b)).unwrap();
    assert_eq!(resumed.epochs_done(), 1);
    let resumed_report = resumed.fit(&data, None).unwrap();
    let (a, b) = (full.model().unwrap(), resumed.model().unwrap());
    assert_eq!(all_initializers(&a), all_initializers(&b));
    let losses =
        |r: &whittle_train::TrainReport| r.epochs.iter().map(|e| e.loss).collect::<Vec<_>>();
    assert_eq!(losses(&full_report), losses(&resumed_report));
    assert_eq!(full_report.steps, resumed_report.steps);
    // The run changed the weights, and a different seed gives a different run.
    assert_ne!(all_initializers(&a), all_initializers(&net));
    let dir_c = scratch("resume-c");
    let mut other = resume_config(&dir_c);
    other.seed = 8;
    let mut t = Trainer::new(&net, other).unwrap();
    t.fit(&data, None).unwrap();
    assert_ne!(all_initializers(&t.model().unwrap()), all_initializers(&a));
}

#[test]
fn a_failed_checkpoint_write_keeps_the_previous_epoch_and_resume_continues_from_it() {
    let data = common::mnist(256);
    let net = small_bn_net();
    let dir = scratch("ckpt-fail");
    let mut trainer = Trainer::new(&net, resume_config(&dir)).unwrap();
    trainer.fit_until(&data, None, 1).unwrap();
    let epoch1 = all_initializers(&trainer.model().unwrap());
    // Epoch 2's folder cannot be written: a file stands where it goes.
    std::fs::write(dir.join("epoch-2"), b"in the way").unwrap();
    let err = trainer.fit(&data, None).err().unwrap().to_string();
    assert!(err.contains("epoch-2"), "{err}");
    let mut resumed = Trainer::resume(&dir, resume_config(&dir)).unwrap();
    assert_eq!(resumed.epochs_done(), 1);
    assert_eq!(all_initializers(&resumed.model().unwrap()), epoch1);
    std::fs::remove_file(dir.join("epoch-2")).unwrap();
    let report = resumed.fit(&data, None).unwrap();
    assert_eq!(report.epochs.len(), 3);
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["epoch-3", "state.json"], "older epochs are removed");
}

#[test]
fn fake_quantized_weights_and_learned_step_sizes_are_trained() {
    let nodes = vec![
        node("FakeQuantize", &["w", "learned"], &["wq"], vec![]),
        node("MatMul", &["x", "wq"], &["m"], vec![]),
        node("FakeQuantize", &["m", "fixed"], &["logits"], vec![]),
    ];
    let inits = vec![
        ("w", random_f32(&[3, 3], -1.0, 1.0, 1)),
        (
            "learned",
            TensorData::from_slice(vec![1], &[0.1f32]).unwrap(),
        ),
        ("fixed", TensorData::from_slice(vec![], &[0.1f32]).unwrap()),
    ];
    let qat = model(
        nodes,
        inits,
        vec![float_info("x", &[None, Some(3)])],
        &["logits"],
        13,
    );
    let trainable = whittle_train::params::trainable_initializers(qat.graph());
    assert_eq!(trainable, ["learned", "w"]);
}

#[test]
fn non_finite_data_is_refused_and_a_diverging_run_stops() {
    let net = small_bn_net();
    let mut data = common::mnist(64);
    let mut pixels: Vec<f32> = data.images.to_vec().unwrap();
    pixels[5 * 784 + 100] = f32::NAN;
    data.images = TensorData::from_slice(data.images.dims().to_vec(), &pixels).unwrap();
    let config = TrainConfig::default();
    expect_error(
        &net,
        config.clone(),
        &data,
        "(NaN) in sample 5 (element 100)",
    );
    let dir = scratch("diverge");
    let huge = TrainConfig {
        lr: 1e30,
        epochs: 2,
        checkpoint_dir: Some(dir.to_path_buf()),
        ..config
    };
    let err = Trainer::new(&net, huge)
        .unwrap()
        .fit(&common::mnist(64), None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("training diverged in epoch 1, batch "),
        "{err}"
    );
    assert!(
        err.contains("not finite") || err.contains("the loss is"),
        "{err}"
    );
    assert!(err.contains("no checkpoint was written"), "{err}");
    assert!(!dir.join("state.json").exists());
}

#[test]
fn batch_norm_running_statistics_follow_the_batches_and_serve_inference() {
    let net = small_bn_net();
    let mut exec = Executor::new(&net).unwrap();
    let data = common::mnist(16);
    let x = Value::try_from(&data.images).unwrap();
    let mut stats = HashMap::new();
    let opts = RunOptions {
        training: true,
        keep: vec!["c".into()],
        seed: Some(1),
        running_stats: Some(&mut stats),
        ..Default::default()
    };
    let out = exec
        .run_with(HashMap::from([("x".to_string(), x.clone())]), opts)
        .unwrap();
    // ONNX: running = 0.9 * old + 0.1 * batch statistic (old mean 0, old var 1).
    let c = out["c"].tensor();
    let batch_mean = c
        .mean_keepdim(0)
        .unwrap()
        .mean_keepdim(2)
        .unwrap()
        .mean_keepdim(3)
        .unwrap();
    let centered = c.broadcast_sub(&batch_mean).unwrap();
    let batch_var = centered
        .sqr()
        .unwrap()
        .mean_keepdim(0)
        .unwrap()
        .mean_keepdim(2)
        .unwrap()
        .mean_keepdim(3)
        .unwrap();
    let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mean: Vec<f32> = flat(&batch_mean).iter().map(|m| 0.1 * m).collect();
    let var: Vec<f32> = flat(&batch_var).iter().map(|v| 0.9 + 0.1 * v).collect();
    for (got, want) in [
        (flat(stats["mean"].tensor()), mean),
        (flat(stats["var"].tensor()), var),
    ] {
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
    // Inference reads the written-back statistics.
    let infer = |e: &Executor| {
        e.run(HashMap::from([("x".to_string(), x.clone())]))
            .unwrap()["logits"]
            .to_data()
            .unwrap()
    };
    let before = infer(&exec);
    for (name, v) in stats {
        exec.set_initializer(&name, v).unwrap();
    }
    assert_ne!(infer(&exec), before);
    // A training run changes the statistics in the exported model.
    let mut trainer = Trainer::new(
        &net,
        TrainConfig {
            batch_size: 16,
            ..Default::default()
        },
    )
    .unwrap();
    trainer.fit(&common::mnist(64), None).unwrap();
    let trained = trainer.model().unwrap();
    assert_ne!(initializer(&trained, "mean"), initializer(&net, "mean"));
    assert!(!trainer.trainable().contains(&"mean".to_string()));
    assert!(trainer.trainable().contains(&"gamma".to_string()));
}

fn cross_entropy_loss() -> LossFn {
    Box::new(|x: &whittle_train::LossInput| {
        loss::cross_entropy(x.outputs["logits"].tensor(), x.labels, 0.0)
    })
}

#[test]
fn gradient_checkpointing_gives_the_same_gradients() {
    let data = common::mnist(8);
    for net in [small_bn_net(), common::lenet5_fresh_head()] {
        let mut exec = Executor::new(&net).unwrap();
        let trainable = whittle_train::params::trainable_initializers(net.graph());
        exec.set_trainable(&trainable).unwrap();
        let input = exec.inputs()[0].name.clone();
        let inputs = HashMap::from([(input, Value::try_from(&data.images).unwrap())]);
        let bounds = segment_bounds(exec.run_order().len(), 3);
        assert_eq!(bounds.len(), 4);
        let pass = |segments| {
            let opts = PassOptions {
                seed: 3,
                segments,
                running_stats: None,
            };
            forward_backward(
                &exec,
                inputs.clone(),
                &data.labels,
                &mut cross_entropy_loss(),
                opts,
            )
            .unwrap()
        };
        let (plain, recomputed) = (pass(None), pass(Some(&bounds)));
        let memory = whittle_train::memory::estimate(&exec, &inputs, 0, Some(&bounds)).unwrap();
        let kept = memory.checkpointed_activations.unwrap();
        assert!(kept < memory.activations, "{memory:?}");
        // The graph path's forward runs whittle's kernels, the tape's candle's: the same
        // loss up to f32 rounding.
        let loss_gap = (plain.loss - recomputed.loss).abs();
        let (a, b) = (plain.loss, recomputed.loss);
        assert!(
            loss_gap <= 1e-5 * a.abs(),
            "loss {a} without segments, {b} with"
        );
        assert_eq!(plain.grads.len(), trainable.len());
        let flat = |g: &candle_core::Tensor| g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Without segments the pass runs the graph-level backward, with them candle's tape:
        // the same sums in another order, so each element agrees to 1e-4 of the largest
        // gradient (a bias before BatchNormalization has gradients of rounding noise only).
        let scale = plain
            .grads
            .values()
            .flat_map(flat)
            .fold(0f32, |m, v| m.max(v.abs()));
        for (name, g) in &plain.grads {
            let (a, b) = (flat(g), flat(&recomputed.grads[name]));
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-4 * scale, "{name}: {x} vs {y}");
            }
        }
    }
}

fn expect_error(net: &Model, config: TrainConfig, data: &Dataset, needle: &str) {
    let err = match Trainer::new(net, config) {
        Err(e) => e.to_string(),
        Ok(mut t) => t
            .fit(data, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    };
    assert!(err.contains(needle), "expected '{needle}' in '{err}'");
}

#[test]
fn bad_input_fails_before_training() {
    let net = small_bn_net();
    let mnist = common::mnist(40);
    let ok = TrainConfig::default();
    let small = Dataset::new(
        random_f32(&[4, 1, 14, 14], 0.0, 1.0, 1),
        vec![0, 1, 2, 3],
        10,
    )
    .unwrap();
    expect_error(&net, ok.clone(), &small, "do not match the model's input");
    let many = Dataset::new(random_f32(&[2, 1, 28, 28], 0.0, 1.0, 1), vec![0, 11], 12).unwrap();
    expect_error(&net, ok.clone(), &many, "label 11 is out of range");
    let cycle = TrainConfig {
        schedule: Schedule::OneCycle {
            div_factor: 10.0,
            pct_start: 0.01,
            final_div_factor: 10.0,
            min_lr: None,
        },
        ..ok.clone()
    };
    expect_error(&net, cycle, &mnist, "pct_start");
    let warm = TrainConfig {
        schedule: Schedule::WarmupCosine {
            warmup: 100,
            min_lr: 0.0,
        },
        ..ok.clone()
    };
    expect_error(&net, warm, &mnist, "warmup of 100 steps");
    expect_error(
        &net,
        TrainConfig {
            freeze: vec!["*".into()],
            ..ok.clone()
        },
        &mnist,
        "nothing to train",
    );
    expect_error(
        &net,
        TrainConfig {
            freeze: vec!["nope*".into()],
            ..ok.clone()
        },
        &mnist,
        "matches none",
    );
    assert!(split_validation(&mnist, 0.001, 0)
        .unwrap_err()
        .to_string()
        .contains("empty"));
    // y = x + Cast(MatMul(x, W) > 0): no gradient reaches W.
    let nodes = vec![
        node("MatMul", &["x", "w"], &["m"], vec![]),
        node("Greater", &["m", "zero"], &["gt"], vec![]),
        node("Cast", &["gt"], &["step"], vec![make::int("to", 1)]),
        node("Add", &["x", "step"], &["logits"], vec![]),
    ];
    let inits = vec![
        ("w", random_f32(&[3, 3], -1.0, 1.0, 1)),
        ("zero", TensorData::from_slice(vec![], &[0.0f32]).unwrap()),
    ];
    let blocked = model(
        nodes,
        inits,
        vec![float_info("x", &[None, Some(3)])],
        &["logits"],
        13,
    );
    let xs = Dataset::new(random_f32(&[4, 3], -1.0, 1.0, 2), vec![0, 1, 2, 0], 3).unwrap();
    expect_error(&blocked, ok, &xs, "no gradient reaches");
}

//! Knowledge distillation through the trainer: a LeNet5 whose head was re-initialised
//! learns MNIST from the pretrained LeNet5 with the labels ignored (alpha = 1), a narrower
//! student matches LeNet5's features through learned projections that are not exported,
//! and the settings and shape checks reject bad input.

mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use whittle_exec::{Executor, Value};
use whittle_ir::{Model, TensorData};
use whittle_train::distill::{expose_outputs, DistillConfig, Distiller, FeaturePair};
use whittle_train::{
    split_validation, OptimizerConfig, OptimizerKind, Schedule, TrainConfig, Trainer,
};

fn teacher() -> whittle_ir::Model {
    whittle_ir::Model::load(common::assets().join("models/mnist_lenet5.onnx")).unwrap()
}

fn sample(n: usize) -> Value {
    let data = common::mnist(n);
    Value::try_from(&data.images).unwrap()
}

/// A CNN narrower than LeNet5 (8-16-32 channels against 32-64).
fn narrow_cnn() -> Model {
    whittle_zoo::build("zoo:cnn:channels=8-16-32").unwrap()
}

/// `TEACHER:STUDENT` feature pairs.
fn pairs(specs: &[(&str, &str)]) -> Vec<FeaturePair> {
    specs
        .iter()
        .map(|(t, s)| FeaturePair {
            teacher: t.to_string(),
            student: s.to_string(),
        })
        .collect()
}

/// The initializer `name` of `model` as floats.
fn weights(model: &Model, name: &str) -> Vec<f32> {
    let init = model.graph().initializer.iter().find(|t| t.name == name);
    TensorData::from_proto(init.unwrap(), None)
        .unwrap()
        .to_vec()
        .unwrap()
}

#[test]
fn a_narrower_student_learns_teacher_features_through_projections_left_out_of_export() {
    let train = common::mnist(1000);
    let spec = format!("mnist:{}", common::assets().join("mnist").display());
    let test = whittle_data::load(&spec, whittle_data::Split::Test, Some(256)).unwrap();
    let probe = Value::try_from(&test.images).unwrap();
    let cfg = DistillConfig {
        features: pairs(&[("p1", "block1.maxpool"), ("h1", "flatten")]),
        ..Default::default()
    };
    let distiller = Rc::new(RefCell::new(
        Distiller::new(&teacher(), "logits", cfg).unwrap(),
    ));
    let student = narrow_cnn();
    let (graph, matches) = distiller
        .borrow_mut()
        .training_graph(&student, &sample(4))
        .unwrap();
    let shapes: Vec<_> = matches.iter().map(|m| m.projection).collect();
    assert_eq!(shapes, [Some([32, 8]), Some([200, 32])]);
    let before = distiller.borrow().feature_errors(&graph, &probe).unwrap();
    let config = TrainConfig {
        epochs: 2,
        batch_size: 50,
        lr: 0.01,
        optimizer: OptimizerConfig {
            kind: OptimizerKind::Sgd,
            momentum: 0.9,
            ..Default::default()
        },
        schedule: Schedule::Constant,
        restore_best: false,
        ..Default::default()
    };
    let loss = Rc::clone(&distiller);
    let mut trainer = Trainer::new(&graph, config)
        .unwrap()
        .with_loss(move |x| loss.borrow_mut().loss(x));
    trainer.fit(&train, None).unwrap();
    let trained_graph = trainer.model().unwrap();
    let after = distiller
        .borrow()
        .feature_errors(&trained_graph, &probe)
        .unwrap();
    // The conv hint falls substantially; the 32 -> 200 fc hint, 100x larger, at least falls.
    assert!(
        after[0] < 0.5 * before[0] && after[1] < before[1],
        "feature MSE {before:?} -> {after:?}"
    );
    // The projection trained jointly with the student.
    let projection = "block1.maxpool.projection.weight";
    assert_ne!(
        weights(&graph, projection),
        weights(&trained_graph, projection)
    );
    // The export is exactly the student graph with trained weights.
    let exported = trainer.executor().export(&student).unwrap();
    let (e, s) = (exported.graph(), student.graph());
    assert_eq!(e.node, s.node);
    assert_eq!(e.output, s.output);
    let names = |g: &whittle_ir::proto::GraphProto| -> Vec<String> {
        g.initializer.iter().map(|t| t.name.clone()).collect()
    };
    assert_eq!(names(e), names(s));
    assert_ne!(
        weights(&exported, "block1.conv.weight"),
        weights(&student, "block1.conv.weight")
    );
    let out = Executor::new(&exported)
        .unwrap()
        .run(HashMap::from([("input".to_string(), probe)]))
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out["logits"].shape(), &[256, 10]);
}

#[test]
fn a_fresh_head_learns_from_the_teacher_alone() {
    let data = common::mnist(1500);
    let (train, test) = split_validation(&data, 0.3, 3).unwrap();
    let cfg = DistillConfig {
        temperature: 1.0,
        alpha: 1.0,
        ..Default::default()
    };
    let mut distiller = Distiller::new(&teacher(), "logits", cfg).unwrap();
    let student = common::lenet5_fresh_head();
    distiller.check_student(&student, &sample(4)).unwrap();
    let config = TrainConfig {
        epochs: 2,
        batch_size: 64,
        lr: 0.01,
        optimizer: OptimizerConfig {
            kind: OptimizerKind::Sgd,
            momentum: 0.9,
            ..Default::default()
        },
        schedule: Schedule::Constant,
        freeze: vec!["conv*".into()],
        restore_best: false,
        ..Default::default()
    };
    let mut trainer = Trainer::new(&student, config)
        .unwrap()
        .with_loss(move |x| distiller.loss(x));
    let before = trainer.evaluate(&test).unwrap();
    let report = trainer.fit(&train, None).unwrap();
    let after = trainer.evaluate(&test).unwrap();
    assert!(before.accuracy < 0.3, "{before:?}");
    assert!(after.accuracy > 0.9, "{after:?} {:?}", report.epochs);
    assert!(
        report.epochs[1].loss < report.epochs[0].loss,
        "{:?}",
        report.epochs
    );
}

#[test]
fn bad_settings_and_shapes_are_refused_naming_both_sides() {
    let t = teacher();
    let bad = |temperature, alpha| {
        let cfg = DistillConfig {
            temperature,
            alpha,
            ..Default::default()
        };
        Distiller::new(&t, "logits", cfg).err().unwrap().to_string()
    };
    assert!(bad(0.0, 0.5).contains("`temperature` 0"));
    assert!(bad(-1.0, 0.5).contains("`temperature` -1"));
    assert!(bad(2.0, 1.5).contains("`alpha` 1.5"));
    let negative_weight = DistillConfig {
        feature_weight: -1.0,
        ..Default::default()
    };
    let err = Distiller::new(&t, "logits", negative_weight).err().unwrap();
    assert!(err.to_string().contains("`feature_weight` -1"), "{err}");
    let features = vec![FeaturePair {
        teacher: "p1".into(),
        student: "h1".into(),
    }];
    let cfg = DistillConfig {
        features: features.clone(),
        ..Default::default()
    };
    let d = Distiller::new(&t, "logits", cfg).unwrap();
    let student = expose_outputs(&common::lenet5_fresh_head(), &features).unwrap();
    let err = d
        .check_student(&student, &sample(2))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("'p1'") && err.contains("'h1'"), "{err}");
    let missing = vec![FeaturePair {
        teacher: "p1".into(),
        student: "nope".into(),
    }];
    assert!(expose_outputs(&student, &missing).is_err());
}

#[test]
fn features_of_different_spatial_size_are_refused_naming_both() {
    let cfg = DistillConfig {
        features: pairs(&[("p1", "block2.maxpool")]),
        ..Default::default()
    };
    let mut d = Distiller::new(&teacher(), "logits", cfg).unwrap();
    let err = d
        .training_graph(&narrow_cnn(), &sample(2))
        .err()
        .unwrap()
        .to_string();
    for needle in [
        "'p1'",
        "'block2.maxpool'",
        "[2, 32, 14, 14]",
        "[2, 16, 7, 7]",
        "spatial",
    ] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
}

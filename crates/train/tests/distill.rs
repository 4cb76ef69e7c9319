//! Knowledge distillation through the trainer: a LeNet5 whose head was re-initialised
//! learns MNIST from the pretrained LeNet5 with the labels ignored (alpha = 1), and the
//! settings and shape checks reject bad input.

mod common;

use whittle_exec::Value;
use whittle_train::distill::{expose_outputs, DistillConfig, Distiller, FeaturePair};
use whittle_train::{split_validation, OptimizerConfig, TrainConfig, Trainer};

fn teacher() -> whittle_ir::Model {
    whittle_ir::Model::load(common::assets().join("models/mnist_lenet5.onnx")).unwrap()
}

fn sample(n: usize) -> Value {
    let data = common::mnist(n);
    Value::try_from(&data.images).unwrap()
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
            momentum: 0.9,
            ..Default::default()
        },
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
    assert!(bad(0.0, 0.5).contains("--temperature 0"));
    assert!(bad(-1.0, 0.5).contains("--temperature -1"));
    assert!(bad(2.0, 1.5).contains("--alpha 1.5"));
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

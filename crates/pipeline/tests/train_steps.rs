//! The training steps on real data: a finetune step keeps LeNet-5's MNIST accuracy and
//! reports its epochs to the observer; a prune step reaches its sparsity and, fine-tuned
//! with its masks, keeps accuracy; a qat step exports an int8 QDQ LeNet-5 that keeps its
//! accuracy; a distill step teaches an MLP from LeNet-5; a factorize step shrinks a layer;
//! step configs round-trip through TOML and YAML, and the training layout's QAT parses.

use std::sync::Mutex;

use std::collections::HashMap;
use whittle_data::Split;
use whittle_ir::Model;

use whittle_exec::{Executor, Value};
use whittle_pipeline::step::distill::{Distill, Feature};
use whittle_pipeline::step::factorize::Factorize;
use whittle_pipeline::step::prune::{CurveKind, PruneMethod, PruneSchedule, PruneStep};
use whittle_pipeline::step::qat::Qat;
use whittle_pipeline::step::quantize::Calibrator;
use whittle_pipeline::step::train::{ScheduleKind, TrainStep, Training};
use whittle_pipeline::step::StepConfig;
use whittle_pipeline::{Ctx, Event, ModelSource, Observer, SilentObserver, Step};
use whittle_train::{OptimizerKind, TrainConfig, Trainer};

fn asset(relative: &str) -> String {
    whittle_data::assets_dir()
        .join(relative)
        .display()
        .to_string()
}

fn mnist() -> String {
    format!("mnist:{}", asset("mnist"))
}

fn lenet() -> Model {
    Model::load(asset("models/mnist_lenet5.onnx")).unwrap()
}

/// Top-1 accuracy on the first 500 MNIST test images.
fn accuracy(model: &Model) -> f64 {
    let test = whittle_data::load(&mnist(), Split::Test, Some(500)).unwrap();
    let trainer = Trainer::new(model, TrainConfig::default()).unwrap();
    trainer.evaluate(&test).unwrap().accuracy
}

/// Top-1 accuracy on the first 500 MNIST test images, run by the executor alone (first
/// maximum wins): for models the trainer does not take, such as QDQ int8 models.
fn executed_accuracy(model: &Model) -> f64 {
    let test = whittle_data::load(&mnist(), Split::Test, Some(500)).unwrap();
    let exec = Executor::new(model).unwrap();
    let input = exec.inputs()[0].name.clone();
    let feed = HashMap::from([(input, Value::try_from(&test.images).unwrap())]);
    let output = exec.output_names()[0].clone();
    let scores: Vec<f32> = exec.run(feed).unwrap()[&output]
        .to_data()
        .unwrap()
        .to_vec()
        .unwrap();
    let classes = scores.len() / test.len();
    let correct = scores
        .chunks(classes)
        .zip(&test.labels)
        .filter(|(row, &label)| whittle_ir::numeric::argmax(row) as i64 == label)
        .count();
    correct as f64 / test.len() as f64
}

/// Fine-tuning settings gentle enough for a trained model.
fn gentle() -> Training {
    Training {
        optimizer: OptimizerKind::Adam,
        lr: 1e-4,
        ..Training::default()
    }
}

/// Keeps every event.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Observer for Recorder {
    fn event(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[test]
fn a_finetune_step_keeps_lenet_accuracy_and_reports_its_epoch() {
    let model = lenet();
    let before = accuracy(&model);
    assert!(before > 0.95, "LeNet-5 before: {before}");
    let step = TrainStep {
        limit: Some(640),
        training: gentle(),
        ..TrainStep::new(mnist())
    };
    let recorder = Recorder::default();
    let (tuned, report) = step.run(&mut Ctx::new(&recorder), model).unwrap();
    let after = accuracy(&tuned);
    assert!(after > 0.95, "LeNet-5 after fine-tuning: {after}");
    assert_eq!(report.step, "train");
    assert_eq!(report.details["epochs"].as_array().unwrap().len(), 1);
    assert_eq!(report.details["steps"], 20);

    // 640 samples in batches of 32: Begin with 20 batches, Progress 1..=20, End.
    let events = recorder.0.into_inner().unwrap();
    let begin = events
        .iter()
        .position(|e| matches!(e, Event::Begin { .. }))
        .expect("a Begin event");
    assert_eq!(
        events[begin],
        Event::Begin {
            task: "epoch 1/1".into(),
            total: Some(20)
        }
    );
    let done: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress { done, .. } => Some(*done),
            _ => None,
        })
        .collect();
    assert_eq!(done, (1..=20).collect::<Vec<_>>());
    let end = events.iter().position(|e| *e == Event::End).expect("End");
    assert!(end > begin);
    assert!(
        matches!(&events[end + 1], Event::Log { message, .. } if message.starts_with("epoch 1/1")),
        "{:?}",
        events[end + 1]
    );
}

#[test]
fn a_prune_step_reaches_its_sparsity_and_keeps_accuracy_when_fine_tuned() {
    let model = lenet();
    let mut ctx = Ctx::new(&SilentObserver);
    let oneshot = PruneStep {
        sparsity: Some(0.6),
        ..PruneStep::new(PruneMethod::Magnitude)
    };
    let (pruned, report) = oneshot.run(&mut ctx, model.clone()).unwrap();
    let sparsity = report.details["sparsity"].as_f64().unwrap();
    assert!((sparsity - 0.6).abs() < 0.005, "sparsity {sparsity}");
    assert_eq!(report.details["finetune_epochs"], 0);
    let untuned = accuracy(&pruned);

    let tuned_step = PruneStep {
        data: Some(mnist()),
        limit: Some(1280),
        finetune: Some(Training {
            lr: 1e-3,
            ..gentle()
        }),
        ..oneshot
    };
    let (tuned, report) = tuned_step.run(&mut ctx, model).unwrap();
    let sparsity = report.details["sparsity"].as_f64().unwrap();
    assert!(
        (sparsity - 0.6).abs() < 0.005,
        "sparsity after fine-tuning {sparsity}"
    );
    let after = accuracy(&tuned);
    assert!(
        after > 0.9,
        "pruned and fine-tuned: {after} (untuned {untuned})"
    );
    assert!(after > untuned, "{after} vs untuned {untuned}");
}

#[test]
fn step_configs_round_trip_through_toml_and_yaml() {
    let train = TrainStep {
        limit: Some(1000),
        val_fraction: Some(0.1),
        checkpoint_dir: Some("ckpt".into()),
        training: Training {
            epochs: 3,
            lr_schedule: whittle_pipeline::step::train::LrSchedule {
                kind: ScheduleKind::OneCycle,
                pct_start: Some(0.25),
                ..Default::default()
            },
            ..gentle()
        },
        ..TrainStep::new(mnist())
    };
    let text = toml::to_string(&train).unwrap();
    assert_eq!(toml::from_str::<TrainStep>(&text).unwrap(), train, "{text}");
    let text = serde_norway::to_string(&train).unwrap();
    assert_eq!(
        serde_norway::from_str::<TrainStep>(&text).unwrap(),
        train,
        "{text}"
    );

    // Gradual pruning during training on a polynomial curve, every 10 steps.
    let prune = PruneStep {
        sparsity: Some(0.5),
        schedule: PruneSchedule::Gradual {
            steps: None,
            curve: Some(CurveKind::Polynomial),
            initial_sparsity: None,
            start_step: Some(0),
            end_step: Some(100),
            frequency: Some(10),
        },
        data: Some(mnist()),
        finetune: Some(Training::default()),
        ..PruneStep::new(PruneMethod::Magnitude)
    };
    let text = toml::to_string(&prune).unwrap();
    assert_eq!(toml::from_str::<PruneStep>(&text).unwrap(), prune, "{text}");
    let text = serde_norway::to_string(&prune).unwrap();
    assert_eq!(
        serde_norway::from_str::<PruneStep>(&text).unwrap(),
        prune,
        "{text}"
    );

    // The YAML training layout's spelling of a schedule; unknown keys are refused.
    let yaml = "data: mnist:x\ntraining:\n  lr_schedule: {type: warmup_cosine, warmup_epochs: 5, min_lr: 1.0e-6}\n";
    let parsed: TrainStep = serde_norway::from_str(yaml).unwrap();
    assert_eq!(parsed.training.lr_schedule.kind, ScheduleKind::WarmupCosine);
    assert_eq!(parsed.training.lr_schedule.warmup_epochs, Some(5.0));
    let err = serde_norway::from_str::<TrainStep>("data: mnist:x\nepochs: 2\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `epochs`"), "{err}");
    let err = toml::from_str::<PruneStep>(
        "method = \"magnitude\"\nschedule = { kind = \"gradual\", every = 3 }\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("every"), "{err}");
}

#[test]
fn a_qat_step_exports_an_int8_qdq_lenet_that_keeps_its_accuracy() {
    let model = lenet();
    let step = Qat {
        limit: Some(640),
        calib_samples: 128,
        eval_data: Some(mnist()),
        eval_samples: Some(500),
        training: gentle(),
        ..Qat::new(mnist())
    };
    let (qdq, report) = step.run(&mut Ctx::new(&SilentObserver), model).unwrap();
    let ops = |op: &str| qdq.count_op(op);
    assert!(ops("QuantizeLinear") > 0 && ops("DequantizeLinear") > 0);
    // LeNet-5's two Conv and two Gemm layers are quantized.
    assert_eq!(report.details["quantized_nodes"], 4, "{}", report.details);
    let int8 = qdq
        .graph()
        .initializer
        .iter()
        .filter(|t| t.data_type == whittle_ir::DataType::Int8 as i32)
        .count();
    assert!(int8 >= 4, "{int8} int8 initializers");
    let measured = executed_accuracy(&qdq);
    assert!(measured > 0.95, "QAT int8 LeNet-5: {measured}");
    let reported = report.details["accuracy_qat"].as_f64().unwrap();
    assert!(
        (reported - measured).abs() < 1e-9,
        "{reported} vs {measured}"
    );
    let ptq = report.details["accuracy_ptq"].as_f64().unwrap();
    assert!(measured >= ptq - 0.01, "QAT {measured} vs PTQ {ptq}");
    assert_eq!(report.details["epochs"][0]["phase"], "qat");
    assert_eq!(report.details["test_samples"], 500);

    // No epoch would train quantized.
    let err = Qat {
        start_epoch: 1,
        ..Qat::new(mnist())
    }
    .run(&mut Ctx::new(&SilentObserver), lenet())
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("`start_epoch` 1 must be below `epochs` 1"),
        "{err}"
    );
}

#[test]
fn a_distill_step_teaches_an_mlp_from_lenet() {
    let student = whittle_zoo::build("zoo:mlp:hidden=32").unwrap();
    let before = executed_accuracy(&student);
    let teacher = ModelSource::File(asset("models/mnist_lenet5.onnx").into());
    let step = Distill {
        limit: Some(3000),
        alpha: 0.7,
        eval_data: Some(mnist()),
        eval_samples: Some(500),
        training: Training {
            epochs: 2,
            ..Training::default()
        },
        ..Distill::new(teacher, mnist())
    };
    let recorder = Recorder::default();
    let (trained, report) = step.run(&mut Ctx::new(&recorder), student).unwrap();
    let after = executed_accuracy(&trained);
    assert!(before < 0.3, "untrained student: {before}");
    assert!(after > 0.75, "distilled student: {after}");
    let d = &report.details;
    assert_eq!(d["student_accuracy"].as_f64().unwrap(), after);
    assert_eq!(d["student_accuracy_before"].as_f64().unwrap(), before);
    assert!(d["teacher_accuracy"].as_f64().unwrap() > 0.97, "{d}");
    assert_eq!(d["epochs"].as_array().unwrap().len(), 2);
    // The trainer's epochs reached the observer.
    let begins = recorder
        .0
        .into_inner()
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e, Event::Begin { task, .. } if task.starts_with("epoch")))
        .count();
    assert_eq!(begins, 2);

    // A student whose scores do not match the teacher's is refused, naming both shapes.
    let narrow = whittle_zoo::build("zoo:mlp:hidden=8,classes=5").unwrap();
    let err = Distill {
        limit: Some(64),
        ..step
    }
    .run(&mut Ctx::new(&SilentObserver), narrow)
    .unwrap_err()
    .to_string();
    assert!(err.contains("[4, 10]") && err.contains("[4, 5]"), "{err}");
}

#[test]
fn a_factorize_step_shrinks_the_chosen_layer_and_keeps_accuracy() {
    let step = Factorize {
        rank_ratio: Some(0.25),
        layers: Some(vec!["g1".into()]),
        eval_data: Some(mnist()),
        eval_samples: Some(500),
        ..Factorize::default()
    };
    let (factorized, report) = step.run(&mut Ctx::new(&SilentObserver), lenet()).unwrap();
    let d = &report.details;
    assert_eq!(d["layers"][0]["rank"], 50);
    let saved = 3136 * 200 - 50 * (3136 + 200);
    let (before, after) = (
        d["params_before"].as_u64().unwrap(),
        d["params_after"].as_u64().unwrap(),
    );
    assert_eq!(before - after, saved);
    assert_eq!(whittle_ir::cost::parameter_count(factorized.graph()), after);
    let accuracy = executed_accuracy(&factorized);
    assert_eq!(d["accuracy_after"].as_f64().unwrap(), accuracy);
    assert!(
        accuracy > d["accuracy_before"].as_f64().unwrap() - 0.01,
        "{d}"
    );
    let err = Factorize::default()
        .run(&mut Ctx::new(&SilentObserver), lenet())
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("exactly one of `rank_ratio` and `energy`"));
}

#[test]
fn qat_distill_and_factorize_configs_round_trip_and_the_layouts_qat_parses() {
    fn round_trip<T>(value: &T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let text = toml::to_string(value).unwrap();
        assert_eq!(&toml::from_str::<T>(&text).unwrap(), value, "{text}");
        let text = serde_norway::to_string(value).unwrap();
        assert_eq!(
            &serde_norway::from_str::<T>(&text).unwrap(),
            value,
            "{text}"
        );
    }
    let qat = Qat {
        limit: Some(2000),
        start_epoch: 1,
        freeze_bn_epoch: Some(2),
        lsq: true,
        calibration: Calibrator::Percentile,
        percentile: 99.9,
        per_channel: true,
        eval_data: Some(mnist()),
        training: Training {
            epochs: 3,
            ..gentle()
        },
        ..Qat::new(mnist())
    };
    round_trip(&qat);
    let distill = Distill {
        temperature: 2.0,
        features: vec![Feature {
            teacher: "p1".into(),
            student: "block2.maxpool".into(),
        }],
        feature_weight: 0.5,
        ..Distill::new(ModelSource::parse("zoo:cnn"), mnist())
    };
    round_trip(&distill);
    round_trip(&Factorize {
        energy: Some(0.9),
        layers: Some(vec!["g1".into(), "c2".into()]),
        ..Factorize::default()
    });

    // Defaults are whittle qat's and whittle distill's; unknown keys are refused.
    let parsed: Qat = toml::from_str("data = \"mnist:x\"\n").unwrap();
    assert_eq!(parsed, Qat::new("mnist:x"));
    assert_eq!((parsed.percentile, parsed.calib_samples), (99.99, 512));
    let parsed: Distill = serde_norway::from_str("teacher: t.onnx\ndata: mnist:x\n").unwrap();
    assert_eq!((parsed.temperature, parsed.alpha), (4.0, 0.9));
    assert_eq!(parsed.teacher, ModelSource::File("t.onnx".into()));
    let err = toml::from_str::<Qat>("data = \"mnist:x\"\nepochs = 2\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `epochs`"), "{err}");

    // The training layout's `quantization: {type: during_training}` is a qat step.
    let layout = serde_json::json!({
        "model": "zoo:lenet",
        "data": "mnist:x",
        "training": {
            "epochs": 2,
            "lr": 0.001,
            "quantization": {"enabled": true, "type": "during_training", "format": "int8"}
        }
    });
    let recipe = whittle_pipeline::recipe::training::translate(layout).unwrap();
    let step: StepConfig = serde_json::from_value(recipe["steps"][0].clone()).unwrap();
    let StepConfig::Qat(qat) = step else {
        panic!("not a qat step: {step:?}");
    };
    assert_eq!(qat.data, "mnist:x");
    assert_eq!((qat.training.epochs, qat.training.lr), (2, 0.001));
    let step: StepConfig =
        toml::from_str("step = \"distill\"\nteacher = \"zoo:cnn\"\ndata = \"mnist:x\"\n").unwrap();
    assert_eq!(step.step().name(), "distill");
    let step: StepConfig = toml::from_str("step = \"factorize\"\nenergy = 0.9\n").unwrap();
    assert_eq!(step.step().name(), "factorize");
}

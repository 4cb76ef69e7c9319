//! The training steps on real data: a finetune step keeps LeNet-5's MNIST accuracy and
//! reports its epochs to the observer; a prune step reaches its sparsity and, fine-tuned
//! with its masks, keeps accuracy; step configs round-trip through TOML and YAML.

use std::sync::Mutex;

use whittle_data::Split;
use whittle_ir::Model;
use whittle_pipeline::step::prune::{CurveKind, PruneMethod, PruneSchedule, PruneStep};
use whittle_pipeline::step::train::{ScheduleKind, TrainStep, Training};
use whittle_pipeline::{Ctx, Event, Observer, SilentObserver, Step};
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

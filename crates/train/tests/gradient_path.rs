//! The trainer says which backward computed its gradients: in the first event's settings
//! and in its report. zoo:cnn takes the graph-level backward; a graph with an operator that
//! has no gradient rule falls back to candle's tape and names that node.

mod common;

use std::sync::{Arc, Mutex};

use whittle_ir::Model;
use whittle_train::step::GradientPath;
use whittle_train::{Progress, TrainConfig, TrainEvent, TrainReport, Trainer};

/// One short epoch of `model` on MNIST: the report and the settings of the first event.
fn fit(model: &Model) -> (TrainReport, String) {
    let settings = Arc::new(Mutex::new(String::new()));
    let sink = settings.clone();
    let config = TrainConfig {
        epochs: 1,
        batch_size: 32,
        progress: Progress::new(move |e| {
            if let TrainEvent::Started { settings, .. } = e {
                *sink.lock().unwrap() = settings.clone();
            }
        }),
        ..Default::default()
    };
    let mut trainer = Trainer::new(model, config).unwrap();
    let report = trainer.fit(&common::mnist(64), None).unwrap();
    let settings = settings.lock().unwrap().clone();
    (report, settings)
}

#[test]
fn the_trainer_names_the_gradient_path_it_took() {
    let cnn = whittle_zoo::build("cnn:channels=8-16-32").unwrap();
    let (report, settings) = fit(&cnn);
    assert_eq!(report.gradient_path, GradientPath::Graph);
    assert!(
        settings.ends_with("\ngradients: graph backward"),
        "{settings}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["gradient_path"], serde_json::json!({"kind": "graph"}));

    // A Sin on the logits has no gradient rule: the tape runs, and the path says why.
    let mut sin = cnn.clone();
    let g = sin.graph_mut();
    let logits = g.output[0].name.clone();
    for n in g.node.iter_mut() {
        for o in n.output.iter_mut().filter(|o| **o == logits) {
            *o = "before_sin".into();
        }
    }
    let mut node = common::node("Sin", &["before_sin"], &[&logits], vec![]);
    node.name = "the_sin".into();
    g.node.push(node);
    let (report, settings) = fit(&sin);
    let GradientPath::Tape(why) = &report.gradient_path else {
        panic!("{:?}", report.gradient_path);
    };
    assert!(
        why.contains("the_sin") && why.contains("Sin (no gradient rule)"),
        "{why}"
    );
    assert!(
        settings.ends_with(&format!("\ngradients: tape ({why})")),
        "{settings}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["gradient_path"]["kind"], "tape");
    assert_eq!(json["gradient_path"]["why"], why.as_str());
}

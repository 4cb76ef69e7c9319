//! Quantization-aware training on the graph-level backward: QAT training graphs (fake
//! quantization on every weight, per channel, and on every watched activation with a
//! learned LSQ step size) take the graph path in the trainer. (Their gradients are not
//! compared with the tape's: quantized activations are often exactly 0 before a Relu, where
//! candle's tape passes the gradient and the graph's rule, as PyTorch, does not. The
//! FakeQuantize rule itself equals the tape in exec's `backward` tests.)

// Only its input maker is used here.
#[allow(dead_code)]
#[path = "../../train/tests/common/graph_vs_tape.rs"]
mod graph_vs_tape;

use std::collections::HashMap;

use graph_vs_tape::input;
use whittle_exec::{Executor, Value};
use whittle_passes::qat::{insert::ScaleMode, QatState, LOG_SCALE_SUFFIX};
use whittle_passes::quantize::QuantConfig;
use whittle_train::loss::cross_entropy;
use whittle_train::params::trainable_initializers;
use whittle_train::step::{forward_backward, GradientPath, LossFn, LossInput, PassOptions};

/// Images per batch.
const BATCH: usize = 8;

/// The QAT training graph of zoo model `spec` (per-channel weights, learned step sizes),
/// calibrated on two random batches, with its trainable parameters set; and a batch maker.
fn qat_executor(
    spec: &str,
) -> (
    Executor,
    Vec<String>,
    impl Fn(u64) -> HashMap<String, Value>,
) {
    let model = whittle_zoo::build(spec).unwrap();
    let name = model.graph().input[0].name.clone();
    let batch = move |seed| HashMap::from([(name.clone(), input(&[BATCH, 1, 28, 28], seed))]);
    let cfg = QuantConfig {
        per_channel: true,
        ..QuantConfig::default()
    };
    let state = QatState::calibrate(&model, &cfg, (0..2).map(&batch)).unwrap();
    let training =
        whittle_passes::qat::insert::training_graph(&state, &cfg, ScaleMode::Learned).unwrap();
    let trainable = trainable_initializers(training.graph());
    let steps = trainable
        .iter()
        .filter(|n| n.ends_with(LOG_SCALE_SUFFIX))
        .count();
    assert!(steps >= 3, "{steps} learned step sizes in {trainable:?}");
    let mut exec = Executor::new(&training).unwrap();
    exec.set_trainable(&trainable).unwrap();
    (exec, trainable, batch)
}

/// The trainer's pass on the QAT graphs of zoo:cnn and zoo:resnet takes the graph path (no
/// node falls back to the tape) and reaches every parameter.
#[test]
fn qat_graphs_of_conv_nets_train_on_the_graph_backward() {
    for spec in ["cnn:channels=8-16-32", "resnet:widths=8-16-32"] {
        let (exec, trainable, batch) = qat_executor(spec);
        let mut loss: LossFn = Box::new(|x: &LossInput| {
            let scores: &Value = x.outputs.values().next().unwrap();
            cross_entropy(scores.tensor(), x.labels, 0.0)
        });
        let labels: Vec<i64> = (0..BATCH as i64).collect();
        let opts = PassOptions {
            seed: 1,
            segments: None,
            running_stats: None,
        };
        let pass = forward_backward(&exec, batch(8), &labels, &mut loss, opts).unwrap();
        assert_eq!(pass.path, GradientPath::Graph, "{spec}");
        assert_eq!(pass.grads.len(), trainable.len(), "{spec}");
    }
}

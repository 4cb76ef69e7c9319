//! Training mode: gradients of trainable initializers through candle's autograd.
//! Re-initialises LeNet5's classifier and trains it on real MNIST batches with SGD.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor, D};
use whittle_exec::{Executor, RunOptions, Value};
use whittle_ir::Model;

/// Mean cross-entropy of `logits` [N, C] against integer `labels`.
fn cross_entropy(logits: &Tensor, labels: &[i64]) -> Tensor {
    let max = logits.max_keepdim(D::Minus1).unwrap();
    let shifted = logits.broadcast_sub(&max).unwrap();
    let lse = shifted
        .exp()
        .unwrap()
        .sum_keepdim(D::Minus1)
        .unwrap()
        .log()
        .unwrap();
    let logp = shifted.broadcast_sub(&lse).unwrap();
    let idx: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
    let idx = Tensor::from_vec(idx, (labels.len(), 1), &Device::Cpu).unwrap();
    logp.gather(&idx, 1)
        .unwrap()
        .mean_all()
        .unwrap()
        .neg()
        .unwrap()
}

fn forward_loss(exec: &Executor, images: &Value, labels: &[i64]) -> Tensor {
    let out = exec
        .run_with(
            HashMap::from([("input".to_string(), images.clone())]),
            RunOptions {
                training: true,
                ..Default::default()
            },
        )
        .unwrap();
    cross_entropy(out["logits"].tensor(), labels)
}

#[test]
fn training_the_last_gemm_of_lenet5_lowers_the_loss() {
    let mut model = Model::load(common::model_path("mnist_lenet5.onnx")).unwrap();
    // Start the classifier from scratch: zero weights and bias.
    for init in &mut model.graph_mut().initializer {
        if init.name.starts_with("linear2.") {
            init.raw_data = vec![0; init.raw_data.len()].into();
            init.float_data.iter_mut().for_each(|v| *v = 0.0);
        }
    }
    let mut exec = Executor::new(&model).unwrap();
    let trainable = vec!["linear2.weight".to_string(), "linear2.bias".to_string()];
    exec.set_trainable(&trainable).unwrap();

    let mnist = common::assets().join("mnist");
    let data = whittle_data::spec::load(
        &format!("mnist:{}", mnist.display()),
        whittle_data::Split::Train,
        Some(640),
    )
    .unwrap();
    let images = Value::try_from(&data.images).unwrap();
    let batch = 64;
    let lr = 0.01;
    let mut losses = Vec::new();
    for step in 0..10 {
        let x = Value::f32(images.tensor().narrow(0, step * batch, batch).unwrap()).unwrap();
        let y = &data.labels[step * batch..(step + 1) * batch];
        let loss = forward_loss(&exec, &x, y);
        losses.push(loss.to_scalar::<f32>().unwrap());
        let grads = exec.gradients(&loss).unwrap();
        for name in &trainable {
            let var = &exec.params()[name];
            let updated = (var.as_tensor() - (&grads[name] * lr).unwrap()).unwrap();
            var.set(&updated).unwrap();
        }
    }
    // Zero weights give uniform logits: the first loss is ln(10).
    assert!((losses[0] - 10f32.ln()).abs() < 1e-4, "{losses:?}");
    assert!(losses[9] < 0.5 * losses[0], "loss did not fall: {losses:?}");
    assert!(
        losses.windows(2).filter(|w| w[1] < w[0]).count() >= 7,
        "{losses:?}"
    );
}

#[test]
fn gradients_match_finite_differences() {
    let model = Model::load(common::model_path("mnist_lenet5.onnx")).unwrap();
    let mut exec = Executor::new(&model).unwrap();
    exec.set_trainable(&["linear2.bias".to_string()]).unwrap();
    let mnist = common::assets().join("mnist");
    let data = whittle_data::spec::load(
        &format!("mnist:{}", mnist.display()),
        whittle_data::Split::Test,
        Some(8),
    )
    .unwrap();
    let x = Value::try_from(&data.images).unwrap();
    let loss = forward_loss(&exec, &x, &data.labels);
    let grad = exec.gradients(&loss).unwrap()["linear2.bias"]
        .to_vec1::<f32>()
        .unwrap();
    let bias = exec.params()["linear2.bias"].as_tensor().copy().unwrap();
    let eps = 1e-2f32;
    for k in [0usize, 3, 7] {
        let bumped = |sign: f32| {
            let mut v = bias.to_vec1::<f32>().unwrap();
            v[k] += sign * eps;
            exec.params()["linear2.bias"]
                .set(&Tensor::new(v, &Device::Cpu).unwrap())
                .unwrap();
            forward_loss(&exec, &x, &data.labels)
                .to_scalar::<f32>()
                .unwrap()
        };
        let numeric = (bumped(1.0) - bumped(-1.0)) / (2.0 * eps);
        exec.params()["linear2.bias"].set(&bias).unwrap();
        assert!(
            (numeric - grad[k]).abs() < 1e-3,
            "bias[{k}]: autograd {} vs finite difference {numeric}",
            grad[k]
        );
    }
}

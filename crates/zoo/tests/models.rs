//! Every zoo model against ONNX's checker, ONNX Runtime and whittle's executor, plus
//! parameter counts from hand-derived formulas, MACs, gradients, determinism and option
//! errors. Python helpers (onnx, onnxruntime) run as subprocesses; `WHITTLE_PYTHON` picks
//! the interpreter.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use whittle_exec::{Executor, RunOptions, Value};
use whittle_ir::numeric::max_abs_diff;
use whittle_ir::{shape, GraphEdit, Model, TensorData};
use whittle_testkit::scratch;
use whittle_zoo::{build, names};

fn python() -> String {
    std::env::var("WHITTLE_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn run_python(args: &[String]) {
    let out = Command::new(python())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python()));
    assert!(
        out.status.success(),
        "python {args:?} failed (pip install -r scripts/requirements.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `onnx.checker.check_model(path, full_check=True)`.
fn onnx_check(path: &Path) {
    run_python(&[
        "-c".into(),
        "import sys, onnx; onnx.checker.check_model(sys.argv[1], full_check=True)".into(),
        path.display().to_string(),
    ]);
}

/// The model's only output in ONNX Runtime (scripts/ort_reference.py) for `input`.
fn ort_logits(path: &Path, input: &TensorData, dir: &Path) -> TensorData {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ort_reference.py");
    let input_path = dir.join("input.npy");
    whittle_data::npy::write_npy(&input_path, input).unwrap();
    let out = dir.join("ort");
    run_python(&[
        script.display().to_string(),
        path.display().to_string(),
        out.display().to_string(),
        format!("input={}", input_path.display()),
    ]);
    whittle_data::npy::read_npy(&out.join("0.npy")).unwrap()
}

/// Values uniform in [-1, 1).
fn random(dims: &[usize], seed: u64) -> TensorData {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    TensorData::from_slice(dims.to_vec(), &values).unwrap()
}

fn feed(input: &TensorData) -> HashMap<String, Value> {
    let value = Value::from_data(input, &Device::Cpu).unwrap();
    HashMap::from([("input".to_string(), value)])
}

fn exec_logits(model: &Model, input: &TensorData) -> TensorData {
    let out = Executor::new(model).unwrap().run(feed(input)).unwrap();
    out["logits"].to_data().unwrap()
}

/// Saves `spec`'s model, checks it with ONNX, and compares whittle's logits with ORT's
/// for each batch size.
fn check_against_ort(spec: &str, chw: [usize; 3], classes: usize, batches: &[usize]) {
    let model = build(spec).unwrap();
    whittle_ir::validate(&model).unwrap();
    let dir = scratch(&spec.replace([':', ',', '=', '.'], "_"));
    let path = dir.join("model.onnx");
    model.save(&path, &whittle_ir::ExternalData::Never).unwrap();
    onnx_check(&path);
    for &n in batches {
        let input = random(&[n, chw[0], chw[1], chw[2]], n as u64);
        let want = ort_logits(&path, &input, &dir);
        let got = exec_logits(&model, &input);
        assert_eq!(want.dims(), [n, classes], "{spec}: ORT logits shape");
        assert_eq!(got.dims(), want.dims(), "{spec}: whittle logits shape");
        let (w, g) = (want.to_vec::<f32>().unwrap(), got.to_vec::<f32>().unwrap());
        let worst = max_abs_diff(w.iter().copied(), g.iter().copied());
        assert!(
            worst <= 1e-4,
            "{spec} batch {n}: max |whittle - ORT| = {worst}"
        );
        assert!(
            n == 0 || w.iter().any(|v| v.abs() > 1e-3),
            "{spec}: logits are all ~0"
        );
    }
}

/// Batch 0 included: an empty batch gives `[0, classes]` logits in both.
#[test]
fn every_default_model_passes_the_checker_and_matches_ort() {
    for name in names() {
        check_against_ort(name, [1, 28, 28], 10, &[0, 2, 3]);
    }
}

#[test]
fn options_change_the_input_classes_and_sizes() {
    let specs = [
        ("mlp:hidden=64-32-16,input=3x16x16,classes=5", [3, 16, 16]),
        ("lenet:input=3x32x32,classes=5", [3, 32, 32]),
        (
            "zoo:cnn:channels=8-16,input=3x32x32,classes=5,seed=4",
            [3, 32, 32],
        ),
        (
            "resnet:widths=8-16,blocks=2,input=3x32x32,classes=5",
            [3, 32, 32],
        ),
        (
            "mobilenetv3-small:width=0.5,dropout=0,input=3x64x48,classes=5",
            [3, 64, 48],
        ),
        (
            "vit-tiny:patch=8,dim=32,depth=2,heads=2,mlp=64,input=3x32x32,classes=5",
            [3, 32, 32],
        ),
    ];
    for (spec, chw) in specs {
        check_against_ort(spec, chw, 5, &[1]);
    }
}

/// Parameters that are not BatchNormalization running statistics.
fn trainable(model: &Model) -> Vec<String> {
    let stats: HashSet<&String> = model
        .graph()
        .node
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
        .flat_map(|n| &n.input[3..5])
        .collect();
    let g = model.graph();
    g.initializer
        .iter()
        .map(|t| t.name.clone())
        .filter(|n| !stats.contains(n))
        .collect()
}

fn trainable_count(model: &Model) -> u64 {
    let names: HashSet<String> = trainable(model).into_iter().collect();
    let g = model.graph();
    g.initializer
        .iter()
        .filter(|t| names.contains(&t.name))
        .map(|t| t.dims.iter().product::<i64>() as u64)
        .sum()
}

/// Weights and biases of a linear layer.
fn fc(i: u64, o: u64) -> u64 {
    i * o + o
}

/// A bias-free k×k convolution followed by BatchNormalization (4 values per channel).
fn conv_bn(i: u64, o: u64, k: u64) -> u64 {
    i * o * k * k + 4 * o
}

#[test]
fn parameter_counts_match_the_formulas() {
    let count = |spec: &str| whittle_ir::cost::parameter_count(build(spec).unwrap().graph());
    let mlp = fc(784, 256) + fc(256, 128) + fc(128, 10);
    assert_eq!((count("mlp"), mlp), (235_146, 235_146));
    assert_eq!(
        count("mlp:hidden=100,input=3x8x8,classes=4"),
        fc(192, 100) + fc(100, 4)
    );
    let lenet = (6 * 25 + 6) + (16 * 6 * 25 + 16) + fc(400, 120) + fc(120, 84) + fc(84, 10);
    assert_eq!((count("lenet"), lenet), (61_706, 61_706));
    // 32x32 input: conv2 sees 16x16 -> 12x12 -> pooled 6x6.
    let lenet32 = (6 * 75 + 6) + (16 * 6 * 25 + 16) + fc(16 * 36, 120) + fc(120, 84) + fc(84, 2);
    assert_eq!(count("lenet:input=3x32x32,classes=2"), lenet32);
    let cnn = conv_bn(1, 32, 3) + conv_bn(32, 64, 3) + conv_bn(64, 128, 3) + fc(128, 10);
    assert_eq!((count("cnn"), cnn), (94_634, 94_634));
    assert_eq!(
        count("cnn:channels=16,classes=3"),
        conv_bn(1, 16, 3) + fc(16, 3)
    );
    let stage = |i: u64, o: u64| conv_bn(i, o, 3) + conv_bn(o, o, 3) + conv_bn(i, o, 1);
    let resnet =
        conv_bn(1, 16, 3) + 2 * conv_bn(16, 16, 3) + stage(16, 32) + stage(32, 64) + fc(64, 10);
    assert_eq!((count("resnet"), resnet), (78_426, 78_426));
    // Pre-norm encoder block of width d, MLP width m: 2 LayerNorms, q/k/v/proj, the MLP.
    let block = |d: u64, m: u64| 2 * 2 * d + 4 * fc(d, d) + fc(d, m) + fc(m, d);
    // Plus one float Constant per block (whittle_ir::cost counts Constant tensors too).
    let vit = (16 * 128 + 128) + 49 * 128 + 5 * (block(128, 304) + 1) + 2 * 128 + fc(128, 10);
    assert_eq!((count("vit-tiny"), vit), (734_079, 734_079));
}

#[test]
fn mobilenet_matches_torchvision_parameter_count() {
    // torchvision's mobilenet_v3_small has 2,542,856 parameters (3 input channels, 1000
    // classes); with 1 input channel the stem loses 16*2*9 weights, and the last layer
    // shrinks from 1024x1000+1000 to 1024x10+10.
    let model = build("mobilenetv3-small").unwrap();
    assert_eq!(trainable_count(&model), 2_542_856 - 16 * 2 * 9 - 990 * 1025);
    let ops: HashSet<&str> = model.op_types().into_iter().collect();
    for op in ["HardSwish", "HardSigmoid", "Dropout", "Mul", "Add"] {
        assert!(ops.contains(op), "mobilenetv3-small has no {op}");
    }
    let depthwise = model
        .graph()
        .node
        .iter()
        .filter(|n| n.attribute.iter().any(|a| a.name == "group" && a.i > 1))
        .count();
    assert_eq!(depthwise, 11);
}

/// MACs of one sample.
fn macs(model: &Model) -> u64 {
    let fixed = HashMap::from([("input".to_string(), vec![1, 1, 28, 28])]);
    whittle_ir::cost::model_macs(model, &fixed).unwrap()
}

#[test]
fn macs_follow_from_the_layer_sizes() {
    let lenet = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10;
    assert_eq!(macs(&build("lenet").unwrap()), lenet);
    let cnn = 32 * 28 * 28 * 9 + 64 * 14 * 14 * 32 * 9 + 128 * 7 * 7 * 64 * 9 + 128 * 10;
    assert_eq!(macs(&build("cnn").unwrap()), cnn);
    // Per block: q/k/v/proj and the MLP on 49 tokens, then QK^T and AV (4 heads of 32).
    let (t, d, m) = (49u64, 128u64, 304u64);
    let block = t * (4 * d * d + 2 * d * m) + 2 * 4 * t * t * 32;
    let vit = 128 * 49 * 16 + 5 * block + 128 * 10;
    assert_eq!(macs(&build("vit-tiny").unwrap()), vit);
}

#[test]
fn every_parameter_gets_a_gradient_in_training_mode() {
    for name in names() {
        let model = build(name).unwrap();
        let mut exec = Executor::new(&model).unwrap();
        let params = trainable(&model);
        exec.set_trainable(&params).unwrap();
        let opts = RunOptions {
            training: true,
            ..Default::default()
        };
        let out = exec
            .run_with(feed(&random(&[3, 1, 28, 28], 9)), opts)
            .unwrap();
        let logits = out["logits"].tensor();
        // Weigh each logit differently: a plain sum would not depend on every parameter.
        let weights = Value::from_data(&random(logits.dims(), 1), &Device::Cpu).unwrap();
        let loss = logits.mul(weights.tensor()).unwrap().sum_all().unwrap();
        let grads = exec.gradients(&loss).unwrap();
        for p in &params {
            let g = grads[p].abs().unwrap().max_all().unwrap();
            let g = g.to_scalar::<f32>().unwrap();
            assert!(g > 0.0, "{name}: parameter '{p}' has no gradient");
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    for name in names() {
        let a = build(name).unwrap().to_bytes();
        assert_eq!(a, build(name).unwrap().to_bytes(), "{name}");
        let other = build(&format!("{name}:seed=1")).unwrap().to_bytes();
        assert_ne!(a, other, "{name}");
    }
    let model = build("zoo:cnn:seed=3").unwrap();
    assert_eq!(
        model.metadata(whittle_zoo::SPEC_KEY),
        Some("cnn:channels=32-64-128,classes=10,input=1x28x28,seed=3")
    );
}

#[test]
fn graphs_have_the_documented_interface() {
    for name in names() {
        let model = build(name).unwrap();
        let g = model.graph();
        assert_eq!(g.runtime_inputs(), ["input"], "{name}");
        assert_eq!(g.output.len(), 1);
        let types = shape::infer(&model, &HashMap::new()).unwrap();
        let sym = |t: &shape::TensorType| format!("{:?}", t.dims);
        assert_eq!(
            sym(&types["input"]),
            r#"Some([Symbol("N"), Known(1), Known(28), Known(28)])"#
        );
        assert_eq!(
            sym(&types["logits"]),
            r#"Some([Symbol("N"), Known(10)])"#,
            "{name}"
        );
        assert_eq!((model.proto.ir_version, model.opset("")), (8, Some(17)));
        let nodes: HashSet<&str> = g.node.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(nodes.len(), g.node.len(), "{name}: node names are unique");
    }
}

#[test]
fn bad_specs_are_explained() {
    let err = |spec: &str| build(spec).unwrap_err().to_string();
    assert!(err("alexnet").contains("unknown model 'alexnet'"));
    assert!(err("alexnet").contains("vit-tiny"));
    let e = err("cnn:depth=3");
    assert!(
        e.contains("cnn") && e.contains("'depth'") && e.contains("channels"),
        "{e}"
    );
    assert!(err("mlp:hidden=0").contains("'hidden' = '0'"));
    assert!(err("mobilenetv3-small:width=0").contains("'width'"));
    assert!(err("vit-tiny:dim=100,heads=3").contains("3 heads do not divide dim 100"));
    let e = err("lenet:input=1x8x8");
    assert!(e.starts_with("lenet:") && e.contains("does not fit"), "{e}");
}

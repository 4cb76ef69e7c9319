//! The default optimization pipeline on real models and on a Conv-BN CNN: outputs agree
//! before and after within 1e-5 (relative) in whittle's executor and in ONNX Runtime, and
//! the optimized models pass `onnx.checker.check_model(full_check=True)`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use whittle_ir::attr::make;
use whittle_ir::proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use whittle_ir::{ExternalData, Model, TensorData};
use whittle_passes::optimize::verify::{random_inputs, relative_diff, run_model};
use whittle_passes::optimize::{optimize, ModelStats, Pipeline};
use whittle_testkit::scratch;

const TOLERANCE: f64 = 1e-5;

fn model_path(name: &str) -> PathBuf {
    let dir = whittle_data::assets_dir();
    assert!(
        dir.join("models").is_dir(),
        "assets not found in {}: run scripts/fetch-assets.sh",
        dir.display()
    );
    dir.join("models").join(name)
}

fn python() -> String {
    std::env::var("WHITTLE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Outputs of `model` in ONNX Runtime (scripts/ort_reference.py), in graph order.
fn ort_outputs(model: &Path, inputs: &[(String, TensorData)], dir: &Path) -> Vec<TensorData> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ort_reference.py");
    std::fs::create_dir_all(dir).unwrap();
    let mut args = vec![script.display().to_string(), model.display().to_string()];
    args.push(dir.join("ort").display().to_string());
    for (i, (name, data)) in inputs.iter().enumerate() {
        let path = dir.join(format!("input_{i}.npy"));
        whittle_data::npy::write_npy(&path, data).unwrap();
        args.push(format!("{name}={}", path.display()));
    }
    let out = Command::new(python()).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "ONNX Runtime failed on {}:\n{}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let names = std::fs::read_to_string(dir.join("ort/names.txt")).unwrap();
    (0..names.lines().count())
        .map(|i| whittle_data::npy::read_npy(&dir.join(format!("ort/{i}.npy"))).unwrap())
        .collect()
}

fn onnx_check(model: &Path) {
    let code = "import sys, onnx; onnx.checker.check_model(sys.argv[1], full_check=True)";
    let out = Command::new(python())
        .args(["-c", code])
        .arg(model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "onnx.checker rejects {}:\n{}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_close(what: &str, got: &[TensorData], want: &[TensorData]) {
    assert_eq!(got.len(), want.len(), "{what}: output count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = relative_diff(g, w).unwrap();
        println!("{what} output {i} {:?}: relative diff {d:.2e}", w.dims());
        assert!(d <= TOLERANCE, "{what} output {i}: relative diff {d:.3e}");
    }
}

/// Optimizes `original`, checks outputs in whittle and ORT and the ONNX checker; returns
/// the stats before and after.
fn check(name: &str, original: &Model, shapes: &[(&str, &[usize])]) -> (ModelStats, ModelStats) {
    let dir = scratch(&format!("opt-{name}"));
    let shapes: HashMap<String, Vec<usize>> = shapes
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_vec()))
        .collect();
    let (optimized, report) = optimize(original, &Pipeline::default_passes(), &mut |_| {}).unwrap();
    println!(
        "{name}: {:?} -> {:?}; {:?}",
        report.before, report.after, report.passes
    );
    whittle_ir::validate(&optimized).unwrap();
    let inputs = random_inputs(original, &shapes, 7).unwrap();
    let values =
        |outs: Vec<(String, TensorData)>| outs.into_iter().map(|(_, d)| d).collect::<Vec<_>>();
    let before = values(run_model(original, &inputs).unwrap());
    let after = values(run_model(&optimized, &inputs).unwrap());
    assert_close(&format!("{name} whittle"), &after, &before);
    let (a, b) = (dir.join("before.onnx"), dir.join("after.onnx"));
    original.save(&a, &ExternalData::Never).unwrap();
    optimized.save(&b, &ExternalData::Never).unwrap();
    onnx_check(&b);
    let ort_before = ort_outputs(&a, &inputs, &dir.join("ort_before"));
    let ort_after = ort_outputs(&b, &inputs, &dir.join("ort_after"));
    assert_close(&format!("{name} ORT"), &ort_after, &ort_before);
    (report.before, report.after)
}

fn load(name: &str) -> Model {
    Model::load(model_path(name)).unwrap()
}

#[test]
fn lenet5_is_unchanged_in_behaviour() {
    let (before, after) = check("lenet5", &load("mnist_lenet5.onnx"), &[]);
    assert!(after.nodes <= before.nodes);
}

#[test]
fn minilm_keeps_its_outputs() {
    let (before, after) = check("minilm", &load("paraphrase-MiniLM-L3-v2.onnx"), &[]);
    assert!(
        after.nodes < before.nodes,
        "the Constant nodes become initializers"
    );
}

#[test]
fn yolov8n_keeps_its_outputs() {
    check(
        "yolov8n",
        &load("yolov8n-320.onnx"),
        &[("images", &[1, 3, 320, 320])],
    );
}

#[test]
fn ppocr_det_shrinks() {
    let model = load("ppocr/ch_PP-OCRv4_det_infer.onnx");
    let (before, after) = check("ppocr_det", &model, &[("x", &[1, 3, 64, 96])]);
    assert!(after.nodes < before.nodes / 2, "{before:?} -> {after:?}");
}

#[test]
fn ppocr_cls_folds_its_batchnorms() {
    let model = load("ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx");
    let (optimized, _) = optimize(&model, &Pipeline::default_passes(), &mut |_| {}).unwrap();
    assert_eq!(model.count_op("BatchNormalization"), 35);
    assert_eq!(optimized.count_op("BatchNormalization"), 0);
    assert_eq!(optimized.count_op("Constant"), 0);
    check("ppocr_cls", &model, &[("x", &[1, 3, 48, 192])]);
}

#[test]
fn ppocr_rec_keeps_its_outputs() {
    let model = load("ppocr/ch_PP-OCRv4_rec_infer.onnx");
    check("ppocr_rec", &model, &[("x", &[1, 3, 48, 160])]);
}

fn info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A deterministic pseudo-random float initializer in [lo, hi).
fn tensor(name: &str, dims: &[usize], seed: u32, lo: f32, hi: f32) -> TensorProto {
    let n: usize = dims.iter().product();
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            lo + (hi - lo) * (state as f32 / u32::MAX as f32)
        })
        .collect();
    TensorData::from_slice(dims.to_vec(), &v)
        .unwrap()
        .to_proto(name)
}

fn op(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        name: format!("{op}_{output}"),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// Conv-BN-Relu twice, Flatten, Gemm: input [1, 3, 16, 16], 10 outputs.
fn bn_cnn() -> Model {
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut x = "x".to_string();
    for (i, (cin, cout)) in [(3usize, 8usize), (8, 16)].into_iter().enumerate() {
        let p = |s: &str| format!("{s}{i}");
        let mut conv = op("Conv", &["", &p("w")], &p("c"));
        conv.input[0] = x.clone();
        conv.attribute.extend([
            make::ints("pads", &[1, 1, 1, 1]),
            make::ints("strides", &[2, 2]),
        ]);
        nodes.push(conv);
        let bn_inputs = [p("c"), p("scale"), p("bias"), p("mean"), p("var")];
        let bn_refs: Vec<&str> = bn_inputs.iter().map(String::as_str).collect();
        nodes.push(op("BatchNormalization", &bn_refs, &p("n")));
        nodes.push(op("Relu", &[&p("n")], &p("r")));
        let seed = 10 * i as u32;
        inits.extend([
            tensor(&p("w"), &[cout, cin, 3, 3], seed, -0.5, 0.5),
            tensor(&p("scale"), &[cout], seed + 1, 0.5, 1.5),
            tensor(&p("bias"), &[cout], seed + 2, -0.2, 0.2),
            tensor(&p("mean"), &[cout], seed + 3, -0.3, 0.3),
            tensor(&p("var"), &[cout], seed + 4, 0.2, 2.0),
        ]);
        x = p("r");
    }
    nodes.push(op("Flatten", &[&x], "f"));
    let mut gemm = op("Gemm", &["f", "fc_w", "fc_b"], "logits");
    gemm.attribute.push(make::int("transB", 1));
    nodes.push(gemm);
    inits.push(tensor("fc_w", &[10, 16 * 4 * 4], 99, -0.1, 0.1));
    inits.push(tensor("fc_b", &[10], 98, -0.1, 0.1));
    Model::new(ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "whittle-test".into(),
        graph: Some(GraphProto {
            name: "bn_cnn".into(),
            node: nodes,
            initializer: inits,
            input: vec![info("x", &[1, 3, 16, 16])],
            output: vec![info("logits", &[1, 10])],
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[test]
fn bn_cnn_folds_to_conv_relu() {
    let model = bn_cnn();
    let (before, after) = check("bn_cnn", &model, &[]);
    let (optimized, _) = optimize(&model, &Pipeline::default_passes(), &mut |_| {}).unwrap();
    let ops = optimized.op_types();
    assert_eq!(ops, ["Conv", "Relu", "Conv", "Relu", "Flatten", "Gemm"]);
    assert_eq!((before.nodes, after.nodes), (8, 6));
    assert_eq!(
        before.params - after.params,
        3 * 8 + 3 * 16,
        "4 BN params per channel become 1 bias"
    );
}

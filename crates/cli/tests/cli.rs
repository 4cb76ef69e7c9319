//! The `whittle` binary end to end: real model and data, JSON fields, and bad input.

use std::path::PathBuf;
use std::process::{Command, Output};

use whittle_testkit::scratch;

fn assets() -> PathBuf {
    let dir = whittle_data::assets_dir();
    assert!(
        dir.join("models").is_dir(),
        "assets not found in {}: run scripts/fetch-assets.sh",
        dir.display()
    );
    dir
}

fn lenet() -> String {
    assets()
        .join("models/mnist_lenet5.onnx")
        .display()
        .to_string()
}

fn whittle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(args)
        .output()
        .expect("run whittle")
}

/// Asserts failure with exit code 1 and a one-line error containing every `needle`.
fn assert_clean_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "'{n}' not in: {err}");
    }
}

#[test]
fn eval_lenet5_gives_ort_accuracy_on_mnist() {
    let data = format!("mnist:{}", assets().join("mnist").display());
    let out = whittle(&["eval", &lenet(), "--data", &data, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["samples"], 10000);
    // ONNX Runtime classifies 9889 of the 10,000 MNIST test images correctly.
    assert_eq!(json["correct"], 9889);
    assert!((json["accuracy"].as_f64().unwrap() - 0.9889).abs() < 1e-12);
    assert!(json["top5"].as_f64().unwrap() > 0.999);
}

#[test]
fn inspect_reports_structure() {
    let out = whittle(&["inspect", &lenet(), "--json"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["parameters"], 648_226);
    assert_eq!(json["ops"]["Conv"], 2);
    assert_eq!(
        json["inputs"][0]["shape"],
        serde_json::json!(["N", "1", "28", "28"])
    );
    assert_eq!(json["opsets"]["ai.onnx"], 13);
}

#[test]
fn run_writes_every_output_as_npy() {
    let dir = scratch("run");
    let x = dir.join("x.npy");
    let img =
        whittle_ir::TensorData::from_slice(vec![2, 1, 28, 28], &vec![0.5f32; 2 * 784]).unwrap();
    whittle_data::npy::write_npy(&x, &img).unwrap();
    let out_dir = dir.join("out");
    let (model, feed, out_arg) = (
        lenet(),
        format!("input={}", x.display()),
        out_dir.display().to_string(),
    );
    let args = ["run", &model, "--input", &feed, "--out", &out_arg];
    let out = whittle(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logits = whittle_data::npy::read_npy(&out_dir.join("logits.npy")).unwrap();
    assert_eq!(logits.dims(), &[2, 10]);
    // A second run refuses to overwrite the output unless asked.
    assert_clean_error(&whittle(&args), &["logits.npy", "--force"]);
    let forced: Vec<&str> = args.iter().copied().chain(["--force"]).collect();
    assert!(whittle(&forced).status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = scratch("bad");
    let missing = dir.join("missing.onnx").display().to_string();
    assert_clean_error(&whittle(&["inspect", &missing]), &["missing.onnx"]);

    let text = dir.join("notes.onnx");
    std::fs::write(&text, "this is not a model\n").unwrap();
    assert_clean_error(
        &whittle(&["inspect", &text.display().to_string()]),
        &["notes.onnx", "not a valid ONNX model"],
    );

    let bytes = std::fs::read(lenet()).unwrap();
    let cut = dir.join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(
        &whittle(&["inspect", &cut.display().to_string()]),
        &["cut.onnx"],
    );

    // An operator whittle does not implement: the error names the node and the op.
    let mut model = whittle_ir::Model::load(lenet()).unwrap();
    model.graph_mut().node[1].op_type = "ImageDecoder".into();
    model.graph_mut().node[1].name = "relu_one".into();
    let odd = dir.join("odd.onnx");
    model.save(&odd, &whittle_ir::ExternalData::Never).unwrap();
    let x = dir.join("x.npy");
    let img = whittle_ir::TensorData::from_slice(vec![1, 1, 28, 28], &vec![0.5f32; 784]).unwrap();
    whittle_data::npy::write_npy(&x, &img).unwrap();
    let feed = format!("input={}", x.display());
    assert_clean_error(
        &whittle(&["run", &odd.display().to_string(), "--input", &feed]),
        &["relu_one", "ImageDecoder", "not supported"],
    );

    // Wrong shape and wrong dtype of an input.
    let out_dir = dir.display().to_string();
    let run_lenet = || whittle(&["run", &lenet(), "--input", &feed, "--out", &out_dir]);
    let small = whittle_ir::TensorData::from_slice(vec![1, 1, 14, 28], &vec![0.5f32; 392]).unwrap();
    whittle_data::npy::write_npy(&x, &small).unwrap();
    assert_clean_error(&run_lenet(), &["input 'input'", "expected shape"]);
    let ints = whittle_ir::TensorData::from_slice(vec![1, 1, 28, 28], &vec![1i64; 784]).unwrap();
    whittle_data::npy::write_npy(&x, &ints).unwrap();
    assert_clean_error(&run_lenet(), &["input 'input'", "expected float"]);

    // Unknown dataset scheme and bad options.
    assert_clean_error(
        &whittle(&["eval", &lenet(), "--data", "cifar:/x"]),
        &["cifar"],
    );
    let out = whittle(&["eval", &lenet()]);
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit with 2");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_handles_an_empty_batch() {
    let dir = scratch("run-empty");
    let x = dir.join("x.npy");
    let empty = whittle_ir::TensorData::from_slice::<f32>(vec![0, 1, 28, 28], &[]).unwrap();
    whittle_data::npy::write_npy(&x, &empty).unwrap();
    let out_dir = dir.join("out");
    let (feed, out_arg) = (
        format!("input={}", x.display()),
        out_dir.display().to_string(),
    );
    let out = whittle(&["run", &lenet(), "--input", &feed, "--out", &out_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ONNX Runtime gives LeNet5's logits for zero images as shape (0, 10).
    let logits = whittle_data::npy::read_npy(&out_dir.join("logits.npy")).unwrap();
    assert_eq!(logits.dims(), &[0, 10]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A model of one node `op` reading float input `x` and an int64 initializer `s`,
/// importing `opset`, saved in `dir`.
fn one_node_model(dir: &std::path::Path, op: &str, s: &[i64], opset: i64) -> String {
    use whittle_ir::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
    use whittle_ir::shape::TensorType;
    let s = whittle_ir::TensorData::from_slice(vec![s.len()], s).unwrap();
    let model = whittle_ir::Model::new(ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            node: vec![NodeProto {
                name: "grow".into(),
                op_type: op.into(),
                input: vec!["x".into(), "s".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            input: vec![TensorType::known(whittle_ir::DataType::Float, &[1]).to_value_info("x")],
            output: vec![whittle_ir::proto::ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            initializer: vec![s.to_proto("s")],
            ..Default::default()
        }),
        ..Default::default()
    });
    let path = dir.join(format!("{op}-{opset}.onnx"));
    model.save(&path, &whittle_ir::ExternalData::Never).unwrap();
    path.display().to_string()
}

#[test]
fn run_refuses_an_output_beyond_the_memory_limit() {
    let dir = scratch("run-memory");
    // 100 bytes of model asking for 2^26 floats (256 MiB).
    let model = one_node_model(&dir, "Expand", &[1 << 26], 17);
    let x = dir.join("x.npy");
    let one = whittle_ir::TensorData::from_slice(vec![1], &[1.0f32]).unwrap();
    whittle_data::npy::write_npy(&x, &one).unwrap();
    let out_dir = dir.join("out");
    let (feed, out_arg) = (format!("x={}", x.display()), out_dir.display().to_string());
    let out = Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(["run", &model, "--input", &feed, "--out", &out_arg])
        .env(whittle_ir::memory::LIMIT_ENV, (64u64 << 20).to_string())
        .output()
        .unwrap();
    assert_clean_error(
        &out,
        &["node 'grow' (Expand)", "needs 256.0 MiB but only 64.0 MiB"],
    );
    assert!(!out_dir.join("y.npy").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_model_importing_an_unknown_opset_is_refused() {
    let dir = scratch("opset");
    let model = one_node_model(&dir, "Expand", &[4], 99);
    assert_clean_error(
        &whittle(&["inspect", &model]),
        &[
            "imports opset 99 of the default ONNX domain",
            "opsets 1 to 23",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

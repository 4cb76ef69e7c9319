//! `whittle eval` reports per class: per-class figures and a confusion matrix that agree
//! with the totals, on LeNet-5 and the MNIST test set; and clear errors on bad labels.

mod support;

use serde_json::Value;
use support::{assert_clean_error, asset, mnist_spec, python, scratch, whittle, whittle_json};

fn numbers(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|n| n.as_u64().expect("a count"))
        .collect()
}

#[test]
fn per_class_figures_and_confusion_add_up_on_mnist() {
    let lenet = asset("models/mnist_lenet5.onnx");
    let json = whittle_json(&["eval", &lenet, "--data", &mnist_spec(), "--json"]);
    assert_eq!(
        (json["samples"].as_u64(), json["correct"].as_u64()),
        (Some(10000), Some(9889))
    );
    let per_class = json["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 10);
    // MNIST t10k holds 980 zeros and 1135 ones.
    assert_eq!(
        (
            per_class[0]["samples"].as_u64(),
            per_class[1]["samples"].as_u64()
        ),
        (Some(980), Some(1135))
    );
    let field = |name: &str| -> u64 { per_class.iter().map(|c| c[name].as_u64().unwrap()).sum() };
    assert_eq!((field("samples"), field("correct")), (10000, 9889));
    let confusion: Vec<Vec<u64>> = json["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .map(numbers)
        .collect();
    assert_eq!(confusion.len(), 10);
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 10000);
    for (class, (row, figures)) in confusion.iter().zip(per_class).enumerate() {
        assert_eq!(row.len(), 10);
        assert_eq!(figures["class"].as_u64(), Some(class as u64));
        assert_eq!(
            Some(row[class]),
            figures["correct"].as_u64(),
            "diagonal = correct"
        );
        assert_eq!(
            Some(row.iter().sum::<u64>()),
            figures["samples"].as_u64(),
            "rows = samples"
        );
        let accuracy = row[class] as f64 / row.iter().sum::<u64>() as f64;
        assert!((figures["accuracy"].as_f64().unwrap() - accuracy).abs() < 1e-12);
        assert!(accuracy > 0.97, "class {class}: {accuracy}");
    }
    let human = whittle(&["eval", &lenet, "--data", &mnist_spec(), "--limit", "100"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("class   samples   correct  accuracy"),
        "{text}"
    );
    assert_eq!(
        text.lines().count(),
        12,
        "totals, heading and 10 classes: {text}"
    );
}

#[test]
fn labels_beyond_the_models_classes_are_named() {
    let dir = scratch("eval-report");
    let save = |name: &str, t: whittle_ir::TensorData| {
        let path = dir.join(name);
        whittle_data::write_npy(&path, &t).unwrap();
        path.display().to_string()
    };
    let x = save(
        "x.npy",
        whittle_ir::TensorData::from_slice(vec![2, 1, 28, 28], &[0f32; 1568]).unwrap(),
    );
    let y = save(
        "y.npy",
        whittle_ir::TensorData::from_slice(vec![2], &[3i64, 12]).unwrap(),
    );
    let lenet = asset("models/mnist_lenet5.onnx");
    let out = whittle(&["eval", &lenet, "--data", &format!("npy:{x},{y}")]);
    assert_clean_error(
        &out,
        &["label 12 is out of range for a model with 10 classes"],
    );
    let missing = format!("npz:{}", dir.join("none.npz").display());
    let out = whittle(&["eval", &lenet, "--data", &missing]);
    assert_clean_error(&out, &["none.npz", "No such file"]);
}

#[test]
fn scores_that_are_not_finite_are_an_error_not_an_accuracy() {
    // y = Log(x): a sample with a negative score input gets NaN, one with 0 gets -inf.
    let dir = scratch("eval-nan");
    let model = dir.join("log.onnx");
    let code = "import onnx, sys; from onnx import helper as h, TensorProto as T; \
        g = h.make_graph([h.make_node('Log', ['x'], ['scores'])], 'g', \
        [h.make_tensor_value_info('x', T.FLOAT, ['N', 3])], \
        [h.make_tensor_value_info('scores', T.FLOAT, ['N', 3])]); \
        onnx.save(h.make_model(g, opset_imports=[h.make_opsetid('', 17)]), sys.argv[1])";
    python(&dir, ["-c", code, model.to_str().unwrap()]);
    let save = |name: &str, t: whittle_ir::TensorData| {
        let path = dir.join(name);
        whittle_data::write_npy(&path, &t).unwrap();
        path.display().to_string()
    };
    let rows = [
        1.0f32, 2.0, 3.0, 1.0, -1.0, 2.0, 3.0, 2.0, 1.0, 0.0, 1.0, 2.0,
    ];
    let x = save(
        "x.npy",
        whittle_ir::TensorData::from_slice(vec![4, 3], &rows).unwrap(),
    );
    let y = save(
        "y.npy",
        whittle_ir::TensorData::from_slice(vec![4], &[2i64, 2, 0, 2]).unwrap(),
    );
    let data = format!("npy:{x},{y}");
    let out = whittle(&["eval", model.to_str().unwrap(), "--data", &data]);
    assert_clean_error(
        &out,
        &[
            "output 'scores' is not finite",
            "2 of 4 samples",
            "sample 1",
        ],
    );
    // The first row alone is finite and evaluates (Log keeps the order: class 2 wins).
    let out = whittle_json(&[
        "eval",
        model.to_str().unwrap(),
        "--data",
        &data,
        "--limit",
        "1",
        "--json",
    ]);
    assert_eq!(out["accuracy"], 1.0);
}

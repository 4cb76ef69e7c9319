//! `whittle eval` reports per class: per-class figures and a confusion matrix that agree
//! with the totals, on LeNet-5 and the MNIST test set; and clear errors on bad labels.

mod support;

use serde_json::Value;
use support::{assert_clean_error, asset, mnist_spec, scratch, whittle, whittle_json};

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

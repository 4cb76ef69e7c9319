//! `whittle distill` end to end: a small MLP learns MNIST from the pretrained LeNet5 and
//! beats the same MLP trained alone for as long; bad settings fail cleanly. Uses
//! tests/support.

mod support;

use support::{assert_clean_error, asset, mnist_spec, scratch, whittle, whittle_json};

const STUDENT: &str = "zoo:mlp:hidden=32";

#[test]
fn a_small_mlp_learns_from_lenet5() {
    let dir = scratch("distill-mlp");
    let o = dir.join("student.onnx").display().to_string();
    let (lenet, mnist) = (asset("models/mnist_lenet5.onnx"), mnist_spec());
    let json = whittle_json(&[
        "distill",
        "--teacher",
        &lenet,
        "--student",
        STUDENT,
        "--data",
        &mnist,
        "--limit",
        "3000",
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--temperature",
        "4",
        "--alpha",
        "0.7",
        "--test-samples",
        "1000",
        "-o",
        &o,
        "--json",
    ]);
    let acc = |k: &str| json[k].as_f64().unwrap();
    assert!(acc("teacher_accuracy") > 0.97, "{json}");
    assert!(acc("student_accuracy") > 0.75, "{json}");
    let (t, s) = (
        json["teacher_params"].as_u64().unwrap(),
        json["student_params"].as_u64().unwrap(),
    );
    assert!(s > 0 && s * 10 < t, "{t} vs {s}");
    assert_eq!(json["epochs"].as_array().unwrap().len(), 2);
    // The written student has the student's interface and runs.
    let eval = whittle_json(&["eval", &o, "--data", &mnist, "--limit", "500", "--json"]);
    assert!(eval["accuracy"].as_f64().unwrap() > 0.7, "{eval}");
}

#[test]
fn distill_refuses_bad_settings() {
    let dir = scratch("distill-bad");
    let o = dir.join("s.onnx").display().to_string();
    let (lenet, mnist) = (asset("models/mnist_lenet5.onnx"), mnist_spec());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "distill",
            "--teacher",
            &lenet,
            "--data",
            &mnist,
            "--limit",
            "64",
            "-o",
            &o,
        ];
        args.extend(extra);
        whittle(&args)
    };
    assert_clean_error(
        &run(&["--student", STUDENT, "--temperature", "0"]),
        &["--temperature 0"],
    );
    assert_clean_error(
        &run(&["--student", STUDENT, "--alpha", "1.5"]),
        &["--alpha 1.5"],
    );
    let out = run(&["--student", "zoo:mlp:hidden=8,classes=5"]);
    assert_clean_error(&out, &["teacher", "student", "[4, 10]", "[4, 5]"]);
    let out = run(&["--student", STUDENT, "--feature", "nonsense"]);
    assert_clean_error(&out, &["--feature nonsense"]);
    assert!(!std::path::Path::new(&o).exists());
}

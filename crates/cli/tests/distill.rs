//! `whittle distill` end to end: a small MLP learns MNIST from the pretrained LeNet5, a
//! narrower CNN also matches LeNet5's features through projections that are not written;
//! bad settings fail cleanly. Uses tests/support.

mod support;

use support::{assert_clean_error, asset, mnist_spec, scratch, whittle, whittle_json};

const STUDENT: &str = "zoo:mlp:hidden=32";
/// A CNN whose first block is 4x narrower than LeNet5's and whose last is as wide.
const NARROW_CNN: &str = "zoo:cnn:channels=8-16-64";

#[test]
fn features_of_another_width_train_through_projections_left_out_of_the_output() {
    let dir = scratch("distill-hint");
    let o = dir.join("student.onnx").display().to_string();
    let (lenet, mnist) = (asset("models/mnist_lenet5.onnx"), mnist_spec());
    let json = whittle_json(&[
        "distill",
        "--teacher",
        &lenet,
        "--student",
        NARROW_CNN,
        "--feature",
        "p1:block1.maxpool",
        "--feature",
        "p2:block3.relu",
        "--feature-weight",
        "0.5",
        "--data",
        &mnist,
        "--limit",
        "1000",
        "--epochs",
        "1",
        "--test-samples",
        "500",
        "-o",
        &o,
        "--json",
    ]);
    let features = serde_json::json!([
        {"teacher": "p1", "student": "block1.maxpool", "projection": [32, 8]},
        {"teacher": "p2", "student": "block3.relu", "projection": null},
    ]);
    assert_eq!(json["features"], features, "{json}");
    // The written file is the model whose accuracy was reported.
    let eval = whittle_json(&["eval", &o, "--data", &mnist, "--limit", "500", "--json"]);
    assert_eq!(eval["accuracy"], json["student_accuracy"], "{eval}");
    let written = whittle_ir::Model::load(&o).unwrap();
    let student = whittle_zoo::build(NARROW_CNN).unwrap();
    let (w, s) = (written.graph(), student.graph());
    assert_eq!(w.node, s.node);
    assert_eq!(w.output, s.output);
    let names = |g: &whittle_ir::proto::GraphProto| -> Vec<String> {
        g.initializer.iter().map(|t| t.name.clone()).collect()
    };
    assert_eq!(names(w), names(s));
}

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
    // The untrained student guesses; distillation must take it far above that.
    assert!(acc("student_accuracy_before") < 0.3, "{json}");
    assert!(acc("student_accuracy") > 0.75, "{json}");
    assert!(
        acc("student_accuracy") > acc("student_accuracy_before") + 0.5,
        "{json}"
    );
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
    let out = run(&["--student", NARROW_CNN, "--feature", "p1:block2.maxpool"]);
    assert_clean_error(
        &out,
        &[
            "'p1'",
            "'block2.maxpool'",
            "[4, 32, 14, 14]",
            "[4, 16, 7, 7]",
        ],
    );
    let out = run(&["--student", STUDENT, "--feature-weight=-1"]);
    assert_clean_error(&out, &["--feature-weight -1"]);
    // Options and outputs that would only fail after training are refused first.
    let out = run(&["--student", STUDENT, "--test-samples", "0"]);
    assert_clean_error(&out, &["--test-samples must be at least 1"]);
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = run(&[
        "--student",
        STUDENT,
        "--checkpoint-dir",
        file.to_str().unwrap(),
    ]);
    assert_clean_error(&out, &["--checkpoint-dir", "is a file"]);
    let missing = dir.join("missing/s.onnx").display().to_string();
    let out = whittle(&[
        "distill",
        "--teacher",
        &lenet,
        "--student",
        STUDENT,
        "--data",
        &mnist,
        "-o",
        &missing,
    ]);
    assert_clean_error(&out, &["output folder", "does not exist"]);
    assert!(!std::path::Path::new(&o).exists());
}

/// The trainer refuses a label smoothing of 1.5 naming the option: a recipe names it by
/// its key, `whittle distill` by the flag its user typed.
#[test]
fn a_bad_training_value_names_the_recipe_key_in_a_recipe_and_the_flag_on_the_command_line() {
    let dir = scratch("distill-bad-key");
    let (lenet, mnist) = (asset("models/mnist_lenet5.onnx"), mnist_spec());
    let recipe = dir.join("r.toml");
    let text = format!(
        "model = \"{STUDENT}\"\n[[steps]]\nstep = \"distill\"\nteacher = \"{lenet}\"\n\
         data = \"{mnist}\"\nlimit = 64\ntraining = {{ label_smoothing = 1.5 }}\n"
    );
    std::fs::write(&recipe, text).unwrap();
    let o = dir.join("s.onnx").display().to_string();
    let out = whittle(&["pipeline", "--json", recipe.to_str().unwrap(), "-o", &o]);
    assert_clean_error(&out, &["`label_smoothing` 1.5 must be in [0, 1)"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("--"));
    let out = whittle(&[
        "distill",
        "--teacher",
        &lenet,
        "--student",
        STUDENT,
        "--data",
        &mnist,
        "--limit",
        "64",
        "--label-smoothing",
        "1.5",
        "-o",
        &o,
    ]);
    assert_clean_error(&out, &["--label-smoothing 1.5 must be in [0, 1)"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains('`'));
}

//! `whittle pipeline`: recipes run on LeNet5/MNIST, reruns skip finished steps, a run
//! killed with SIGKILL resumes without repeating its finished steps, bad recipes fail
//! cleanly naming the step and key.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{assert_clean_error, asset, json, mnist_spec, scratch, whittle};

/// optimize -> static quantize (calibrated on 128 MNIST images, accuracy on 1000 test
/// images) -> verify against the float model on 64 test images.
fn lenet_recipe(calibration: &str, calib_samples: usize) -> String {
    format!(
        r#"model = "{model}"

[[steps]]
step = "optimize"

[[steps]]
step = "quantize"
calib_data = "{data}"
calib_samples = {calib_samples}
calibration = "{calibration}"
eval_data = "{data}"
eval_samples = 1000
no_latency = true

[[steps]]
step = "verify"
data = "{data}"
samples = 64
"#,
        model = asset("models/mnist_lenet5.onnx"),
        data = mnist_spec(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn pipeline(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["pipeline", "--json"];
    all.extend_from_slice(args);
    json(&whittle(&all))
}

fn journal_lines(work: &Path) -> usize {
    std::fs::read_to_string(work.join("journal.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn cached(run: &serde_json::Value) -> Vec<bool> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["cached"].as_bool().unwrap())
        .collect()
}

#[test]
fn lenet_recipe_runs_and_a_rerun_skips_every_step() {
    let dir = scratch("pipeline-lenet");
    let recipe = write(&dir, "r.toml", &lenet_recipe("minmax", 128));
    let out = dir.join("q.onnx");
    let (r, o) = (recipe.to_str().unwrap(), out.to_str().unwrap());
    let first = pipeline(&[r, "-o", o]);
    let steps = first["steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["optimize", "quantize", "verify"]);
    assert_eq!(cached(&first), [false, false, false]);
    // LeNet5 is ~99% accurate; a broken quantizer or calibration falls far below.
    let accuracy = &steps[1]["report"]["details"]["accuracy"];
    assert_eq!(accuracy["samples"], 1000);
    let (float, quant) = (
        accuracy["float_accuracy"].as_f64().unwrap(),
        accuracy["quantized_accuracy"].as_f64().unwrap(),
    );
    assert!(
        float > 0.97 && quant > 0.97 && float - quant < 0.01,
        "{accuracy}"
    );
    assert!(!steps[1]["report"]["details"]["quantized_nodes"]
        .as_array()
        .unwrap()
        .is_empty());
    // verify compares the quantized model with the optimized float one.
    let outputs = steps[2]["report"]["details"]["outputs"].as_array().unwrap();
    assert_eq!(steps[2]["report"]["details"]["samples"], 64);
    assert!(outputs[0]["cosine"].as_f64().unwrap() > 0.99, "{outputs:?}");
    let work = dir.join("q.onnx.work");
    assert_eq!(journal_lines(&work), 3);
    let model = std::fs::read(&out).unwrap();

    // Rerun: every step comes from the work folder, nothing new in the journal.
    let start = Instant::now();
    let again = pipeline(&[r, "-o", o, "--force"]);
    assert_eq!(cached(&again), [true, true, true]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(journal_lines(&work), 3);
    assert_eq!(again["steps"][1]["report"], first["steps"][1]["report"]);
    assert_eq!(std::fs::read(&out).unwrap(), model);

    // A changed step runs again, with the steps before it still cached.
    let changed = write(&dir, "r2.toml", &lenet_recipe("entropy", 128));
    let third = pipeline(&[changed.to_str().unwrap(), "-o", o, "--force"]);
    assert_eq!(cached(&third), [true, false, false]);
    assert_eq!(journal_lines(&work), 5);
}

#[test]
fn a_run_killed_during_a_later_step_resumes_without_repeating_earlier_ones() {
    let dir = scratch("pipeline-kill");
    // Entropy calibration on 2048 images takes seconds: the kill lands inside it.
    let recipe = write(&dir, "r.toml", &lenet_recipe("entropy", 2048));
    let (out, work) = (dir.join("q.onnx"), dir.join("work"));
    let args = |out: &Path, work: &Path| -> Vec<String> {
        vec![
            "pipeline".into(),
            "--json".into(),
            recipe.display().to_string(),
            "-o".into(),
            out.display().to_string(),
            "--work-dir".into(),
            work.display().to_string(),
        ]
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(args(&out, &work))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while journal_lines(&work) < 1 {
        assert!(Instant::now() < deadline, "the first step never finished");
        assert!(child.try_wait().unwrap().is_none(), "whittle ended early");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(journal_lines(&work), 1, "killed after step 1 only");
    assert!(!out.exists());

    let resumed = json(&whittle(
        &args(&out, &work)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    assert_eq!(cached(&resumed), [true, false, false]);
    assert_eq!(journal_lines(&work), 3);

    // A clean run elsewhere gives the same model, byte for byte.
    let (clean_out, clean_work) = (dir.join("clean.onnx"), dir.join("clean-work"));
    let clean = json(&whittle(
        &args(&clean_out, &clean_work)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    assert_eq!(cached(&clean), [false, false, false]);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&clean_out).unwrap()
    );
    assert_eq!(
        resumed["steps"][1]["report"]["details"]["accuracy"],
        clean["steps"][1]["report"]["details"]["accuracy"]
    );
}

#[test]
fn yaml_training_layout_with_post_training_quantization_runs() {
    let dir = scratch("pipeline-yaml");
    let recipe = write(
        &dir,
        "train.yaml",
        &format!(
            "model: {model}\ndata: {data}\neval_data: {data}\ntraining:\n  quantization: \
             {{enabled: true, type: post_training, format: int8, optimize_for_inference: true, \
             measure_performance: true}}\n",
            model = asset("models/mnist_lenet5.onnx"),
            data = mnist_spec(),
        ),
    );
    let out = dir.join("q.onnx");
    let run = pipeline(&[recipe.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let steps = run["steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["optimize", "quantize"]);
    let details = &steps[1]["report"]["details"];
    assert!(details["accuracy"]["quantized_accuracy"].as_f64().unwrap() > 0.97);
    assert!(
        details["latency_ms"]["after"].as_f64().unwrap() > 0.0,
        "{details}"
    );
}

#[test]
fn bad_recipes_fail_naming_the_step_and_key() {
    let dir = scratch("pipeline-bad");
    let lenet = asset("models/mnist_lenet5.onnx");
    let out = dir.join("q.onnx");
    let o = out.to_str().unwrap();
    let cases = [
        (
            format!("model = \"{lenet}\"\n[[steps]]\nstep = \"optimize\"\n[[steps]]\nstep = \"quantize\"\ncalib_samplez = 3\n"),
            "steps[2] (quantize): unknown field `calib_samplez`",
        ),
        (
            format!("model = \"{lenet}\"\n[[steps]]\nstep = \"sharpen\"\n"),
            "steps[1] (sharpen): unknown variant `sharpen`",
        ),
        (
            format!("model = \"{lenet}\"\n[[steps]]\nstep = \"verify\"\n"),
            "step 1/1 (verify): a verify step compares with the previous step's input model",
        ),
        (
            format!("model = \"{lenet}\"\n[[steps]]\nstep = \"quantize\"\n"),
            "static mode needs `calib_data` SPEC",
        ),
        (
            "model = \"${WHITTLE_NO_SUCH_VARIABLE}\"\n".to_string(),
            "recipe variable ${WHITTLE_NO_SUCH_VARIABLE}: not set in the environment",
        ),
    ];
    for (text, needle) in cases {
        let recipe = write(&dir, "bad.toml", &text);
        let run = whittle(&["pipeline", "--json", recipe.to_str().unwrap(), "-o", o]);
        assert_clean_error(&run, &[needle]);
        assert!(!out.exists());
    }
}

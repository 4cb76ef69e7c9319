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
    // A report file of another kind is refused before any step runs.
    let recipe = write(&dir, "ok.toml", &lenet_recipe("minmax", 16));
    let (pdf, fresh) = (dir.join("r.pdf"), dir.join("fresh.onnx"));
    let run = whittle(&[
        "pipeline",
        recipe.to_str().unwrap(),
        "-o",
        fresh.to_str().unwrap(),
        "--report",
        pdf.to_str().unwrap(),
    ]);
    assert_clean_error(&run, &["r.pdf", "must end in .html or .json"]);
    assert!(!fresh.exists() && !dir.join("fresh.onnx.work").exists());
}

/// The rows of the first table after `<h2>{heading}</h2>` in `html`, cells without tags.
fn html_table(html: &str, heading: &str) -> Vec<Vec<String>> {
    let start = html
        .find(&format!("<h2>{heading}</h2>"))
        .unwrap_or_else(|| panic!("no section '{heading}'"));
    let table = &html[start..];
    let table = &table[table.find("<table>").unwrap()..table.find("</table>").unwrap()];
    let strip = |cell: &str| {
        let mut text = String::new();
        let mut in_tag = false;
        for c in cell.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => text.push(c),
                _ => {}
            }
        }
        text
    };
    table
        .split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("</td>")
                .chain(std::iter::once(""))
                .flat_map(|c| c.split("</th>"))
                .map(strip)
                .filter(|c| !c.is_empty() && c != "\n")
                .collect()
        })
        .collect()
}

/// The HTML report's before/after table shows the numbers of the JSON report, and each
/// plot is there.
fn assert_html_matches(html: &str, report: &serde_json::Value) {
    for plot in ["before-after", "steps", "precision", "sparsity"] {
        assert!(
            html.contains(&format!("id=\"plot-{plot}\">\n<svg")),
            "plot {plot}"
        );
    }
    let rows = html_table(html, "Before and after");
    let header = &rows[0];
    let models = report["models"].as_array().unwrap();
    assert_eq!(rows.len(), 1 + models.len());
    for (row, model) in rows[1..].iter().zip(models) {
        assert_eq!(row[0], model["name"].as_str().unwrap());
        let m = &model["metrics"];
        for (column, cell) in header.iter().zip(row).skip(1) {
            let want = match column.as_str() {
                "size (bytes)" => m["size_bytes"].to_string(),
                "parameters" => m["parameters"].to_string(),
                "MACs" => m["macs"].to_string(),
                "top-1 (%)" => format!("{:.2}", 100.0 * m["top1"].as_f64().unwrap()),
                "top-5 (%)" => format!("{:.2}", 100.0 * m["top5"].as_f64().unwrap()),
                other => panic!("unexpected column {other}"),
            };
            assert_eq!(cell, &want, "{column} of {}", row[0]);
        }
    }
}

/// Zero fractions of the final model's weighted layers, with their precisions.
fn final_layers(report: &serde_json::Value) -> Vec<(String, f64)> {
    let weights = report["weights"].as_array().unwrap();
    assert_eq!(weights[1]["model"], "final");
    weights[1]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["precision"].as_str().unwrap().to_string(),
                l["sparsity"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn top1(metrics: &serde_json::Value) -> f64 {
    metrics["top1"].as_f64().unwrap()
}

#[test]
fn prune_finetune_quantize_verify_recipe_keeps_sparsity_and_accuracy_and_reports_them() {
    let dir = scratch("pipeline-prune-quantize");
    let recipe = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../recipes/lenet_prune_finetune_quantize.toml"
    );
    let (out, html) = (dir.join("q.onnx"), dir.join("r.html"));
    let (o, h) = (out.to_str().unwrap(), html.to_str().unwrap());
    let run = pipeline(&[recipe, "-o", o, "--report", h]);
    let steps = run["steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["prune", "train", "quantize", "verify"]);
    let report = &run["report"];
    let after: Vec<f64> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| top1(&s["metrics"]))
        .collect();
    // LeNet5 scores ~98% on these 1000 test images; pruned to 75% it falls to ~76% until
    // the fine-tune, and a broken quantizer far lower.
    assert_eq!(after.len(), 5);
    assert!(after[1] < after[2] - 0.05, "{after:?}");
    assert!(
        [after[0], after[2], after[3], after[4]]
            .iter()
            .all(|&a| a > 0.97),
        "{after:?}"
    );
    assert_eq!(report["models"][0]["name"], "input");
    assert_eq!(
        report["models"][1]["metrics"],
        report["steps"][4]["metrics"]
    );
    assert_eq!(report["steps"][1]["metrics"], steps[0]["metrics"]);
    let (before, last) = (
        &report["models"][0]["metrics"],
        &report["models"][1]["metrics"],
    );
    assert_eq!(before["samples"], 1000);
    assert!(
        last["size_bytes"].as_u64().unwrap() * 3 < before["size_bytes"].as_u64().unwrap(),
        "{before} {last}"
    );
    // Every layer ends INT8 with the pruned quarter of its weights left.
    let layers = final_layers(report);
    assert_eq!(layers.len(), 4);
    for (precision, sparsity) in &layers {
        assert_eq!(precision, "int8");
        assert!((sparsity - 0.75).abs() < 0.005, "{layers:?}");
    }
    assert_html_matches(&std::fs::read_to_string(&html).unwrap(), report);

    // Rerun with a JSON report: every step and measurement comes from the work folder.
    let json_report = dir.join("r.json");
    let again = pipeline(&[
        recipe,
        "-o",
        o,
        "--force",
        "--report",
        json_report.to_str().unwrap(),
    ]);
    assert_eq!(cached(&again), [true, true, true, true]);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_report).unwrap()).unwrap();
    assert_eq!(&written, report);
}

/// The training layout of issue 17 (pruning during training with a polynomial schedule,
/// warmup-cosine, post-training INT8) with one epoch on `limit` samples of `data`.
fn training_layout(model: &str, data: &str, limit: usize) -> String {
    format!(
        "model: {model}\ndata: {data}\neval_data: {data}\n\
         evaluate: {{data: \"{data}\", samples: 500}}\n\
         training:\n  epochs: 1\n  batch_size: 16\n  limit: {limit}\n\
         \x20 lr_schedule: {{enabled: true, type: warmup_cosine, warmup_epochs: 0, min_lr: 1.0e-6}}\n\
         \x20 pruning: {{enabled: true, type: magnitude, target_sparsity: 0.5, during_training: true, \
         schedule: polynomial, start_step: 0, end_step: {end}, frequency: 4}}\n\
         \x20 quantization: {{enabled: true, type: post_training, format: int8, \
         optimize_for_inference: true, measure_performance: false}}\n",
        end = limit / 16 * 3 / 4,
    )
}

/// Runs the training layout and checks what every model of the run must show: the steps,
/// the gradual schedule, 50% zeros in every INT8 layer, the reports equal; gives the
/// top-1 of the input model and of the final one.
fn run_training_layout(name: &str, model: &str, data: &str, limit: usize) -> (f64, f64) {
    let dir = scratch(name);
    let recipe = write(&dir, "train.yaml", &training_layout(model, data, limit));
    let (out, json_report) = (dir.join("q.onnx"), dir.join("r.json"));
    let run = pipeline(&[
        recipe.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--report",
        json_report.to_str().unwrap(),
    ]);
    let steps = run["steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["prune", "optimize", "quantize"]);
    let schedule = &steps[0]["report"]["details"]["schedule"];
    assert_eq!(schedule["name"], "gradual", "{schedule}");
    assert_eq!(schedule["curve"], "polynomial", "{schedule}");
    assert_eq!(steps[0]["report"]["details"]["finetune_epochs"], 1);
    let report = &run["report"];
    let layers = final_layers(report);
    assert!(!layers.is_empty());
    for (precision, sparsity) in &layers {
        assert_eq!(precision, "int8");
        assert!((sparsity - 0.5).abs() < 0.005, "{layers:?}");
    }
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_report).unwrap()).unwrap();
    assert_eq!(&written, report);
    (
        top1(&report["models"][0]["metrics"]),
        top1(&report["models"][1]["metrics"]),
    )
}

#[test]
fn training_layout_prunes_during_training_and_quantizes_lenet5_on_mnist() {
    let model = asset("models/mnist_lenet5.onnx");
    let (before, after) = run_training_layout("pipeline-layout-lenet", &model, &mnist_spec(), 512);
    // Half of LeNet5's weights gone and INT8, tuned on 512 images: still ~98%.
    assert!(before > 0.97 && after > 0.95, "{before} -> {after}");
}

#[test]
fn training_layout_trains_prunes_and_quantizes_zoo_cnn_on_fashion_mnist() {
    let data = format!("fashion-mnist:{}", asset("fashion-mnist"));
    let (before, after) = run_training_layout("pipeline-layout-cnn", "zoo:cnn", &data, 768);
    // An untrained CNN guesses (~10%); one epoch on 768 images reaches ~50%.
    assert!(before < 0.2 && after > 0.35, "{before} -> {after}");
}

#[test]
fn an_evaluate_step_measures_the_model_and_passes_it_on() {
    let dir = scratch("pipeline-evaluate");
    let text = format!(
        "model = \"{}\"\n[[steps]]\nstep = \"evaluate\"\ndata = \"{}\"\nsamples = 200\n\
         [[steps]]\nstep = \"quantize\"\nmode = \"dynamic\"\nno_latency = true\n\
         [[steps]]\nstep = \"evaluate\"\ndata = \"{}\"\nsamples = 200\n",
        asset("models/mnist_lenet5.onnx"),
        mnist_spec(),
        mnist_spec()
    );
    let recipe = write(&dir, "e.toml", &text);
    let out = dir.join("e.onnx");
    let run = pipeline(&[recipe.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(
        run.get("report").is_none(),
        "no evaluate table, no --report"
    );
    let float = &run["steps"][0]["report"]["details"];
    let int8 = &run["steps"][2]["report"]["details"];
    assert_eq!(float["samples"], 200);
    assert!(top1(float) > 0.97 && top1(int8) > 0.97, "{float} {int8}");
    assert_eq!(float["parameters"], 648226);
    // The second evaluate step measured the quantized model, not the float one.
    assert!(
        int8["size_bytes"].as_u64().unwrap() * 3 < float["size_bytes"].as_u64().unwrap(),
        "{float} {int8}"
    );
}

#[test]
fn distill_then_qat_recipe_trains_a_student_and_leaves_it_int8() {
    let dir = scratch("pipeline-distill-qat");
    let recipe = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../recipes/distill_qat.toml"
    );
    let out = dir.join("s.onnx");
    let run = pipeline(&[
        recipe,
        "-o",
        out.to_str().unwrap(),
        "--report",
        dir.join("r.html").to_str().unwrap(),
    ]);
    let steps = run["steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["distill", "qat"]);
    let report = &run["report"];
    let after: Vec<f64> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| top1(&s["metrics"]))
        .collect();
    // An untrained student guesses (~9%); distilled on 4096 images it reaches ~54%, and
    // QAT keeps it there.
    assert!(
        after[0] < 0.2 && after[1] > 0.4 && after[2] > 0.4,
        "{after:?}"
    );
    let layers = final_layers(report);
    assert_eq!(layers.len(), 4);
    assert!(layers.iter().all(|(p, _)| p == "int8"), "{layers:?}");
}

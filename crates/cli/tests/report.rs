//! The commands that write `--report` all write whittle-pipeline's report: `whittle
//! quantize`, `eval`, `compare` and `prune --report` a page with SVG plots or its JSON (the
//! page shows the JSON's figures), `whittle profile --report` and `--format html` the same
//! page layout.

#[path = "../../pipeline/tests/support/page.rs"]
mod page;
mod support;

use std::path::Path;

use page::{bars, models_match_json, parse, table};
use serde_json::Value;
use support::{asset, mnist_spec, scratch, whittle_json, whittle_text as whittle};

/// Runs `args` once with `--report DIR/r.html` and once with `--report DIR/r.json`; gives
/// the page and the JSON.
fn both_reports(dir: &Path, args: &[&str]) -> (String, Value) {
    for file in ["r.html", "r.json"] {
        let report = dir.join(file);
        let mut args = args.to_vec();
        args.extend(["--report", report.to_str().unwrap()]);
        let (code, _, stderr) = whittle(&args);
        assert_eq!(code, 0, "{stderr}");
    }
    let read = |file| std::fs::read_to_string(dir.join(file)).unwrap();
    (
        read("r.html"),
        serde_json::from_str(&read("r.json")).unwrap(),
    )
}

/// `args` with `--json`: the figures the command prints.
fn printed(args: &[&str]) -> Value {
    whittle_json(&[args, &["--json"]].concat())
}

/// The figure `key` of model `m` in a report's JSON.
fn metric(json: &Value, m: usize, key: &str) -> Value {
    json["models"][m]["metrics"][key].clone()
}

/// Asserts that `args` with `--report DIR/r.pdf` fails, naming the file and the kinds a
/// report can be.
fn refuses_a_pdf_report(dir: &Path, args: &[&str]) {
    let bad = dir.join("r.pdf");
    let (code, _, stderr) = whittle(&[args, &["--report", bad.to_str().unwrap()]].concat());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("r.pdf") && stderr.contains(".html or .json"),
        "{stderr}"
    );
}

/// Checks the per-item table of `json["layers"][k]` (section `title`, names and values to
/// four decimals) and that its plot has a bar per finite value (plus the legend's).
fn layer_values_match_json(doc: &roxmltree::Document, json: &Value, k: usize, title: &str) {
    let values = json["layers"][k]["values"].as_array().unwrap();
    let rows = table(doc, title);
    assert_eq!(rows.len(), values.len() + 1, "{rows:?}");
    for (row, v) in rows[1..].iter().zip(values) {
        assert_eq!(row[0], v["name"].as_str().unwrap());
        let shown = match &v["value"] {
            Value::String(s) => s.clone(),
            n => format!("{:.4}", n.as_f64().unwrap()),
        };
        assert_eq!(row[1], shown);
    }
    let finite = values.iter().filter(|v| v["value"].is_number()).count();
    let id = format!("plot-layers-{}", k + 1);
    assert_eq!(bars(doc, &id, 0), finite + 1, "{id}");
}

/// Checks that the precision and sparsity plots draw every weighted layer of every model,
/// and gives the layers of model `m` from the JSON.
fn weighted_layers(doc: &roxmltree::Document, json: &Value, m: usize) -> Vec<Value> {
    let models = json["weights"].as_array().unwrap().len();
    let layers = |m: usize| json["weights"][m]["layers"].as_array().unwrap().clone();
    for k in 0..models {
        assert_eq!(bars(doc, "plot-precision", k), layers(k).len() + 1);
        assert_eq!(bars(doc, "plot-sparsity", k), layers(k).len() + 1);
    }
    layers(m)
}

#[test]
fn quantize_writes_the_report_with_plots_and_its_json() {
    let dir = scratch("report");
    let (model, out) = (asset("models/mnist_lenet5.onnx"), dir.join("q.onnx"));
    let data = mnist_spec();
    let args = [
        "quantize",
        &model,
        "-o",
        out.to_str().unwrap(),
        "--calib-data",
        &data,
        "--calib-samples",
        "64",
        "--no-latency",
        "--force",
    ];
    let (html, json) = both_reports(&dir, &args);
    for id in [
        "plot-before-after",
        "plot-layers-1",
        "plot-precision",
        "plot-sparsity",
    ] {
        assert!(
            html.contains(&format!("<figure class=\"plot\" id=\"{id}\">\n<svg")),
            "no plot {id}"
        );
    }
    assert!(html.contains("<h2>Per-tensor error (worst first)</h2>"));
    assert!(!html.contains("<script"));
    assert_eq!(json["models"][0]["name"], "float");
    assert_eq!(json["models"][1]["name"], "static INT8");
    let size = |m: usize| metric(&json, m, "size_bytes").as_f64().unwrap();
    assert!(size(1) < 0.3 * size(0), "{} -> {}", size(0), size(1));
    // Both runs quantized the same way: the page shows the JSON's sizes.
    assert!(html.contains(&format!("<td>{}</td>", size(1))), "{html}");
    let layers = json["weights"][1]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    assert!(layers.iter().all(|l| l["precision"] == "int8"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn profile_writes_its_tables_as_a_page_and_refuses_other_extensions() {
    let dir = scratch("profile-report");
    let model = asset("models/mnist_lenet5.onnx");
    let page = dir.join("p.html");
    let (code, stdout, stderr) = whittle(&[
        "profile",
        &model,
        "--runs",
        "1",
        "--warmup",
        "0",
        "--format",
        "html",
        "--report",
        page.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(&page).unwrap(), stdout);
    assert!(stdout.contains("<h2>By operator type</h2>") && stdout.contains("class=\"bar\""));
    refuses_a_pdf_report(&dir, &["profile", &model]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_reports_accuracy_per_class_size_parameters_and_macs() {
    let dir = scratch("eval-report");
    let lenet = asset("models/mnist_lenet5.onnx");
    let data = mnist_spec();
    let args = ["eval", &lenet, "--data", &data, "--limit", "500"];
    let (html, json) = both_reports(&dir, &args);
    let doc = parse(&html);
    let columns = [
        "size (bytes)",
        "parameters",
        "MACs",
        "top-1 (%)",
        "top-5 (%)",
    ];
    models_match_json(&doc, &json, "Measurements", &columns);
    // The report's accuracy is the one `--json` prints, on the same 500 images.
    let printed = printed(&args);
    let metrics = &json["models"][0]["metrics"];
    assert_eq!(metrics["top1"], printed["accuracy"]);
    assert_eq!(metrics["top5"], printed["top5"]);
    assert_eq!(metrics["samples"], 500);
    assert_eq!(metrics["parameters"], 648_226);
    let size = std::fs::metadata(&lenet).unwrap().len();
    assert_eq!(metrics["size_bytes"], size);
    // Ten classes, each drawn and tabulated as a percentage of its samples.
    assert_eq!(json["layers"][0]["item"], "class");
    layer_values_match_json(&doc, &json, 0, "Top-1 accuracy per class");
    let per_class = printed["per_class"].as_array().unwrap();
    let values = json["layers"][0]["values"].as_array().unwrap();
    assert_eq!(values.len(), 10);
    for (v, c) in values.iter().zip(per_class) {
        let want = 100.0 * c["accuracy"].as_f64().unwrap();
        assert!(
            (v["value"].as_f64().unwrap() - want).abs() < 1e-9,
            "{v} {c}"
        );
    }
    let layers = weighted_layers(&doc, &json, 0);
    assert_eq!(layers.len(), 4);
    assert!(layers.iter().all(|l| l["precision"] == "float32"));
    // One model: no relative plot.
    assert!(!html.contains("id=\"plot-before-after\""));
    // A file it cannot write is refused before the data is read (there is none here).
    refuses_a_pdf_report(&dir, &["eval", &lenet, "--data", "mnist:/no/such/dir"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_reports_both_models_and_the_fidelity_of_every_output() {
    let dir = scratch("compare-report");
    let lenet = asset("models/mnist_lenet5.onnx");
    let data = mnist_spec();
    let int8 = dir.join("int8.onnx");
    let (code, _, stderr) = whittle(&[
        "quantize",
        &lenet,
        "-o",
        int8.to_str().unwrap(),
        "--calib-data",
        &data,
        "--calib-samples",
        "64",
        "--no-latency",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let int8 = int8.to_str().unwrap();
    let args = ["compare", &lenet, int8, "--data", &data, "--samples", "300"];
    let (html, json) = both_reports(&dir, &args);
    let doc = parse(&html);
    let columns = [
        "size (bytes)",
        "parameters",
        "MACs",
        "top-1 (%)",
        "output SQNR (dB)",
        "output cosine",
    ];
    let rows = models_match_json(&doc, &json, "Before and after", &columns);
    assert_eq!(
        (rows[1][0].as_str(), rows[2][0].as_str()),
        ("A: mnist_lenet5.onnx", "B: int8.onnx")
    );
    // The figures are those `--json` prints.
    let printed = printed(&args);
    let metric = |m: usize, key: &str| metric(&json, m, key);
    assert_eq!(metric(0, "size_bytes"), printed["a"]["bytes"]);
    assert_eq!(metric(1, "size_bytes"), printed["b"]["bytes"]);
    assert_eq!(metric(1, "top1"), printed["b"]["accuracy"]);
    assert_eq!(metric(1, "sqnr_db"), printed["outputs"][0]["sqnr_db"]);
    assert_eq!(metric(0, "macs"), metric(1, "macs"));
    assert!(metric(1, "sqnr_db").as_f64().unwrap() > 20.0);
    // Size, parameters, MACs and top-1 of both, relative to A: a bar per model and figure.
    assert_eq!(bars(&doc, "plot-before-after", 0), 4 + 1);
    assert_eq!(bars(&doc, "plot-before-after", 1), 4 + 1);
    // LeNet5 has one output: its SQNR drawn, and its MSE, cosine and SQNR tabulated.
    layer_values_match_json(&doc, &json, 0, "Output SQNR of B against A");
    let fidelity = table(&doc, "Fidelity of B to A per output");
    let output = &printed["outputs"][0];
    assert_eq!(fidelity.len(), 2);
    assert_eq!(fidelity[1][0], output["name"].as_str().unwrap());
    assert_eq!(
        fidelity[1][2],
        format!("{:.6}", output["cosine"].as_f64().unwrap())
    );
    let agreement = printed["top1_agreement"].as_f64().unwrap();
    assert!(html.contains(&format!(
        "top-1 agreement of B with A: {:.2}%",
        100.0 * agreement
    )));
    // Precision per layer of both: float32 in A, int8 in B.
    assert!(weighted_layers(&doc, &json, 0)
        .iter()
        .all(|l| l["precision"] == "float32"));
    assert!(weighted_layers(&doc, &json, 1)
        .iter()
        .all(|l| l["precision"] == "int8"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_exact_model_keeps_its_infinite_sqnr_in_the_json_report() {
    let dir = scratch("exact-report");
    let lenet = asset("models/mnist_lenet5.onnx");
    let args = ["compare", &lenet, &lenet, "--samples", "4"];
    let (html, json) = both_reports(&dir, &args);
    // JSON has no infinity: the figure is the string "inf", not null (which would read
    // back as "not measured").
    assert_eq!(json["models"][1]["metrics"]["sqnr_db"], "inf");
    assert_eq!(json["layers"][0]["values"][0]["value"], "inf");
    let doc = parse(&html);
    layer_values_match_json(&doc, &json, 0, "Output SQNR of B against A");
    let rows = table(&doc, "Before and after");
    let sqnr = rows[0]
        .iter()
        .position(|c| c == "output SQNR (dB)")
        .unwrap();
    assert_eq!(rows[2][sqnr], "inf");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prune_reports_sparsity_per_layer_and_the_models_before_and_after() {
    let dir = scratch("prune-report");
    let lenet = asset("models/mnist_lenet5.onnx");
    let data = mnist_spec();
    let out = dir.join("p.onnx");
    let out = out.to_str().unwrap();
    let args = [
        "prune",
        &lenet,
        "-o",
        out,
        "--method",
        "magnitude",
        "--sparsity",
        "0.5",
        "--data",
        &data,
        "--eval-limit",
        "300",
        "--force",
    ];
    let (html, json) = both_reports(&dir, &args);
    let doc = parse(&html);
    let columns = ["size (bytes)", "parameters", "MACs", "top-1 (%)"];
    let rows = models_match_json(&doc, &json, "Before and after", &columns);
    assert_eq!(
        (rows[1][0].as_str(), rows[2][0].as_str()),
        ("input", "pruned")
    );
    // The figures are those `--json` prints.
    let printed = printed(&args);
    let metric = |m: usize, key: &str| metric(&json, m, key);
    assert_eq!(metric(0, "size_bytes"), printed["input_size_bytes"]);
    assert_eq!(metric(1, "size_bytes"), printed["size_bytes"]);
    assert_eq!(metric(0, "top1"), printed["accuracy_before"]);
    assert_eq!(metric(1, "top1"), printed["accuracy_after"]);
    assert_eq!(metric(1, "samples"), 300);
    // Zeroing weights keeps the parameters and MACs.
    assert_eq!(metric(0, "parameters"), metric(1, "parameters"));
    assert_eq!(metric(0, "macs"), metric(1, "macs"));
    // Sparsity per layer, read from both models: none before, each pruned layer's zeros
    // after as the pruner counted them, drawn and tabulated.
    let before = weighted_layers(&doc, &json, 0);
    let after = weighted_layers(&doc, &json, 1);
    assert_eq!((before.len(), after.len()), (4, 4));
    assert!(before.iter().all(|l| l["sparsity"] == 0.0), "{before:?}");
    let pruned = printed["layers"].as_array().unwrap();
    assert_eq!(pruned.len(), 4, "{pruned:?}");
    for p in pruned {
        let layer = (after.iter())
            .find(|l| l["weight"] == p["name"] || l["name"] == p["name"])
            .unwrap_or_else(|| panic!("no layer {} in {after:?}", p["name"]));
        assert_eq!(layer["params"], p["params"]);
        let zeros = layer["sparsity"].as_f64().unwrap() * layer["params"].as_f64().unwrap();
        assert_eq!(zeros.round() as u64, p["zeros"].as_u64().unwrap(), "{p}");
    }
    let table = table(&doc, "Precision and sparsity per layer");
    for (row, l) in table[1..].iter().zip(&after) {
        let zeros = 100.0 * l["sparsity"].as_f64().unwrap();
        assert_eq!(row[4], format!("{zeros:.1}%"));
    }
    assert!(html.contains("50.00% of prunable weights zero"), "{html}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! The commands that write `--report` all write whittle-pipeline's report: `whittle
//! quantize --report` a page with SVG plots or its JSON, `whittle profile --report` and
//! `--format html` the same page layout.

mod support;

use serde_json::Value;
use support::{asset, mnist_spec, scratch, whittle_text as whittle};

#[test]
fn quantize_writes_the_report_with_plots_and_its_json() {
    let dir = scratch("report");
    let (model, out) = (asset("models/mnist_lenet5.onnx"), dir.join("q.onnx"));
    let data = mnist_spec();
    for file in ["r.html", "r.json"] {
        let report = dir.join(file);
        let (code, _, stderr) = whittle(&[
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
            "--report",
            report.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{stderr}");
    }
    let html = std::fs::read_to_string(dir.join("r.html")).unwrap();
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
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap()).unwrap();
    assert_eq!(json["models"][0]["name"], "float");
    assert_eq!(json["models"][1]["name"], "static INT8");
    let size = |m: usize| json["models"][m]["metrics"]["size_bytes"].as_f64().unwrap();
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
    let bad = dir.join("p.pdf");
    let (code, _, stderr) = whittle(&["profile", &model, "--report", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("p.pdf") && stderr.contains(".html or .json"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! The HTML report of a real run (LeNet5 float against its static INT8 model): every plot
//! is an inline SVG with one bar per figure, the tables show the figures of the JSON, the
//! page needs nothing from outside, and the same data renders to the same bytes.

mod support;

use std::collections::HashMap;

use serde_json::Value as Json;
use support::page::{bars, by_id, models_match_json, parse, table};
use whittle_data::Split;
use whittle_exec::Value;
use whittle_ir::{Model, TensorData};
use whittle_passes::quantize::{self, QuantConfig};
use whittle_pipeline::eval::Metrics;
use whittle_pipeline::report::{self, plot, Format, ModelMetrics, Report};

fn lenet() -> Model {
    Model::load(whittle_data::assets_dir().join("models/mnist_lenet5.onnx")).expect("LeNet5")
}

fn mnist_batches(split: Split, n: usize, size: usize) -> Vec<HashMap<String, Value>> {
    let spec = format!(
        "mnist:{}",
        whittle_data::assets_dir().join("mnist").display()
    );
    let images: TensorData = whittle_data::spec::load(&spec, split, Some(n))
        .unwrap()
        .images;
    let all = Value::try_from(&images).unwrap();
    (0..n)
        .step_by(size)
        .map(|s| {
            let rows = all.tensor().narrow(0, s, size.min(n - s)).unwrap();
            HashMap::from([("input".to_string(), Value::new(rows, all.dtype()).unwrap())])
        })
        .collect()
}

/// The report of quantizing LeNet5 (per-channel static INT8, verified on 64 test images,
/// operator times from a 2-run profile).
fn lenet_report() -> Report {
    let float = lenet();
    let cfg = QuantConfig {
        per_channel: true,
        ..QuantConfig::default()
    };
    let (int8, mut q) =
        quantize::static_int8(&float, &cfg, mnist_batches(Split::Train, 128, 64)).unwrap();
    let test = mnist_batches(Split::Test, 64, 64);
    q.verification = Some(quantize::verify::compare(&float, &int8, &test).unwrap());
    report::quantize::report(&q, &float, &int8, Some(2)).unwrap()
}

#[test]
fn the_quantize_report_draws_and_tabulates_the_figures_of_its_json() {
    let report = lenet_report();
    let html = report::render(&report, Format::Html).unwrap();
    let json: Json = serde_json::to_value(&report).unwrap();
    let doc = parse(&html);

    // Self-contained: no script, nothing loaded from elsewhere.
    assert!(!html.contains("<script") && !html.contains(" src=") && !html.contains("href="));

    // Before/after: one row per model, each figure as in the JSON; the relative plot has
    // one bar per model and measured figure (size, parameters, MACs and ORT latency are
    // measured for both).
    let columns = ["size (bytes)", "parameters", "MACs", "output SQNR (dB)"];
    let rows = models_match_json(&doc, &json, "Before and after", &columns);
    assert_eq!(rows[0][0], "model");
    assert_eq!(
        (rows[1][0].as_str(), rows[2][0].as_str()),
        ("float", "static INT8")
    );
    let metric = |m: usize, key: &str| json["models"][m]["metrics"][key].clone();
    let sqnr = metric(1, "sqnr_db").as_f64().unwrap();
    assert!(sqnr > 20.0, "LeNet5 INT8 logits SQNR {sqnr}");
    // Quantization keeps the multiply-accumulates; the int8 model adds scales and zero
    // points to LeNet5's 648,226 weights.
    let lenet_macs = 28 * 28 * 32 * 9 + 14 * 14 * 64 * 288 + 3136 * 200 + 2000;
    assert_eq!(
        (metric(0, "macs"), metric(1, "macs")),
        (lenet_macs.into(), lenet_macs.into())
    );
    assert_eq!(metric(0, "parameters"), 648_226);
    assert!(metric(1, "parameters").as_u64().unwrap() > 648_226);
    let size_ratio = json["models"][1]["metrics"]["size_bytes"].as_f64().unwrap()
        / json["models"][0]["metrics"]["size_bytes"].as_f64().unwrap();
    assert!(size_ratio < 0.3, "INT8 size ratio {size_ratio}");
    let relative = 3 + usize::from(metric(0, "latency_ms_ort").is_number());
    assert_eq!(bars(&doc, "plot-before-after", 0), relative + 1);
    assert_eq!(bars(&doc, "plot-before-after", 1), relative + 1);

    // Per-tensor error: a bar and a row per tensor, values as in the JSON.
    let errors = json["layers"][0]["values"].as_array().unwrap();
    assert!(errors.len() >= 4, "{errors:?}");
    let rows = table(&doc, "Per-tensor error (worst first)");
    assert_eq!(rows.len(), errors.len() + 1);
    for (row, e) in rows[1..].iter().zip(errors) {
        assert_eq!(row[0], e["name"].as_str().unwrap());
        assert_eq!(row[1], format!("{:.4}", e["value"].as_f64().unwrap()));
    }
    let finite = errors.iter().filter(|e| e["value"].is_number()).count();
    assert_eq!(bars(&doc, "plot-layers-1", 0), finite + 1);

    // Latency share per operator type: one bar per operator type and model.
    let ops = |m: usize| json["op_latency"][m]["ops"].as_array().unwrap().len();
    assert!(ops(0) >= 4 && ops(1) > ops(0), "{}", json["op_latency"]);
    assert_eq!(bars(&doc, "plot-op-latency", 0), ops(0) + 1);
    assert_eq!(bars(&doc, "plot-op-latency", 1), ops(1) + 1);

    // Precision and sparsity: LeNet5's four weighted layers, float32 before, int8 after.
    let layers = |m: usize| json["weights"][m]["layers"].as_array().unwrap().clone();
    assert_eq!((layers(0).len(), layers(1).len()), (4, 4));
    for (f, q) in layers(0).iter().zip(&layers(1)) {
        assert_eq!(
            (f["precision"].as_str(), f["bits"].as_u64()),
            (Some("float32"), Some(32))
        );
        assert_eq!(
            (q["precision"].as_str(), q["bits"].as_u64()),
            (Some("int8"), Some(8))
        );
        assert_eq!(f["params"], q["params"]);
        assert!(q["sparsity"].as_f64().unwrap() < 0.05, "{q}");
    }
    let rows = table(&doc, "Precision and sparsity per layer");
    for ((row, f), l) in rows[1..].iter().zip(&layers(0)).zip(&layers(1)) {
        assert_eq!(row[0], f["name"].as_str().unwrap());
        assert_eq!((row[1].as_str(), row[3].as_str()), ("float32", "int8"));
        let zeros = 100.0 * l["sparsity"].as_f64().unwrap();
        assert_eq!(row[4], format!("{zeros:.1}%"));
    }
    assert_eq!(bars(&doc, "plot-precision", 0), 4 + 1);
    assert_eq!(bars(&doc, "plot-precision", 1), 4 + 1);
    assert_eq!(bars(&doc, "plot-sparsity", 1), 4 + 1);

    // The float nodes, as the quantizer reported them.
    let float_rows = table(&doc, "Nodes left in float");
    assert_eq!(float_rows.len() - 1, json_float_nodes(&report));

    // Same data, same bytes: rendering again, and rendering the report read back from its
    // JSON, give the identical page.
    assert_eq!(html, report::render(&report, Format::Html).unwrap());
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(html, report::render(&back, Format::Html).unwrap());
}

fn json_float_nodes(report: &Report) -> usize {
    report
        .tables
        .iter()
        .find(|t| t.title == "Nodes left in float")
        .unwrap()
        .rows
        .len()
}

#[test]
fn a_pipeline_report_draws_one_point_per_step_and_measure() {
    let step = |name: &str, size: u64, top1: f64| ModelMetrics {
        name: name.into(),
        metrics: Metrics {
            size_bytes: Some(size),
            top1: Some(top1),
            ..Metrics::default()
        },
    };
    let report = Report {
        title: "pipeline".into(),
        steps: vec![
            step("input", 400, 0.99),
            step("prune", 400, 0.97),
            step("quantize", 100, 0.965),
        ],
        ..Report::default()
    };
    let html = report::render(&report, Format::Html).unwrap();
    let doc = parse(&html);
    let svg = by_id(&doc, "plot-steps");
    let points = |k: usize| {
        let colour = plot::colour(k);
        svg.descendants()
            .filter(|n| n.has_tag_name("circle") && n.attribute("fill") == Some(colour.as_str()))
            .count()
    };
    assert_eq!((points(0), points(1)), (3, 3));
    let rows = table(&doc, "Metrics after every step");
    assert_eq!(rows[0], ["step", "size (bytes)", "top-1 (%)"]);
    assert_eq!(rows[3], ["quantize", "100", "96.50"]);
    // Text and Markdown show the same table.
    let md = report::render(&report, Format::Markdown).unwrap();
    assert!(md.contains("| quantize | 100 | 96.50 |"), "{md}");
}

#[test]
fn a_report_file_is_html_or_json_by_its_extension() {
    let dir = whittle_testkit::scratch("report");
    // A model equal to its reference: an infinite SQNR, which JSON can only hold as text.
    let exact = ModelMetrics {
        name: "exact".into(),
        metrics: Metrics {
            sqnr_db: Some(f64::INFINITY),
            cosine: Some(1.0),
            ..Metrics::default()
        },
    };
    let report = Report {
        title: "t".into(),
        notes: vec!["a note".into()],
        models: vec![exact],
        ..Report::default()
    };
    report::write(&report, &dir.join("r.html")).unwrap();
    report::write(&report, &dir.join("r.json")).unwrap();
    let json = std::fs::read_to_string(dir.join("r.json")).unwrap();
    assert!(json.contains("\"sqnr_db\": \"inf\""), "{json}");
    let html = std::fs::read_to_string(dir.join("r.html")).unwrap();
    assert!(html.contains("<p class=\"note\">a note</p>"), "{html}");
    let back: Report =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap()).unwrap();
    assert_eq!(back, report);
    assert_eq!(back.models[0].metrics.sqnr_db, Some(f64::INFINITY));
    let err = report::write(&report, &dir.join("r.pdf"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("r.pdf") && err.contains(".html or .json"),
        "{err}"
    );
}

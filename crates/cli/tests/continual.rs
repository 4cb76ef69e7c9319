//! `whittle continual` end to end on a small Split MNIST: the JSON contract (R matrix,
//! metrics as fractions, `_std` beside each with several seeds, per-seed runs, the
//! baselines), the written model, the HTML
//! report's heat map and efficiency table (the JSON's figures), compression during
//! training, and bad settings refused with the flag named. Uses tests/support.

#[path = "../../pipeline/tests/support/page.rs"]
mod page;
mod support;

use support::{assert_clean_error, mnist_spec, scratch, whittle, whittle_json};

const MODEL: &str = "zoo:mlp:hidden=64";

/// A small Split MNIST: 2000 training and 500 test samples, 3 tasks of 2 classes, replay
/// of 16.
const SMALL: [&str; 8] = [
    "--train-samples",
    "2000",
    "--test-samples",
    "500",
    "--tasks",
    "3",
    "--replay-batch",
    "16",
];

/// `whittle continual` of MODEL on `data` writing `out`, with `extra` flags.
fn continual_args<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["continual", "--model", MODEL, "--data", data, "-o", out];
    args.extend_from_slice(extra);
    args
}

/// The JSON of that run on [`SMALL`] MNIST with `extra` flags.
fn continual_json(out: &str, extra: &[&str]) -> serde_json::Value {
    let data = mnist_spec();
    let mut args = continual_args(&data, out, &SMALL);
    args.extend_from_slice(extra);
    args.push("--json");
    whittle_json(&args)
}

#[test]
fn json_holds_the_r_matrix_its_figures_per_seed_and_the_baselines() {
    let dir = scratch("continual-json");
    let out = dir.join("cl.onnx").display().to_string();
    let html = dir.join("cl.html").display().to_string();
    let json = continual_json(
        &out,
        &["--strategy", "er", "--seeds", "0,1", "--report", &html],
    );
    let r = json["r_matrix"].as_array().unwrap();
    assert_eq!(r.len(), 3, "{json}");
    assert_eq!(
        json["tasks"],
        serde_json::json!([[0, 1], [2, 3], [4, 5]]),
        "{json}"
    );
    // Fractions, the diagonal learnt, and the average the mean of the last row.
    let at = |i: usize, j: usize| r[i][j].as_f64().unwrap();
    for i in 0..3 {
        assert!(at(i, i) > 0.8, "task {i} not learnt: {json}");
    }
    let last: f64 = (0..3).map(|j| at(2, j)).sum::<f64>() / 3.0;
    let avg = json["average_accuracy"].as_f64().unwrap();
    assert!((avg - last).abs() < 1e-9, "{json}");
    for key in ["average_accuracy", "forgetting", "bwt", "task_il_accuracy"] {
        let v = json[key].as_f64().unwrap_or(f64::NAN);
        assert!((-1.0..=1.0).contains(&v), "{key}: {json}");
        assert!(
            json[format!("{key}_std")].as_f64().is_some(),
            "{key}_std: {json}"
        );
    }
    assert!(json["r_matrix_std"].is_array(), "{json}");
    let seeds = json["seeds"].as_array().unwrap();
    assert_eq!(seeds.len(), 2);
    assert_eq!(
        (seeds[0]["seed"].as_u64(), seeds[1]["seed"].as_u64()),
        (Some(0), Some(1))
    );
    // Two seeds differ, and their mean is the reported figure.
    let a0 = seeds[0]["average_accuracy"].as_f64().unwrap();
    let a1 = seeds[1]["average_accuracy"].as_f64().unwrap();
    assert!((avg - (a0 + a1) / 2.0).abs() < 1e-9 && a0 != a1, "{json}");
    // The baselines ran on the same tasks: fine-tuning forgets, joint training does not.
    let ft = &json["baselines"]["finetune"];
    let joint = &json["baselines"]["joint"];
    assert!(ft["forgetting"].as_f64().unwrap() > 0.8, "{json}");
    assert!(json["forgetting"].as_f64().unwrap() < ft["forgetting"].as_f64().unwrap() - 0.3);
    assert_eq!(joint["r_matrix"].as_array().unwrap().len(), 1, "{json}");
    assert!(
        joint["average_accuracy"].as_f64().unwrap() > avg - 0.05,
        "{json}"
    );
    // The final model is written as a plain ONNX model of 10 outputs.
    assert_eq!(json["output"], out.as_str());
    let written = whittle_ir::Model::load(&out).unwrap();
    assert!(written.graph().node.iter().all(|n| n.domain.is_empty()));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("id=\"plot-continual-r-matrix\""),
        "no heat map"
    );
    assert!(page.contains("id=\"plot-continual-over-time\""));
    let cell = format!("{:.1}", 100.0 * at(2, 0));
    assert!(
        page.contains(&format!("\n{cell}\n</text>")),
        "heat map lacks {cell}"
    );
}

#[test]
fn lora_and_compression_flags_reach_the_run() {
    let dir = scratch("continual-compress");
    let out = dir.join("cl.onnx").display().to_string();
    let json = continual_json(
        &out,
        &[
            "--no-baselines",
            "--lora-rank",
            "4",
            "--quantize",
            "fp16,int8",
            "--prune",
            "0.5",
        ],
    );
    // Per task only the adapters (rank 4 on the 784->64 layer) and the head train.
    let trainable = json["seeds"][0]["trainable_parameters"].as_array().unwrap();
    assert_eq!(trainable.len(), 3, "{json}");
    assert!(trainable
        .iter()
        .all(|t| t.as_u64() == Some(4 * (784 + 64) + 650)));
    // Every asked variant is measured; INT8 is about a quarter of FP32, pruning zeroes half.
    let c = &json["compressed"];
    let size = |k: &str| {
        c[k]["size_bytes"]
            .as_f64()
            .unwrap_or_else(|| panic!("{k}: {json}"))
    };
    for key in ["fp32", "fp16", "int8", "pruned", "pruned_int8"] {
        let acc = c[key]["average_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{key}: {json}");
    }
    assert!(size("int8") < 0.4 * size("fp32"), "{json}");
    let pruned = &c["pruned"];
    let nonzero = pruned["nonzero_parameters"].as_f64().unwrap();
    assert!(
        nonzero < 0.6 * pruned["parameters"].as_f64().unwrap(),
        "{json}"
    );
    // The exported model is plain ONNX: the adapters were merged.
    let written = whittle_ir::Model::load(&out).unwrap();
    let names: Vec<&str> = written
        .graph()
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert!(names.iter().all(|n| !n.contains("lora")), "{names:?}");
}

#[test]
fn compress_during_ends_sparse_int8_and_the_pages_efficiency_table_is_the_jsons() {
    let dir = scratch("continual-during");
    let out = dir.join("cl.onnx").display().to_string();
    let html = dir.join("cl.html").display().to_string();
    let json = continual_json(
        &out,
        &[
            "--no-baselines",
            "--quantize",
            "int8",
            "--prune",
            "0.5",
            "--compress-during",
            "--report",
            &html,
        ],
    );
    let c = json["compressed"].as_object().unwrap();
    let during = &c["during_pruned_int8"];
    let fraction = |m: &serde_json::Value, k: &str| m[k].as_f64().unwrap();
    assert!(
        fraction(during, "nonzero_parameters") < 0.6 * fraction(during, "parameters"),
        "{json}"
    );
    // -o is the model compressed during training: QDQ INT8.
    let written = whittle_ir::Model::load(&out).unwrap();
    assert!(written
        .graph()
        .node
        .iter()
        .any(|n| n.op_type == "DequantizeLinear"));
    // The page's efficiency table shows every variant with the JSON's figures.
    let page = std::fs::read_to_string(&html).unwrap();
    let doc = page::parse(&page);
    let rows = page::table(&doc, "Efficiency of the compressed learner");
    assert_eq!(rows.len(), c.len() + 1, "{rows:?}");
    let order: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        order,
        [
            "fp32",
            "int8",
            "pruned",
            "pruned_int8",
            "during_pruned_int8"
        ]
    );
    for row in &rows[1..] {
        let m = &c[&row[0]];
        let count = |k: &str| m[k].as_u64().unwrap().to_string();
        let pct = |k: &str| format!("{:.2}", 100.0 * fraction(m, k));
        let fps = m["fps"].as_f64().map_or("-".into(), |f| format!("{f:.0}"));
        let want = [
            row[0].clone(),
            count("size_bytes"),
            count("parameters"),
            count("nonzero_parameters"),
            fps,
            pct("average_accuracy"),
            pct("forgetting"),
            pct("task_il_accuracy"),
        ];
        assert_eq!(row, &want, "{json}");
    }
}

#[test]
fn bad_settings_name_the_flag() {
    let dir = scratch("continual-bad");
    let out = dir.join("x.onnx").display().to_string();
    let data = mnist_spec();
    let case = |extra: &[&str], needles: &[&str]| {
        assert_clean_error(&whittle(&continual_args(&data, &out, extra)), needles);
    };
    case(
        &["--classes-per-task", "3"],
        &["--classes-per-task 3 does not divide the 10 classes"],
    );
    case(&["--strategy", "icarl"], &["unknown --strategy 'icarl'"]);
    case(
        &["--strategy", "er", "--buffer", "0"],
        &["--buffer must be at least 1"],
    );
    case(&["--scenario", "domain-il"], &["--permutations"]);
    case(&["--task-order", "0,1,1,2,3"], &["--task-order"]);
    case(&["--report", "r.txt"], &["r.txt", ".html or .json"]);
    case(&["--lora-rank", "0"], &["--lora-rank", "at least 1"]);
    case(
        &["--quantize", "fp16", "--compress-during"],
        &["--compress-during", "--prune"],
    );
    assert!(!std::path::Path::new(&out).exists());
}

//! `whittle auto` on LeNet5 with small MNIST splits: the JSON contract, the output model's
//! accuracy in ONNX Runtime equal to the JSON's, an impossible constraint still writing a
//! model (`budget_not_met` with its distance), `--max-trials` respected, a run killed with
//! SIGKILL resuming without repeating finished trials, the target changing the choice,
//! label-less `feeds:` data searched under a cosine budget.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::mnist_npz::mnist_npz;
use support::{asset, json, python, scratch, whittle};

/// Identity, then each of the eight actions alone: no fine-tuning, so the runs are quick.
const TRIALS: &str = "9";

/// The first 1500 MNIST training images and 1000 test images.
fn small_mnist(dir: &Path) -> String {
    mnist_npz(dir, 1500, 1000)
}

fn args(data: &str, out: &Path, work: &Path, extra: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = [
        "auto",
        &asset("models/mnist_lenet5.onnx"),
        "--data",
        data,
        "--threads",
        "1",
        "-o",
        &out.display().to_string(),
        "--work-dir",
        &work.display().to_string(),
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(extra.iter().map(|s| s.to_string()));
    all
}

fn auto(args: &[String]) -> Value {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    json(&whittle(&refs))
}

/// Top-1 accuracy of `model` in ONNX Runtime on the npz's test split.
fn ort_accuracy(dir: &Path, model: &Path) -> f64 {
    let code = format!(
        "import numpy as np, onnxruntime as ort\n\
         d = np.load('small.npz')\n\
         s = ort.InferenceSession('{}', providers=['CPUExecutionProvider'])\n\
         name = s.get_inputs()[0].name\n\
         hits = sum(int(np.argmax(s.run(None, {{name: d['x_test'][i:i+1]}})[0]) == d['y_test'][i]) for i in range(len(d['y_test'])))\n\
         print(hits / len(d['y_test']))\n",
        model.display()
    );
    python(dir, ["-c", &code]).trim().parse().unwrap()
}

fn journal_keys(work: &Path) -> Vec<String> {
    std::fs::read_to_string(work.join("auto.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn json_contract_report_and_the_output_in_onnx_runtime() {
    let dir = scratch("auto-contract");
    let data = small_mnist(&dir);
    let (out, work, report) = (dir.join("best.onnx"), dir.join("work"), dir.join("r.html"));
    let mut a = args(
        &data,
        &out,
        &work,
        &["--target", "size", "--max-trials", TRIALS],
    );
    a.extend(["--report".to_string(), report.display().to_string()]);
    let run = auto(&a);
    assert_eq!(run["status"], "ok", "{run:#}");
    assert_eq!(run["output"], out.display().to_string());
    assert_eq!(run["trials"], 9);
    assert_eq!(run["history"].as_array().unwrap().len(), 9);
    assert_eq!(run["search_space"], 75);
    let (base, best) = (&run["baseline"], &run["best"]);
    let base_acc = base["accuracy"].as_f64().unwrap();
    // LeNet5 is about 99% accurate on MNIST; a broken evaluation falls far below.
    assert!(base_acc > 0.97, "{base}");
    assert!(base["latency_ms"].as_f64().unwrap() > 0.0);
    let best_acc = best["accuracy"].as_f64().unwrap();
    assert!(base_acc - best_acc <= 0.01, "{best}");
    // Size target: an 8-bit model is about 4x smaller than the float one.
    let (base_size, best_size) = (
        base["size_bytes"].as_f64().unwrap(),
        best["size_bytes"].as_f64().unwrap(),
    );
    assert!(base_size / best_size > 3.0, "{base} {best}");
    assert_eq!(std::fs::metadata(&out).unwrap().len() as f64, best_size);
    let steps: Vec<&str> = (best["steps"].as_array().unwrap().iter())
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    // The pipeline's order: pruning and its fine-tune on the unfolded model, then the graph
    // optimization (always there), then quantization.
    let order = [
        "prune",
        "factorize",
        "train",
        "optimize",
        "fp16",
        "quantize",
        "int4",
    ];
    let ranks: Vec<usize> = (steps.iter())
        .map(|s| order.iter().position(|o| o == s).expect(s))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert!(steps.contains(&"optimize"), "{steps:?}");
    assert!(
        ["quantize", "int4"].contains(steps.last().unwrap()),
        "{steps:?}"
    );
    // The untuned channel prunings lose more than the budget on the hard subset: dropped
    // there, without a full evaluation.
    let history = run["history"].as_array().unwrap();
    let dropped: Vec<&Value> = history
        .iter()
        .filter(|h| h["verdict"] == "dropped")
        .collect();
    assert!(
        dropped
            .iter()
            .all(|h| h["accuracy"].is_null() && h["subset_drop_pts"].as_f64().unwrap() > 1.25),
        "{history:#?}"
    );
    // The output model in ONNX Runtime, one sample per run, scores exactly what the JSON
    // says (the search measures accuracy there): in Python and in `whittle eval --engine
    // ort`.
    let ort = ort_accuracy(&dir, &out);
    assert!((ort - best_acc).abs() <= 1e-9, "ORT {ort}, JSON {best_acc}");
    let eval = json(&whittle(&[
        "eval",
        &out.display().to_string(),
        "--data",
        &data,
        "--engine",
        "ort",
        "--batch-size",
        "1",
        "--json",
    ]));
    let evaluated = eval["accuracy"].as_f64().unwrap();
    assert!(
        (evaluated - best_acc).abs() <= 1e-9,
        "whittle eval --engine ort {evaluated}, JSON {best_acc}"
    );
    let page = std::fs::read_to_string(&report).unwrap();
    for id in [
        "plot-search-size-latency",
        "plot-search-latency-accuracy",
        "plot-search-best",
    ] {
        assert!(page.contains(id), "{id} missing from the report");
    }
    // Names like "channel-35% -> int8-static" are HTML-escaped in the page.
    let name = best["name"].as_str().unwrap().replace('>', "&gt;");
    assert!(page.contains(&name), "{name} missing from the report");
}

#[test]
fn an_impossible_constraint_still_writes_the_closest_model() {
    let dir = scratch("auto-impossible");
    let data = small_mnist(&dir);
    let (out, work) = (dir.join("best.onnx"), dir.join("work"));
    let run = auto(&args(
        &data,
        &out,
        &work,
        &[
            "--target",
            "speed",
            "--max-latency-ms",
            "0.000001",
            "--max-trials",
            "3",
        ],
    ));
    assert_eq!(run["status"], "budget_not_met", "{run:#}");
    assert_eq!(run["trials"], 3);
    let distance = &run["distance"];
    assert!(distance["total"].as_f64().unwrap() > 1000.0, "{distance}");
    assert_eq!(distance["constraints"][1]["objective"], "latency_ms");
    assert!(out.is_file());
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        run["best"]["size_bytes"].as_u64().unwrap()
    );
}

#[test]
fn a_killed_run_resumes_without_repeating_finished_trials_and_the_target_decides() {
    let dir = scratch("auto-kill");
    let data = small_mnist(&dir);
    let (out, work) = (dir.join("speed.onnx"), dir.join("work"));
    let a = args(
        &data,
        &out,
        &work,
        &["--target", "speed", "--max-trials", TRIALS],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(&a)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while journal_keys(&work).len() < 2 {
        assert!(Instant::now() < deadline, "two trials never finished");
        assert!(child.try_wait().unwrap().is_none(), "whittle ended early");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = journal_keys(&work);
    assert!(
        out.is_file(),
        "the best model so far is written after every trial"
    );
    let run = auto(&a);
    assert_eq!(run["trials"], 9);
    let after = journal_keys(&work);
    // The finished trials were replayed, not run again: each key once, those of the
    // killed run first.
    assert_eq!(after.len(), 9);
    assert_eq!(after[..before.len()], before[..]);
    let unique: std::collections::HashSet<&String> = after.iter().collect();
    assert_eq!(unique.len(), 9);

    // The same trials judged for size pick the smallest model, for speed the fastest.
    let size_out = dir.join("size.onnx");
    let sized = auto(&args(
        &data,
        &size_out,
        &work,
        &["--target", "size", "--max-trials", TRIALS],
    ));
    // The speed run's trials are replayed, not run again (size tries dynamic INT8 too,
    // which speed leaves out on a conv model).
    let sized_keys = journal_keys(&work);
    let once: std::collections::HashSet<&String> = sized_keys.iter().collect();
    assert_eq!(once.len(), sized_keys.len(), "every trial replayed");
    for (run, key) in [(&run, "latency_ms"), (&sized, "size_bytes")] {
        let best = run["best"][key].as_f64().unwrap();
        let least = (run["history"].as_array().unwrap().iter())
            .filter(|h| h["in_budget"] == true)
            .map(|h| h[key].as_f64().unwrap())
            .fold(f64::INFINITY, f64::min);
        assert_eq!(best, least, "{key}: {run:#}");
    }
    assert_ne!(
        run["best"]["name"], sized["best"]["name"],
        "{run:#} {sized:#}"
    );
}

#[test]
fn bad_options_are_refused_naming_the_flag() {
    let dir = scratch("auto-bad");
    let out = dir.join("o.onnx");
    let model = asset("models/mnist_lenet5.onnx");
    let data = format!("mnist:{}", asset("mnist"));
    let base = [
        "auto",
        model.as_str(),
        "--data",
        data.as_str(),
        "-o",
        out.to_str().unwrap(),
    ];
    for (extra, needle) in [
        (
            vec!["--target", "speed", "--max-accuracy-drop", "-1"],
            "--max-accuracy-drop",
        ),
        (vec!["--target", "fast"], "fast"),
        (vec!["--target", "size", "--budget", "20x"], "20x"),
        (
            vec!["--target", "size", "--max-trials", "0"],
            "--max-trials",
        ),
        (
            vec!["--target", "speed", "--min-cosine", "0.9"],
            "--min-cosine",
        ),
        (
            vec!["--target", "size", "--actions", "int8-static,int3"],
            "int3",
        ),
    ] {
        let mut all: Vec<&str> = base.to_vec();
        all.extend(extra);
        let o = whittle(&all);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{needle} not in {err}");
        assert!(!out.exists());
    }
    let _: PathBuf = out;
}

/// `feeds:` data without labels: the budget is a minimum cosine of the outputs to the
/// baseline's, what needs labels is skipped with the reason, and the output keeps that
/// cosine in ONNX Runtime; options of labelled data are refused.
#[test]
fn label_less_feeds_search_under_a_cosine_budget() {
    let dir = scratch("auto-feeds");
    small_mnist(&dir);
    python(
        &dir,
        [
            "-c",
            "import numpy as np; np.savez('feeds.npz', input=np.load('small.npz')['x_test'][:256])",
        ],
    );
    let feeds = format!("feeds:{}", dir.join("feeds.npz").display());
    let (out, work) = (dir.join("best.onnx"), dir.join("work"));
    let extra = [
        "--target",
        "size",
        "--min-cosine",
        "0.999",
        "--max-trials",
        "6",
    ];
    let j = auto(&args(&feeds, &out, &work, &extra));
    assert_eq!(j["status"], "ok", "{j}");
    let baseline = j["baseline"]["accuracy"].as_f64().unwrap();
    assert!((baseline - 1.0).abs() < 1e-6, "baseline cosine {baseline}");
    let best = j["best"]["accuracy"].as_f64().unwrap();
    assert!((0.999..=1.0 + 1e-6).contains(&best), "best cosine {best}");
    assert!(
        j["best"]["size_bytes"].as_u64().unwrap() < j["baseline"]["size_bytes"].as_u64().unwrap()
    );
    let history = j["history"].as_array().unwrap();
    assert!(history
        .iter()
        .all(|h| !h["name"].as_str().unwrap().contains("tune")));
    let skipped = j["skipped"].as_array().unwrap();
    let labels = skipped
        .iter()
        .filter(|s| s["reason"].as_str().unwrap().contains("need labels"))
        .count();
    // Every tuned point of the grid: 35.
    assert!(labels >= 35, "{labels} skipped for labels: {skipped:?}");
    // The output's cosine to the baseline's outputs in ONNX Runtime, run as auto runs the
    // archive (in feeds of 32: dynamic INT8 takes one activation scale per run): the JSON's
    // figure is ONNX Runtime's.
    let code = format!(
        "import numpy as np, onnxruntime as ort\n\
         x = np.load('feeds.npz')['input']\n\
         run = lambda p: np.concatenate([ort.InferenceSession(p, providers=['CPUExecutionProvider']).run(None, {{'input': x[i:i+32]}})[0].ravel() for i in range(0, len(x), 32)]).astype(np.float64)\n\
         a, b = run('{}'), run('{}')\n\
         print(a @ b / np.linalg.norm(a) / np.linalg.norm(b))\n",
        asset("models/mnist_lenet5.onnx"),
        out.display()
    );
    let ort: f64 = python(&dir, ["-c", &code]).trim().parse().unwrap();
    assert!((ort - best).abs() < 1e-6, "ORT cosine {ort}, JSON {best}");

    let refused = |extra: &[&str], needle: &str| {
        let mut all = args(&feeds, &dir.join("no.onnx"), &dir.join("w2"), extra);
        all.extend(["--target".into(), "size".into()]);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let o = whittle(&refs);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle),
            "{needle} not in {err}"
        );
    };
    refused(&["--max-accuracy-drop", "1"], "--min-cosine");
    let labelled = format!("mnist:{}", asset("mnist"));
    refused(&["--eval-data", &labelled], "--data/--eval-data");
}

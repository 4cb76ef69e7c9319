//! Profiling and benchmarking LeNet5 (real model): hand-computed MACs and memory,
//! ONNX Runtime agreement, benchmark statistics, and clear errors.

use std::collections::HashMap;
use std::path::PathBuf;

use whittle_bench::bench::{bench_batch, BenchOptions, Engine};
use whittle_bench::inputs::{random_inputs, resolve_inputs, ShapeRequest};
use whittle_bench::ort_engine::OrtEngine;
use whittle_bench::profile::{profile, ProfileOptions};
use whittle_exec::{Executor, Value};
use whittle_ir::numeric::max_abs_diff;
use whittle_ir::{GraphEdit, Model};

fn model_path(name: &str) -> PathBuf {
    let path = whittle_data::assets_dir().join("models").join(name);
    assert!(
        path.is_file(),
        "{} missing: run scripts/fetch-assets.sh",
        path.display()
    );
    path
}

fn lenet() -> (PathBuf, Model) {
    let path = model_path("mnist_lenet5.onnx");
    let model = Model::load(&path).unwrap();
    (path, model)
}

fn dims(model: &Model, name: &str) -> Vec<u64> {
    let init = model.graph().initializer(name).unwrap();
    init.dims.iter().map(|&d| d as u64).collect()
}

fn batch_request(batch: usize) -> ShapeRequest {
    ShapeRequest {
        batch: Some(batch),
        shapes: HashMap::new(),
    }
}

#[test]
fn lenet5_profile_matches_hand_computed_macs_params_and_memory() {
    let (_, model) = lenet();
    let batch = 2u64;
    let opts = ProfileOptions {
        shapes: batch_request(batch as usize),
        runs: 3,
        warmup: 1,
        ..Default::default()
    };
    let mut ticks = 0;
    let p = profile(&model, &opts, &mut || ticks += 1).unwrap();
    assert_eq!(ticks, 4);
    // 3x3 convs with padding 1 keep 28x28 (conv1) and 14x14 (conv2, after a 2x2 pool);
    // MACs = N·Cout·H·W·Cin·3·3; Gemm = N·out·in.
    let (c1, c2) = (dims(&model, "conv1.weight"), dims(&model, "conv2.weight"));
    let (l1, l2) = (
        dims(&model, "linear1.weight"),
        dims(&model, "linear2.weight"),
    );
    let conv = |w: &[u64], hw: u64| batch * w[0] * hw * hw * w[1] * w[2] * w[3];
    let expected = conv(&c1, 28) + conv(&c2, 14) + batch * l1[0] * l1[1] + batch * l2[0] * l2[1];
    assert_eq!(p.total_macs, expected);
    assert_eq!(p.total_flops, 2 * expected);
    let params: u64 = model
        .graph()
        .initializer
        .iter()
        .map(|t| t.dims.iter().product::<i64>() as u64)
        .sum();
    assert_eq!(p.total_params, params);
    assert_eq!(p.nodes.len(), model.graph().node.len());
    let share: f64 = p.nodes.iter().map(|n| n.share).sum();
    assert!((share - 1.0).abs() < 1e-9, "{share}");
    let node_time: f64 = p.nodes.iter().map(|n| n.time_ms).sum();
    assert!(node_time > 0.0 && node_time <= p.run_time_ms * 1.001);
    assert_eq!(p.nodes[9].output_shape, vec![batch as usize, 10]);
    assert_eq!(p.nodes[0].activation_bytes, batch * c1[0] * 28 * 28 * 4);
    // Peak at the first Relu: its input and output, both [N,32,28,28] f32, are live.
    assert_eq!(p.peak_activation_bytes, 2 * batch * c1[0] * 28 * 28 * 4);
    assert!(p.bottlenecks.iter().all(|n| n.share > opts.threshold));
    let convs = p.by_op_type.iter().find(|g| g.op_type == "Conv").unwrap();
    assert_eq!(
        (convs.count, convs.macs),
        (2, conv(&c1, 28) + conv(&c2, 14))
    );
}

#[test]
fn ort_engine_agrees_with_the_executor_on_lenet5() {
    let (path, model) = lenet();
    let inputs = resolve_inputs(&model, &batch_request(3)).unwrap();
    let data = random_inputs(&inputs, 11).unwrap();
    let ours = Executor::new(&model)
        .unwrap()
        .run(
            data.iter()
                .map(|(n, d)| {
                    (
                        n.clone(),
                        Value::from_data(d, &candle_core::Device::Cpu).unwrap(),
                    )
                })
                .collect(),
        )
        .unwrap();
    let theirs = OrtEngine::load(&path, 1).unwrap().run(&data).unwrap();
    assert_eq!(theirs.len(), ours.len());
    for (name, value) in &theirs {
        let mine = ours[name].to_data().unwrap();
        assert_eq!(mine.dims(), value.dims());
        let (a, b) = (mine.to_f64_vec().unwrap(), value.to_f64_vec().unwrap());
        let worst = max_abs_diff(a, b);
        assert!(worst < 1e-4, "{name}: max difference {worst}");
    }
}

#[test]
fn both_engines_give_sane_statistics() {
    let (path, model) = lenet();
    for engine in [Engine::Whittle, Engine::Ort] {
        let opts = BenchOptions {
            engine,
            threads: 0,
            warmup: 1,
            runs: 5,
            shapes: HashMap::new(),
            seed: 0,
        };
        let r = bench_batch(&path, &model, &opts, Some(4), &mut || {}).unwrap();
        let l = &r.latency;
        assert!(l.min_ms > 0.0 && l.min_ms <= l.median_ms, "{engine}: {l:?}");
        assert!(l.median_ms <= l.p90_ms && l.p90_ms <= l.p99_ms && l.p99_ms <= l.max_ms);
        assert!((r.throughput - 4.0 * 1e3 / l.mean_ms).abs() < 1e-9);
        assert!((r.fps - 1e3 / l.mean_ms).abs() < 1e-9);
        assert_eq!(r.input_shapes["input"], vec![4, 1, 28, 28]);
        assert!(r.peak_rss_bytes.unwrap() > 1 << 20);
    }
}

#[test]
fn bad_requests_are_clear_errors() {
    let (path, model) = lenet();
    let zero = ProfileOptions {
        runs: 0,
        ..Default::default()
    };
    let err = profile(&model, &zero, &mut || {}).unwrap_err().to_string();
    assert!(err.contains("`runs` must be at least 1"), "{err}");
    let minilm = Model::load(model_path("paraphrase-MiniLM-L3-v2.onnx")).unwrap();
    let open = ProfileOptions {
        shapes: batch_request(1),
        ..Default::default()
    };
    let err = profile(&minilm, &open, &mut || {}).unwrap_err().to_string();
    assert!(
        err.contains("sequence_length") && err.contains("`shapes` input_ids="),
        "{err}"
    );
    let opts = BenchOptions {
        engine: Engine::Whittle,
        threads: 0,
        warmup: 0,
        runs: 0,
        shapes: HashMap::new(),
        seed: 0,
    };
    let err = bench_batch(&path, &model, &opts, Some(1), &mut || {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("`runs` must be at least 1"), "{err}");
    assert!("tvm"
        .parse::<Engine>()
        .unwrap_err()
        .to_string()
        .contains("whittle or ort"));
}

#[test]
fn a_dynamic_batch_is_one_without_batch_and_said_so() {
    let (path, model) = lenet();
    let p = profile(&model, &ProfileOptions::default(), &mut || {}).unwrap();
    assert_eq!(p.input_shapes["input"], vec![1, 1, 28, 28]);
    assert!(p.notes[0].contains("'input'") && p.notes[0].contains("taken as 1"));
    let opts = BenchOptions {
        engine: Engine::Whittle,
        threads: 0,
        warmup: 0,
        runs: 1,
        shapes: HashMap::new(),
        seed: 0,
    };
    let r = bench_batch(&path, &model, &opts, None, &mut || {}).unwrap();
    assert_eq!((r.batch, r.notes.len()), (1, 1));
    let r = bench_batch(&path, &model, &opts, Some(2), &mut || {}).unwrap();
    assert_eq!(r.batch, 2);
    assert!(r.notes.is_empty());
}

#[test]
fn a_run_that_cannot_fit_in_memory_is_refused_before_allocating() {
    let (_, model) = lenet();
    // 10^7 images of 28x28 floats are 31 GB of input alone.
    let opts = ProfileOptions {
        shapes: batch_request(10_000_000),
        ..Default::default()
    };
    let err = profile(&model, &opts, &mut || {}).unwrap_err().to_string();
    assert!(
        err.contains("[10000000, 1, 28, 28]")
            && err.contains("needs")
            && err.contains("lower `batch`"),
        "{err}"
    );
}

//! The planned executor (crates/exec/src/plan): a second run at the same input shapes runs
//! the plan recorded by the first, and gives the same values; folding, fusion, views,
//! hooks, kept values, re-planning per shape and data-dependent shapes.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use whittle_exec::{Executor, RunOptions, Value};
use whittle_ir::attr::make;
use whittle_ir::numeric::max_abs_diff;
use whittle_ir::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
};
use whittle_ir::{Model, TensorData};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + seed) * 2654435761) % 2000) as f32 / 1000.0 - 1.0)
        .collect()
}

fn floats(dims: &[usize], seed: usize) -> Value {
    let n = dims.iter().product();
    Value::f32(Tensor::from_vec(values(n, seed), dims, &Device::Cpu).unwrap()).unwrap()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.to_f32_vec().unwrap()
}

/// Runs `feed` node by node, then twice through `run` (the first run at new shapes builds
/// the plan, from shape inference or recorded), and checks all give the same outputs.
fn twice(exec: &Executor, feed: &HashMap<String, Value>, tol: f64) -> HashMap<String, Value> {
    let steps = 0..exec.run_order().len();
    let by_node = exec
        .run_range(steps, feed.clone(), RunOptions::default())
        .unwrap();
    let first = exec.run(feed.clone()).unwrap();
    assert!(
        exec.plan_for(feed, &[], false).is_some(),
        "no plan was built"
    );
    let second = exec.run(feed.clone()).unwrap();
    for (name, v) in &second {
        for (run, other) in [("first", &first), ("node-by-node", &by_node)] {
            assert_eq!(v.shape(), other[name].shape(), "output {name}");
            let d = max_abs_diff(f32s(v), f32s(&other[name]));
            assert!(
                d <= tol,
                "output {name}: planned run differs from the {run} by {d}"
            );
        }
    }
    second
}

fn kinds(
    exec: &Executor,
    feed: &HashMap<String, Value>,
    keep: &[String],
    observe: bool,
) -> Vec<&'static str> {
    let plan = exec.plan_for(feed, keep, observe).expect("a plan");
    plan.steps.iter().map(|s| s.op.kind()).collect()
}

#[test]
fn lenet5_planned_runs_match_and_each_batch_size_gets_its_plan() {
    let model = Model::load(common::model_path("mnist_lenet5.onnx")).unwrap();
    let exec = Executor::new(&model).unwrap();
    let input = exec.inputs()[0].name.clone();
    let feed = |batch| HashMap::from([(input.clone(), floats(&[batch, 1, 28, 28], batch))]);
    twice(&exec, &feed(2), 1e-5);
    twice(&exec, &feed(5), 1e-5);
    // Both plans stay cached: b2 runs on its plan again, unchanged.
    assert!(exec.plan_for(&feed(2), &[], false).is_some());
    twice(&exec, &feed(2), 1e-5);
    let steps = kinds(&exec, &feed(2), &[], false);
    assert!(steps.iter().any(|k| k.starts_with("dense")), "{steps:?}");
    assert!(steps.contains(&"view"), "{steps:?}");
}

#[test]
fn minilm_folds_its_shape_arithmetic_and_runs_gemms_natively() {
    let model = Model::load(common::model_path("paraphrase-MiniLM-L3-v2.onnx")).unwrap();
    let exec = Executor::new(&model).unwrap();
    let (batch, seq) = (2, 16);
    let mut feed = HashMap::new();
    for spec in exec.inputs() {
        let ids: Vec<i64> = (0..batch * seq)
            .map(|i| {
                if spec.name.contains("mask") {
                    1
                } else {
                    1000 + (i as i64 * 7919) % 1000
                }
            })
            .collect();
        let t = Tensor::from_vec(ids, (batch, seq), &Device::Cpu).unwrap();
        feed.insert(
            spec.name.clone(),
            Value::new(t, whittle_ir::DataType::Int64).unwrap(),
        );
    }
    twice(&exec, &feed, 1e-4);
    // Static shape inference knows every value: the first run already ran a plan.
    assert!(exec.plan_for(&feed, &[], false).unwrap().inferred);
    let steps = kinds(&exec, &feed, &[], false);
    let count = |k: &str| steps.iter().filter(|s| s.starts_with(k)).count();
    assert!(count("folded") >= 10, "{steps:?}");
    assert!(count("dense") >= 6, "{steps:?}");
    assert!(count("matmul") >= 2, "{steps:?}");
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: format!("{op}_{}", outputs[0]),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

fn init(name: &str, dims: &[usize], seed: usize) -> TensorProto {
    let n = dims.iter().product();
    TensorData::from_slice(dims.to_vec(), &values(n, seed))
        .unwrap()
        .to_proto(name)
}

fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, outputs: &[&str]) -> Model {
    let value = |name: &str| ValueInfoProto {
        name: name.into(),
        ..Default::default()
    };
    Model::new(ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: nodes,
            input: vec![value("x")],
            output: outputs.iter().map(|o| value(o)).collect(),
            initializer: inits,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// `y = silu(x · W + b)` written as MatMul, Add, Sigmoid, Mul.
fn dense_silu() -> Model {
    model(
        vec![
            node("MatMul", &["x", "w"], &["h"], vec![]),
            node("Add", &["h", "b"], &["hb"], vec![]),
            node("Sigmoid", &["hb"], &["s"], vec![]),
            node("Mul", &["hb", "s"], &["y"], vec![]),
        ],
        vec![init("w", &[6, 5], 1), init("b", &[5], 2)],
        &["y"],
    )
}

#[test]
fn matmul_bias_and_silu_fuse_into_one_step_unless_a_value_is_kept() {
    let exec = Executor::new(&dense_silu()).unwrap();
    let feed = HashMap::from([("x".to_string(), floats(&[3, 6], 7))]);
    let out = twice(&exec, &feed, 1e-6);
    assert_eq!(kinds(&exec, &feed, &[], false), ["dense+act"]);
    // The reference: x·W + b, then x * sigmoid(x), in f64.
    let (x, w, b) = (values(18, 7), values(30, 1), values(5, 2));
    let want: Vec<f32> = (0..15)
        .map(|i| {
            let (r, c) = (i / 5, i % 5);
            let h: f64 = (0..6)
                .map(|k| x[r * 6 + k] as f64 * w[k * 5 + c] as f64)
                .sum::<f64>()
                + b[c] as f64;
            (h / (1.0 + (-h).exp())) as f32
        })
        .collect();
    assert!(max_abs_diff(f32s(&out["y"]), want) < 1e-5);
    // Keeping the bias sum: the Add's output must exist, so only the bias fuses.
    let keep = vec!["hb".to_string()];
    let opts = || RunOptions {
        keep: keep.clone(),
        ..Default::default()
    };
    let first = exec.run_with(feed.clone(), opts()).unwrap();
    let second = exec.run_with(feed.clone(), opts()).unwrap();
    assert_eq!(
        kinds(&exec, &feed, &keep, false),
        ["dense", "unary", "binary"]
    );
    assert!(max_abs_diff(f32s(&first["hb"]), f32s(&second["hb"])) < 1e-5);
}

#[test]
fn a_hook_sees_every_value_of_a_planned_run() {
    let exec = Executor::new(&dense_silu()).unwrap();
    let feed = HashMap::from([("x".to_string(), floats(&[3, 6], 7))]);
    let observe = |exec: &Executor| {
        let mut seen = Vec::new();
        let mut hook = |name: &str, _: &NodeProto, v: &Value| {
            seen.push((name.to_string(), f32s(v)));
            Ok(())
        };
        let opts = RunOptions {
            hook: Some(&mut hook),
            ..Default::default()
        };
        exec.run_with(feed.clone(), opts).unwrap();
        seen
    };
    let recorded = observe(&exec);
    let planned = observe(&exec);
    assert!(exec.plan_for(&feed, &[], true).is_some());
    let names: Vec<&str> = planned.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["h", "hb", "s", "y"]);
    for ((n, a), (_, b)) in recorded.iter().zip(&planned) {
        assert!(max_abs_diff(a.clone(), b.clone()) < 1e-6, "{n}");
    }
}

#[test]
fn batch_normalization_folds_into_the_conv_before_it() {
    let m = model(
        vec![
            node(
                "Conv",
                &["x", "w", "cb"],
                &["c"],
                vec![make::ints("pads", &[1, 1, 1, 1])],
            ),
            node(
                "BatchNormalization",
                &["c", "g", "beta", "mean", "var"],
                &["n"],
                vec![],
            ),
            node("Relu", &["n"], &["y"], vec![]),
        ],
        vec![
            init("w", &[3, 2, 3, 3], 1),
            init("cb", &[3], 2),
            init("g", &[3], 3),
            init("beta", &[3], 4),
            init("mean", &[3], 5),
            TensorData::from_slice(vec![3], &[0.5f32, 1.5, 2.0])
                .unwrap()
                .to_proto("var"),
        ],
        &["y"],
    );
    let exec = Executor::new(&m).unwrap();
    let feed = HashMap::from([("x".to_string(), floats(&[2, 2, 5, 5], 9))]);
    twice(&exec, &feed, 1e-5);
    let steps = kinds(&exec, &feed, &[], false);
    // One step: the Conv with the folded weights and the Relu fused in.
    assert_eq!(steps, ["conv+act"]);
    // Observed, nothing folds: the hook must see the Conv's own output.
    let mut names = Vec::new();
    let mut hook = |name: &str, _: &NodeProto, _: &Value| {
        names.push(name.to_string());
        Ok(())
    };
    for _ in 0..2 {
        let opts = RunOptions {
            hook: Some(&mut hook),
            ..Default::default()
        };
        exec.run_with(feed.clone(), opts).unwrap();
    }
    assert_eq!(names, ["c", "n", "y", "c", "n", "y"]);
}

#[test]
fn a_data_dependent_shape_falls_back_to_the_node_by_node_path() {
    let m = model(
        vec![
            node("NonZero", &["x"], &["nz"], vec![]),
            node("Transpose", &["nz"], &["y"], vec![]),
        ],
        vec![],
        &["y"],
    );
    let exec = Executor::new(&m).unwrap();
    let feed = |v: Vec<f32>| {
        HashMap::from([(
            "x".to_string(),
            Value::f32(Tensor::from_vec(v, 4, &Device::Cpu).unwrap()).unwrap(),
        )])
    };
    let run = |v: Vec<f32>| exec.run(feed(v)).unwrap()["y"].to_i64_vec().unwrap();
    assert_eq!(run(vec![0.0, 1.0, 0.0, 2.0]), [1, 3]);
    // Same input shape, another output shape: the plan's recorded shape is wrong here.
    assert_eq!(run(vec![3.0, 1.0, 0.0, 2.0]), [0, 1, 3]);
    assert!(exec.plan_for(&feed(vec![0.0; 4]), &[], false).is_none());
    assert_eq!(run(vec![0.0, 0.0, 0.0, 2.0]), [3]);
}

fn tensor<T: whittle_ir::tensor::Element>(name: &str, dims: &[usize], v: &[T]) -> TensorProto {
    TensorData::from_slice(dims.to_vec(), v)
        .unwrap()
        .to_proto(name)
}

/// `x [2, 3, 4]` through QuantizeLinear and DequantizeLinear: per tensor into uint8, per
/// channel (axis 1) into int8 with its integers returned, and a DequantizeLinear of a
/// constant-free Gather from an int8 table.
fn qdq() -> Model {
    let mut m = model(
        vec![
            node("QuantizeLinear", &["x", "s", "z"], &["q"], vec![]),
            node("DequantizeLinear", &["q", "s", "z"], &["y"], vec![]),
            node("QuantizeLinear", &["x", "sc", "zc"], &["qc"], vec![]),
            node("DequantizeLinear", &["qc", "sc", "zc"], &["yc"], vec![]),
            node("Gather", &["table", "ids"], &["rows"], vec![]),
            node("DequantizeLinear", &["rows", "st"], &["e"], vec![]),
        ],
        vec![
            tensor("s", &[], &[0.013f32]),
            tensor("z", &[], &[128u8]),
            tensor("sc", &[3], &[0.01f32, 0.02, 0.005]),
            tensor("zc", &[3], &[0i8, -3, 5]),
            tensor(
                "table",
                &[4, 3],
                &[-128i8, -1, 0, 1, 2, 3, 50, 60, 70, 125, 126, 127],
            ),
            tensor("st", &[], &[0.25f32]),
        ],
        &["y", "qc", "yc", "e"],
    );
    m.graph_mut().input.push(ValueInfoProto {
        name: "ids".into(),
        ..Default::default()
    });
    m
}

#[test]
fn quantize_and_dequantize_run_as_kernels_with_the_operators_values() {
    let exec = Executor::new(&qdq()).unwrap();
    let ids = Tensor::from_vec(vec![3i64, 0, 2], 3, &Device::Cpu).unwrap();
    let mut feed = HashMap::from([
        ("x".to_string(), floats(&[2, 3, 4], 5)),
        (
            "ids".to_string(),
            Value::new(ids, whittle_ir::DataType::Int64).unwrap(),
        ),
    ]);
    // Values on the rounding ties, beyond the ranges, and NaN.
    let mut x = f32s(&feed["x"]);
    x[..5].copy_from_slice(&[0.0065, -0.0195, 9.0, -9.0, f32::NAN]);
    feed.insert(
        "x".into(),
        Value::f32(Tensor::from_vec(x, (2, 3, 4), &Device::Cpu).unwrap()).unwrap(),
    );
    let steps = 0..exec.run_order().len();
    let by_node = exec
        .run_range(steps, feed.clone(), RunOptions::default())
        .unwrap();
    for _ in 0..2 {
        let planned = exec.run(feed.clone()).unwrap();
        for name in ["y", "qc", "yc", "e"] {
            let (a, b) = (
                by_node[name].to_data().unwrap(),
                planned[name].to_data().unwrap(),
            );
            assert_eq!(a, b, "{name}");
        }
        assert_eq!(planned["qc"].dtype(), whittle_ir::DataType::Int8);
    }
    let steps = kinds(&exec, &feed, &[], false);
    let count = |k: &str| steps.iter().filter(|s| **s == k).count();
    assert_eq!(
        (count("quantize"), count("dequantize")),
        (2, 3),
        "{steps:?}"
    );
    // A hook sees the quantized values with their type.
    let mut seen = HashMap::new();
    let mut hook = |name: &str, _: &NodeProto, v: &Value| {
        seen.insert(name.to_string(), v.to_data().unwrap());
        Ok(())
    };
    let opts = RunOptions {
        hook: Some(&mut hook),
        ..Default::default()
    };
    exec.run_with(feed.clone(), opts).unwrap();
    assert_eq!(seen["q"].dtype(), whittle_ir::DataType::Uint8);
    assert_eq!(seen["qc"], by_node["qc"].to_data().unwrap());
    // With `floats_only` it sees the float values alone, the same ones, planned and node
    // by node, and in the first run of a model whose plan that run records (FakeQuantize
    // has no shape rule).
    let mut recorded = qdq();
    let fake = NodeProto {
        domain: "ai.whittle".into(),
        ..node("FakeQuantize", &["x"], &["fq"], vec![])
    };
    recorded.graph_mut().node.push(fake);
    recorded.graph_mut().output.push(ValueInfoProto {
        name: "fq".into(),
        ..Default::default()
    });
    recorded.proto.opset_import.push(OperatorSetIdProto {
        domain: "ai.whittle".into(),
        version: 1,
    });
    let recorded = Executor::new(&recorded).unwrap();
    for (exec, planned, fq) in [
        (&exec, true, false),
        (&exec, false, false),
        (&recorded, true, true),
    ] {
        let mut floats = HashMap::new();
        let mut hook = |name: &str, _: &NodeProto, v: &Value| {
            floats.insert(name.to_string(), v.to_data().unwrap());
            Ok(())
        };
        let opts = RunOptions {
            hook: Some(&mut hook),
            floats_only: true,
            ..Default::default()
        };
        let steps = 0..exec.run_order().len();
        match planned {
            true => exec.run_with(feed.clone(), opts),
            false => exec.run_range(steps, feed.clone(), opts),
        }
        .unwrap();
        let mut names: Vec<_> = floats.keys().cloned().collect();
        names.sort();
        let expected = match fq {
            true => vec!["e", "fq", "y", "yc"],
            false => vec!["e", "y", "yc"],
        };
        assert_eq!(names, expected, "planned: {planned}, recorded: {fq}");
        for name in names.iter().filter(|n| n.as_str() != "fq") {
            assert_eq!(floats[name], seen[name], "{name}");
        }
    }
    let recorded_plan = recorded.plan_for(&feed, &[], true).unwrap();
    assert!(!recorded_plan.inferred, "the plan was to be recorded");
}

#[test]
fn concat_runs_natively_with_a_constant_operand() {
    let m = model(
        vec![
            node("Relu", &["x"], &["r"], vec![]),
            node(
                "Concat",
                &["r", "c", "x"],
                &["y"],
                vec![make::int("axis", 1)],
            ),
        ],
        vec![init("c", &[2, 1, 2], 3)],
        &["y"],
    );
    let exec = Executor::new(&m).unwrap();
    let feed = HashMap::from([("x".to_string(), floats(&[2, 3, 2], 5))]);
    let out = twice(&exec, &feed, 0.0);
    assert_eq!(kinds(&exec, &feed, &[], false), ["unary", "concat"]);
    assert_eq!(out["y"].shape(), [2, 7, 2]);
    let (x, c) = (values(12, 5), values(4, 3));
    let mut want = Vec::new();
    for b in 0..2 {
        want.extend(x[b * 6..(b + 1) * 6].iter().map(|v| v.max(0.0)));
        want.extend(&c[b * 2..(b + 1) * 2]);
        want.extend(&x[b * 6..(b + 1) * 6]);
    }
    assert_eq!(f32s(&out["y"]), want);
}

fn int64s(name: &str, v: &[i64]) -> TensorProto {
    TensorData::from_slice(vec![v.len()], v)
        .unwrap()
        .to_proto(name)
}

/// YOLOv8n's data movement: Split, Transpose, Slice (negative step, clamped start),
/// nearest Resize by 2x3 and a Softmax over axis 1 all run as native kernels and give the
/// node-by-node path's values.
#[test]
fn split_transpose_slice_resize_and_softmax_over_an_inner_axis_run_natively() {
    let m = model(
        vec![
            node(
                "Split",
                &["x", "sizes"],
                &["a", "b"],
                vec![make::int("axis", 1)],
            ),
            node(
                "Transpose",
                &["b"],
                &["t"],
                vec![make::ints("perm", &[0, 2, 1, 3])],
            ),
            node("Softmax", &["t"], &["s"], vec![make::int("axis", 1)]),
            node(
                "Slice",
                &["a", "starts", "ends", "axes", "steps"],
                &["sl"],
                vec![],
            ),
            node(
                "Resize",
                &["a", "", "scales"],
                &["r"],
                vec![
                    make::string("mode", "nearest"),
                    make::string("coordinate_transformation_mode", "asymmetric"),
                    make::string("nearest_mode", "floor"),
                ],
            ),
        ],
        vec![
            int64s("sizes", &[3, 5]),
            int64s("starts", &[100, 1]),
            int64s("ends", &[-100, 9]),
            int64s("axes", &[2, -1]),
            int64s("steps", &[-2, 3]),
            TensorData::from_slice(vec![4], &[1.0f32, 1.0, 2.0, 3.0])
                .unwrap()
                .to_proto("scales"),
        ],
        &["s", "sl", "r"],
    );
    let exec = Executor::new(&m).unwrap();
    let feed = HashMap::from([("x".to_string(), floats(&[2, 8, 6, 10], 3))]);
    let out = twice(&exec, &feed, 1e-6);
    assert_eq!(out["s"].shape(), [2, 6, 5, 10]);
    assert_eq!(out["sl"].shape(), [2, 3, 3, 3]);
    assert_eq!(out["r"].shape(), [2, 3, 12, 30]);
    // Values: x[n, c, h, w] at flat index ((n * 8 + c) * 6 + h) * 10 + w.
    let x = values(2 * 8 * 6 * 10, 3);
    let at = |n: usize, c: usize, h: usize, w: usize| x[((n * 8 + c) * 6 + h) * 10 + w];
    let sl = f32s(&out["sl"]);
    // Rows 5, 3, 1 (start clamped to 5, step -2), columns 1, 4, 7.
    assert_eq!(sl[..3], [at(0, 0, 5, 1), at(0, 0, 5, 4), at(0, 0, 5, 7)]);
    assert_eq!(sl[3], at(0, 0, 3, 1));
    let r = f32s(&out["r"]);
    assert_eq!(
        r[30 * 3 + 7],
        at(0, 0, 1, 2),
        "row 3 reads row 1, column 7 column 2"
    );
    // Softmax over the 6 rows of b (channels 3..8 of x), at b-channel 1, column 4.
    let s = f32s(&out["s"]);
    let col: Vec<f64> = (0..6).map(|h| f64::from(at(0, 4, h, 4)).exp()).collect();
    let want = col[2] / col.iter().sum::<f64>();
    assert!((f64::from(s[(2 * 5 + 1) * 10 + 4]) - want).abs() < 1e-6);
    let steps = kinds(&exec, &feed, &[], false);
    assert!(!steps.contains(&"fallback"), "{steps:?}");
    assert_eq!(
        steps.iter().filter(|k| **k == "gather").count(),
        5,
        "{steps:?}"
    );
}

/// Every node of YOLOv8n that runs per inference has a native kernel: no step converts to
/// and from candle (the planned values themselves are checked against ONNX Runtime in
/// tests/real_models.rs).
#[test]
fn yolov8n_runs_without_a_candle_step() {
    let model = Model::load(common::model_path("yolov8n-320.onnx")).unwrap();
    let exec = Executor::new(&model).unwrap();
    let feed = HashMap::from([("images".to_string(), floats(&[1, 3, 320, 320], 1))]);
    // Box coordinates reach 320 pixels: 1e-3 is about 3e-6 relative.
    twice(&exec, &feed, 1e-3);
    let steps = kinds(&exec, &feed, &[], false);
    let fallbacks = steps.iter().filter(|k| **k == "fallback").count();
    assert_eq!(fallbacks, 0, "{steps:?}");
    assert!(
        steps.iter().filter(|k| **k == "gather").count() >= 20,
        "{steps:?}"
    );
}

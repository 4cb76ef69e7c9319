//! The graph-level backward (`whittle_exec::backward`): every rule against central
//! differences, and whole-graph gradients of LeNet5 against candle's tape.
//!
//! Each rule runs on a one-node graph whose float operands are trainable float32
//! initializers; the loss is `sum(y * R)` with a fixed random `R`, so the gradient of `y` is
//! `R`. The numeric side evaluates the same graph in float64 (operands cast exactly) with
//! central differences, so the only error left is the rule's float32 arithmetic.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use whittle_exec::backward::GraphBackward;
use whittle_exec::ops::fake_quant::DOMAIN as FAKE_QUANT_DOMAIN;
use whittle_exec::{ExecError, Executor, RunOptions, Value};
use whittle_ir::attr::make;
use whittle_ir::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
};
use whittle_ir::seed::SplitMix64;
use whittle_ir::{Model, TensorData};

/// Seed of every run (Dropout masks).
const SEED: u64 = 7;

/// One operand of a case.
enum Operand {
    /// A trainable float tensor, uniform in `[lo, hi)`.
    Param(Vec<usize>, f64, f64),
    /// A fixed float tensor (not trained), uniform in `[-1, 1)`.
    Fixed(Vec<usize>),
    /// An int64 constant.
    Ints(Vec<usize>, Vec<i64>),
    /// A float constant given by value.
    Floats(Vec<usize>, Vec<f64>),
}

use Operand::{Fixed, Floats, Ints, Param};

fn p(dims: &[usize]) -> Operand {
    Param(dims.to_vec(), -1.0, 1.0)
}

struct Case {
    op: &'static str,
    attrs: Vec<AttributeProto>,
    operands: Vec<Operand>,
    opset: i64,
}

fn case(op: &'static str, attrs: Vec<AttributeProto>, operands: Vec<Operand>) -> Case {
    Case {
        op,
        attrs,
        operands,
        opset: 17,
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    make::ints(name, v)
}

fn cases() -> Vec<Case> {
    let x4 = || p(&[2, 3, 4, 4]);
    let mut v = vec![
        case(
            "Conv",
            vec![ints("pads", &[1, 1, 1, 1]), ints("strides", &[2, 2])],
            vec![p(&[2, 2, 5, 5]), p(&[3, 2, 3, 3]), p(&[3])],
        ),
        case(
            "Conv",
            vec![make::int("group", 2), ints("dilations", &[2, 1])],
            vec![p(&[1, 4, 6, 5]), p(&[4, 2, 2, 3])],
        ),
        // One input channel over a larger batch, as LeNet5's first layer.
        case(
            "Conv",
            vec![ints("pads", &[1, 1, 1, 1])],
            vec![p(&[6, 1, 12, 12]), p(&[8, 1, 3, 3]), p(&[8])],
        ),
        // Pointwise on 1x1 and 2x2 planes (squeeze-and-excitation, MobileNet's last
        // stages): one GEMM over the batch's rows.
        case(
            "Conv",
            vec![],
            vec![p(&[3, 5, 1, 1]), p(&[4, 5, 1, 1]), p(&[4])],
        ),
        case("Conv", vec![], vec![p(&[3, 5, 2, 2]), p(&[4, 5, 1, 1])]),
        // Depthwise, as MobileNet's.
        case(
            "Conv",
            vec![make::int("group", 3), ints("pads", &[1, 1, 1, 1])],
            vec![p(&[2, 3, 5, 5]), p(&[3, 1, 3, 3]), p(&[3])],
        ),
        case(
            "Conv",
            vec![
                make::string("auto_pad", "SAME_UPPER"),
                ints("strides", &[2]),
            ],
            vec![p(&[2, 2, 7]), p(&[3, 2, 3])],
        ),
        case(
            "Gemm",
            vec![
                make::int("transB", 1),
                make::float("alpha", 0.5),
                make::float("beta", 2.0),
            ],
            vec![p(&[3, 4]), p(&[5, 4]), p(&[5])],
        ),
        case(
            "Gemm",
            vec![make::int("transA", 1)],
            vec![p(&[4, 3]), p(&[4, 5]), p(&[3, 5])],
        ),
        case("MatMul", vec![], vec![p(&[2, 3, 4]), p(&[4, 5])]),
        case("MatMul", vec![], vec![p(&[2, 1, 3, 4]), p(&[3, 4, 2])]),
        case("MatMul", vec![], vec![p(&[2, 3, 4]), p(&[2, 4, 2])]),
        case("MatMul", vec![], vec![p(&[4]), p(&[2, 4, 3])]),
        case("Add", vec![], vec![p(&[2, 3, 4]), p(&[3, 1])]),
        case("Add", vec![], vec![p(&[2, 3, 2, 2]), p(&[1, 3, 1, 1])]),
        case("Sub", vec![], vec![p(&[2, 3, 4]), p(&[4])]),
        case("Mul", vec![], vec![p(&[2, 3, 4]), p(&[3, 1])]),
        case("Mul", vec![], vec![p(&[2, 3, 4]), Fixed(vec![])]),
        // Squeeze-and-excitation scales over planes of several rows, on either side.
        case("Mul", vec![], vec![p(&[2, 3, 2, 3]), p(&[2, 3, 1, 1])]),
        case("Mul", vec![], vec![p(&[2, 3, 1, 1]), p(&[2, 3, 4, 4])]),
        case(
            "Div",
            vec![],
            vec![p(&[2, 3, 4]), Param(vec![3, 1], 0.5, 1.5)],
        ),
        case("Relu", vec![], vec![p(&[3, 4])]),
        case("Sigmoid", vec![], vec![p(&[3, 4])]),
        case("Tanh", vec![], vec![p(&[3, 4])]),
        case("Exp", vec![], vec![p(&[3, 4])]),
        case(
            "LeakyRelu",
            vec![make::float("alpha", 0.1)],
            vec![p(&[3, 4])],
        ),
        case("HardSigmoid", vec![], vec![Param(vec![3, 4], -4.0, 4.0)]),
        case(
            "HardSigmoid",
            vec![make::float("alpha", 0.3), make::float("beta", 0.4)],
            vec![Param(vec![3, 4], -4.0, 4.0)],
        ),
        case("HardSwish", vec![], vec![Param(vec![3, 4], -4.0, 4.0)]),
        case("Erf", vec![], vec![p(&[3, 4])]),
        Case {
            opset: 20,
            ..case("Gelu", vec![], vec![p(&[3, 4])])
        },
        Case {
            opset: 20,
            ..case(
                "Gelu",
                vec![make::string("approximate", "tanh")],
                vec![p(&[3, 4])],
            )
        },
        case(
            "BatchNormalization",
            vec![make::float("epsilon", 1e-3)],
            vec![
                x4(),
                p(&[3]),
                p(&[3]),
                Floats(vec![3], vec![0.1, -0.2, 0.3]),
                Floats(vec![3], vec![1.0, 0.5, 2.0]),
            ],
        ),
        case(
            "LayerNormalization",
            vec![],
            vec![p(&[2, 3, 4]), p(&[4]), p(&[4])],
        ),
        case(
            "LayerNormalization",
            vec![make::int("axis", 1)],
            vec![p(&[2, 3, 4]), p(&[3, 4])],
        ),
        case("Softmax", vec![], vec![p(&[2, 3, 5])]),
        case("Softmax", vec![make::int("axis", 1)], vec![p(&[2, 3, 5])]),
        Case {
            opset: 11,
            ..case("Softmax", vec![make::int("axis", 1)], vec![p(&[2, 3, 5])])
        },
        case(
            "MaxPool",
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
            vec![x4()],
        ),
        case(
            "MaxPool",
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("pads", &[1, 1, 1, 1]),
                ints("strides", &[2, 2]),
            ],
            vec![p(&[1, 2, 5, 5])],
        ),
        case(
            "AveragePool",
            vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
            vec![x4()],
        ),
        case(
            "AveragePool",
            vec![
                ints("kernel_shape", &[2, 2]),
                ints("pads", &[1, 1, 0, 0]),
                make::int("count_include_pad", 1),
            ],
            vec![x4()],
        ),
        case("GlobalAveragePool", vec![], vec![x4()]),
        // 1x1 planes: the training forward passes the input on, the rule the gradient.
        case("GlobalAveragePool", vec![], vec![p(&[2, 3, 1, 1])]),
        case("Flatten", vec![make::int("axis", 2)], vec![p(&[2, 3, 4])]),
        case(
            "Reshape",
            vec![],
            vec![p(&[2, 6]), Ints(vec![2], vec![3, 4])],
        ),
        case(
            "Squeeze",
            vec![],
            vec![p(&[2, 1, 3]), Ints(vec![1], vec![1])],
        ),
        case(
            "Unsqueeze",
            vec![],
            vec![p(&[2, 3]), Ints(vec![1], vec![0])],
        ),
        case("Identity", vec![], vec![p(&[2, 3])]),
        case(
            "Transpose",
            vec![ints("perm", &[2, 0, 1])],
            vec![p(&[2, 3, 4])],
        ),
        case("Transpose", vec![], vec![p(&[2, 3, 4])]),
        case(
            "Concat",
            vec![make::int("axis", 1)],
            vec![p(&[2, 3, 2]), Fixed(vec![2, 1, 2]), p(&[2, 2, 2])],
        ),
        case(
            "ReduceMean",
            vec![ints("axes", &[1]), make::int("keepdims", 0)],
            vec![p(&[2, 3, 4])],
        ),
        case(
            "ReduceSum",
            vec![],
            vec![p(&[2, 3, 4]), Ints(vec![2], vec![0, 2])],
        ),
        case(
            "Dropout",
            vec![],
            vec![p(&[4, 8]), Floats(vec![], vec![0.3])],
        ),
    ];
    // A seeded Dropout of an old opset (ratio as an attribute).
    v.push(Case {
        opset: 10,
        ..case("Dropout", vec![make::float("ratio", 0.5)], vec![p(&[3, 8])])
    });
    v.extend(copy_cases());
    v
}

/// The copying operators: repeated and negative indices, negative steps, broadcasting.
fn copy_cases() -> Vec<Case> {
    let mut v = vec![
        // An embedding table: rows 0 and 4 (as -1) looked up twice.
        case(
            "Gather",
            vec![],
            vec![p(&[5, 3]), Ints(vec![2, 2], vec![0, 4, -1, 0])],
        ),
        case(
            "Gather",
            vec![make::int("axis", 1)],
            vec![p(&[2, 4, 3]), Ints(vec![3], vec![3, 0, 3])],
        ),
        // Rows 1..4, and columns 5, 3, 1 (a negative step).
        case(
            "Slice",
            vec![],
            vec![
                p(&[5, 6]),
                Ints(vec![2], vec![1, -1]),
                Ints(vec![2], vec![4, -7]),
                Ints(vec![2], vec![0, 1]),
                Ints(vec![2], vec![1, -2]),
            ],
        ),
        case(
            "Slice",
            vec![],
            vec![
                p(&[2, 3, 4]),
                Ints(vec![1], vec![1]),
                Ints(vec![1], vec![i64::MAX]),
                Ints(vec![1], vec![-1]),
            ],
        ),
        case(
            "Expand",
            vec![],
            vec![p(&[3, 1]), Ints(vec![3], vec![2, 3, 4])],
        ),
        case("Tile", vec![], vec![p(&[2, 3]), Ints(vec![2], vec![2, 3])]),
        case(
            "DepthToSpace",
            vec![make::int("blocksize", 2)],
            vec![p(&[1, 8, 2, 3])],
        ),
        case(
            "DepthToSpace",
            vec![make::int("blocksize", 2), make::string("mode", "CRD")],
            vec![p(&[1, 8, 2, 3])],
        ),
        case(
            "SpaceToDepth",
            vec![make::int("blocksize", 2)],
            vec![p(&[1, 2, 4, 6])],
        ),
        case(
            "GatherElements",
            vec![make::int("axis", 1)],
            vec![p(&[3, 3]), Ints(vec![3, 2], vec![0, 0, 2, 1, -1, 0])],
        ),
        case(
            "GatherND",
            vec![],
            vec![p(&[2, 3, 2]), Ints(vec![3, 2], vec![0, 1, 1, 2, 0, 1])],
        ),
    ];
    // Slice before opset 10 (bounds as attributes).
    v.push(Case {
        opset: 9,
        ..case(
            "Slice",
            vec![
                ints("starts", &[0, 1]),
                ints("ends", &[1, 100]),
                ints("axes", &[0, 2]),
            ],
            vec![p(&[2, 3, 4])],
        )
    });
    v
}

/// `n` values uniform in `[lo, hi)` from a seed.
fn uniform(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    SplitMix64::new(seed).uniform(n, lo, hi)
}

/// A float tensor of `dims` from f64 values, as float32 or float64.
fn floats(dims: &[usize], v: &[f64], wide: bool) -> TensorData {
    if wide {
        TensorData::from_slice(dims.to_vec(), v).unwrap()
    } else {
        let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        TensorData::from_slice(dims.to_vec(), &f).unwrap()
    }
}

/// The case's one-node model (float64 when `wide`) and the names of its parameters.
fn build(c: &Case, wide: bool) -> (Model, Vec<String>) {
    let mut inits = Vec::new();
    let mut params = Vec::new();
    let mut inputs = Vec::new();
    for (i, operand) in c.operands.iter().enumerate() {
        let name = format!("x{i}");
        let data = match operand {
            Param(dims, lo, hi) => {
                params.push(name.clone());
                let n = dims.iter().product();
                // Values rounded to float32 first, so both models hold the same numbers.
                let v: Vec<f64> = uniform(n, *lo, *hi, 3 + i as u64)
                    .iter()
                    .map(|&x| x as f32 as f64)
                    .collect();
                floats(dims, &v, wide)
            }
            Fixed(dims) => {
                let v: Vec<f64> = uniform(dims.iter().product(), -1.0, 1.0, 50 + i as u64)
                    .iter()
                    .map(|&x| x as f32 as f64)
                    .collect();
                floats(dims, &v, wide)
            }
            Floats(dims, v) => floats(dims, v, wide),
            Ints(dims, v) => TensorData::from_slice(dims.clone(), v).unwrap(),
        };
        inits.push(data.to_proto(&name));
        inputs.push(name);
    }
    let node = NodeProto {
        op_type: c.op.into(),
        name: format!("{}_node", c.op),
        input: inputs,
        output: vec!["y".into()],
        attribute: c.attrs.clone(),
        ..Default::default()
    };
    (one_graph(vec![node], inits, c.opset), params)
}

fn one_graph(
    nodes: Vec<NodeProto>,
    inits: Vec<whittle_ir::proto::TensorProto>,
    opset: i64,
) -> Model {
    Model::new(ModelProto {
        ir_version: 8,
        graph: Some(GraphProto {
            name: "case".into(),
            node: nodes,
            initializer: inits,
            output: vec![ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        opset_import: vec![
            OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            },
            OperatorSetIdProto {
                domain: FAKE_QUANT_DOMAIN.into(),
                version: 1,
            },
        ],
        ..Default::default()
    })
}

/// `sum(y * r)` of a float64 training run of `exec`.
fn loss64(exec: &Executor, r: &Tensor) -> f64 {
    let opts = RunOptions {
        training: true,
        seed: Some(SEED),
        ..Default::default()
    };
    let y = exec.run_with(HashMap::new(), opts).unwrap()["y"]
        .tensor()
        .clone();
    (y * r)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Worst relative error of the case's rule against central differences.
fn worst_error(c: &Case) -> Result<f64, String> {
    let (m32, params) = build(c, false);
    let mut exec = Executor::new(&m32).map_err(|e| e.to_string())?;
    exec.set_trainable(&params).map_err(|e| e.to_string())?;
    let gb = GraphBackward::new(&exec).map_err(|e| e.to_string())?;
    let rec = gb
        .forward(&exec, HashMap::new(), SEED, None)
        .map_err(|e| e.to_string())?;
    let y_shape = rec.outputs["y"].shape().to_vec();
    let r: Vec<f64> = uniform(y_shape.iter().product(), -1.0, 1.0, 99)
        .iter()
        .map(|&x| x as f32 as f64)
        .collect();
    let r64 = Tensor::from_vec(r.clone(), y_shape.clone(), &Device::Cpu).unwrap();
    let seed = r64.to_dtype(DType::F32).unwrap();
    let grads = gb
        .backward(&exec, &rec, HashMap::from([("y".to_string(), seed)]))
        .map_err(|e| e.to_string())?;
    let (m64, _) = build(c, true);
    let mut exec64 = Executor::new(&m64).map_err(|e| e.to_string())?;
    let eps = 1e-4;
    let mut worst: f64 = 0.0;
    for name in &params {
        let g = grads
            .get(name)
            .ok_or_else(|| format!("no gradient for {name}"))?
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let base = exec64.initializer(name).unwrap();
        let dims = base.shape().to_vec();
        let values = base.to_f64_vec().unwrap();
        for k in 0..values.len() {
            let mut at = |delta: f64| {
                let mut v = values.clone();
                v[k] += delta;
                let t = Tensor::from_vec(v, dims.clone(), &Device::Cpu).unwrap();
                exec64
                    .set_initializer(name, Value::from_float(t).unwrap())
                    .unwrap();
                loss64(&exec64, &r64)
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            let err =
                whittle_ir::numeric::element_diff(g[k] as f64, numeric) / numeric.abs().max(0.05);
            worst = worst.max(err);
        }
        exec64.set_initializer(name, base).unwrap();
    }
    Ok(worst)
}

#[test]
fn every_rule_matches_central_differences() {
    let all = cases();
    let mut failures = Vec::new();
    for c in &all {
        match worst_error(c) {
            Ok(err) if err < 1e-3 => {}
            Ok(err) => failures.push(format!(
                "{} {:?}: relative error {err:.2e}",
                c.op,
                c.attrs.iter().map(|a| &a.name).collect::<Vec<_>>()
            )),
            Err(e) => failures.push(format!("{}: {e}", c.op)),
        }
    }
    assert!(all.len() >= 57, "{} cases", all.len());
    assert!(
        failures.is_empty(),
        "wrong gradients:\n{}",
        failures.join("\n")
    );
}

/// The training forward (which runs Conv, the activations, GlobalAveragePool and others on
/// the kernels instead of their operators) gives every case's operator output, to float32
/// rounding.
#[test]
fn the_training_forward_equals_the_operators() {
    let opts = || RunOptions {
        training: true,
        seed: Some(SEED),
        ..Default::default()
    };
    for c in &cases() {
        let (model, params) = build(c, false);
        let mut exec = Executor::new(&model).unwrap();
        exec.set_trainable(&params).unwrap();
        let gb = GraphBackward::new(&exec).unwrap();
        let rec = gb.forward(&exec, HashMap::new(), SEED, None).unwrap();
        let want = exec.run_with(HashMap::new(), opts()).unwrap()["y"].clone();
        let got = &rec.outputs["y"];
        assert_eq!(got.shape(), want.shape(), "{}", c.op);
        let (got, want) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            let err = (g - w).abs() / w.abs().max(1.0);
            assert!(err < 1e-5, "{} element {k}: {g} against {w}", c.op);
        }
    }
}

/// An operator without a rule on a parameter's path is refused naming the node; one off
/// every parameter's path (here Cos of a fixed input) needs none.
#[test]
fn a_node_without_a_rule_is_refused_by_name() {
    let node = |op: &str, name: &str, i: &[&str], o: &str| NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: i.iter().map(|s| s.to_string()).collect(),
        output: vec![o.into()],
        ..Default::default()
    };
    let w = floats(&[3], &[0.5, -1.0, 2.0], false);
    let f = floats(&[3], &[0.1, 0.2, 0.3], false);
    let build = |first: NodeProto| {
        let m = one_graph(
            vec![first, node("Add", "add", &["a", "w"], "y")],
            vec![w.to_proto("w"), f.to_proto("f")],
            17,
        );
        let mut exec = Executor::new(&m).unwrap();
        exec.set_trainable(&["w".to_string()]).unwrap();
        exec
    };
    let off_path = build(node("Cos", "cos_of_fixed", &["f"], "a"));
    let gb = GraphBackward::new(&off_path).unwrap();
    let rec = gb.forward(&off_path, HashMap::new(), 0, None).unwrap();
    let ones = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
    let g = gb
        .backward(&off_path, &rec, HashMap::from([("y".to_string(), ones)]))
        .unwrap();
    assert_eq!(g["w"].to_vec1::<f32>().unwrap(), vec![1.0, 1.0, 1.0]);

    let m = one_graph(
        vec![
            node("Cos", "cos_of_w", &["w"], "a"),
            node("Add", "add", &["a", "f"], "y"),
        ],
        vec![w.to_proto("w"), f.to_proto("f")],
        17,
    );
    let mut exec = Executor::new(&m).unwrap();
    exec.set_trainable(&["w".to_string()]).unwrap();
    match GraphBackward::new(&exec) {
        Err(ExecError::Unsupported { node, op, .. }) => {
            assert_eq!(node, "cos_of_w");
            assert!(op.contains("Cos"), "{op}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("Cos has no rule yet was accepted"),
    }
}

/// LeNet5 (the asset): the graph-level gradients of every weight equal candle's tape's.
#[test]
fn lenet5_gradients_equal_the_tape() {
    let model = Model::load(common::model_path("mnist_lenet5.onnx")).unwrap();
    let names: Vec<String> = model
        .graph()
        .initializer
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let mut exec = Executor::new(&model).unwrap();
    exec.set_trainable(&names).unwrap();
    let input = exec.inputs()[0].name.clone();
    let x: Vec<f32> = uniform(8 * 28 * 28, 0.0, 1.0, 1)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let x = Value::f32(Tensor::from_vec(x, (8, 1, 28, 28), &Device::Cpu).unwrap()).unwrap();
    let feed = HashMap::from([(input, x)]);
    let r: Vec<f32> = uniform(80, -1.0, 1.0, 2)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let r = Tensor::from_vec(r, (8, 10), &Device::Cpu).unwrap();

    let opts = RunOptions {
        training: true,
        ..Default::default()
    };
    let y = exec.run_with(feed.clone(), opts).unwrap();
    let out = exec.output_names()[0].clone();
    let loss = (y[&out].tensor() * &r).unwrap().sum_all().unwrap();
    let tape = exec.gradients(&loss).unwrap();

    let gb = GraphBackward::new(&exec).unwrap();
    let pass = || {
        let rec = gb.forward(&exec, feed.clone(), 0, None).unwrap();
        let seeds = HashMap::from([(out.clone(), r.clone())]);
        gb.backward(&exec, &rec, seeds).unwrap()
    };
    let graph = pass();
    assert_eq!(graph.len(), names.len());
    assert_equal_gradients(&tape, &graph, 1e-4);
    // Later passes at the same shapes take every gradient buffer from the earlier ones
    // (cleared: the gradients are the first pass's, bit for bit).
    let fresh = gb.fresh_buffers();
    assert!(fresh > 0);
    for _ in 0..2 {
        let again = pass();
        assert_eq!(gb.fresh_buffers(), fresh, "a later pass allocated buffers");
        for (name, g) in &graph {
            let (a, b) = (g.flatten_all().unwrap(), again[name].flatten_all().unwrap());
            assert_eq!(
                a.to_vec1::<f32>().unwrap(),
                b.to_vec1::<f32>().unwrap(),
                "{name}"
            );
        }
    }
}

/// Every gradient of `tape` equals `graph`'s to `tol` relative to its largest element.
fn assert_equal_gradients(
    tape: &HashMap<String, Tensor>,
    graph: &HashMap<String, Tensor>,
    tol: f64,
) {
    for (name, t) in tape {
        let a = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = graph[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6) as f64;
        let diff = whittle_ir::numeric::max_abs_diff(a.iter().copied(), b.iter().copied());
        assert!(
            diff / scale < tol,
            "{name}: {diff:e} off (largest gradient {scale:e})"
        );
    }
}

/// FakeQuantize against candle's tape (not against finite differences: its forward is
/// piecewise constant, the straight-through and LSQ gradients are estimators). `x` has a
/// learned scale 1/8 with LSQ's gradient scale and a zero point 2 (range [-12, 8] in steps),
/// with values inside, on both bounds, beyond them and on a rounding tie; `w` has the
/// per-channel min/max observer (no scale input). `y = fq(x) * fq(w)`.
#[test]
fn fake_quantize_gradients_equal_the_tape() {
    let x = [0.3, -3.0, 1.0, -1.5, 0.3125, 0.05, 2.0, -0.7];
    let w: Vec<f64> = uniform(8, -1.0, 1.0, 21);
    let inits = vec![
        floats(&[2, 4], &x, false).to_proto("x"),
        floats(&[1], &[0.125], false).to_proto("s"),
        TensorData::from_slice(vec![1], &[2i64])
            .unwrap()
            .to_proto("z"),
        floats(&[2, 4], &w, false).to_proto("w"),
    ];
    let fq = |name: &str, inputs: &[&str], out: &str, attrs: Vec<AttributeProto>| NodeProto {
        op_type: "FakeQuantize".into(),
        domain: FAKE_QUANT_DOMAIN.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        attribute: attrs,
        ..Default::default()
    };
    let nodes = vec![
        fq(
            "fq_x",
            &["x", "s", "z"],
            "a",
            vec![
                make::int("qmin", -10),
                make::int("qmax", 10),
                make::float("grad_scale", 0.5),
            ],
        ),
        fq(
            "fq_w",
            &["w"],
            "b",
            vec![
                make::int("qmin", -127),
                make::int("qmax", 127),
                make::int("axis", 0),
            ],
        ),
        NodeProto {
            op_type: "Mul".into(),
            input: vec!["a".into(), "b".into()],
            output: vec!["y".into()],
            ..Default::default()
        },
    ];
    let model = one_graph(nodes, inits, 17);
    let mut exec = Executor::new(&model).unwrap();
    let names = ["x", "s", "w"].map(String::from);
    exec.set_trainable(&names).unwrap();
    let r: Vec<f32> = uniform(8, -1.0, 1.0, 22)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let r = Tensor::from_vec(r, (2, 4), &Device::Cpu).unwrap();

    let opts = RunOptions {
        training: true,
        ..Default::default()
    };
    let y = exec.run_with(HashMap::new(), opts).unwrap();
    let loss = (y["y"].tensor() * &r).unwrap().sum_all().unwrap();
    let tape = exec.gradients(&loss).unwrap();
    let gb = GraphBackward::new(&exec).unwrap();
    let rec = gb.forward(&exec, HashMap::new(), SEED, None).unwrap();
    let graph = gb
        .backward(&exec, &rec, HashMap::from([("y".to_string(), r)]))
        .unwrap();
    assert_eq!(graph.len(), 3);
    assert_equal_gradients(&tape, &graph, 1e-5);
    // Beyond the range (2.0 / 0.125 = 16 > 8) nothing passes; inside, all of it.
    let gx = graph["x"].to_vec2::<f32>().unwrap();
    assert_eq!(gx[1][2], 0.0);
    assert!(gx[0][0] != 0.0, "{gx:?}");
}

/// Conv -> MaxPool: the pool runs forward on its kernel and keeps its arg-max, so the
/// convolution's output (read by no other rule) is not kept, and the weight gradient still
/// equals candle's tape through both nodes.
#[test]
fn max_pool_keeps_its_argmax_not_its_input() {
    let dims = [2usize, 3, 6, 6];
    let x: Vec<f64> = uniform(dims.iter().product(), -1.0, 1.0, 11);
    let w: Vec<f64> = uniform(4 * 3 * 9, -0.5, 0.5, 12);
    let inits = vec![
        floats(&dims, &x, false).to_proto("x"),
        floats(&[4, 3, 3, 3], &w, false).to_proto("w"),
    ];
    let conv = NodeProto {
        op_type: "Conv".into(),
        name: "conv".into(),
        input: vec!["x".into(), "w".into()],
        output: vec!["c".into()],
        attribute: vec![ints("pads", &[1, 1, 1, 1])],
        ..Default::default()
    };
    let pool = NodeProto {
        op_type: "MaxPool".into(),
        name: "pool".into(),
        input: vec!["c".into()],
        output: vec!["y".into()],
        attribute: vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        ..Default::default()
    };
    let model = one_graph(vec![conv, pool], inits, 17);
    let mut exec = Executor::new(&model).unwrap();
    exec.set_trainable(&["w".to_string()]).unwrap();
    let gb = GraphBackward::new(&exec).unwrap();
    let rec = gb.forward(&exec, HashMap::new(), SEED, None).unwrap();
    let kept: Vec<&str> = rec.kept().collect();
    assert!(!kept.contains(&"c"), "the pool's input was kept: {kept:?}");
    let r = Tensor::ones((2, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let graph = gb
        .backward(&exec, &rec, HashMap::from([("y".to_string(), r.clone())]))
        .unwrap();
    let opts = RunOptions {
        training: true,
        ..Default::default()
    };
    let y = exec.run_with(HashMap::new(), opts).unwrap();
    let loss = (y["y"].tensor() * &r).unwrap().sum_all().unwrap();
    let tape = exec.gradients(&loss).unwrap();
    let a = tape["w"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = graph["w"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let diff = whittle_ir::numeric::max_abs_diff(a.iter().copied(), b.iter().copied());
    assert!(diff < 1e-4, "gradient of w {diff:e} off the tape's");
}

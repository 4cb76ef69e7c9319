//! Finite-difference checks of every operator gradient the executor provides: one table of
//! single-node graphs whose float operands are all trainable initializers (float64), the
//! loss `sum(y * R)` with a fixed random `R`, and central differences per sampled element.

mod common;

use std::collections::HashMap;

use candle_core::Tensor;
use common::{ints, ints_attr, model, node, uniform};
use whittle_exec::{Executor, RunOptions};
use whittle_ir::attr::make;
use whittle_ir::numeric::element_diff;
use whittle_ir::proto::AttributeProto;
use whittle_ir::TensorData;

/// One operand: a trainable float64 tensor with values in `[lo, hi)`, or a constant.
enum Operand {
    Param(Vec<usize>, f64, f64),
    Const(TensorData),
}

use Operand::{Const, Param};

fn p(dims: &[usize]) -> Operand {
    Param(dims.to_vec(), -1.0, 1.0)
}

fn positive(dims: &[usize]) -> Operand {
    Param(dims.to_vec(), 0.5, 1.5)
}

fn f64s(dims: &[usize], v: &[f64]) -> Operand {
    Const(TensorData::from_slice(dims.to_vec(), v).unwrap())
}

struct Case {
    op: &'static str,
    attrs: Vec<AttributeProto>,
    operands: Vec<Operand>,
}

fn case(op: &'static str, attrs: Vec<AttributeProto>, operands: Vec<Operand>) -> Case {
    Case {
        op,
        attrs,
        operands,
    }
}

fn cases() -> Vec<Case> {
    let x4 = || p(&[2, 3, 4, 4]);
    let mut v = vec![
        case(
            "Conv",
            vec![
                ints_attr("pads", &[1, 1, 1, 1]),
                ints_attr("strides", &[2, 2]),
            ],
            vec![p(&[1, 2, 5, 5]), p(&[3, 2, 3, 3]), p(&[3])],
        ),
        case(
            "Conv",
            vec![make::int("group", 2)],
            vec![p(&[1, 2, 4, 4]), p(&[2, 1, 3, 3])],
        ),
        // Pointwise on a 2x2 plane: one GEMM over the batch's rows.
        case(
            "Conv",
            vec![],
            vec![p(&[2, 3, 2, 2]), p(&[4, 3, 1, 1]), p(&[4])],
        ),
        case(
            "ConvTranspose",
            vec![ints_attr("strides", &[2, 2])],
            vec![p(&[1, 2, 3, 3]), p(&[2, 3, 2, 2]), p(&[3])],
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
        case("MatMul", vec![], vec![p(&[2, 3, 4]), p(&[4, 5])]),
        case("Add", vec![], vec![p(&[2, 3, 4]), p(&[3, 1])]),
        case("Sub", vec![], vec![p(&[2, 3, 4]), p(&[3, 1])]),
        case("Mul", vec![], vec![p(&[2, 3, 4]), p(&[3, 1])]),
        case("Div", vec![], vec![p(&[2, 3, 4]), positive(&[3, 1])]),
        // A scalar exponent, and a tensor exponent differentiable in base and exponent.
        case("Pow", vec![], vec![positive(&[2, 3]), f64s(&[], &[1.7])]),
        case("Pow", vec![], vec![positive(&[2, 3]), p(&[3])]),
        case(
            "Pow",
            vec![],
            vec![p(&[2, 3]), f64s(&[3], &[2.0, 3.0, -1.0])],
        ),
        case(
            "BatchNormalization",
            vec![],
            vec![
                x4(),
                p(&[3]),
                p(&[3]),
                f64s(&[3], &[0.1, -0.2, 0.3]),
                f64s(&[3], &[1.0, 0.5, 2.0]),
            ],
        ),
        case(
            "LayerNormalization",
            vec![],
            vec![p(&[2, 3, 4]), p(&[4]), p(&[4])],
        ),
        case(
            "InstanceNormalization",
            vec![],
            vec![p(&[2, 3, 4]), p(&[3]), p(&[3])],
        ),
        case(
            "GroupNormalization",
            vec![make::int("num_groups", 2)],
            vec![p(&[2, 4, 3]), p(&[4]), p(&[4])],
        ),
        case(
            "MaxPool",
            vec![
                ints_attr("kernel_shape", &[2, 2]),
                ints_attr("strides", &[2, 2]),
            ],
            vec![x4()],
        ),
        case(
            "AveragePool",
            vec![
                ints_attr("kernel_shape", &[3, 3]),
                ints_attr("pads", &[1, 1, 1, 1]),
            ],
            vec![x4()],
        ),
        case("GlobalAveragePool", vec![], vec![x4()]),
        case("GlobalMaxPool", vec![], vec![x4()]),
        case(
            "Reshape",
            vec![],
            vec![p(&[2, 6]), Const(ints(&[2], &[3, 4]))],
        ),
        case(
            "Transpose",
            vec![ints_attr("perm", &[2, 0, 1])],
            vec![p(&[2, 3, 4])],
        ),
        case(
            "Concat",
            vec![make::int("axis", 1)],
            vec![p(&[2, 3]), p(&[2, 2])],
        ),
        case("Flatten", vec![make::int("axis", 2)], vec![p(&[2, 3, 4])]),
        case(
            "Squeeze",
            vec![],
            vec![p(&[2, 1, 3]), Const(ints(&[1], &[1]))],
        ),
        case(
            "Unsqueeze",
            vec![],
            vec![p(&[2, 3]), Const(ints(&[1], &[0]))],
        ),
        case(
            "Slice",
            vec![],
            vec![
                p(&[4, 5]),
                Const(ints(&[2], &[1, 0])),
                Const(ints(&[2], &[3, 5])),
                Const(ints(&[2], &[0, 1])),
                Const(ints(&[2], &[1, 2])),
            ],
        ),
        case(
            "Gather",
            vec![make::int("axis", 0)],
            vec![p(&[5, 3]), Const(ints(&[4], &[4, 0, 2, 0]))],
        ),
        case(
            "Expand",
            vec![],
            vec![p(&[3, 1]), Const(ints(&[2], &[3, 4]))],
        ),
        case("Tile", vec![], vec![p(&[2, 3]), Const(ints(&[2], &[2, 1]))]),
        case(
            "Pad",
            vec![],
            vec![p(&[2, 3]), Const(ints(&[4], &[1, 0, 0, 2]))],
        ),
        case(
            "ReduceMean",
            vec![],
            vec![p(&[2, 3, 4]), Const(ints(&[1], &[1]))],
        ),
        case(
            "ReduceSum",
            vec![],
            vec![p(&[2, 3, 4]), Const(ints(&[2], &[0, 2]))],
        ),
        case(
            "ReduceMax",
            vec![],
            vec![p(&[2, 3, 4]), Const(ints(&[1], &[2]))],
        ),
        case(
            "ReduceL2",
            vec![],
            vec![p(&[2, 3, 4]), Const(ints(&[1], &[2]))],
        ),
        case(
            "Einsum",
            vec![make::string("equation", "ij,jk->ik")],
            vec![p(&[2, 3]), p(&[3, 4])],
        ),
        case("PRelu", vec![], vec![p(&[2, 3, 4]), p(&[3, 1])]),
        case(
            "Clip",
            vec![],
            vec![p(&[3, 4]), f64s(&[], &[-0.5]), f64s(&[], &[0.5])],
        ),
        case("Softmax", vec![], vec![p(&[3, 5])]),
        case("LogSoftmax", vec![], vec![p(&[3, 5])]),
        case("Gelu", vec![], vec![p(&[3, 4])]),
        case(
            "Gelu",
            vec![make::string("approximate", "tanh")],
            vec![p(&[3, 4])],
        ),
        case(
            "LeakyRelu",
            vec![make::float("alpha", 0.1)],
            vec![p(&[3, 4])],
        ),
        case("Elu", vec![], vec![p(&[3, 4])]),
        case("HardSigmoid", vec![], vec![Param(vec![3, 4], -2.0, 2.0)]),
        case("HardSwish", vec![], vec![Param(vec![3, 4], -4.0, 4.0)]),
    ];
    for op in [
        "Relu", "Sigmoid", "Tanh", "Erf", "Exp", "Neg", "Abs", "Softplus", "Sin", "Cos", "Mish",
        "Selu", "Identity",
    ] {
        v.push(case(op, vec![], vec![p(&[3, 4])]));
    }
    for op in ["Sqrt", "Log", "Reciprocal"] {
        v.push(case(op, vec![], vec![positive(&[3, 4])]));
    }
    v
}

/// Builds the case's graph; returns the executor and the names of its parameters.
fn build(c: &Case, seed: u64) -> (Executor, Vec<String>) {
    let names: Vec<String> = (0..c.operands.len()).map(|i| format!("x{i}")).collect();
    let mut inits = Vec::new();
    let mut params = Vec::new();
    for (i, (operand, name)) in c.operands.iter().zip(&names).enumerate() {
        let data = match operand {
            Param(dims, lo, hi) => {
                params.push(name.clone());
                TensorData::from_slice(dims.clone(), &uniform(dims, *lo, *hi, seed + i as u64))
                    .unwrap()
            }
            Const(t) => t.clone(),
        };
        inits.push((name.as_str(), data));
    }
    let inputs: Vec<&str> = names.iter().map(String::as_str).collect();
    let n = node(c.op, &inputs, &["y"], c.attrs.clone());
    let m = model(vec![n], inits, vec![], &["y"], 20);
    let mut exec = Executor::new(&m).unwrap();
    exec.set_trainable(&params).unwrap();
    (exec, params)
}

fn loss(exec: &Executor, weights: &Option<Tensor>) -> (Tensor, Tensor) {
    let opts = RunOptions {
        training: true,
        ..Default::default()
    };
    let y = exec.run_with(HashMap::new(), opts).unwrap()["y"]
        .tensor()
        .clone();
    let r = weights.clone().unwrap_or_else(|| {
        let v = uniform(y.dims(), -1.0, 1.0, 99);
        Tensor::from_vec(v, y.shape(), y.device()).unwrap()
    });
    ((&y * &r).unwrap().sum_all().unwrap(), r)
}

/// Largest relative disagreement between autograd and central differences.
fn worst_error(c: &Case) -> Result<f64, String> {
    let (exec, params) = build(c, 3);
    let (l, r) = loss(&exec, &None);
    let weights = Some(r);
    let grads = exec.gradients(&l).map_err(|e| e.to_string())?;
    let eps = 1e-6;
    let mut worst: f64 = 0.0;
    for name in &params {
        let var = &exec.params()[name];
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let grad = grads[name].flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let picks: Vec<usize> = (0..base.len()).step_by((base.len() / 5).max(1)).collect();
        for k in picks {
            let at = |delta: f64| {
                let mut v = base.clone();
                v[k] += delta;
                var.set(&Tensor::from_vec(v, var.as_tensor().shape(), var.device()).unwrap())
                    .unwrap();
                loss(&exec, &weights).0.to_scalar::<f64>().unwrap()
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            // A NaN on either side is an infinite error, never one `max` drops.
            let err = element_diff(grad[k], numeric) / numeric.abs().max(1.0);
            worst = worst.max(err);
        }
        let original = Tensor::from_vec(base, var.as_tensor().shape(), var.device()).unwrap();
        var.set(&original).unwrap();
    }
    Ok(worst)
}

#[test]
fn every_differentiable_operator_matches_finite_differences() {
    let mut failures = Vec::new();
    let all = cases();
    for c in &all {
        match worst_error(c) {
            Ok(err) if err < 1e-5 => {}
            Ok(err) => failures.push(format!("{}: relative error {err:.2e}", c.op)),
            Err(e) => failures.push(format!("{}: {e}", c.op)),
        }
    }
    assert!(all.len() >= 55, "{} cases", all.len());
    assert!(
        failures.is_empty(),
        "wrong gradients:\n{}",
        failures.join("\n")
    );
}

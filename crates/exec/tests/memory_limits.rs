//! Operators whose output size comes from an input or attribute check its bytes against the
//! memory available before allocating. `WHITTLE_MEMORY_LIMIT` (set for this test binary
//! only) makes the limit deterministic: 64 MiB.

use std::collections::HashMap;

use whittle_exec::{Executor, Value};
use whittle_ir::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};
use whittle_ir::{Model, TensorData};

const LIMIT: u64 = 64 << 20;

/// One node reading graph input `x` (`x_data`) and constant initializers, output `y`.
fn one_node(op: &str, x_data: &TensorData, inits: Vec<TensorProto>) -> (Model, Value) {
    let mut inputs = vec!["x".to_string()];
    inputs.extend(inits.iter().map(|t| t.name.clone()));
    let node = NodeProto {
        name: format!("the_{op}"),
        op_type: op.into(),
        input: inputs,
        output: vec!["y".into()],
        ..Default::default()
    };
    let value = |name: &str| ValueInfoProto {
        name: name.into(),
        ..Default::default()
    };
    let model = Model::new(ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: vec![node],
            input: vec![value("x")],
            output: vec![value("y")],
            initializer: inits,
            ..Default::default()
        }),
        ..Default::default()
    });
    (model, Value::try_from(x_data).unwrap())
}

fn ints(name: &str, v: &[i64]) -> TensorProto {
    TensorData::from_slice(vec![v.len()], v)
        .unwrap()
        .to_proto(name)
}

fn run(model: &Model, x: Value) -> Result<Vec<usize>, String> {
    let exec = Executor::new(model).unwrap();
    let out = exec
        .run(HashMap::from([("x".to_string(), x)]))
        .map_err(|e| e.to_string())?;
    Ok(out["y"].shape().to_vec())
}

fn floats(name: &str, dims: &[usize]) -> TensorProto {
    let n = dims.iter().product();
    TensorData::from_slice(dims.to_vec(), &vec![0.5f32; n])
        .unwrap()
        .to_proto(name)
}

/// One operator run twice: with inputs whose output fits, then with inputs whose output
/// needs 256 MiB.
struct Case {
    op: &'static str,
    x: TensorData,
    fits: Vec<TensorProto>,
    fitting_shape: Vec<usize>,
    too_large_x: TensorData,
    too_large: Vec<TensorProto>,
}

#[test]
fn outputs_larger_than_the_memory_limit_are_refused_before_allocating() {
    std::env::set_var(whittle_ir::memory::LIMIT_ENV, LIMIT.to_string());
    let x = |dims: Vec<usize>| {
        let n = dims.iter().product();
        TensorData::from_slice(dims, &vec![1.0f32; n]).unwrap()
    };
    let shape = |v: &[i64]| TensorData::from_slice(vec![v.len()], v).unwrap();
    let cases = [
        // ConstantOfShape reads its shape from x: f32 zeros of 2^16 x 2^10 are 256 MiB.
        Case {
            op: "ConstantOfShape",
            x: shape(&[1024, 1024]),
            fits: vec![],
            fitting_shape: vec![1024, 1024],
            too_large_x: shape(&[1 << 16, 1 << 10]),
            too_large: vec![],
        },
        Case {
            op: "Expand",
            x: x(vec![1, 4]),
            fits: vec![ints("s", &[1024, 4])],
            fitting_shape: vec![1024, 4],
            too_large_x: x(vec![1, 4]),
            too_large: vec![ints("s", &[1 << 24, 4])],
        },
        Case {
            op: "Tile",
            x: x(vec![2, 4]),
            fits: vec![ints("r", &[8, 1])],
            fitting_shape: vec![16, 4],
            too_large_x: x(vec![2, 4]),
            too_large: vec![ints("r", &[1 << 23, 1])],
        },
        // Broadcasting [2^13, 1] against [1, 2^13] gives 2^26 f32 values: 256 MiB.
        Case {
            op: "Add",
            x: x(vec![1 << 10, 1]),
            fits: vec![floats("b", &[1, 1 << 10])],
            fitting_shape: vec![1 << 10, 1 << 10],
            too_large_x: x(vec![1 << 13, 1]),
            too_large: vec![floats("b", &[1, 1 << 13])],
        },
        Case {
            op: "Pad",
            x: x(vec![2, 4]),
            fits: vec![ints("p", &[0, 0, 0, 4])],
            fitting_shape: vec![2, 8],
            too_large_x: x(vec![2, 4]),
            too_large: vec![ints("p", &[0, 0, 0, 1 << 25])],
        },
    ];
    for case in cases {
        let op = case.op;
        let (model, v) = one_node(op, &case.x, case.fits);
        assert_eq!(run(&model, v), Ok(case.fitting_shape), "{op}");
        let (model, v) = one_node(op, &case.too_large_x, case.too_large);
        let err = run(&model, v).unwrap_err();
        assert!(
            err.contains(&format!("node 'the_{op}' ({op})"))
                && err.contains("needs 256.0 MiB but only 64.0 MiB of memory is available"),
            "{op}: {err}"
        );
    }
}

//! Helpers of the trainer's integration tests: small graphs built in code, seeded random
//! tensors, and the assets (LeNet5, MNIST).

#![allow(dead_code)]

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use whittle_ir::attr::make;
use whittle_ir::proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use whittle_ir::{DataType, Model, TensorData};

/// A node of the default domain.
pub fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: format!("{op}_0"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

/// A float32 value declaration; `None` dims are symbolic.
pub fn float_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => dimension::Value::DimValue(*v),
                None => dimension::Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float.code(),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A model of `nodes` with initializers, inputs and outputs, at `opset`.
pub fn model(
    nodes: Vec<NodeProto>,
    inits: Vec<(&str, TensorData)>,
    inputs: Vec<ValueInfoProto>,
    outputs: &[&str],
    opset: i64,
) -> Model {
    let graph = GraphProto {
        name: "test".into(),
        node: nodes,
        initializer: inits.iter().map(|(n, t)| t.to_proto(n)).collect(),
        input: inputs,
        output: outputs
            .iter()
            .map(|o| ValueInfoProto {
                name: o.to_string(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    Model::new(ModelProto {
        ir_version: 8,
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        ..Default::default()
    })
}

/// Uniform random values in `[lo, hi)` of type `T` from a seed.
pub fn uniform(dims: &[usize], lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..dims.iter().product::<usize>())
        .map(|_| rng.random_range(lo..hi))
        .collect()
}

/// A float32 tensor of uniform random values.
pub fn random_f32(dims: &[usize], lo: f64, hi: f64, seed: u64) -> TensorData {
    let v: Vec<f32> = uniform(dims, lo, hi, seed)
        .iter()
        .map(|&x| x as f32)
        .collect();
    TensorData::from_slice(dims.to_vec(), &v).unwrap()
}

/// An int64 tensor.
pub fn ints(dims: &[usize], v: &[i64]) -> TensorData {
    TensorData::from_slice(dims.to_vec(), v).unwrap()
}

/// Integer-list attribute.
pub fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    make::ints(name, v)
}

/// The assets folder (LeNet5, MNIST); panics with the command that fetches it.
pub fn assets() -> PathBuf {
    let dir = whittle_data::assets_dir();
    assert!(
        dir.join("models").is_dir(),
        "assets not found in {}: run scripts/fetch-assets.sh (or set WHITTLE_ASSETS)",
        dir.display()
    );
    dir
}

/// `count` MNIST training images.
pub fn mnist(count: usize) -> whittle_data::Dataset {
    let spec = format!("mnist:{}", assets().join("mnist").display());
    whittle_data::load(&spec, whittle_data::Split::Train, Some(count)).unwrap()
}

/// LeNet5 with its last layer (`linear2`) re-initialised from a seed.
pub fn lenet5_fresh_head() -> Model {
    let mut model = Model::load(assets().join("models/mnist_lenet5.onnx")).unwrap();
    for init in &mut model.graph_mut().initializer {
        if init.name.starts_with("linear2.") {
            let data = TensorData::from_proto(init, None).unwrap();
            let fresh = random_f32(data.dims(), -0.05, 0.05, 11);
            *init = fresh.to_proto(&init.name);
        }
    }
    model
}

//! Fuzzing the model loader: `Model::from_bytes` (then `validate` and shape inference, as
//! every command runs them) on mutated real models (bytes edited, or fields edited and the
//! model encoded again), on a model whose weights are external data, and on random bytes; `TensorData::from_proto` on mutated tensor files. Each input
//! must give `Ok` or an error, never a panic, and no allocation may exceed what the input's
//! size justifies (see `fuzz_support`). Seeds are fixed; case counts keep it to seconds.

mod fuzz_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fuzz_support::{
    apply, check_allocations, config, edits, largest_allocation, limit_memory, Bounded,
};
use proptest::prelude::*;
use prost::Message;
use whittle_ir::proto::tensor_shape_proto::{dimension, Dimension};
use whittle_ir::proto::{
    type_proto, GraphProto, ModelProto, NodeProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use whittle_ir::{ExternalData, Model, TensorData};
use whittle_testkit::{scratch, Scratch};

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

/// Small ONNX node tests, all structure (attributes, subgraphs, value infos) and few weights.
const NODE_TESTS: [&str; 8] = [
    "test_conv_with_strides_padding",
    "test_gather_0",
    "test_if",
    "test_loop11",
    "test_scan9_sum",
    "test_reshape_extended_dims",
    "test_constantofshape_int_zeros",
    "test_resize_upsample_scales_linear",
];

/// The assets folder (`$WHITTLE_ASSETS`, else `~/.cache/whittle-assets`).
fn assets() -> PathBuf {
    std::env::var_os("WHITTLE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME or WHITTLE_ASSETS is set");
            Path::new(&home).join(".cache/whittle-assets")
        })
}

/// The bytes of an asset; panics naming it when missing, so the suite never passes vacuously.
fn asset(path: &str) -> Vec<u8> {
    let path = assets().join(path);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set WHITTLE_ASSETS to the assets folder)",
            path.display()
        )
    })
}

thread_local! {
    /// An empty folder that external data of mutated in-memory models resolves against;
    /// one per test (thread), removed when the test ends.
    static EMPTY_DIR: Scratch = scratch("fuzz-ir");
    /// LeNet5 saved with its weights in `lenet.onnx.data` (see [`external_lenet`]).
    static EXTERNAL_LENET: (Vec<u8>, Scratch) = external_lenet();
}

/// LeNet5 saved with its weights in `lenet.onnx.data`: the model file is the graph alone,
/// so mutations reach the external-data references (location, offset, length).
fn external_lenet() -> (Vec<u8>, Scratch) {
    let dir = scratch("fuzz-ext");
    let path = dir.join("lenet.onnx");
    let lenet = Model::from_bytes(&asset("models/mnist_lenet5.onnx"), None).unwrap();
    lenet
        .save(&path, &ExternalData::File("lenet.onnx.data".into()))
        .unwrap();
    (std::fs::read(&path).unwrap(), dir)
}

fn load_all_the_way(bytes: &[u8], base: &Path) {
    if let Ok(model) = Model::from_bytes(bytes, Some(base)) {
        let _ = whittle_ir::validate(&model);
        let _ = whittle_ir::shape::infer(&model, &HashMap::new());
    }
}

/// Values written into a model's fields by [`edit_fields`]: the edges of sizes, counts,
/// axes and type codes.
const EDGES: [i64; 13] = [
    0,
    1,
    -1,
    2,
    3,
    7,
    17,
    1 << 20,
    i32::MAX as i64,
    i32::MIN as i64,
    1 << 40,
    i64::MAX,
    i64::MIN,
];

/// The fields [`edit_fields`] can change.
const FIELDS: u8 = 11;

/// `bytes` (a valid model) decoded, with each `(field, a, b, value)` edit applied to the
/// `a`-th element (initializer, node, input; taken modulo their counts) and its `b`-th
/// part, and encoded again: mutations that keep the protobuf valid and reach the checks
/// behind decoding (shapes, types, attributes, wiring, external data).
fn edit_fields(bytes: &[u8], edits: &[(u8, usize, usize, i64)]) -> Vec<u8> {
    fn pick<T>(items: &mut [T], i: usize) -> Option<&mut T> {
        let len = items.len();
        items.get_mut(i % len.max(1))
    }
    fn set<T: Default>(items: &mut Vec<T>, i: usize, value: T) {
        match pick(items, i) {
            Some(slot) => *slot = value,
            None => items.push(value),
        }
    }
    let mut model = ModelProto::decode(bytes).expect("a valid model to edit");
    for &(field, a, b, v) in edits {
        let graph = model.graph.as_mut().expect("a graph");
        let names: Vec<String> = graph
            .input
            .iter()
            .map(|i| i.name.clone())
            .chain(graph.node.iter().flat_map(|n| n.output.clone()))
            .collect();
        let tensor = pick(&mut graph.initializer, a);
        let node = pick(&mut graph.node, a);
        match (field, tensor, node) {
            (0, Some(t), _) => set(&mut t.dims, b, v),
            (1, Some(t), _) => t.data_type = v as i32,
            (2, Some(t), _) => t.raw_data.truncate(b % (t.raw_data.len() + 1)),
            (3, Some(t), _) => {
                let entry = |key: &str, value: String| StringStringEntryProto {
                    key: key.into(),
                    value,
                };
                t.data_location = 1;
                t.external_data = vec![
                    entry("location", "lenet.onnx.data".into()),
                    entry("offset", (b as i64 % 4096).to_string()),
                    entry("length", v.to_string()),
                ];
            }
            (4, _, Some(n)) => {
                if let Some(attr) = pick(&mut n.attribute, b) {
                    attr.i = v;
                    if !attr.ints.is_empty() {
                        set(&mut attr.ints, b / 3, v);
                    }
                    if let Some(t) = attr.t.as_mut() {
                        set(&mut t.dims, b / 3, v);
                    }
                }
            }
            (5, _, Some(n)) => {
                if let Some(attr) = pick(&mut n.attribute, b) {
                    attr.r#type = v as i32;
                }
            }
            (6, _, Some(n)) if !n.input.is_empty() => {
                n.input.remove(b % n.input.len());
            }
            (7, _, Some(n)) if !names.is_empty() => set(
                &mut n.input,
                b,
                names[(v as usize ^ b) % names.len()].clone(),
            ),
            (8, _, _) => {
                if let Some(opset) = pick(&mut model.opset_import, a) {
                    opset.version = v;
                }
            }
            (9 | 10, _, _) => {
                let input = pick(&mut graph.input, a);
                let ty = input
                    .and_then(|i| i.r#type.as_mut())
                    .and_then(|t| t.value.as_mut());
                if let Some(type_proto::Value::TensorType(t)) = ty {
                    match (field, t.shape.as_mut()) {
                        (9, Some(shape)) => set(
                            &mut shape.dim,
                            b,
                            Dimension {
                                value: Some(dimension::Value::DimValue(v)),
                                ..Dimension::default()
                            },
                        ),
                        _ => t.elem_type = v as i32,
                    }
                }
            }
            _ => {}
        }
    }
    model.encode_to_vec()
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn models_with_edited_fields_load_or_fail_cleanly(
        which in 0..NODE_TESTS.len(),
        edits in prop::collection::vec(
            (0..FIELDS, any::<usize>(), any::<usize>(), prop::sample::select(EDGES.to_vec())),
            1..4,
        ),
    ) {
        limit_memory();
        let model = asset(&format!("onnx-node-tests/{}/model.onnx", NODE_TESTS[which]));
        // The folder of LeNet5's external weights: a reference to them resolves.
        EXTERNAL_LENET.with(|(_, dir)| load_all_the_way(&edit_fields(&model, &edits), dir));
        check_allocations(16 << 20)?;
    }

    #[test]
    fn mutated_node_test_models_load_or_fail_cleanly(
        which in 0..NODE_TESTS.len(),
        edits in edits(3),
    ) {
        limit_memory();
        let model = asset(&format!("onnx-node-tests/{}/model.onnx", NODE_TESTS[which]));
        EMPTY_DIR.with(|dir| load_all_the_way(&apply(&model, &edits), dir));
        check_allocations(16 << 20)?;
    }

    #[test]
    fn mutated_tensor_files_decode_or_fail_cleanly(
        which in 0..NODE_TESTS.len(),
        edits in edits(8),
    ) {
        limit_memory();
        let path = format!("onnx-node-tests/{}/test_data_set_0/input_0.pb", NODE_TESTS[which]);
        let bytes = apply(&asset(&path), &edits);
        if let Ok(proto) = TensorProto::decode(bytes.as_slice()) {
            let _ = EMPTY_DIR.with(|dir| TensorData::from_proto(&proto, Some(dir)));
        }
        check_allocations(16 << 20)?;
    }

    #[test]
    fn random_bytes_load_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        limit_memory();
        EMPTY_DIR.with(|dir| load_all_the_way(&bytes, dir));
        check_allocations(16 << 20)?;
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn mutated_external_data_references_load_or_fail_cleanly(edits in edits(3)) {
        limit_memory();
        EXTERNAL_LENET.with(|(model, dir)| load_all_the_way(&apply(model, &edits), dir));
        // LeNet5's weights are 2.5 MiB: a few copies of them, not what a reference claims.
        check_allocations(32 << 20)?;
    }

    #[test]
    fn mutated_lenet5_loads_or_fails_cleanly(edits in edits(3)) {
        limit_memory();
        static LENET: OnceLock<Vec<u8>> = OnceLock::new();
        let lenet = LENET.get_or_init(|| asset("models/mnist_lenet5.onnx"));
        EMPTY_DIR.with(|dir| load_all_the_way(&apply(lenet, &edits), dir));
        check_allocations(32 << 20)?;
    }
}

#[test]
fn the_unmutated_inputs_load() {
    // The seeds are worth fuzzing only if they load as they are.
    for test in NODE_TESTS {
        let bytes = asset(&format!("onnx-node-tests/{test}/model.onnx"));
        let model = EMPTY_DIR.with(|dir| Model::from_bytes(&bytes, Some(dir)).unwrap());
        whittle_ir::validate(&model).unwrap();
    }
    let (model, dir) = external_lenet();
    assert!(
        model.len() < 100_000,
        "weights are external: {} bytes",
        model.len()
    );
    let lenet = Model::from_bytes(&model, Some(&dir)).unwrap();
    assert!(!lenet.graph().initializer.is_empty());
}

#[test]
fn the_allocation_check_sees_a_large_allocation() {
    largest_allocation();
    std::hint::black_box(vec![1u8; 20 << 20]);
    assert!(check_allocations(16 << 20).is_err());
    assert!(check_allocations(16 << 20).is_ok(), "reset by the check");
}

#[test]
fn a_declared_shape_length_is_not_allocated() {
    // Found by the field edits: ConstantOfShape fed a shape input declared as [2^32] made
    // shape inference allocate 2^32 unknown dimensions (48 GiB).
    let shape_input = ValueInfoProto {
        name: "shape".into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 7,
                shape: Some(TensorShapeProto {
                    dim: vec![Dimension {
                        value: Some(dimension::Value::DimValue(1 << 32)),
                        ..Dimension::default()
                    }],
                }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    };
    let graph = GraphProto {
        node: vec![NodeProto {
            input: vec!["shape".into()],
            output: vec!["y".into()],
            op_type: "ConstantOfShape".into(),
            ..NodeProto::default()
        }],
        input: vec![shape_input],
        output: vec![ValueInfoProto {
            name: "y".into(),
            ..ValueInfoProto::default()
        }],
        ..GraphProto::default()
    };
    let model = Model::new(ModelProto {
        graph: Some(graph),
        ..ModelProto::default()
    });
    largest_allocation();
    let types = whittle_ir::shape::infer(&model, &HashMap::new()).unwrap();
    assert_eq!(types["y"].dims, None, "the output's rank is left unknown");
    assert!(check_allocations(1 << 20).is_ok());
}

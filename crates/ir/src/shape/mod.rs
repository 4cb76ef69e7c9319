//! Static shape and type inference.
//!
//! [`infer`] walks the graph in topological order and gives every value a [`TensorType`]:
//! an element type and dimensions that are known numbers, named symbols or unknown.
//! Like ONNX's data propagation, it also tracks the *values* of small tensors computed
//! from shapes (`Shape -> Gather -> Unsqueeze -> Concat` chains, constants, simple
//! arithmetic), so the targets of `Reshape`, `Expand`, `ConstantOfShape`, `Slice`,
//! `Range`, `Resize`, `Tile` and friends resolve. Operators without a rule get unknown
//! outputs; statically impossible graphs (mismatched MatMul dimensions, Concat of
//! different ranks, ...) are errors naming the node. [`annotate`] writes the result
//! into a model's `value_info`.

use std::collections::{HashMap, HashSet};

use crate::error::{IrError, Result};
use crate::graph::GraphEdit;
use crate::model::Model;
use crate::proto::{NodeProto, ValueInfoProto};

mod dims;
mod given;
mod rules;
mod seed;
#[cfg(test)]
mod test_util;
mod types;
mod values;

pub use given::parse_input_shapes;
pub use types::{Dim, TensorType};

use rules::infer_node;
use seed::{bind_symbols, seed, substitute};

/// Tensors with at most this many elements have their values tracked.
const MAX_TRACKED: usize = 4096;

/// Opset assumed for the default domain when a model does not import it.
const DEFAULT_OPSET: i64 = 21;

/// Infers the type of every value of the main graph: graph inputs (from their
/// `ValueInfo`, with `overrides` replacing an input's shape), initializers and node
/// outputs. A symbol an override fixes (e.g. `batch` in `[batch,3,H,W]`) takes that
/// value in every graph input that uses it. Declared `value_info` and graph outputs
/// fill in what inference leaves unknown.
pub fn infer(
    model: &Model,
    overrides: &HashMap<String, Vec<usize>>,
) -> Result<HashMap<String, TensorType>> {
    let graph = model.graph();
    let bindings = bind_symbols(graph, overrides)?;
    let mut infos = seed(graph, overrides, &bindings)?;
    let declared: HashMap<&str, TensorType> = graph
        .value_info
        .iter()
        .chain(&graph.output)
        .map(|vi| {
            let ty = substitute(TensorType::from_value_info(vi), &bindings);
            (vi.name.as_str(), ty)
        })
        .collect();
    for i in graph.topological_order()? {
        let node = &graph.node[i];
        let opset = model.opset(&node.domain).unwrap_or(DEFAULT_OPSET);
        let outs = infer_node(node, opset, &infos).map_err(|e| in_node(node, e))?;
        let mut outs = outs.into_iter();
        for name in &node.output {
            let mut info = outs.next().unwrap_or_default();
            if name.is_empty() {
                continue;
            }
            if let Some(d) = declared.get(name.as_str()) {
                info.ty.fill_from(d);
            }
            infos.insert(name.clone(), info);
        }
    }
    Ok(infos.into_iter().map(|(k, v)| (k, v.ty)).collect())
}

/// Writes inferred types of intermediate values (node outputs that are not graph
/// outputs) into the graph's `value_info`, replacing earlier entries of the same names.
/// Values of unknown element type are left out.
pub fn annotate(model: &mut Model, types: &HashMap<String, TensorType>) {
    let graph = model.graph_mut();
    let outputs: HashSet<String> = graph.output.iter().map(|v| v.name.clone()).collect();
    let names: Vec<String> = graph.node.iter().flat_map(|n| n.output.clone()).collect();
    let mut existing: HashMap<String, usize> = (graph.value_info.iter().enumerate())
        .map(|(i, v)| (v.name.clone(), i))
        .collect();
    for name in names {
        let Some(ty) = types.get(&name).filter(|t| t.dtype.is_some()) else {
            continue;
        };
        if name.is_empty() || outputs.contains(&name) {
            continue;
        }
        let proto = Some(ty.to_type_proto());
        match existing.get(&name) {
            Some(&i) => graph.value_info[i].r#type = proto,
            None => {
                existing.insert(name.clone(), graph.value_info.len());
                graph.value_info.push(ValueInfoProto {
                    name,
                    r#type: proto,
                    ..Default::default()
                });
            }
        }
    }
}

/// Prefixes an error of a rule with the node it concerns.
fn in_node(node: &NodeProto, e: IrError) -> IrError {
    match e {
        IrError::Invalid(msg) => {
            IrError::Invalid(format!("node '{}' ({}): {msg}", node.name, node.op_type))
        }
        IrError::BadTensor { name, reason } if name.is_empty() => {
            IrError::Invalid(format!("node '{}' ({}): {reason}", node.name, node.op_type))
        }
        other => other,
    }
}

/// Shorthand for a contradiction found by a rule.
fn bad<T>(msg: impl Into<String>) -> Result<T> {
    Err(IrError::invalid(msg))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::test_util::{attention_reshape, model, node, value};
    use super::*;
    use crate::dtype::DataType::{Float, Int64};

    #[test]
    fn unknown_ops_declared_types_and_overrides() {
        let mut m = model(
            17,
            vec![value("a", Float, "N,3"), value("b", Float, "N,5")],
            vec![],
            vec![
                node("FancyOp", &["a"], &["f"], vec![]),
                node("Relu", &["f"], &["r"], vec![]),
                node("FancyOp", &["b"], &["d"], vec![]),
            ],
        );
        m.graph_mut().value_info.push(value("d", Float, "N,7"));
        let t = infer(&m, &HashMap::new()).unwrap();
        assert_eq!(t["f"].to_string(), "?[*]");
        assert_eq!(t["r"].to_string(), "?[*]");
        assert_eq!(t["d"].to_string(), "float[N,7]");

        // Fixing N through 'a' fixes it in 'b' and in declared types too.
        let t = infer(&m, &HashMap::from([("a".to_string(), vec![2, 3])])).unwrap();
        assert_eq!(t["b"], TensorType::known(Float, &[2, 5]));
        assert_eq!(t["d"], TensorType::known(Float, &[2, 7]));

        for (name, shape, want) in [
            ("zz", vec![1], "not a graph input"),
            ("a", vec![2], "has rank 1"),
            ("a", vec![2, 4], "contradicts its fixed size 3"),
        ] {
            let err = infer(&m, &HashMap::from([(name.to_string(), shape)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn annotate_writes_intermediate_types_once() {
        let mut m = attention_reshape();
        m.graph_mut().output.push(value("rows", Float, "?,384"));
        let t = infer(&m, &HashMap::new()).unwrap();
        annotate(&mut m, &t);
        let vi = &m.graph().value_info;
        let find = |n: &str| {
            vi.iter()
                .find(|v| v.name == n)
                .map(TensorType::from_value_info)
        };
        assert_eq!(find("split").unwrap().to_string(), "float[B,S,12,32]");
        assert_eq!(find("rows"), None, "graph outputs are not value_info");
        assert_eq!(find("h"), None, "graph inputs are not value_info");
        let count = vi.len();
        assert_eq!(count, m.graph().node.len() - 1);
        // Annotating twice replaces rather than duplicates.
        annotate(&mut m, &t);
        assert_eq!(m.graph().value_info.len(), count);
        assert_eq!(infer(&m, &HashMap::new()).unwrap(), t);
    }

    // --- real models -------------------------------------------------------------------

    fn real_model(file: &str) -> Model {
        let dir = std::env::var_os("WHITTLE_ASSETS")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/whittle-assets"))
            })
            .expect("set WHITTLE_ASSETS to the assets folder");
        let path = dir.join("models").join(file);
        assert!(
            path.is_file(),
            "missing {}: set WHITTLE_ASSETS to the folder holding models/ (default ~/.cache/whittle-assets)",
            path.display()
        );
        Model::load(&path).unwrap()
    }

    fn overrides(pairs: &[(&str, &[usize])]) -> HashMap<String, Vec<usize>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    /// Every value has a known element type and fully known dims.
    fn assert_all_known(t: &HashMap<String, TensorType>) {
        for (name, ty) in t {
            assert!(
                ty.dtype.is_some() && ty.known_dims().is_some(),
                "{name}: {ty}"
            );
        }
    }

    #[test]
    fn lenet5_symbolic_and_fixed_batch() {
        let m = real_model("mnist_lenet5.onnx");
        let t = infer(&m, &HashMap::new()).unwrap();
        assert_eq!(t["input"].to_string(), "float[N,1,28,28]");
        assert_eq!(t["f"].to_string(), "float[N,3136]");
        assert_eq!(t["logits"].to_string(), "float[N,10]");
        let t = infer(&m, &overrides(&[("input", &[1, 1, 28, 28])])).unwrap();
        assert_all_known(&t);
        assert_eq!(t["p1"], TensorType::known(Float, &[1, 32, 14, 14]));
        assert_eq!(t["logits"], TensorType::known(Float, &[1, 10]));
    }

    /// Expectations below were checked against onnxruntime's actual outputs; ONNX's own
    /// `infer_shapes(data_prop=True)` leaves the Slice/Expand ones partly unknown.
    #[test]
    fn minilm_with_fixed_input_ids() {
        let m = real_model("paraphrase-MiniLM-L3-v2.onnx");
        let t = infer(&m, &overrides(&[("input_ids", &[2, 16])])).unwrap();
        assert_all_known(&t);
        let layer0 = "/model/model.0/auto_model/encoder/layer.0";
        for (name, dtype, dims) in [
            ("onnx::Shape_422", Float, &[2, 16, 384][..]),
            ("output", Int64, &[2, 16]),
            ("461", Float, &[2, 384]),
            (
                "/model/model.0/auto_model/embeddings/Slice_output_0",
                Int64,
                &[1, 16],
            ),
            ("/model/model.0/auto_model/Expand_output_0", Int64, &[2, 16]),
            (
                &format!("{layer0}/attention/self/Reshape_output_0"),
                Float,
                &[2, 16, 12, 32],
            ),
            (
                &format!("{layer0}/attention/self/Softmax_output_0"),
                Float,
                &[2, 12, 16, 16],
            ),
            (
                &format!("{layer0}/intermediate/dense/MatMul_output_0"),
                Float,
                &[2, 16, 1536],
            ),
            ("/model/model.1/Expand_output_0", Int64, &[2, 16, 384]),
        ] {
            assert_eq!(t[name], TensorType::known(dtype, dims), "{name}");
        }
    }

    #[test]
    fn yolov8n_at_320() {
        let m = real_model("yolov8n-320.onnx");
        let t = infer(&m, &overrides(&[("images", &[1, 3, 320, 320])])).unwrap();
        assert_all_known(&t);
        for (name, dims) in [
            ("output0", &[1, 22, 2100][..]),
            ("/model.0/conv/Conv_output_0", &[1, 16, 160, 160]),
            ("/model.9/Concat_output_0", &[1, 512, 10, 10]),
            ("/model.10/Resize_output_0", &[1, 256, 20, 20]),
            ("/model.22/Range_output_0", &[40]),
            ("/model.22/Concat_22_output_0", &[2100, 2]),
            ("/model.22/dfl/Softmax_output_0", &[1, 16, 4, 2100]),
        ] {
            assert_eq!(t[name], TensorType::known(Float, dims), "{name}");
        }
    }
}

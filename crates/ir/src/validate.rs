//! Structural checks of a model, with errors that name the node or value at fault.

use std::collections::HashSet;

use crate::error::{IrError, Result};
use crate::graph::{node_inputs, GraphEdit};
use crate::model::Model;
use crate::proto::GraphProto;
use crate::tensor::TensorData;

/// Operators of the default ONNX domain (`ai.onnx`), through opset 23.
pub const ONNX_OPS: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "AffineGrid",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "Attention",
    "AveragePool",
    "BatchNormalization",
    "Bernoulli",
    "BitShift",
    "BitwiseAnd",
    "BitwiseNot",
    "BitwiseOr",
    "BitwiseXor",
    "BlackmanWindow",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "CenterCropPad",
    "Clip",
    "Col2Im",
    "Compress",
    "Concat",
    "ConcatFromSequence",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvInteger",
    "ConvTranspose",
    "Cos",
    "Cosh",
    "CumSum",
    "DFT",
    "DeformConv",
    "DepthToSpace",
    "DequantizeLinear",
    "Det",
    "Div",
    "Dropout",
    "DynamicQuantizeLinear",
    "Einsum",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "EyeLike",
    "Flatten",
    "Floor",
    "GRU",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "GridSample",
    "GroupNormalization",
    "HammingWindow",
    "HannWindow",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "If",
    "ImageDecoder",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LSTM",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "Loop",
    "LpNormalization",
    "LpPool",
    "MatMul",
    "MatMulInteger",
    "Max",
    "MaxPool",
    "MaxRoiPool",
    "MaxUnpool",
    "Mean",
    "MeanVarianceNormalization",
    "MelWeightMatrix",
    "Min",
    "Mish",
    "Mod",
    "Mul",
    "Multinomial",
    "Neg",
    "NegativeLogLikelihoodLoss",
    "NonMaxSuppression",
    "NonZero",
    "Not",
    "OneHot",
    "Optional",
    "OptionalGetElement",
    "OptionalHasElement",
    "Or",
    "PRelu",
    "Pad",
    "Pow",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "RMSNormalization",
    "RNN",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Range",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "RegexFullMatch",
    "Relu",
    "Reshape",
    "Resize",
    "ReverseSequence",
    "RoiAlign",
    "RotaryEmbedding",
    "Round",
    "STFT",
    "Scan",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "Selu",
    "SequenceAt",
    "SequenceConstruct",
    "SequenceEmpty",
    "SequenceErase",
    "SequenceInsert",
    "SequenceLength",
    "SequenceMap",
    "Shape",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Size",
    "Slice",
    "Softmax",
    "SoftmaxCrossEntropyLoss",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "SplitToSequence",
    "Sqrt",
    "Squeeze",
    "StringConcat",
    "StringNormalizer",
    "StringSplit",
    "Sub",
    "Sum",
    "Swish",
    "Tan",
    "Tanh",
    "TensorScatter",
    "TfIdfVectorizer",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Transpose",
    "Trilu",
    "Unique",
    "Unsqueeze",
    "Upsample",
    "Where",
    "Xor",
];

/// The newest opset of the default ONNX domain whittle knows: [`ONNX_OPS`] lists its
/// operators and the executor follows their semantics up to it.
pub const MAX_ONNX_OPSET: i64 = 23;

/// Refuses an import of the default ONNX domain outside 1..=[`MAX_ONNX_OPSET`]: operators of
/// a newer opset may mean something whittle does not implement.
pub fn check_opsets(model: &Model) -> Result<()> {
    let default = |d: &str| d.is_empty() || d == "ai.onnx";
    for o in model
        .proto
        .opset_import
        .iter()
        .filter(|o| default(&o.domain))
    {
        if !(1..=MAX_ONNX_OPSET).contains(&o.version) {
            return Err(IrError::invalid(format!(
                "the model imports opset {} of the default ONNX domain; whittle supports \
                 opsets 1 to {MAX_ONNX_OPSET}",
                o.version
            )));
        }
    }
    Ok(())
}

/// Checks a model: opset imports (see [`check_opsets`]), known operators of the ONNX
/// domain, initializer data, every input defined before use, no value defined twice, no
/// cycle, outputs produced.
pub fn validate(model: &Model) -> Result<()> {
    check_opsets(model)?;
    let imported: HashSet<&str> = model
        .proto
        .opset_import
        .iter()
        .map(|o| {
            if o.domain == "ai.onnx" {
                ""
            } else {
                o.domain.as_str()
            }
        })
        .collect();
    if imported.is_empty() {
        return Err(IrError::invalid("the model imports no opset"));
    }
    validate_graph(model.graph(), &imported, &HashSet::new())
}

fn validate_graph(g: &GraphProto, imported: &HashSet<&str>, outer: &HashSet<String>) -> Result<()> {
    let graph = if g.name.is_empty() {
        "main"
    } else {
        g.name.as_str()
    };
    let mut defined: HashSet<String> = outer.clone();
    let mut local: HashSet<String> = HashSet::new();
    let define = |name: &str,
                  what: &str,
                  local: &mut HashSet<String>,
                  defined: &mut HashSet<String>|
     -> Result<()> {
        if !local.insert(name.to_string()) {
            return Err(IrError::invalid(format!(
                "graph '{graph}': value '{name}' is defined twice ({what})"
            )));
        }
        defined.insert(name.to_string());
        Ok(())
    };
    for t in &g.initializer {
        TensorData::from_proto(t, None)?;
        define(&t.name, "initializer", &mut local, &mut defined)?;
    }
    for v in &g.input {
        // An input may repeat an initializer's name: that gives the initializer's default.
        if !g.initializer.iter().any(|t| t.name == v.name) {
            define(&v.name, "graph input", &mut local, &mut defined)?;
        }
    }
    let order = g.topological_order()?;
    // Values produced by any node, so that a subgraph may read them through outer scope.
    for &i in &order {
        let node = &g.node[i];
        let node_name = crate::graph::node_display_name(node, i);
        let domain = if node.domain == "ai.onnx" {
            ""
        } else {
            node.domain.as_str()
        };
        if !imported.contains(domain) {
            return Err(IrError::invalid(format!(
                "node '{node_name}' ({}) uses domain '{domain}', which the model does not import",
                node.op_type
            )));
        }
        if domain.is_empty() && !ONNX_OPS.contains(&node.op_type.as_str()) {
            return Err(IrError::invalid(format!(
                "node '{node_name}': '{}' is not an operator of the ONNX domain",
                node.op_type
            )));
        }
        for input in node_inputs(node) {
            if !defined.contains(&input) {
                return Err(IrError::invalid(format!(
                    "node '{node_name}' ({}) reads '{input}', which nothing defines",
                    node.op_type
                )));
            }
        }
        for attr in &node.attribute {
            for sub in attr.g.iter().chain(attr.graphs.iter()) {
                validate_graph(sub, imported, &defined)?;
            }
        }
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            define(
                out,
                &format!("output of node '{node_name}'"),
                &mut local,
                &mut defined,
            )?;
        }
    }
    for out in &g.output {
        if !defined.contains(&out.name) {
            return Err(IrError::invalid(format!(
                "graph '{graph}': output '{}' is never produced",
                out.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto};

    fn model(nodes: Vec<NodeProto>, outputs: &[&str]) -> Model {
        Model::new(ModelProto {
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(GraphProto {
                node: nodes,
                input: vec![ValueInfoProto {
                    name: "x".into(),
                    ..Default::default()
                }],
                output: outputs
                    .iter()
                    .map(|o| ValueInfoProto {
                        name: o.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            name: name.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn error_of(m: &Model) -> String {
        validate(m).unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_valid_graph() {
        validate(&model(vec![node("r", "Relu", &["x"], &["y"])], &["y"])).unwrap();
    }

    #[test]
    fn reports_each_kind_of_fault() {
        let dangling = model(vec![node("r", "Add", &["x", "ghost"], &["y"])], &["y"]);
        assert!(error_of(&dangling).contains("reads 'ghost'"));

        let twice = model(
            vec![
                node("a", "Relu", &["x"], &["y"]),
                node("b", "Neg", &["x"], &["y"]),
            ],
            &["y"],
        );
        assert!(error_of(&twice).contains("defined twice"));

        let cycle = model(
            vec![
                node("a", "Add", &["x", "z"], &["y"]),
                node("b", "Neg", &["y"], &["z"]),
            ],
            &["y"],
        );
        assert!(error_of(&cycle).contains("cycle"));

        let unknown = model(vec![node("f", "Frobnicate", &["x"], &["y"])], &["y"]);
        assert!(error_of(&unknown).contains("'Frobnicate' is not an operator"));

        let mut foreign = model(vec![node("q", "Custom", &["x"], &["y"])], &["y"]);
        foreign.graph_mut().node[0].domain = "com.example".into();
        assert!(error_of(&foreign).contains("does not import"));

        let missing_out = model(vec![node("r", "Relu", &["x"], &["y"])], &["nope"]);
        assert!(error_of(&missing_out).contains("never produced"));
    }

    #[test]
    fn opsets_beyond_the_supported_one_are_refused() {
        let mut m = model(vec![node("r", "Relu", &["x"], &["y"])], &["y"]);
        for version in [99, 0, MAX_ONNX_OPSET + 1] {
            m.proto.opset_import[0].version = version;
            let err = error_of(&m);
            assert!(
                err.contains(&format!(
                    "imports opset {version} of the default ONNX domain"
                )) && err.contains(&format!("opsets 1 to {MAX_ONNX_OPSET}")),
                "{err}"
            );
        }
        m.proto.opset_import[0].version = MAX_ONNX_OPSET;
        validate(&m).unwrap();
        m.proto.opset_import[0] = OperatorSetIdProto {
            domain: "ai.onnx".into(),
            version: 99,
        };
        assert!(error_of(&m).contains("opset 99"));
        // Other domains keep their own versions.
        m.proto.opset_import[0].version = 17;
        m.proto.opset_import.push(OperatorSetIdProto {
            domain: "com.microsoft".into(),
            version: 99,
        });
        validate(&m).unwrap();
    }
}

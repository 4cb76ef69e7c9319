//! FP16 conversion: weights and compute in float16, with float32 kept where it must be.
//!
//! Every float32 value gets a *home* precision: float16 when the node that produces it
//! is converted (or, for an initializer, when no float32-only node reads it), float32
//! otherwise. Each node slot that needs the other precision reads it through one shared
//! `Cast`. Nodes stay float32 when their operator is range-sensitive or lacks float16
//! kernels (the list follows onnxconverter-common's `DEFAULT_OP_BLOCK_LIST`, whose
//! defaults ONNX Runtime's own `float16` converter also uses), when it belongs to
//! another domain, when the caller names it, or when it creates floats from non-float
//! inputs under an attribute-fixed type (`RandomNormal`, `EyeLike`, ...). With
//! `keep_io_types` the graph's inputs and outputs stay float32 and Casts sit at the
//! boundary. ONNX Runtime's CPU provider runs float16 nodes that it has no float16
//! kernel for by inserting its own casts, so the converted model always runs there.
//! Control flow (If/Loop/Scan) is refused: their subgraphs read outer values whose
//! precision would change under them.

use std::collections::HashMap;

use half::f16;
use serde::Serialize;
use whittle_ir::proto::{type_proto, GraphProto, NodeProto, TensorProto, ValueInfoProto};
use whittle_ir::{attr::make, DataType, GraphEdit, Model, NodeAttrs, TensorData};

use crate::quantize::plan::{check_exclude, is_excluded};
use crate::{bail, Result};
use whittle_ir::graph::node_display_name;

/// Operators kept in float32, with the reason reported for each.
const FLOAT32_OPS: &[(&str, &str)] = &[
    (
        "Resize",
        "scales and roi are float32 and coordinates are range-sensitive",
    ),
    (
        "Upsample",
        "scales are float32 and coordinates are range-sensitive",
    ),
    (
        "Range",
        "range-sensitive: float16 start/delta lose elements",
    ),
    ("CumSum", "range-sensitive: float16 accumulation overflows"),
    (
        "TopK",
        "range-sensitive: float16 ties change the selected indices",
    ),
    (
        "NonMaxSuppression",
        "box coordinates and scores must stay float32",
    ),
    ("RoiAlign", "box coordinates must stay float32"),
    (
        "Min",
        "kept float32 as in onnxconverter-common (no float16 kernel everywhere)",
    ),
    (
        "Max",
        "kept float32 as in onnxconverter-common (no float16 kernel everywhere)",
    ),
    ("QuantizeLinear", "quantization scales stay float32"),
    ("DequantizeLinear", "quantization scales stay float32"),
    ("DynamicQuantizeLinear", "has only a float32 input type"),
];

/// Node inputs that take any element type: they read a value at its home precision.
const ANY_TYPE_INPUTS: &[(&str, usize)] =
    &[("Cast", 0), ("CastLike", 0), ("Shape", 0), ("Size", 0)];

/// Node outputs that stay float32 whatever the node's precision (stash type outputs).
const FLOAT32_OUTPUTS: &[(&str, usize)] = &[("LayerNormalization", 1), ("LayerNormalization", 2)];

/// Largest finite float16.
const F16_MAX: f32 = 65504.0;

/// Options of [`convert`].
#[derive(Clone, Debug)]
pub struct Fp16Options {
    /// Keep the graph's float32 inputs and outputs float32, casting at the boundary.
    pub keep_io_types: bool,
    /// Extra operator types to keep in float32.
    pub keep_ops: Vec<String>,
    /// Nodes to keep in float32, by name (`OpType#index` for unnamed nodes); a name that
    /// is not in the model is refused.
    pub keep_nodes: Vec<String>,
}

impl Default for Fp16Options {
    fn default() -> Self {
        Fp16Options {
            keep_io_types: true,
            keep_ops: Vec::new(),
            keep_nodes: Vec::new(),
        }
    }
}

/// A node left in float32 and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeptNode {
    /// Node name.
    pub node: String,
    /// Operator type.
    pub op_type: String,
    /// Why it stays float32.
    pub reason: String,
}

/// What [`convert`] did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Fp16Report {
    /// Nodes converted to float16.
    pub nodes_converted: usize,
    /// Initializers and constants stored as float16.
    pub tensors_converted: usize,
    /// Values beyond ±65504 clamped to the largest finite float16.
    pub clamped_values: usize,
    /// Non-zero values below float16's smallest subnormal, flushed to zero.
    pub flushed_to_zero: usize,
    /// Casts inserted between float16 and float32 regions or at the graph boundary.
    pub casts_inserted: usize,
    /// Float nodes kept in float32, with the reason.
    pub kept_fp32: Vec<KeptNode>,
}

/// Where a float value lives after conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Precision {
    Full,
    Half,
}

impl Precision {
    fn dtype(self) -> DataType {
        match self {
            Precision::Full => DataType::Float,
            Precision::Half => DataType::Float16,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Precision::Full => "fp32",
            Precision::Half => "fp16",
        }
    }
}

/// Converts `model` to float16 compute; see the module documentation.
pub fn convert(model: &Model, opts: &Fp16Options) -> Result<(Model, Fp16Report)> {
    refuse_control_flow(model.graph())?;
    check_exclude(model.graph(), &opts.keep_nodes)?;
    let types = whittle_ir::shape::infer(model, &HashMap::new())?;
    let float = |name: &str| types.get(name).and_then(|t| t.dtype) == Some(DataType::Float);
    let mut report = Fp16Report::default();
    let plan = plan_nodes(model.graph(), opts, &float, &mut report);
    let home = home_precisions(model.graph(), &plan, opts, &float);
    let mut out = model.clone();
    let graph = out.graph_mut();
    convert_tensors(graph, &plan, &home, &mut report)?;
    insert_slot_casts(graph, &plan, &home, &float, &mut report);
    fix_interface(graph, &home, opts, &mut report);
    graph.sort_topologically()?;
    Ok((out, report))
}

fn refuse_control_flow(graph: &GraphProto) -> Result<()> {
    if let Some(node) = graph.node.iter().find(|n| {
        n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    }) {
        bail!(
            "fp16: node '{}' ({}) has a subgraph; float16 conversion of control flow is not supported",
            node.name,
            node.op_type
        );
    }
    Ok(())
}

/// The precision each node computes in; float32 nodes with a reason go to the report.
fn plan_nodes(
    graph: &GraphProto,
    opts: &Fp16Options,
    float: &dyn Fn(&str) -> bool,
    report: &mut Fp16Report,
) -> Vec<Precision> {
    graph
        .node
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let float_in = node.input.iter().any(|n| float(n));
            let float_out = node.output.iter().any(|n| float(n));
            if !float_in && !float_out {
                return Precision::Full;
            }
            match keep_reason(node, i, opts, float_in) {
                Some(reason) => {
                    report.kept_fp32.push(KeptNode {
                        node: node_display_name(node, i),
                        op_type: node.op_type.clone(),
                        reason,
                    });
                    Precision::Full
                }
                None => {
                    report.nodes_converted += 1;
                    Precision::Half
                }
            }
        })
        .collect()
}

fn keep_reason(node: &NodeProto, i: usize, opts: &Fp16Options, float_in: bool) -> Option<String> {
    let op = node.op_type.as_str();
    if is_excluded(node, i, &opts.keep_nodes) {
        return Some("excluded by name (`exclude`)".into());
    }
    if opts.keep_ops.iter().any(|o| o == op) {
        return Some(format!("operator {op} named by the caller"));
    }
    if !matches!(node.domain.as_str(), "" | "ai.onnx") {
        return Some(format!("operator of domain '{}'", node.domain));
    }
    if let Some((_, reason)) = FLOAT32_OPS.iter().find(|(o, _)| *o == op) {
        return Some((*reason).into());
    }
    let creates_floats = !matches!(op, "Constant" | "ConstantOfShape" | "Cast");
    if !float_in && creates_floats {
        return Some("creates floats of an attribute-fixed type from non-float inputs".into());
    }
    None
}

/// The home precision of every float32 value of the graph.
fn home_precisions(
    graph: &GraphProto,
    plan: &[Precision],
    opts: &Fp16Options,
    float: &dyn Fn(&str) -> bool,
) -> HashMap<String, Precision> {
    let mut home = HashMap::new();
    let io = if opts.keep_io_types {
        Precision::Full
    } else {
        Precision::Half
    };
    for name in graph.runtime_inputs().into_iter().filter(|n| float(n)) {
        home.insert(name.to_string(), io);
    }
    for init in graph.initializer.iter().filter(|t| float(&t.name)) {
        let full_reader = graph.node.iter().zip(plan).any(|(node, &p)| {
            (0..node.input.len()).any(|slot| {
                node.input[slot] == init.name && slot_need(node, slot, p) == Some(Precision::Full)
            })
        });
        let p = if full_reader {
            Precision::Full
        } else {
            Precision::Half
        };
        home.insert(init.name.clone(), p);
    }
    for (node, &p) in graph.node.iter().zip(plan) {
        for (slot, out) in node.output.iter().enumerate() {
            if float(out) {
                let fixed = FLOAT32_OUTPUTS.contains(&(node.op_type.as_str(), slot));
                let p = if fixed { Precision::Full } else { p };
                home.insert(out.clone(), p);
            }
        }
    }
    home
}

/// The precision input `slot` of `node` needs; `None` for inputs of any type.
fn slot_need(node: &NodeProto, slot: usize, plan: Precision) -> Option<Precision> {
    let any = ANY_TYPE_INPUTS.contains(&(node.op_type.as_str(), slot));
    (!any).then_some(plan)
}

/// Stores float16-home initializers and the constants of float16 nodes as float16.
fn convert_tensors(
    graph: &mut GraphProto,
    plan: &[Precision],
    home: &HashMap<String, Precision>,
    report: &mut Fp16Report,
) -> Result<()> {
    for init in graph.initializer.iter_mut() {
        if home.get(&init.name) == Some(&Precision::Half) {
            *init = half_tensor(init, report)?;
        }
    }
    for (node, &p) in graph.node.iter_mut().zip(plan) {
        if p == Precision::Half {
            convert_node_attrs(node, report)?;
        }
    }
    Ok(())
}

/// Rewrites the float32 attributes that fix a float16 node's output type.
fn convert_node_attrs(node: &mut NodeProto, report: &mut Fp16Report) -> Result<()> {
    match node.op_type.as_str() {
        "Cast" if node.int_or("to", 0)? == DataType::Float.code() as i64 => {
            node.attribute.retain(|a| a.name != "to");
            node.attribute
                .push(make::int("to", DataType::Float16.code() as i64));
        }
        "Constant" => {
            let value = match (
                node.tensor("value")?,
                node.float("value_float")?,
                node.floats("value_floats")?,
            ) {
                (Some(t), _, _) => t.clone(),
                (None, Some(v), _) => TensorData::scalar(v).to_proto(""),
                (None, None, Some(v)) => TensorData::from_slice(vec![v.len()], &v)?.to_proto(""),
                _ => return Ok(()),
            };
            if value.data_type == DataType::Float.code() {
                let half = half_tensor(&value, report)?;
                node.attribute.retain(|a| {
                    !matches!(a.name.as_str(), "value" | "value_float" | "value_floats")
                });
                node.attribute.push(make::tensor("value", half));
            }
        }
        "ConstantOfShape" => {
            let value = match node.tensor("value")? {
                Some(t) => t.clone(),
                None => TensorData::from_slice(vec![1], &[0f32])?.to_proto(""),
            };
            if value.data_type == DataType::Float.code() {
                let half = half_tensor(&value, report)?;
                node.attribute.retain(|a| a.name != "value");
                node.attribute.push(make::tensor("value", half));
            }
        }
        _ => {}
    }
    Ok(())
}

/// A float32 tensor as float16, clamping to the finite range and counting what changed.
fn half_tensor(t: &TensorProto, report: &mut Fp16Report) -> Result<TensorProto> {
    let data = TensorData::from_proto(t, None)?;
    let values: Vec<f16> = data
        .to_vec::<f32>()?
        .into_iter()
        .map(|v| {
            if v.abs() > F16_MAX && v.is_finite() {
                report.clamped_values += 1;
            }
            let h = f16::from_f32(v.clamp(-F16_MAX, F16_MAX));
            if v != 0.0 && h.to_f32() == 0.0 {
                report.flushed_to_zero += 1;
            }
            h
        })
        .collect();
    report.tensors_converted += 1;
    Ok(TensorData::from_slice(data.dims().to_vec(), &values)?.to_proto(&t.name))
}

/// Routes every node input whose home precision differs from what the node needs
/// through a Cast (one per value and precision).
fn insert_slot_casts(
    graph: &mut GraphProto,
    plan: &[Precision],
    home: &HashMap<String, Precision>,
    float: &dyn Fn(&str) -> bool,
    report: &mut Fp16Report,
) {
    let mut casts: HashMap<(String, Precision), String> = HashMap::new();
    let mut new_nodes = Vec::new();
    for (i, &precision) in plan.iter().enumerate() {
        for slot in 0..graph.node[i].input.len() {
            let name = graph.node[i].input[slot].clone();
            let (Some(&have), Some(need)) =
                (home.get(&name), slot_need(&graph.node[i], slot, precision))
            else {
                continue;
            };
            if have == need || !float(&name) {
                continue;
            }
            let cast = casts.entry((name.clone(), need)).or_insert_with(|| {
                let out = graph.fresh_name(&format!("{name}_{}", need.suffix()));
                new_nodes.push(cast_node(graph, &name, &out, need));
                out
            });
            graph.node[i].input[slot] = cast.clone();
        }
        // Cast names must be fresh against each other too.
        graph.node.append(&mut new_nodes);
    }
    report.casts_inserted += casts.len();
}

fn cast_node(graph: &GraphProto, input: &str, output: &str, to: Precision) -> NodeProto {
    NodeProto {
        name: graph.fresh_name(&format!("{output}_cast")),
        op_type: "Cast".into(),
        input: vec![input.into()],
        output: vec![output.into()],
        attribute: vec![make::int("to", to.dtype().code() as i64)],
        ..Default::default()
    }
}

/// Graph inputs, outputs and value_info take their values' new types; with
/// `keep_io_types`, float16 outputs are cast back to float32 under their own names.
fn fix_interface(
    graph: &mut GraphProto,
    home: &HashMap<String, Precision>,
    opts: &Fp16Options,
    report: &mut Fp16Report,
) {
    let half = |name: &str| home.get(name) == Some(&Precision::Half);
    for vi in graph.value_info.iter_mut().chain(graph.input.iter_mut()) {
        if half(&vi.name) {
            set_elem_type(vi, DataType::Float16);
        }
    }
    let outputs: Vec<String> = graph.output.iter().map(|v| v.name.clone()).collect();
    for (k, name) in outputs.iter().enumerate() {
        if !half(name) {
            continue;
        }
        if !opts.keep_io_types {
            set_elem_type(&mut graph.output[k], DataType::Float16);
            continue;
        }
        let inner = graph.fresh_name(&format!("{name}_fp16"));
        graph.rename_value(name, &inner);
        graph.output[k].name = name.clone();
        if let Some(vi) = graph.value_info.iter_mut().find(|v| v.name == inner) {
            set_elem_type(vi, DataType::Float16);
        }
        let cast = cast_node(graph, &inner, name, Precision::Full);
        graph.node.push(cast);
        report.casts_inserted += 1;
    }
}

fn set_elem_type(vi: &mut ValueInfoProto, dtype: DataType) {
    if let Some(type_proto::Value::TensorType(t)) =
        vi.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        if t.elem_type == DataType::Float.code() {
            t.elem_type = dtype.code();
        }
    }
}

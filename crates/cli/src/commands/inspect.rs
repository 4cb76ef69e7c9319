//! `whittle inspect`: what a model is made of.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use whittle_ir::cost::node_macs;
use whittle_ir::proto::{type_proto, ValueInfoProto};
use whittle_ir::shape::{Dim, TensorType};
use whittle_ir::{DataType, GraphEdit, Model};

use crate::report::{human_bytes, human_count, print_json};

/// Arguments of `whittle inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Fix an input's shape for the MAC estimate, e.g. `input_ids=1x128`
    /// (symbolic dimensions are otherwise taken as 1).
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    shapes: Vec<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// A graph input or output as shown by `inspect`.
#[derive(Serialize)]
struct Port {
    name: String,
    dtype: String,
    shape: Vec<String>,
}

/// Everything `inspect` reports.
#[derive(Serialize)]
struct Inspection {
    path: String,
    ir_version: i64,
    producer: String,
    opsets: BTreeMap<String, i64>,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    nodes: usize,
    ops: BTreeMap<String, usize>,
    parameters: u64,
    initializer_bytes: u64,
    size_bytes: u64,
    /// Multiply-accumulates of one forward pass at the shapes used (symbolic dims as 1).
    macs: Option<u64>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = Model::load(&args.model)?;
    whittle_ir::validate(&model)?;
    let overrides = parse_shapes(&args.shapes)?;
    let info = inspect(&model, &args.model, &overrides)?;
    if args.json {
        return print_json(&info);
    }
    print_text(&info);
    Ok(())
}

/// Parses `--shape NAME=AxBxC` options.
pub fn parse_shapes(specs: &[String]) -> anyhow::Result<HashMap<String, Vec<usize>>> {
    specs
        .iter()
        .map(|spec| {
            let (name, dims) = spec.split_once('=').with_context(|| {
                format!("--shape '{spec}' must be NAME=DIMS, e.g. x=1x3x224x224")
            })?;
            let dims = dims
                .split('x')
                .map(|d| d.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| {
                    format!("--shape '{spec}': dimensions must be numbers joined by 'x'")
                })?;
            Ok((name.to_string(), dims))
        })
        .collect()
}

/// MACs of one sample: symbolic input dimensions not fixed by `overrides` are taken as 1.
pub fn estimate_macs(
    model: &Model,
    overrides: &HashMap<String, Vec<usize>>,
) -> anyhow::Result<u64> {
    let graph = model.graph();
    let mut fixed = overrides.clone();
    for v in graph
        .input
        .iter()
        .filter(|v| graph.runtime_inputs().contains(&v.name.as_str()))
    {
        if fixed.contains_key(&v.name) {
            continue;
        }
        let ty = TensorType::from_value_info(v);
        if let Some(dims) = &ty.dims {
            let dims = dims
                .iter()
                .map(|d| match d {
                    Dim::Known(n) => *n,
                    _ => 1,
                })
                .collect();
            fixed.insert(v.name.clone(), dims);
        }
    }
    let types = whittle_ir::shape::infer(model, &fixed)?;
    let shape = |name: &str| types.get(name).and_then(TensorType::known_dims);
    let mut total = 0u64;
    for node in &graph.node {
        total += node_macs(node, &shape).with_context(|| {
            format!(
                "shape of node '{}' ({}) unknown; fix inputs with --shape",
                node.name, node.op_type
            )
        })?;
    }
    Ok(total)
}

fn inspect(
    model: &Model,
    path: &Path,
    overrides: &HashMap<String, Vec<usize>>,
) -> anyhow::Result<Inspection> {
    let graph = model.graph();
    let runtime: Vec<&str> = graph.runtime_inputs();
    let mut ops = BTreeMap::new();
    for node in &graph.node {
        let key = if node.domain.is_empty() || node.domain == "ai.onnx" {
            node.op_type.clone()
        } else {
            format!("{}:{}", node.domain, node.op_type)
        };
        *ops.entry(key).or_insert(0) += 1;
    }
    let parameters = graph
        .initializer
        .iter()
        .map(|t| t.dims.iter().product::<i64>().max(0) as u64)
        .sum();
    let initializer_bytes = graph
        .initializer
        .iter()
        .map(|t| whittle_ir::TensorData::from_proto(t, None).map(|d| d.byte_len() as u64))
        .sum::<Result<u64, _>>()?;
    Ok(Inspection {
        path: path.display().to_string(),
        ir_version: model.proto.ir_version,
        producer: format!(
            "{} {}",
            model.proto.producer_name, model.proto.producer_version
        )
        .trim()
        .to_string(),
        opsets: model
            .proto
            .opset_import
            .iter()
            .map(|o| {
                let d = if o.domain.is_empty() {
                    "ai.onnx"
                } else {
                    &o.domain
                };
                (d.to_string(), o.version)
            })
            .collect(),
        inputs: graph
            .input
            .iter()
            .filter(|v| runtime.contains(&v.name.as_str()))
            .map(port)
            .collect(),
        outputs: graph.output.iter().map(port).collect(),
        nodes: graph.node.len(),
        ops,
        parameters,
        initializer_bytes,
        size_bytes: Model::disk_size(path)?,
        macs: Some(estimate_macs(model, overrides)?),
    })
}

fn port(v: &ValueInfoProto) -> Port {
    use whittle_ir::proto::tensor_shape_proto::dimension::Value as D;
    let (dtype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => (
            DataType::from_code(t.elem_type).map_or("?".to_string(), |d| d.to_string()),
            t.shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(D::DimValue(v)) => v.to_string(),
                            Some(D::DimParam(p)) => p.clone(),
                            None => "?".to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => ("?".to_string(), vec![]),
    };
    Port {
        name: v.name.clone(),
        dtype,
        shape,
    }
}

fn print_text(i: &Inspection) {
    println!("model      {}", i.path);
    let producer = if i.producer.is_empty() {
        "unknown"
    } else {
        &i.producer
    };
    println!("producer   {producer} (IR version {})", i.ir_version);
    let opsets: Vec<String> = i.opsets.iter().map(|(d, v)| format!("{d} {v}")).collect();
    println!("opsets     {}", opsets.join(", "));
    for (label, ports) in [("input ", &i.inputs), ("output", &i.outputs)] {
        for p in ports {
            println!("{label}     {}: {}[{}]", p.name, p.dtype, p.shape.join(","));
        }
    }
    println!(
        "size       {} on disk, {} of initializers",
        human_bytes(i.size_bytes),
        human_bytes(i.initializer_bytes)
    );
    println!(
        "parameters {} ({})",
        human_count(i.parameters),
        i.parameters
    );
    if let Some(m) = i.macs {
        println!("MACs       {} per forward pass", human_count(m));
    }
    println!("nodes      {}", i.nodes);
    let mut ops: Vec<(&String, &usize)> = i.ops.iter().collect();
    ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (op, n) in ops {
        println!("  {n:>5}  {op}");
    }
}

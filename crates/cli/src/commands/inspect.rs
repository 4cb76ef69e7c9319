//! `whittle inspect`: what a model is made of.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use whittle_ir::cost::{model_macs, parameter_count};
use whittle_ir::proto::{type_proto, ValueInfoProto};
use whittle_ir::{DataType, GraphEdit, Model};

use crate::report::{human_bytes, human_count, print_json};

/// Arguments of `whittle inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Fix an input's shape for the MAC estimate, e.g. `input_ids=1x128` or `input_ids=1,128`
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

/// Parses `--shape NAME=DIMS` options (dims joined by `x` or `,`).
pub fn parse_shapes(specs: &[String]) -> anyhow::Result<HashMap<String, Vec<usize>>> {
    whittle_ir::shape::parse_input_shapes(specs).context("--shape")
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
    let parameters = parameter_count(graph);
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
        macs: Some(model_macs(model, overrides).context("estimating MACs (--shape fixes inputs)")?),
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

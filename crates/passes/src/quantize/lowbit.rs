//! FP16 and INT4 weight-only conversions ([`crate::fp16`], [`crate::int4`]) reported in the
//! same [`QuantReport`] as INT8, so `whittle quantize` gives one report for every mode.

use whittle_ir::Model;

use super::config::QuantConfig;
use super::plan::FloatNode;
use super::report::{QuantReport, QuantizedNode};
use crate::fp16::{self, Fp16Options};
use crate::int4::{self, Int4Options};
use crate::Result;

/// Converts `model` to float16 weights and compute; the report lists nodes kept in float32.
pub fn fp16_with_report(model: &Model, opts: &Fp16Options) -> Result<(Model, QuantReport)> {
    let start = std::time::Instant::now();
    let (out, r) = fp16::convert(model, opts)?;
    let kept: Vec<FloatNode> = r
        .kept_fp32
        .iter()
        .map(|k| float_node(&k.node, &k.op_type, &k.reason))
        .collect();
    let converted = converted_nodes(&out, &kept);
    let mut notes = Vec::new();
    if r.clamped_values > 0 {
        notes.push(format!(
            "{} weight values beyond ±65504 clamped to float16's largest",
            r.clamped_values
        ));
    }
    if r.flushed_to_zero > 0 {
        notes.push(format!(
            "{} tiny weight values flushed to zero",
            r.flushed_to_zero
        ));
    }
    notes.push(format!("{} Cast nodes inserted", r.casts_inserted));
    Ok(report(
        ("fp16", "fp16"),
        model,
        out,
        converted,
        kept,
        notes,
        start,
    ))
}

/// Quantizes MatMul/Gemm weights and embedding tables to block-wise 4 bits (com.microsoft
/// MatMulNBits and GatherBlockQuantized).
pub fn int4_with_report(model: &Model, opts: &Int4Options) -> Result<(Model, QuantReport)> {
    let start = std::time::Instant::now();
    let (out, r) = int4::quantize(model, opts)?;
    let quantized = r
        .quantized
        .iter()
        .map(|q| QuantizedNode {
            name: q.node.clone(),
            op_type: q.op_type.clone(),
        })
        .collect();
    let skipped = r
        .skipped
        .iter()
        .map(|s| float_node(&s.node, &s.op_type, &s.reason))
        .collect();
    let notes = vec![format!(
        "block size {}, {}",
        opts.block_size,
        if opts.symmetric {
            "symmetric"
        } else {
            "asymmetric (zero points)"
        }
    )];
    Ok(report(
        ("int4", "com.microsoft"),
        model,
        out,
        quantized,
        skipped,
        notes,
        start,
    ))
}

fn float_node(name: &str, op_type: &str, reason: &str) -> FloatNode {
    FloatNode {
        name: name.into(),
        op_type: op_type.into(),
        reason: reason.into(),
    }
}

/// Nodes of `out` not kept in float32 and not inserted Casts: the converted ones.
fn converted_nodes(out: &Model, kept: &[FloatNode]) -> Vec<QuantizedNode> {
    out.graph()
        .node
        .iter()
        .filter(|n| n.op_type != "Cast" && !kept.iter().any(|k| k.name == n.name))
        .map(|n| QuantizedNode {
            name: n.name.clone(),
            op_type: n.op_type.clone(),
        })
        .collect()
}

fn report(
    (mode, format): (&str, &str),
    input: &Model,
    output: Model,
    quantized_nodes: Vec<QuantizedNode>,
    float_nodes: Vec<FloatNode>,
    notes: Vec<String>,
    start: std::time::Instant,
) -> (Model, QuantReport) {
    let mut report = QuantReport::new(
        (mode, format),
        QuantConfig::default(),
        quantized_nodes,
        float_nodes,
        (input, &output),
    );
    report.notes = notes;
    report.seconds = start.elapsed().as_secs_f64();
    (output, report)
}

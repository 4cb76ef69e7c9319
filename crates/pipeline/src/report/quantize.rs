//! The report of a quantization run (`whittle quantize --report`, the pipeline's quantize
//! steps): the float and quantized models before and after (size, parameters, MACs,
//! accuracy, output fidelity, ONNX Runtime latency), the error of every tensor,
//! layer sensitivity, latency share per operator type, precision and sparsity per layer,
//! and the nodes left in float.

use whittle_bench::profile::{profile, ProfileOptions};
use whittle_ir::Model;
use whittle_passes::quantize::report::QuantReport;

use super::measure::op_latency;
use super::{models, LayerValues, NamedValue, OpLatency, Report, Section};
use crate::error::Context;
use crate::eval::Metrics;
use crate::Result;

/// The name of the input model in a quantization report.
pub const FLOAT: &str = "float";

/// The report of the run `q` that turned `float` into `quantized`. With `profile_runs`,
/// both models are profiled in whittle's executor for the latency share per operator type
/// (a model that cannot be profiled gives a note instead).
pub fn report(
    q: &QuantReport,
    float: &Model,
    quantized: &Model,
    profile_runs: Option<usize>,
) -> Result<Report> {
    let name = q.precision();
    let mut notes: Vec<String> = q.summary(false).lines().map(str::to_string).collect();
    let op_latency = match profile_runs {
        Some(runs) => {
            profile_ops(&[(FLOAT, float), (&name, quantized)], runs).unwrap_or_else(|e| {
                notes.push(format!("latency per operator type not measured: {e}"));
                Vec::new()
            })
        }
        None => Vec::new(),
    };
    let (mut before, mut after) = (Metrics::default(), Metrics::default());
    before.size_bytes = Some(q.input_bytes);
    after.size_bytes = Some(q.output_bytes);
    if let Some(a) = q.accuracy.as_ref().filter(|a| a.metric == "top1") {
        before.top1 = Some(a.float_accuracy);
        after.top1 = Some(a.quantized_accuracy);
        before.samples = Some(a.samples);
        after.samples = Some(a.samples);
    }
    if let Some(v) = &q.verification {
        // The worst output speaks for the model.
        after.sqnr_db = v.outputs.iter().map(|o| o.sqnr_db).reduce(f64::min);
        after.cosine = v.outputs.iter().map(|o| o.cosine).reduce(f64::min);
    }
    if let Some(l) = &q.latency_ms {
        before.latency_ms_ort = Some(l.before);
        after.latency_ms_ort = Some(l.after);
    }
    let mut layers = Vec::new();
    if let Some(v) = &q.verification {
        layers.push(LayerValues {
            title: "Per-tensor error (worst first)".into(),
            item: "tensor".into(),
            unit: "SQNR dB".into(),
            values: (v.outputs.iter().chain(&v.tensors))
                .map(|t| NamedValue {
                    name: t.name.clone(),
                    value: t.sqnr_db,
                })
                .collect(),
        });
    }
    if let Some(first) = q.sensitivity.first() {
        layers.push(LayerValues {
            title: "Sensitivity of each layer quantized alone".into(),
            item: "layer".into(),
            unit: first.metric.replace('_', " "),
            values: (q.sensitivity.iter())
                .map(|s| NamedValue {
                    name: s.name.clone(),
                    value: s.value,
                })
                .collect(),
        });
    }
    let mut float_nodes = Section::table("Nodes left in float", &["node", "op type", "reason"]);
    float_nodes.rows = (q.float_nodes.iter())
        .map(|f| {
            vec![
                f.name.as_str().into(),
                f.op_type.as_str().into(),
                f.reason.as_str().into(),
            ]
        })
        .collect();
    let mut report = models::report(
        format!("whittle quantize: {name}"),
        [(FLOAT, float, before), (name.as_str(), quantized, after)],
    )?;
    notes.append(&mut report.notes);
    Ok(Report {
        notes,
        layers,
        op_latency,
        tables: vec![float_nodes],
        ..report
    })
}

/// Where the time of each of `models` (name, model) goes per operator type in whittle's
/// executor, from a short profile (`runs` timed runs after one warm-up, batch 1).
fn profile_ops(models: &[(&str, &Model)], runs: usize) -> Result<Vec<OpLatency>> {
    let opts = ProfileOptions {
        runs: runs.max(1),
        warmup: 1,
        ..Default::default()
    };
    models
        .iter()
        .map(|(name, model)| {
            let p = profile(model, &opts, &mut || {})
                .context(|| format!("profiling the {name} model"))?;
            Ok(op_latency(&p, name))
        })
        .collect()
}

//! INT8 post-training quantization: static (calibrated; QDQ or QOperator layout) and
//! dynamic (weights int8, activations quantized at run time).
//!
//! Entry points: [`static_int8`] and [`dynamic_int8`]. The pieces are public for reuse:
//! [`scheme`] (types, scales, weight/bias quantization), [`observer`] and [`calibrate`]
//! (streaming range estimation), [`plan`] (what gets quantized and why not), [`qdq`],
//! [`qoperator`] and [`dynamic`] (the three exporters), [`verify`] (per-tensor error),
//! [`sensitivity`] (per-layer sensitivity, accuracy budget), [`latency`] (ONNX Runtime
//! latency before and after) and [`report`].

pub mod build;
pub mod calibrate;
pub mod compact;
pub mod config;
pub mod dynamic;
pub mod gather;
pub mod integer;
pub mod latency;
pub mod lowbit;
pub mod observer;
pub mod opset;
pub mod plan;
pub mod qdq;
pub mod qoperator;
pub mod report;
pub mod scheme;
pub mod sensitivity;
pub mod verify;
pub mod weights;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use whittle_exec::Value;
use whittle_ir::Model;

pub use calibrate::Calibration;
pub use config::{Format, QuantConfig};
pub use lowbit::{fp16_with_report, int4_with_report};
pub use observer::CalibrationMethod;
pub use plan::{FloatNode, Plan, Target, WeightSource};
pub use report::{QuantReport, QuantizedNode};
pub use scheme::{QParams, QuantType, Scheme};

use crate::optimize::fold_batchnorm::fold_batchnorm;
use crate::{bail, Result};

/// A model ready to quantize: opset raised where needed, and the plan.
pub struct Prepared {
    /// The model (opset raised).
    pub model: Model,
    /// What will be quantized.
    pub plan: Plan,
    /// The opset change made, if any.
    pub opset_change: Option<opset::OpsetChange>,
}

/// Raises the opset as the format needs and plans the nodes; fails when nothing can be
/// quantized, listing why.
pub fn prepare(mut model: Model, cfg: &QuantConfig, weights: WeightSource) -> Result<Prepared> {
    let opset_change = opset::ensure_opset(&mut model, min_opset(cfg, weights))?;
    let plan = checked_plan(&model, cfg, weights)?;
    Ok(Prepared {
        model,
        plan,
        opset_change,
    })
}

/// The ai.onnx opset the quantized operators need: 13 for per-channel QDQ weights
/// (DequantizeLinear's `axis`), else 11.
fn min_opset(cfg: &QuantConfig, weights: WeightSource) -> i64 {
    if cfg.per_channel && cfg.format == Format::Qdq && weights == WeightSource::Any {
        13
    } else {
        11
    }
}

/// [`Prepared`] that borrows the input model when preparing would change nothing in it:
/// calibration and export then read the caller's model instead of a copy of every
/// weight (an encoder's embedding table and projections held twice through calibration).
struct Staged<'m> {
    model: Cow<'m, Model>,
    plan: Plan,
    opset_change: Option<opset::OpsetChange>,
}

impl<'m> Staged<'m> {
    /// `model` with its BatchNormalizations folded and its opset raised as `cfg` needs
    /// ([`prepare`]), borrowed when it has neither to change.
    fn new(model: &'m Model, cfg: &QuantConfig, weights: WeightSource) -> Result<Self> {
        let has_batchnorm = model
            .graph()
            .node
            .iter()
            .any(|n| n.op_type == "BatchNormalization");
        if has_batchnorm || model.opset("").unwrap_or(1) < min_opset(cfg, weights) {
            return Ok(prepare(fold_batchnorm(model)?, cfg, weights)?.into());
        }
        Ok(Staged {
            model: Cow::Borrowed(model),
            plan: checked_plan(model, cfg, weights)?,
            opset_change: None,
        })
    }
}

impl From<Prepared> for Staged<'_> {
    fn from(p: Prepared) -> Self {
        Staged {
            model: Cow::Owned(p.model),
            plan: p.plan,
            opset_change: p.opset_change,
        }
    }
}

impl From<Staged<'_>> for Prepared {
    fn from(s: Staged<'_>) -> Self {
        Prepared {
            model: s.model.into_owned(),
            plan: s.plan,
            opset_change: s.opset_change,
        }
    }
}

/// The plan of `model`; fails when nothing can be quantized, listing why.
fn checked_plan(model: &Model, cfg: &QuantConfig, weights: WeightSource) -> Result<Plan> {
    let plan = plan::plan(model, cfg, weights)?;
    if plan.targets.is_empty() {
        let mut reasons: Vec<&str> = plan.float_nodes.iter().map(|f| f.reason.as_str()).collect();
        reasons.sort_unstable();
        reasons.dedup();
        bail!(
            "nothing to quantize: every node stays float ({})",
            reasons.join("; ")
        );
    }
    Ok(plan)
}

/// The activation tensors whose ranges static quantization needs: every activation input
/// and output of the targets, and the output of a Relu reading a target's output.
pub fn watched_tensors(model: &Model, targets: &[Target]) -> HashSet<String> {
    let g = model.graph();
    let mut watch = HashSet::new();
    for t in targets {
        watch.extend(t.activations.iter().cloned());
        watch.extend(g.node[t.node].output.iter().take(1).cloned());
    }
    for n in g.node.iter().filter(|n| n.op_type == "Relu") {
        if n.input.first().is_some_and(|x| watch.contains(x)) {
            watch.extend(n.output.iter().cloned());
        }
    }
    watch
}

/// The float values static quantization of `targets` computes differently, which
/// verification compares ([`verify::compare_recorded`] reads those the quantized model's
/// nodes compute with other inputs or operators): every output of a target (it reads
/// dequantized inputs, or an integer operator replaces it), of a Relu reading one (its
/// output takes the Q/DQ pair, `op -> Relu -> Q -> DQ`), of an embedding-table lookup not
/// in `exclude` ([`gather`]), and the graph outputs. Readers of a quantized tensor keep
/// its name, and the values after them carry the same error: they are not compared.
pub fn changed_tensors(
    model: &Model,
    targets: &[Target],
    exclude: &[String],
) -> Result<HashSet<String>> {
    let g = model.graph();
    let mut changed: HashSet<String> = targets
        .iter()
        .flat_map(|t| g.node[t.node].output.iter().cloned())
        .collect();
    for n in g.node.iter().filter(|n| n.op_type == "Relu") {
        if n.input.first().is_some_and(|x| changed.contains(x)) {
            changed.extend(n.output.iter().cloned());
        }
    }
    changed.extend(g.output.iter().map(|o| o.name.clone()));
    for i in gather::eligible(model, exclude)? {
        changed.extend(g.node[i].output.iter().cloned());
    }
    Ok(changed)
}

/// Writes the statically quantized model in the configured format, with its embedding
/// tables in int8 ([`gather`]); a QDQ model is then made smaller ([`compact`]).
pub fn export_static(
    model: &Model,
    cfg: &QuantConfig,
    targets: &[Target],
    ranges: &HashMap<String, (f32, f32)>,
) -> Result<Model> {
    let tables = gather::table_names(model, &gather::eligible(model, &cfg.exclude)?);
    let draft = build::Draft::new(model, targets, &tables);
    let mut out = match cfg.format {
        Format::Qdq => qdq::export(model, draft.model(), cfg, targets, ranges)?,
        Format::QOperator => qoperator::export(model, draft.model(), cfg, targets, ranges)?,
    };
    gather::quantize_tables(&mut out, model, &tables, cfg)?;
    draft.finish(&mut out);
    if cfg.format == Format::Qdq {
        compact::compact(&mut out, model, cfg)?;
    }
    Ok(out)
}

/// Folds BatchNormalization, prepares `model` and calibrates it on `calib` (batches feeding
/// the model's inputs).
pub fn calibrated<I>(model: &Model, cfg: &QuantConfig, calib: I) -> Result<(Prepared, Calibration)>
where
    I: IntoIterator<Item = HashMap<String, Value>>,
{
    let (staged, calibration) = calibrate_staged(model, cfg, calib)?;
    Ok((staged.into(), calibration))
}

/// [`calibrated`], the model borrowed where preparing it changes nothing ([`Staged`]).
fn calibrate_staged<'m, I>(
    model: &'m Model,
    cfg: &QuantConfig,
    calib: I,
) -> Result<(Staged<'m>, Calibration)>
where
    I: IntoIterator<Item = HashMap<String, Value>>,
{
    let staged = Staged::new(model, cfg, WeightSource::Any)?;
    let targets = &staged.plan.targets;
    let watch = watched_tensors(&staged.model, targets);
    let record = match cfg.record_samples {
        0 => HashSet::new(),
        _ => changed_tensors(&staged.model, targets, &cfg.exclude)?,
    };
    let mut calibration = calibrate::calibrate(&staged.model, &watch, &record, calib, cfg)?;
    share_ranges(&staged.model, &mut calibration.ranges);
    Ok((staged, calibration))
}

/// Operators whose output holds only values of their first input (selected or moved).
const VALUE_PRESERVING: [&str; 7] = [
    "MaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Identity",
];

/// Gives the output of every value-preserving operator its input's range, as ONNX
/// Runtime's quantizer does: with equal scales and zero points on both sides, runtimes run
/// the operator on the integers (ORT drops the DequantizeLinear/QuantizeLinear pair around
/// a MaxPool). Ranges chosen separately (entropy, percentile, MSE) differ slightly and
/// block that.
fn share_ranges(model: &Model, ranges: &mut HashMap<String, (f32, f32)>) {
    for node in &model.graph().node {
        if !node.domain.is_empty() || !VALUE_PRESERVING.contains(&node.op_type.as_str()) {
            continue;
        }
        let (Some(input), Some(output)) = (node.input.first(), node.output.first()) else {
            continue;
        };
        if let (Some(&range), true) = (ranges.get(input), ranges.contains_key(output)) {
            ranges.insert(output.clone(), range);
        }
    }
}

fn format_name(cfg: &QuantConfig) -> &'static str {
    match cfg.format {
        Format::Qdq => "qdq",
        Format::QOperator => "qoperator",
    }
}

/// Static INT8 quantization: calibrates on `calib` (batches feeding the model's inputs),
/// then exports. The report has no sizes of the serialized models (see
/// [`QuantReport::set_sizes`]), and no verification (see [`verify::compare`]) unless
/// `cfg.record_samples` asked calibration to keep the float values of its first samples:
/// it is then verified on those ([`verify::compare_recorded`]), without running the
/// float model again.
pub fn static_int8<I>(model: &Model, cfg: &QuantConfig, calib: I) -> Result<(Model, QuantReport)>
where
    I: IntoIterator<Item = HashMap<String, Value>>,
{
    let start = std::time::Instant::now();
    let (prepared, mut calibration) = calibrate_staged(model, cfg, calib)?;
    let tables = gather::eligible(&prepared.model, &cfg.exclude)?;
    let out = export_static(
        &prepared.model,
        cfg,
        &prepared.plan.targets,
        &calibration.ranges,
    )?;
    let verification = verify_recorded(model, &out, &mut calibration)?;
    let mut report = new_report(
        "static",
        format_name(cfg),
        cfg,
        model,
        &out,
        &prepared,
        Some(calibration),
        start,
    );
    note_tables(&mut report, &prepared.model, &tables);
    report.verification = verification;
    Ok((out, report))
}

/// Verifies `quant` against `float` on the float values `calibration` spilled
/// ([`Calibration::reference`], given back: its file is closed).
fn verify_recorded(
    float: &Model,
    quant: &Model,
    calibration: &mut Calibration,
) -> Result<Option<verify::Verification>> {
    calibration
        .reference
        .take()
        .map(|reference| verify::compare_recorded(float, quant, &reference))
        .transpose()
}

/// Lists the `Gather` nodes at `tables` (indices into `model`) as quantized, with a note.
fn note_tables(report: &mut QuantReport, model: &Model, tables: &[usize]) {
    if tables.is_empty() {
        return;
    }
    report.notes.push(format!(
        "{} embedding table(s) stored in uint8 (Gather + DequantizeLinear)",
        tables.len()
    ));
    let nodes = &model.graph().node;
    report
        .quantized_nodes
        .extend(tables.iter().map(|&i| QuantizedNode {
            name: whittle_ir::graph::node_display_name(&nodes[i], i),
            op_type: nodes[i].op_type.clone(),
        }));
}

/// Static INT8 quantization within an accuracy budget: calibrates, then keeps the most
/// sensitive layers in float until the drop of `eval`'s score (top-1 accuracy, or the
/// outputs' cosine to the float model's when it has no labels) is at most `budget` (a
/// fraction, e.g. 0.005). The report lists the layers kept float and the sensitivities.
pub fn static_int8_within_budget<I>(
    model: &Model,
    cfg: &QuantConfig,
    calib: I,
    eval: &sensitivity::EvalSet,
    budget: f64,
) -> Result<(Model, QuantReport)>
where
    I: IntoIterator<Item = HashMap<String, Value>>,
{
    let start = std::time::Instant::now();
    let (mut prepared, mut calibration) = calibrate_staged(model, cfg, calib)?;
    let export =
        |targets: &[Target]| export_static(&prepared.model, cfg, targets, &calibration.ranges);
    let fit = sensitivity::fit_budget(
        &prepared.model,
        &prepared.plan.targets,
        &export,
        eval,
        budget,
    )?;
    prepared.plan.targets = fit.targets;
    prepared.plan.float_nodes.extend(fit.kept_float);
    let verification = verify_recorded(model, &fit.model, &mut calibration)?;
    let mut report = new_report(
        "static",
        format_name(cfg),
        cfg,
        model,
        &fit.model,
        &prepared,
        Some(calibration),
        start,
    );
    report.accuracy = Some(fit.accuracy);
    report.sensitivity = fit.sensitivity;
    report.verification = verification;
    Ok((fit.model, report))
}

/// Dynamic INT8 quantization of Conv, Gemm and MatMul nodes with constant weights.
pub fn dynamic_int8(model: &Model, cfg: &QuantConfig) -> Result<(Model, QuantReport)> {
    let start = std::time::Instant::now();
    let prepared = Staged::new(model, cfg, WeightSource::Initializer)?;
    let tables = gather::eligible(&prepared.model, &cfg.exclude)?;
    let names = gather::table_names(&prepared.model, &tables);
    let draft = build::Draft::new(&prepared.model, &prepared.plan.targets, &names);
    let mut out = dynamic::export(&prepared.model, draft.model(), cfg, &prepared.plan.targets)?;
    gather::quantize_tables(&mut out, &prepared.model, &names, cfg)?;
    draft.finish(&mut out);
    let mut report = new_report(
        "dynamic",
        "qoperator",
        cfg,
        model,
        &out,
        &prepared,
        None,
        start,
    );
    if cfg.per_channel && prepared.plan.targets.iter().any(|t| t.op_type == "Conv") {
        report.notes.push(dynamic::CONV_PER_TENSOR_NOTE.into());
    }
    note_tables(&mut report, &prepared.model, &tables);
    Ok((out, report))
}

#[allow(clippy::too_many_arguments)]
fn new_report(
    mode: &str,
    format: &str,
    cfg: &QuantConfig,
    input: &Model,
    output: &Model,
    prepared: &Staged,
    calibration: Option<Calibration>,
    start: std::time::Instant,
) -> QuantReport {
    let mut notes = Vec::new();
    if prepared.plan.already_quantized > 0 {
        notes.push(format!(
            "the input model is already partly quantized: {} quantized nodes were left as they are",
            prepared.plan.already_quantized
        ));
    }
    let bn_count = |m: &Model| m.count_op("BatchNormalization");
    let folded = bn_count(input).saturating_sub(bn_count(&prepared.model));
    if folded > 0 {
        notes.push(format!(
            "folded {folded} BatchNormalization node(s) into the Conv/Gemm before them, so the \
             quantized ops are not followed by float BatchNormalization"
        ));
    }
    let quantized = prepared
        .plan
        .targets
        .iter()
        .map(|t| QuantizedNode {
            name: t.name.clone(),
            op_type: t.op_type.clone(),
        })
        .collect();
    let float_nodes = prepared.plan.float_nodes.clone();
    let mut report = QuantReport::new(
        (mode, format),
        cfg.clone(),
        quantized,
        float_nodes,
        (input, output),
    );
    report.already_quantized = prepared.plan.already_quantized;
    report.calibration = calibration;
    report.opset_change = prepared.opset_change;
    report.notes = notes;
    report.seconds = start.elapsed().as_secs_f64();
    report
}

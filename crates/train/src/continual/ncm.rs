//! Nearest-class-mean classification (iCaRL, Rebuffi et al. 2017; Mai et al. 2021): each
//! sample goes to the class whose mean penultimate feature is nearest, so that the
//! trained head's bias toward the newest classes plays no part.
//!
//! The model stays plain ONNX: `argmin_c ||f - mu_c||^2 = argmax_c (2 mu_c . f - ||mu_c||^2)`,
//! so [`ncm_head`] rewrites the weight and bias of the Gemm that makes the output to
//! `W_c = 2 mu_c`, `b_c = -||mu_c||^2`; every compression pass still applies. The cosine
//! form ([`Ncm::Cosine`]) compares directions only: an `LpNormalization` (p = 2) before
//! the Gemm makes the features unit vectors, the means are taken of those and normalised,
//! and the Gemm scores `mu_c . f / (||mu_c|| ||f||)` (`b_c = 0`). The hybrid form
//! ([`Ncm::Hybrid`]) keeps the trained head and adds `s` times those cosines to its
//! scores (a second Gemm on the unit features and an `Add`): the product of the head's
//! softmax and a von Mises-Fisher model of each class around its mean, in which the head
//! keeps what it knows of the newest classes and the means pull the old ones back.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use whittle_data::Dataset;
use whittle_exec::{Executor, RunOptions, Value};
use whittle_ir::attr::{make, NodeAttrs};
use whittle_ir::proto::NodeProto;
use whittle_ir::{GraphEdit, Model, TensorData};

use super::buffer::ReplayBuffer;
use crate::bail;
use crate::error::{Result, TrainError};

/// Whether and how a continual run scores with nearest class means (`--ncm [DISTANCE]`;
/// in recipes `ncm = true` for the Euclidean form, `"cosine"` for the cosine one,
/// `"hybrid"` or `"hybrid:S"` for the hybrid one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "NcmSetting", into = "NcmSetting")]
pub enum Ncm {
    /// The trained head scores.
    #[default]
    Off,
    /// The nearest mean by Euclidean distance.
    Euclidean,
    /// The nearest mean by cosine similarity (unit features and means).
    Cosine,
    /// The trained head's scores plus `scale` times the cosine similarity of the features
    /// to each class's mean (`hybrid:S`; `hybrid` is [`DEFAULT_HYBRID_SCALE`]).
    Hybrid {
        /// Weight of the cosine similarities (their temperature's inverse).
        scale: f32,
    },
}

/// The weight of the cosine similarities in `--ncm hybrid` (chosen on Split
/// Fashion-MNIST, see docs/CONTINUAL.md).
pub const DEFAULT_HYBRID_SCALE: f32 = 32.0;

impl Ncm {
    /// Whether class means score at all.
    pub fn is_on(self) -> bool {
        self != Ncm::Off
    }
}

impl FromStr for Ncm {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "euclidean" => Ok(Ncm::Euclidean),
            "cosine" => Ok(Ncm::Cosine),
            "off" => Ok(Ncm::Off),
            "hybrid" => Ok(Ncm::Hybrid {
                scale: DEFAULT_HYBRID_SCALE,
            }),
            _ => match s.strip_prefix("hybrid:") {
                Some(v) => match v.parse::<f32>() {
                    Ok(scale) if scale > 0.0 && scale.is_finite() => Ok(Ncm::Hybrid { scale }),
                    _ => bail!("--ncm {s}: the hybrid's scale '{v}' must be a positive number"),
                },
                None => bail!(
                    "unknown --ncm distance '{s}': use euclidean, cosine, hybrid or hybrid:SCALE"
                ),
            },
        }
    }
}

impl fmt::Display for Ncm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ncm::Off => f.write_str("off"),
            Ncm::Euclidean => f.write_str("euclidean"),
            Ncm::Cosine => f.write_str("cosine"),
            Ncm::Hybrid { scale } => write!(f, "hybrid:{scale}"),
        }
    }
}

/// [`Ncm`] as recipes write it: a flag (`true`: Euclidean, the form before cosine existed)
/// or a distance's name.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum NcmSetting {
    Flag(bool),
    Name(String),
}

impl TryFrom<NcmSetting> for Ncm {
    type Error = TrainError;

    fn try_from(s: NcmSetting) -> Result<Self> {
        match s {
            NcmSetting::Flag(on) => Ok(if on { Ncm::Euclidean } else { Ncm::Off }),
            NcmSetting::Name(name) => name.parse(),
        }
    }
}

impl From<Ncm> for NcmSetting {
    fn from(n: Ncm) -> Self {
        match n {
            Ncm::Off => NcmSetting::Flag(false),
            Ncm::Euclidean => NcmSetting::Flag(true),
            Ncm::Cosine | Ncm::Hybrid { .. } => NcmSetting::Name(n.to_string()),
        }
    }
}

/// Samples per feature pass.
const FEATURE_BATCH: usize = 1000;

/// Score of a class no sample showed yet (before its task): below any mean's score.
const UNSEEN_SCORE: f32 = -1e9;

/// [`ncm_head`] with the means of what a continual learner holds after a task: the replay
/// buffer (when there is one) and that task's training data `task`.
pub fn ncm_after_task(
    model: &Model,
    buffer: Option<&ReplayBuffer>,
    task: &Dataset,
    num_classes: usize,
    distance: Ncm,
) -> Result<Model> {
    let kept = buffer
        .filter(|b| !b.is_empty())
        .map(|b| b.dataset(task.sample_dims(), num_classes))
        .transpose()?;
    let sets: Vec<&Dataset> = kept.iter().chain([task]).collect();
    ncm_head(model, &sets, distance)
}

/// The head Gemm of a model: its feature input and its weight and bias initializers.
struct HeadGemm {
    /// Its index among the graph's nodes.
    at: usize,
    features: String,
    weight: String,
    bias: String,
    /// Whether the weight is stored `[classes, features]` (`transB = 1`).
    transposed: bool,
}

/// `model` with its output scoring classes by the nearest mean (by `distance`) of the
/// penultimate features of `data`'s samples (all datasets together; a class none of them
/// holds is never chosen). The Euclidean and cosine forms rewrite the output Gemm; the
/// cosine form puts an `LpNormalization` before it unless its input already comes from
/// one (a model this function made), so that it can be applied again. The hybrid form
/// keeps the output Gemm (the trained head) and adds a second Gemm on the unit features
/// scoring `scale` times the cosine to each mean; on a model this function made hybrid
/// it only renews the means. The error names the node that is not such a head.
pub fn ncm_head(model: &Model, data: &[&Dataset], distance: Ncm) -> Result<Model> {
    let cosine = match distance {
        Ncm::Off => bail!("ncm_head needs a distance, euclidean, cosine or hybrid"),
        Ncm::Euclidean => false,
        Ncm::Cosine | Ncm::Hybrid { .. } => true,
    };
    let hybrid = find_hybrid(model)?;
    let plain_head;
    let head = match &hybrid {
        Some(_) if !matches!(distance, Ncm::Hybrid { .. }) => bail!(
            "--ncm {distance}: the model's head is already a hybrid of a trained head and class means"
        ),
        Some(h) => &h.head,
        None => {
            plain_head = find_head(model)?;
            &plain_head
        }
    };
    let weight = TensorData::from_proto(
        model.graph().initializer(&head.weight).expect("checked"),
        None,
    )?;
    let (classes, width) = match (weight.dims(), head.transposed) {
        ([c, f], true) | ([f, c], false) => (*c, *f),
        (dims, _) => bail!(
            "--ncm: the head's weight '{}' is {dims:?}, not a matrix",
            head.weight
        ),
    };
    let means = class_means(model, &head.features, classes, width, data, cosine)?;
    let mut w = vec![0f32; classes * width];
    let mut b = vec![UNSEEN_SCORE; classes];
    for (c, mean) in means.iter().enumerate() {
        let Some(mean) = mean else {
            continue;
        };
        // Euclidean: 2 mu . f - ||mu||^2; cosine: mu / ||mu|| . f (f is a unit vector),
        // times the hybrid's scale.
        let (scale, bias) = match distance {
            Ncm::Hybrid { scale } => (f64::from(scale) * inverse_norm(mean), 0.0),
            _ if cosine => (inverse_norm(mean), 0.0),
            _ => (2.0, -mean.iter().map(|m| m * m).sum::<f64>()),
        };
        b[c] = bias as f32;
        for (k, m) in mean.iter().enumerate() {
            w[c * width + k] = (scale * m) as f32;
        }
    }
    let mut out = model.clone();
    if let Ncm::Hybrid { .. } = distance {
        match &hybrid {
            Some(h) => {
                let w = match h.means.transposed {
                    true => w,
                    false => transpose(&w, classes, width),
                };
                set_gemm(&mut out, &h.means, &w, &b)?;
            }
            None => add_means_branch(&mut out, head, classes, width, &w, &b)?,
        }
        return Ok(out);
    }
    if cosine && !is_unit_norm(model, &head.features)? {
        normalize_input(&mut out, head);
    }
    let w = match head.transposed {
        true => w,
        false => transpose(&w, classes, width),
    };
    set_gemm(&mut out, head, &w, &b)?;
    Ok(out)
}

/// The mean feature `features` (of unit features when `unit`) of `model` per class over
/// `data`, `None` for a class without samples.
fn class_means(
    model: &Model,
    features: &str,
    classes: usize,
    width: usize,
    data: &[&Dataset],
    unit: bool,
) -> Result<Vec<Option<Vec<f64>>>> {
    let exec = Executor::new(model)?;
    let input = match exec.inputs().as_slice() {
        [input] => input.name.clone(),
        inputs => bail!(
            "--ncm needs a model with one input, this one has {}",
            inputs.len()
        ),
    };
    let mut sums = vec![vec![0f64; width]; classes];
    let mut counts = vec![0usize; classes];
    for set in data {
        for batch in set.batches(FEATURE_BATCH) {
            let (images, labels) = batch?;
            let feed = HashMap::from([(input.clone(), Value::try_from(&images)?)]);
            let opts = RunOptions {
                keep: vec![features.to_string()],
                ..RunOptions::default()
            };
            let out = exec.run_with(feed, opts)?;
            let Some(values) = out.get(features) else {
                bail!("--ncm: the model did not produce '{features}'");
            };
            let shape = values.shape().to_vec();
            let values = values.to_f32_vec()?;
            if values.len() != labels.len() * width {
                bail!("--ncm: the head's input '{features}' is {shape:?}, not [N, {width}]");
            }
            for (row, &label) in values.chunks(width).zip(labels) {
                let Some(sum) = usize::try_from(label).ok().and_then(|c| sums.get_mut(c)) else {
                    bail!("--ncm: label {label} is outside the model's {classes} classes");
                };
                let row: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
                let scale = if unit { inverse_norm(&row) } else { 1.0 };
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += v * scale;
                }
                counts[label as usize] += 1;
            }
        }
    }
    Ok(sums
        .into_iter()
        .zip(counts)
        .map(|(sum, n)| (n > 0).then(|| sum.iter().map(|s| s / n as f64).collect()))
        .collect())
}

/// `model` without the class means of a hybrid head ([`Ncm::Hybrid`]): its trained head
/// Gemm makes the output again, as training left the model (for training it further, as
/// the pruned model's fine-tune does: the means branch would scale the gradients of the
/// features by the hybrid's scale). Any other model comes back unchanged.
pub fn trained_head(model: &Model) -> Result<Model> {
    let Some(hybrid) = find_hybrid(model)? else {
        return Ok(model.clone());
    };
    let mut out = model.clone();
    let graph = out.graph_mut();
    let output = graph.output[0].name.clone();
    let producers = graph.producers();
    let consumers = graph.consumers();
    let unit = graph.node[hybrid.means.at].input[0].clone();
    let head_out = graph.node[hybrid.head.at].output[0].clone();
    let mut gone = vec![producers[&output], hybrid.means.at];
    if consumers.get(&unit).map_or(0, Vec::len) == 1 {
        gone.push(producers[&unit]);
    }
    gone.sort_unstable();
    for at in gone.into_iter().rev() {
        graph.remove_node(at);
    }
    graph
        .initializer
        .retain(|t| t.name != hybrid.means.weight && t.name != hybrid.means.bias);
    graph.rename_value(&head_out, &output);
    Ok(out)
}

/// `[rows, cols]` row-major as `[cols, rows]`.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

/// Replaces the weight (`w`, in the Gemm's own layout) and bias of `gemm` in `model`.
fn set_gemm(model: &mut Model, gemm: &HeadGemm, w: &[f32], b: &[f32]) -> Result<()> {
    let graph = model.graph();
    let dims = |name: &str| -> Result<Vec<usize>> {
        Ok(
            TensorData::from_proto(graph.initializer(name).expect("checked"), None)?
                .dims()
                .to_vec(),
        )
    };
    let new_weight = TensorData::from_slice(dims(&gemm.weight)?, w)?.to_proto(&gemm.weight);
    let new_bias = TensorData::from_slice(dims(&gemm.bias)?, b)?.to_proto(&gemm.bias);
    for init in &mut model.graph_mut().initializer {
        if init.name == gemm.weight {
            *init = new_weight.clone();
        } else if init.name == gemm.bias {
            *init = new_bias.clone();
        }
    }
    Ok(())
}

/// The hybrid head: `head` (the trained Gemm that made the output) and `means` (the
/// class means' Gemm on its unit features) added into the output.
struct Hybrid {
    head: HeadGemm,
    means: HeadGemm,
}

/// The model's hybrid head, if its output is the `Add` of a Gemm on some features and a
/// Gemm on their `LpNormalization` (as [`add_means_branch`] makes it).
fn find_hybrid(model: &Model) -> Result<Option<Hybrid>> {
    let graph = model.graph();
    let Some(output) = graph.output.first() else {
        return Ok(None);
    };
    let producers = graph.producers();
    let Some(&at) = producers.get(&output.name) else {
        return Ok(None);
    };
    let add = &graph.node[at];
    if add.op_type != "Add" || add.input.len() != 2 {
        return Ok(None);
    }
    let gemms: Vec<usize> = add
        .input
        .iter()
        .filter_map(|i| producers.get(i).copied())
        .filter(|&g| graph.node[g].op_type == "Gemm")
        .collect();
    let [a, b] = gemms[..] else {
        return Ok(None);
    };
    for (head, means) in [(a, b), (b, a)] {
        let unit_input = &graph.node[means].input[0];
        let Some(&norm) = producers.get(unit_input) else {
            continue;
        };
        if is_unit_norm(model, unit_input)?
            && graph.node[norm].input.first() == graph.node[head].input.first()
        {
            return Ok(Some(Hybrid {
                head: gemm_head(model, head, "--ncm hybrid")?,
                means: gemm_head(model, means, "--ncm hybrid")?,
            }));
        }
    }
    Ok(None)
}

/// Makes `head`'s output the sum of the head's scores and a Gemm of weight `w`
/// (`[classes, width]`) and bias `b` on the head's features made unit vectors.
fn add_means_branch(
    model: &mut Model,
    head: &HeadGemm,
    classes: usize,
    width: usize,
    w: &[f32],
    b: &[f32],
) -> Result<()> {
    let graph = model.graph_mut();
    let gemm = graph.node[head.at].clone();
    let output = gemm.output[0].clone();
    let head_out = format!("{output}_head");
    let (normalize, unit) = unit_features(&gemm.name, &head.features);
    let means_out = format!("{output}_ncm");
    let weight = format!("{}_ncm_means", gemm.name);
    let bias = format!("{}_ncm_bias", gemm.name);
    graph.node[head.at].output[0] = head_out.clone();
    let nodes = [
        normalize,
        NodeProto {
            op_type: "Gemm".into(),
            name: format!("{}_ncm", gemm.name),
            input: vec![unit, weight.clone(), bias.clone()],
            output: vec![means_out.clone()],
            attribute: vec![make::int("transB", 1)],
            ..NodeProto::default()
        },
        NodeProto {
            op_type: "Add".into(),
            name: format!("{}_ncm_add", gemm.name),
            input: vec![head_out, means_out],
            output: vec![output],
            ..NodeProto::default()
        },
    ];
    for (k, node) in nodes.into_iter().enumerate() {
        graph.node.insert(head.at + 1 + k, node);
    }
    graph
        .initializer
        .push(TensorData::from_slice(vec![classes, width], w)?.to_proto(&weight));
    graph
        .initializer
        .push(TensorData::from_slice(vec![classes], b)?.to_proto(&bias));
    Ok(())
}

/// `1 / ||v||` (1 for a zero vector, which stays zero as `LpNormalization` keeps it).
fn inverse_norm(v: &[f64]) -> f64 {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        1.0 / norm
    } else {
        1.0
    }
}

/// Whether `value` comes from an `LpNormalization` with p = 2 over the last axis of a
/// `[N, F]` tensor (axis -1 or 1): the cosine head's own normalisation.
fn is_unit_norm(model: &Model, value: &str) -> Result<bool> {
    let graph = model.graph();
    let Some(&at) = graph.producers().get(value) else {
        return Ok(false);
    };
    let node = &graph.node[at];
    Ok(node.op_type == "LpNormalization"
        && node.domain.is_empty()
        && node.int("p")?.unwrap_or(2) == 2
        && matches!(node.int("axis")?.unwrap_or(-1), -1 | 1))
}

/// The `LpNormalization` (p = 2, axis 1) of the head Gemm `gemm`'s input `features`, and
/// the name of its output (the unit features).
fn unit_features(gemm: &str, features: &str) -> (NodeProto, String) {
    let unit = format!("{features}_unit");
    let node = NodeProto {
        op_type: "LpNormalization".into(),
        name: format!("{gemm}_ncm_normalize"),
        input: vec![features.to_string()],
        output: vec![unit.clone()],
        attribute: vec![make::int("axis", 1), make::int("p", 2)],
        ..NodeProto::default()
    };
    (node, unit)
}

/// Puts an `LpNormalization` (p = 2, axis 1) between the head Gemm and its features.
fn normalize_input(model: &mut Model, head: &HeadGemm) {
    let graph = model.graph_mut();
    let (normalize, unit) = unit_features(&graph.node[head.at].name, &head.features);
    graph.node[head.at].input[0] = unit;
    graph.node.insert(head.at, normalize);
}

/// The Gemm that makes the model's first output, with a constant float weight and a bias
/// of one value per class and no scaling (`alpha`, `beta` 1, `transA` 0).
fn find_head(model: &Model) -> Result<HeadGemm> {
    let graph = model.graph();
    let Some(output) = graph.output.first() else {
        bail!("--ncm: the model has no output");
    };
    let Some(&at) = graph.producers().get(&output.name) else {
        bail!("--ncm: no node makes the output '{}'", output.name);
    };
    gemm_head(
        model,
        at,
        &format!("--ncm: the output '{}' comes from", output.name),
    )
}

/// Node `at` as a linear classifier: a Gemm with a constant float weight and bias, alpha
/// and beta 1 and transA 0; the error starts with `what`.
fn gemm_head(model: &Model, at: usize, what: &str) -> Result<HeadGemm> {
    let graph = model.graph();
    let node = &graph.node[at];
    let what = format!("{what} node '{}' ({})", node.name, node.op_type);
    if node.op_type != "Gemm" || node.input.len() != 3 {
        bail!("{what}; it needs a Gemm with a bias (a linear classifier)");
    }
    let unscaled = node.float("alpha")?.unwrap_or(1.0) == 1.0
        && node.float("beta")?.unwrap_or(1.0) == 1.0
        && node.int("transA")?.unwrap_or(0) == 0;
    if !unscaled {
        bail!("{what}; it needs alpha 1, beta 1 and transA 0");
    }
    for name in &node.input[1..] {
        match graph.initializer(name) {
            Some(t) if t.data_type == whittle_ir::DataType::Float as i32 => {}
            _ => bail!("{what}; its input '{name}' must be a float32 initializer"),
        }
    }
    Ok(HeadGemm {
        at,
        features: node.input[0].clone(),
        weight: node.input[1].clone(),
        bias: node.input[2].clone(),
        transposed: node.int("transB")?.unwrap_or(0) != 0,
    })
}

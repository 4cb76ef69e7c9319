//! Nearest-class-mean classification (iCaRL, Rebuffi et al. 2017; Mai et al. 2021): each
//! sample goes to the class whose mean penultimate feature is nearest, so that the
//! trained head's bias toward the newest classes plays no part.
//!
//! The model stays plain ONNX: `argmin_c ||f - mu_c||^2 = argmax_c (2 mu_c . f - ||mu_c||^2)`,
//! so [`ncm_head`] rewrites the weight and bias of the Gemm that makes the output to
//! `W_c = 2 mu_c`, `b_c = -||mu_c||^2`; every compression pass still applies. The cosine
//! form ([`Ncm::Cosine`]) compares directions only: an `LpNormalization` (p = 2) before
//! the Gemm makes the features unit vectors, the means are taken of those and normalised,
//! and the Gemm scores `mu_c . f / (||mu_c|| ||f||)` (`b_c = 0`).

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
/// in recipes `ncm = true` for the Euclidean form, `"cosine"` for the cosine one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "NcmSetting", into = "NcmSetting")]
pub enum Ncm {
    /// The trained head scores.
    #[default]
    Off,
    /// The nearest mean by Euclidean distance.
    Euclidean,
    /// The nearest mean by cosine similarity (unit features and means).
    Cosine,
}

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
            _ => bail!("unknown --ncm distance '{s}': use euclidean or cosine"),
        }
    }
}

impl fmt::Display for Ncm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ncm::Off => "off",
            Ncm::Euclidean => "euclidean",
            Ncm::Cosine => "cosine",
        })
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
            Ncm::Cosine => NcmSetting::Name(n.to_string()),
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

/// `model` with its output Gemm scoring classes by the nearest mean (by `distance`) of the
/// penultimate features of `data`'s samples (all datasets together; a class none of them
/// holds is never chosen). The cosine form puts an `LpNormalization` before the Gemm
/// unless its input already comes from one (a model this function made), so that it can
/// be applied again. The error names the node that is not such a head.
pub fn ncm_head(model: &Model, data: &[&Dataset], distance: Ncm) -> Result<Model> {
    if distance == Ncm::Off {
        bail!("ncm_head needs a distance, euclidean or cosine");
    }
    let cosine = distance == Ncm::Cosine;
    let head = find_head(model)?;
    let exec = Executor::new(model)?;
    let input = match exec.inputs().as_slice() {
        [input] => input.name.clone(),
        inputs => bail!(
            "--ncm needs a model with one input, this one has {}",
            inputs.len()
        ),
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
    let mut sums = vec![vec![0f64; width]; classes];
    let mut counts = vec![0usize; classes];
    for set in data {
        for batch in set.batches(FEATURE_BATCH) {
            let (images, labels) = batch?;
            let feed = HashMap::from([(input.clone(), Value::try_from(&images)?)]);
            let opts = RunOptions {
                keep: vec![head.features.clone()],
                ..RunOptions::default()
            };
            let out = exec.run_with(feed, opts)?;
            let Some(features) = out.get(&head.features) else {
                bail!("--ncm: the model did not produce '{}'", head.features);
            };
            let values = features.to_f32_vec()?;
            if values.len() != labels.len() * width {
                bail!(
                    "--ncm: the head's input '{}' is {:?}, not [N, {width}]",
                    head.features,
                    features.shape()
                );
            }
            for (row, &label) in values.chunks(width).zip(labels) {
                let Some(sum) = usize::try_from(label).ok().and_then(|c| sums.get_mut(c)) else {
                    bail!("--ncm: label {label} is outside the model's {classes} classes");
                };
                let row: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
                let scale = if cosine { inverse_norm(&row) } else { 1.0 };
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += v * scale;
                }
                counts[label as usize] += 1;
            }
        }
    }
    let mut w = vec![0f32; classes * width];
    let mut b = vec![UNSEEN_SCORE; classes];
    for (c, (sum, &n)) in sums.iter().zip(&counts).enumerate() {
        if n == 0 {
            continue;
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
        // Euclidean: 2 mu . f - ||mu||^2; cosine: mu / ||mu|| . f (f is a unit vector).
        let (scale, bias) = match cosine {
            true => (inverse_norm(&mean), 0.0),
            false => (2.0, -mean.iter().map(|m| m * m).sum::<f64>()),
        };
        b[c] = bias as f32;
        for (k, m) in mean.iter().enumerate() {
            let at = match head.transposed {
                true => c * width + k,
                false => k * classes + c,
            };
            w[at] = (scale * m) as f32;
        }
    }
    let mut out = model.clone();
    if cosine && !is_unit_norm(model, &head.features)? {
        normalize_input(&mut out, &head);
    }
    let bias_dims = TensorData::from_proto(
        model.graph().initializer(&head.bias).expect("checked"),
        None,
    )?
    .dims()
    .to_vec();
    let new_weight = TensorData::from_slice(weight.dims().to_vec(), &w)?.to_proto(&head.weight);
    let new_bias = TensorData::from_slice(bias_dims, &b)?.to_proto(&head.bias);
    for init in &mut out.graph_mut().initializer {
        if init.name == head.weight {
            *init = new_weight.clone();
        } else if init.name == head.bias {
            *init = new_bias.clone();
        }
    }
    Ok(out)
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

/// Puts an `LpNormalization` (p = 2, axis 1) between the head Gemm and its features.
fn normalize_input(model: &mut Model, head: &HeadGemm) {
    let graph = model.graph_mut();
    let gemm = &graph.node[head.at];
    let unit = format!("{}_unit", head.features);
    let normalize = NodeProto {
        op_type: "LpNormalization".into(),
        name: format!("{}_ncm_normalize", gemm.name),
        input: vec![head.features.clone()],
        output: vec![unit.clone()],
        attribute: vec![make::int("axis", 1), make::int("p", 2)],
        ..NodeProto::default()
    };
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
    let node = &graph.node[at];
    let what = format!(
        "--ncm: the output '{}' comes from node '{}' ({})",
        output.name, node.name, node.op_type
    );
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

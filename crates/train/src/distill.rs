//! Knowledge distillation: a loss for [`crate::Trainer::with_loss`] that pulls a student's
//! class scores toward a teacher's softened scores, plus optional feature matching.
//!
//! Loss: `alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, labels)`
//! ([`crate::loss::kl_divergence`] already includes the `T^2`), plus
//! `beta * MSE(student feature, teacher feature)` for each [`FeaturePair`]
//! (`beta` = [`DistillConfig::feature_weight`]; the student tensor must be a graph output of
//! the training graph).
//!
//! Feature tensors may differ in width (axis 1: channels of `[N, C, ...]`, features of
//! `[N, D]`) but in nothing else. The student feature is then mapped to the teacher's width
//! by a learned projection trained jointly with the student, as in FitNets hint learning:
//! [`Distiller::training_graph`] adds a 1x1 `Conv` (weight `[Ct, Cs, 1, ...]`) or a `Gemm`
//! (`transB`, weight `[Dt, Ds]`) after the student feature, whose weight the trainer steps
//! like any other parameter. The projection exists only in the training graph: export the
//! trained weights into the original student (`trainer.executor().export(&student)`), so
//! the output is exactly the student graph, with no extra initializer, node or output.
//!
//! The teacher runs in inference mode on the batch the student sees. Its outputs are
//! cached per sample, keyed by a hash of the sample's input bytes (the trainer does not
//! expose sample indices), up to [`DistillConfig::cache_floats`] cached values; an
//! augmented sample has other bytes and so runs the teacher again.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use candle_core::{DType, Tensor};
use serde::Serialize;
use whittle_exec::{Executor, RunOptions, Value};
use whittle_ir::shape::TensorType;
use whittle_ir::Model;

use crate::bail;
use crate::error::Result;
use crate::loss::{cross_entropy, kl_divergence, mse};
use crate::step::LossInput;
use projection::{add_projection, projection_shape, Named};

mod projection;

/// A teacher tensor matched to a student tensor by MSE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeaturePair {
    /// Value name in the teacher.
    pub teacher: String,
    /// Value name in the student (a graph output of the training graph).
    pub student: String,
}

/// How a [`FeaturePair`] is compared, found by [`Distiller::check_student`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FeatureMatch {
    /// Value name in the teacher.
    pub teacher: String,
    /// Value name in the student.
    pub student: String,
    /// `[out, in]`: the learned projection from the student's width to the teacher's, or
    /// `None` when both tensors have the same shape.
    pub projection: Option<[usize; 2]>,
}

/// Settings of distillation.
#[derive(Clone, Debug)]
pub struct DistillConfig {
    /// Softmax temperature `T > 0`.
    pub temperature: f64,
    /// Weight of the distillation term, in `[0, 1]` (the rest goes to cross-entropy).
    pub alpha: f64,
    /// Feature pairs matched by MSE.
    pub features: Vec<FeaturePair>,
    /// Weight `beta >= 0` of each feature pair's MSE.
    pub feature_weight: f64,
    /// Most teacher output values kept in the per-sample cache.
    pub cache_floats: usize,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            temperature: 4.0,
            alpha: 0.9,
            features: Vec::new(),
            feature_weight: 1.0,
            cache_floats: 16 << 20,
        }
    }
}

/// `alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE(student, labels)`.
pub fn distillation_loss(
    student: &Tensor,
    teacher: &Tensor,
    labels: &[i64],
    temperature: f64,
    alpha: f64,
) -> Result<Tensor> {
    let kl = kl_divergence(student, teacher, temperature)?;
    let ce = cross_entropy(student, labels, 0.0)?;
    Ok(((kl * alpha)? + (ce * (1.0 - alpha))?)?)
}

/// The teacher and its cache; [`Distiller::loss`] is the training loss.
pub struct Distiller {
    teacher: Executor,
    input: String,
    /// Teacher values compared: the class scores first, then the feature tensors.
    names: Vec<String>,
    student_output: String,
    /// Student output compared with each feature pair's teacher tensor: the student
    /// tensor itself or its projection.
    compared: Vec<String>,
    cfg: DistillConfig,
    cache: HashMap<u64, Vec<Vec<f32>>>,
    /// Per-row shape of each cached value (without the batch axis).
    row_shapes: Vec<Vec<usize>>,
    cached_floats: usize,
}

impl Distiller {
    /// Prepares `teacher` (one input, first output = class scores) for a student whose
    /// class scores are the output `student_output`; checks the settings.
    pub fn new(teacher: &Model, student_output: &str, cfg: DistillConfig) -> Result<Self> {
        if !(cfg.temperature > 0.0 && cfg.temperature.is_finite()) {
            bail!("`temperature` {} must be positive", cfg.temperature);
        }
        if !(0.0..=1.0).contains(&cfg.alpha) {
            bail!("`alpha` {} must be in [0, 1]", cfg.alpha);
        }
        if !(cfg.feature_weight >= 0.0 && cfg.feature_weight.is_finite()) {
            bail!("`feature_weight` {} must be >= 0", cfg.feature_weight);
        }
        let exec = Executor::new(teacher)?;
        let input = match exec.inputs().as_slice() {
            [one] => one.name.clone(),
            many => bail!("the teacher must have one input, it has {}", many.len()),
        };
        let Some(scores) = exec.output_names().first().cloned() else {
            bail!("the teacher has no output");
        };
        let mut names = vec![scores];
        names.extend(cfg.features.iter().map(|f| f.teacher.clone()));
        let compared = cfg.features.iter().map(|f| f.student.clone()).collect();
        Ok(Distiller {
            compared,
            teacher: exec,
            input,
            names,
            student_output: student_output.to_string(),
            cfg,
            cache: HashMap::new(),
            row_shapes: Vec::new(),
            cached_floats: 0,
        })
    }

    /// Runs teacher and student on `sample` (one batch of the student's input) and says
    /// how each feature pair is compared; fails when the class scores differ in shape or
    /// a feature pair differs in more than its width, naming both tensors.
    pub fn check_student(&self, student: &Model, sample: &Value) -> Result<Vec<FeatureMatch>> {
        Ok(self
            .compare(student, sample)?
            .into_iter()
            .map(|(m, _)| m)
            .collect())
    }

    /// [`Distiller::check_student`] with the rank of each student feature.
    fn compare(&self, student: &Model, sample: &Value) -> Result<Vec<(FeatureMatch, usize)>> {
        let mut keep: Vec<String> = self
            .cfg
            .features
            .iter()
            .map(|f| f.student.clone())
            .collect();
        keep.push(self.student_output.clone());
        let s = run_student(student, sample, keep)?;
        let t = self.run_teacher(sample)?;
        let side = |role: &str, name: &str, v: Option<&Value>| match v {
            Some(v) => Ok(Named {
                label: format!("{role} '{name}'"),
                dims: v.shape().to_vec(),
            }),
            None => bail!("the {role} has no tensor '{name}'"),
        };
        let scores = (
            side("teacher", &self.names[0], t.first())?,
            side("student", &self.student_output, s.get(&self.student_output))?,
        );
        if scores.0.dims != scores.1.dims {
            bail!(
                "{} has shape {:?} but {} has {:?}",
                scores.0.label,
                scores.0.dims,
                scores.1.label,
                scores.1.dims
            );
        }
        self.cfg
            .features
            .iter()
            .zip(&t[1..])
            .map(|(pair, tv)| {
                let sside = side("student", &pair.student, s.get(&pair.student))?;
                let projection =
                    projection_shape(&side("teacher", &pair.teacher, Some(tv))?, &sside)?;
                let m = FeatureMatch {
                    teacher: pair.teacher.clone(),
                    student: pair.student.clone(),
                    projection,
                };
                Ok((m, sside.dims.len()))
            })
            .collect()
    }

    /// The graph to train: `student` with its feature tensors exposed as outputs and a
    /// learned projection after each feature narrower or wider than its teacher tensor
    /// (checked on `sample` as [`Distiller::check_student`] does); the loss then compares
    /// the projections. Returns the graph and how each pair is compared.
    pub fn training_graph(
        &mut self,
        student: &Model,
        sample: &Value,
    ) -> Result<(Model, Vec<FeatureMatch>)> {
        let matches = self.compare(student, sample)?;
        let mut graph = expose_outputs(student, &self.cfg.features)?;
        for (i, (m, rank)) in matches.iter().enumerate() {
            if let Some(shape) = m.projection {
                self.compared[i] = add_projection(&mut graph, &m.student, *rank, shape, i as u64)?;
            }
        }
        Ok((graph, matches.into_iter().map(|(m, _)| m).collect()))
    }

    /// The unweighted MSE of each feature pair on `x` for `model`, a training graph from
    /// [`Distiller::training_graph`] (e.g. `trainer.model()`, projections included).
    pub fn feature_errors(&self, model: &Model, x: &Value) -> Result<Vec<f64>> {
        let s = run_student(model, x, self.compared.clone())?;
        let t = self.run_teacher(x)?;
        self.compared
            .iter()
            .zip(&t[1..])
            .map(|(name, tv)| {
                let Some(sv) = s.get(name) else {
                    bail!("the student has no tensor '{name}'");
                };
                let sv = sv.tensor().to_dtype(DType::F32)?;
                let err = mse(&sv, &tv.tensor().to_dtype(DType::F32)?)?;
                Ok(err.to_scalar::<f32>()? as f64)
            })
            .collect()
    }

    /// The teacher's compared values on `x`.
    fn run_teacher(&self, x: &Value) -> Result<Vec<Value>> {
        let feed = HashMap::from([(self.input.clone(), x.clone())]);
        let keep = self.names[1..].to_vec();
        let mut out = self.teacher.run_with(
            feed,
            RunOptions {
                keep,
                ..Default::default()
            },
        )?;
        self.names
            .iter()
            .map(|n| match out.remove(n) {
                Some(v) => Ok(v),
                None => bail!("the teacher has no tensor '{n}'"),
            })
            .collect()
    }

    /// The teacher's values for a batch, from the cache where every row is cached.
    fn teacher_values(&mut self, x: &Value) -> Result<Vec<Tensor>> {
        let keys = row_hashes(x)?;
        let device = x.tensor().device().clone();
        if let Some(rows) = keys
            .iter()
            .map(|k| self.cache.get(k))
            .collect::<Option<Vec<_>>>()
        {
            let shapes = self.cached_shapes(rows.len())?;
            return (0..self.names.len())
                .map(|i| {
                    let flat: Vec<f32> = rows.iter().flat_map(|r| r[i].iter().copied()).collect();
                    Ok(Tensor::from_vec(flat, shapes[i].as_slice(), &device)?)
                })
                .collect();
        }
        let values = self.run_teacher(x)?;
        let tensors: Vec<Tensor> = values
            .iter()
            .map(|v| v.tensor().to_dtype(DType::F32))
            .collect::<std::result::Result<_, _>>()?;
        self.remember(&keys, &tensors)?;
        Ok(tensors)
    }

    /// Shapes of the cached values for a batch of `n` rows.
    fn cached_shapes(&self, n: usize) -> Result<Vec<Vec<usize>>> {
        Ok(self
            .row_shapes
            .iter()
            .map(|d| std::iter::once(n).chain(d.iter().copied()).collect())
            .collect())
    }

    /// Caches each row of `values` under its key while the budget lasts.
    fn remember(&mut self, keys: &[u64], values: &[Tensor]) -> Result<()> {
        let n = keys.len();
        let per_row: usize = values.iter().map(|v| v.elem_count() / n.max(1)).sum();
        if self.cached_floats + per_row * n > self.cfg.cache_floats {
            return Ok(());
        }
        self.row_shapes = values.iter().map(|v| v.dims()[1..].to_vec()).collect();
        let flat: Vec<Vec<f32>> = values
            .iter()
            .map(|v| v.flatten_all()?.to_vec1::<f32>())
            .collect::<std::result::Result<_, _>>()?;
        for (r, key) in keys.iter().enumerate() {
            let row: Vec<Vec<f32>> = flat
                .iter()
                .map(|f| {
                    let len = f.len() / n;
                    f[r * len..(r + 1) * len].to_vec()
                })
                .collect();
            self.cache.insert(*key, row);
        }
        self.cached_floats += per_row * n;
        Ok(())
    }

    /// The distillation loss of one batch (for [`crate::Trainer::with_loss`]).
    pub fn loss(&mut self, x: &LossInput) -> Result<Tensor> {
        let Some(batch) = x.inputs.values().next() else {
            bail!("distillation needs the batch inputs");
        };
        let teacher = self.teacher_values(batch)?;
        let student = output(x, &self.student_output)?;
        let (t, a) = (self.cfg.temperature, self.cfg.alpha);
        let mut loss = distillation_loss(&student, &teacher[0], x.labels, t, a)?;
        for (name, tv) in self.compared.iter().zip(&teacher[1..]) {
            let sv = output(x, name)?;
            let err = mse(&sv, &tv.to_dtype(sv.dtype())?)?;
            loss = (loss + (err * self.cfg.feature_weight)?)?;
        }
        Ok(loss)
    }
}

/// Graph output `name` of the student's run.
fn output(x: &LossInput, name: &str) -> Result<Tensor> {
    match x.outputs.get(name) {
        Some(v) => Ok(v.tensor().to_dtype(DType::F32)?),
        None => bail!("the student has no output '{name}'"),
    }
}

/// Runs the single-input student `model` on `x`, keeping the values `keep`.
fn run_student(model: &Model, x: &Value, keep: Vec<String>) -> Result<HashMap<String, Value>> {
    let exec = Executor::new(model)?;
    let input = match exec.inputs().as_slice() {
        [one] => one.name.clone(),
        many => bail!("the student must have one input, it has {}", many.len()),
    };
    let feed = HashMap::from([(input, x.clone())]);
    Ok(exec.run_with(
        feed,
        RunOptions {
            keep,
            ..Default::default()
        },
    )?)
}

/// A hash of each row's bytes (rows along the first axis).
fn row_hashes(x: &Value) -> Result<Vec<u64>> {
    let n = x.shape().first().copied().unwrap_or(1);
    let flat: Vec<f32> = x.tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let len = flat.len() / n.max(1);
    Ok((0..n)
        .map(|r| {
            let mut h = DefaultHasher::new();
            for v in &flat[r * len..(r + 1) * len] {
                v.to_bits().hash(&mut h);
            }
            h.finish()
        })
        .collect())
}

/// `model` with the student tensors of `features` added as graph outputs (after the
/// existing ones), so the loss can read them ([`Distiller::training_graph`] calls it); to
/// leave them out of the result, export the trained weights into the original model.
pub fn expose_outputs(model: &Model, features: &[FeaturePair]) -> Result<Model> {
    let mut out = model.clone();
    let g = out.graph_mut();
    for f in features {
        if g.output.iter().any(|o| o.name == f.student) {
            continue;
        }
        if !g.node.iter().any(|n| n.output.contains(&f.student)) {
            bail!("the student has no tensor '{}'", f.student);
        }
        g.output
            .push(TensorType::default().to_value_info(&f.student));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn loss_matches_hand_computed_value() {
        // Student [0, 0], teacher [0, 2 ln 3], T = 2, alpha = 0.25, label 1:
        // KL term 4 * (0.25 ln 0.5 + 0.75 ln 1.5); CE = ln 2.
        let s = Tensor::new(&[[0.0f32, 0.0]], &Device::Cpu).unwrap();
        let t = Tensor::new(&[[0.0f32, 2.0 * 3f32.ln()]], &Device::Cpu).unwrap();
        let got = distillation_loss(&s, &t, &[1], 2.0, 0.25)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let kl = 4.0 * (0.25 * 0.5f64.ln() + 0.75 * 1.5f64.ln());
        let want = 0.25 * kl + 0.75 * 2f64.ln();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}

//! The `distill` step: knowledge distillation of a teacher classifier into the model (the
//! student): `alpha * T^2 * KL + (1 - alpha) * CE`, plus an optional MSE between teacher
//! and student features; a feature of another width goes through a learned projection that
//! trains with the student and is left out of the result.

use serde::{Deserialize, Serialize};
use whittle_exec::Value;
use whittle_ir::Model;
use whittle_train::distill::{DistillConfig, Distiller, FeatureMatch, FeaturePair};
use whittle_train::{EpochReport, Trainer};

use super::train::{load_training, observed, TestSet, Training};
use super::{Ctx, Step, StepReport};
use crate::error::{Context, Result};
use crate::refuse;
use crate::source::ModelSource;

/// Training samples run through both models to find the shapes of matched features.
const SHAPE_SAMPLES: usize = 4;

/// A teacher tensor matched to a student tensor by MSE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// Value name in the teacher.
    pub teacher: String,
    /// Value name in the student. When the widths differ (axis 1: channels of
    /// `[N, C, H, W]`, features of `[N, D]`), a learned 1x1 projection maps the student's to
    /// the teacher's; other sizes must match.
    pub student: String,
}

/// Configuration of the `distill` step (the options of `whittle distill`, same defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distill {
    /// The teacher (an ONNX file or `zoo:NAME`; first output = class scores).
    pub teacher: ModelSource,
    /// Training data: a dataset SPEC (its training split).
    pub data: String,
    /// Use only the first N training samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Softmax temperature (> 0).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Weight of the distillation term in [0, 1]; the rest is cross-entropy on labels.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Features matched by MSE.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<Feature>,
    /// Weight of each feature pair's MSE (>= 0).
    #[serde(default = "default_feature_weight")]
    pub feature_weight: f64,
    /// Labelled data (its test split) to measure the teacher's and the student's accuracy
    /// on, before and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_data: Option<String>,
    /// Eval samples to use (None: the whole test split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_samples: Option<usize>,
    /// The trainer's settings.
    #[serde(default)]
    pub training: Training,
    /// How errors name the training data (empty: "distill `data`"; the CLI names its flag).
    #[serde(skip)]
    pub data_role: String,
}

fn default_temperature() -> f64 {
    DistillConfig::default().temperature
}

fn default_alpha() -> f64 {
    DistillConfig::default().alpha
}

fn default_feature_weight() -> f64 {
    DistillConfig::default().feature_weight
}

/// What a `distill` step did.
#[derive(Clone, Debug, Serialize)]
pub struct DistillOutcome {
    /// The teacher's accuracy, with eval data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher_accuracy: Option<f64>,
    /// The student's accuracy before distillation, with eval data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub student_accuracy_before: Option<f64>,
    /// The student's accuracy after, with eval data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub student_accuracy: Option<f64>,
    /// The teacher's parameters.
    pub teacher_params: u64,
    /// The student's parameters.
    pub student_params: u64,
    /// Samples the accuracies were measured on (0 without eval data).
    pub test_samples: usize,
    /// The matched features and their projections (`[out, in]` or null).
    pub features: Vec<FeatureMatch>,
    /// Every trained epoch.
    pub epochs: Vec<EpochReport>,
}

impl Distill {
    /// Distillation of `teacher` on the training split of `data`, with default settings.
    pub fn new(teacher: ModelSource, data: impl Into<String>) -> Self {
        Distill {
            teacher,
            data: data.into(),
            limit: None,
            temperature: default_temperature(),
            alpha: default_alpha(),
            features: Vec::new(),
            feature_weight: default_feature_weight(),
            eval_data: None,
            eval_samples: None,
            training: Training::default(),
            data_role: String::new(),
        }
    }

    /// Refuses values out of range.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            refuse!("`temperature` {} must be positive", self.temperature);
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            refuse!("`alpha` {} must be in [0, 1]", self.alpha);
        }
        if !(self.feature_weight >= 0.0 && self.feature_weight.is_finite()) {
            refuse!("`feature_weight` {} must be >= 0", self.feature_weight);
        }
        if self.eval_samples == Some(0) {
            refuse!("`eval_samples` must be at least 1 (leave it out for the whole test split)");
        }
        Ok(())
    }

    /// The trainer crate's settings of the distillation loss.
    pub fn config(&self) -> DistillConfig {
        DistillConfig {
            temperature: self.temperature,
            alpha: self.alpha,
            features: self
                .features
                .iter()
                .map(|f| FeaturePair {
                    teacher: f.teacher.clone(),
                    student: f.student.clone(),
                })
                .collect(),
            feature_weight: self.feature_weight,
            ..DistillConfig::default()
        }
    }

    /// Distills the teacher into `student`.
    pub fn train(&self, ctx: &mut Ctx<'_>, student: &Model) -> Result<(Model, DistillOutcome)> {
        self.validate()?;
        let teacher = self
            .teacher
            .load()
            .context(|| format!("the teacher {}", self.teacher))?;
        let role = match self.data_role.as_str() {
            "" => "distill `data`",
            role => role,
        };
        let train = load_training(&self.data, role, Some(student), self.limit)?;
        let test = match &self.eval_data {
            Some(spec) => Some(TestSet::load(
                spec,
                "`eval_data`",
                student,
                self.eval_samples,
            )?),
            None => None,
        };
        let Some(scores) = model_outputs(student).into_iter().next() else {
            refuse!("the student has no output");
        };
        let rows: Vec<usize> = (0..train.len().min(SHAPE_SAMPLES)).collect();
        let (sample, _) = train
            .gather(&rows)
            .context(|| format!("{role} {}", self.data))?;
        let sample = Value::try_from(&sample).context(|| format!("{role} {}", self.data))?;
        let config = self.training.config(train.len(), ctx.seed)?;
        let cfg = self.config();
        let (trained, features, report) = observed(ctx.observer, config, |config| {
            let distill = || -> anyhow::Result<_> {
                let mut distiller = Distiller::new(&teacher, &scores, cfg)?;
                let (graph, features) = distiller.training_graph(student, &sample)?;
                let mut trainer =
                    Trainer::new(&graph, config)?.with_loss(move |x| distiller.loss(x));
                let report = trainer.fit(&train, None)?;
                // The student graph with the trained weights: no exposed feature, no
                // projection.
                Ok((trainer.executor().export(student)?, features, report))
            };
            distill().context(|| "distilling".into())
        })?;
        let mut outcome = DistillOutcome {
            teacher_accuracy: None,
            student_accuracy_before: None,
            student_accuracy: None,
            teacher_params: whittle_ir::cost::parameter_count(teacher.graph()),
            student_params: whittle_ir::cost::parameter_count(trained.graph()),
            test_samples: 0,
            features,
            epochs: report.epochs,
        };
        // Measured after training: the distiller first checks that the models fit together.
        if let Some(test) = test {
            outcome.teacher_accuracy = Some(test.accuracy(ctx, &teacher)?);
            outcome.student_accuracy_before = Some(test.accuracy(ctx, student)?);
            outcome.student_accuracy = Some(test.accuracy(ctx, &trained)?);
            outcome.test_samples = test.samples();
        }
        Ok((trained, outcome))
    }
}

/// The names of `model`'s graph outputs, in order.
fn model_outputs(model: &Model) -> Vec<String> {
    model
        .graph()
        .output
        .iter()
        .map(|o| o.name.clone())
        .collect()
}

impl Step for Distill {
    fn name(&self) -> &'static str {
        "distill"
    }

    fn run(&self, ctx: &mut Ctx<'_>, model: Model) -> Result<(Model, StepReport)> {
        let (model, outcome) = self.train(ctx, &model)?;
        let mut summary = vec![format!(
            "distilled {} teacher parameters into {} for {} epochs",
            outcome.teacher_params,
            outcome.student_params,
            outcome.epochs.len()
        )];
        if let (Some(t), Some(b), Some(a)) = (
            outcome.teacher_accuracy,
            outcome.student_accuracy_before,
            outcome.student_accuracy,
        ) {
            summary.push(format!(
                "accuracy on {} test samples: teacher {:.2}%, student {:.2}% -> {:.2}%",
                outcome.test_samples,
                100.0 * t,
                100.0 * b,
                100.0 * a
            ));
        }
        Ok((model, StepReport::new(self.name(), &outcome, summary)?))
    }

    fn data_specs(&self) -> Vec<&str> {
        std::iter::once(self.data.as_str())
            .chain(self.eval_data.as_deref())
            .collect()
    }

    fn model_files(&self) -> Vec<&std::path::Path> {
        match &self.teacher {
            ModelSource::File(path) => vec![path.as_path()],
            ModelSource::Zoo(_) => Vec::new(),
        }
    }
}

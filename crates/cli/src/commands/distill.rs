//! `whittle distill`: knowledge distillation of a teacher classifier into a student
//! (`alpha * T^2 * KL + (1 - alpha) * CE`, optional feature MSE; a feature of another
//! width goes through a learned projection that is trained with the student and left out
//! of the written model).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;
use whittle_exec::{Executor, Value};
use whittle_ir::Model;
use whittle_passes::optimize::ModelStats;
use whittle_pipeline::error::Context as PipelineContext;
use whittle_pipeline::step::train::{load_training, observed};
use whittle_train::distill::{DistillConfig, Distiller, FeatureMatch, FeaturePair};
use whittle_train::{EpochReport, Trainer};

use super::datasets::eval_set;
use super::output::{check_output, save_model, InputModel};
use super::train::{build_model, check_outputs, refuse_model_setting, training, Settings};
use crate::observer::CliObserver;

/// Arguments of `whittle distill`.
#[derive(clap::Args)]
pub struct Args {
    /// The teacher model (ONNX file; first output = class scores).
    #[arg(long)]
    teacher: PathBuf,
    /// The student: zoo:NAME or MODEL.onnx.
    #[arg(long)]
    student: String,
    /// Softmax temperature (> 0).
    #[arg(long, default_value_t = 4.0)]
    temperature: f64,
    /// Weight of the distillation term in [0, 1]; the rest is cross-entropy on labels.
    #[arg(long, default_value_t = 0.9)]
    alpha: f64,
    /// Match TEACHER_TENSOR to STUDENT_TENSOR by MSE; repeatable. When their widths differ
    /// (axis 1: channels of [N, C, H, W], features of [N, D]) a learned 1x1 projection maps
    /// the student's to the teacher's during training; other sizes must match.
    #[arg(long, value_name = "TEACHER_TENSOR:STUDENT_TENSOR")]
    feature: Vec<String>,
    /// Weight of each --feature pair's MSE (>= 0).
    #[arg(long, default_value_t = 1.0)]
    feature_weight: f64,
    /// Test images for the accuracies (default: the whole test split).
    #[arg(long)]
    test_samples: Option<usize>,
    /// Training settings (as `whittle train`; the student replaces --model).
    #[command(flatten)]
    settings: Settings,
    /// Where to write the trained student.
    #[arg(short, long)]
    output: PathBuf,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// What `whittle distill --json` prints.
#[derive(Serialize)]
struct Summary {
    output: String,
    teacher_accuracy: f64,
    /// The student's accuracy before distillation.
    student_accuracy_before: f64,
    student_accuracy: f64,
    teacher_params: u64,
    student_params: u64,
    test_samples: usize,
    /// The --feature pairs and their projections (`[out, in]` or null).
    features: Vec<FeatureMatch>,
    epochs: Vec<EpochReport>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    refuse_model_setting(&args.settings, "--student")?;
    check_test_samples(args.test_samples)?;
    check_outputs(
        &args.settings,
        Some(&args.teacher),
        None,
        &args.output,
        args.force,
    )?;
    let student_path = Path::new(&args.student);
    check_output(
        student_path,
        &args.output,
        args.force,
        InputModel::Protected,
    )?;
    let features = parse_features(&args.feature)?;
    let cfg = DistillConfig {
        temperature: args.temperature,
        alpha: args.alpha,
        features,
        feature_weight: args.feature_weight,
        ..DistillConfig::default()
    };
    let teacher = Model::load(&args.teacher)
        .with_context(|| format!("loading --teacher {}", args.teacher.display()))?;
    whittle_ir::validate(&teacher)?;
    let student = build_model(&args.student)?;
    let Some(spec) = args.settings.data.clone() else {
        bail!("--data is required");
    };
    let train = load_training(&spec, "--data", Some(&student), args.settings.limit)?;
    let student_exec = Executor::new(&student)?;
    let eval = eval_set(&student_exec.inputs(), &spec, args.test_samples, "--data")?;
    let student_accuracy_before = eval.accuracy(&student)?;
    let Some(scores) = student_exec.output_names().first().cloned() else {
        bail!("the student has no output");
    };
    let config = training(&args.settings)?.config(train.len(), 0)?;
    let observer = CliObserver::new(args.json);
    let (trained, features, report) = observed(&observer, config, |config| {
        let distill = || -> anyhow::Result<_> {
            let mut distiller = Distiller::new(&teacher, &scores, cfg)?;
            let rows: Vec<usize> = (0..train.len().min(4)).collect();
            let (sample, _) = train.gather(&rows)?;
            let (graph, features) =
                distiller.training_graph(&student, &Value::try_from(&sample)?)?;
            let mut trainer = Trainer::new(&graph, config)?.with_loss(move |x| distiller.loss(x));
            let report = trainer.fit(&train, None)?;
            // The student graph with the trained weights: no exposed feature, no projection.
            Ok((trainer.executor().export(&student)?, features, report))
        };
        PipelineContext::context(distill(), || "distilling".into())
    })?;
    save_model(&trained, &args.output)?;
    let summary = Summary {
        output: args.output.display().to_string(),
        teacher_accuracy: eval.accuracy(&teacher)?,
        student_accuracy_before,
        student_accuracy: eval.accuracy(&trained)?,
        teacher_params: ModelStats::of(&teacher).params,
        student_params: ModelStats::of(&trained).params,
        test_samples: eval.labels.as_ref().map_or(0, Vec::len),
        features,
        epochs: report.epochs,
    };
    print_summary(&summary, args.json)
}

/// Refuses `--test-samples 0` (an accuracy of no samples).
pub(crate) fn check_test_samples(test_samples: Option<usize>) -> anyhow::Result<()> {
    if test_samples == Some(0) {
        bail!("--test-samples must be at least 1 (leave it out for the whole test split)");
    }
    Ok(())
}

/// `TEACHER:STUDENT` pairs.
fn parse_features(specs: &[String]) -> anyhow::Result<Vec<FeaturePair>> {
    specs
        .iter()
        .map(|s| match s.split_once(':') {
            Some((t, st)) if !t.is_empty() && !st.is_empty() => Ok(FeaturePair {
                teacher: t.to_string(),
                student: st.to_string(),
            }),
            _ => bail!("--feature {s}: expected TEACHER_TENSOR:STUDENT_TENSOR"),
        })
        .collect()
}

fn print_summary(s: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        return crate::report::print_json(s);
    }
    println!(
        "accuracy on {} test samples: teacher {:.2}% ({} parameters), student {:.2}% -> {:.2}% ({} parameters); wrote {}",
        s.test_samples,
        100.0 * s.teacher_accuracy,
        crate::report::human_count(s.teacher_params),
        100.0 * s.student_accuracy_before,
        100.0 * s.student_accuracy,
        crate::report::human_count(s.student_params),
        s.output
    );
    for f in &s.features {
        let how = match f.projection {
            Some([out, inp]) => format!("through a learned {out}x{inp} projection"),
            None => "directly".to_string(),
        };
        println!("feature {} <- {} matched {how}", f.teacher, f.student);
    }
    Ok(())
}

//! `whittle distill`: knowledge distillation of a teacher classifier into a student
//! (`alpha * T^2 * KL + (1 - alpha) * CE`, optional feature MSE; a feature of another
//! width goes through a learned projection that is trained with the student and left out
//! of the written model).

use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Serialize;
use whittle_pipeline::step::distill::{Distill, DistillOutcome, Feature};
use whittle_pipeline::{Ctx, ModelSource};

use super::output::{check_output, save_model, InputModel};
use super::train::{build_model, check_outputs, refuse_model_setting, training, Settings};
use crate::flags;
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
    #[serde(flatten)]
    outcome: DistillOutcome,
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
    let Some(data) = args.settings.data.clone() else {
        bail!("--data is required");
    };
    let step = Distill {
        limit: args.settings.limit,
        temperature: args.temperature,
        alpha: args.alpha,
        features,
        feature_weight: args.feature_weight,
        eval_data: Some(data.clone()),
        eval_samples: args.test_samples,
        training: training(&args.settings)?,
        data_role: "--data".into(),
        ..Distill::new(ModelSource::File(args.teacher.clone()), data)
    };
    step.validate().map_err(flag_error)?;
    let student = build_model(&args.student)?;
    let observer = CliObserver::new(args.json);
    let (trained, outcome) = step
        .train(&mut Ctx::new(&observer), &student)
        .map_err(flag_error)?;
    save_model(&trained, &args.output)?;
    let summary = Summary {
        output: args.output.display().to_string(),
        outcome,
    };
    print_summary(&summary, args.json)
}

/// The step keys whose flags in `whittle distill` and `whittle qat` have other names.
pub(crate) const TRAINING_FLAGS: [(&str, &str); 1] = [("eval_samples", "--test-samples")];

/// A training step's error worded with the flags of `whittle distill` and `whittle qat`
/// ([`TRAINING_FLAGS`], the teacher `--teacher`).
pub(crate) fn flag_error(e: whittle_pipeline::PipelineError) -> anyhow::Error {
    let text = e.to_string().replace("the teacher ", "--teacher ");
    flags::flag_error(text, &TRAINING_FLAGS)
}

/// Refuses `--test-samples 0` (an accuracy of no samples).
pub(crate) fn check_test_samples(test_samples: Option<usize>) -> anyhow::Result<()> {
    if test_samples == Some(0) {
        bail!("--test-samples must be at least 1 (leave it out for the whole test split)");
    }
    Ok(())
}

/// `TEACHER:STUDENT` pairs.
fn parse_features(specs: &[String]) -> anyhow::Result<Vec<Feature>> {
    specs
        .iter()
        .map(|s| match s.split_once(':') {
            Some((t, st)) if !t.is_empty() && !st.is_empty() => Ok(Feature {
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
    let o = &s.outcome;
    let percent = |a: Option<f64>| 100.0 * a.unwrap_or(f64::NAN);
    println!(
        "accuracy on {} test samples: teacher {:.2}% ({} parameters), student {:.2}% -> {:.2}% ({} parameters); wrote {}",
        o.test_samples,
        percent(o.teacher_accuracy),
        crate::report::human_count(o.teacher_params),
        percent(o.student_accuracy_before),
        percent(o.student_accuracy),
        crate::report::human_count(o.student_params),
        s.output
    );
    for f in &o.features {
        let how = match f.projection {
            Some([out, inp]) => format!("through a learned {out}x{inp} projection"),
            None => "directly".to_string(),
        };
        println!("feature {} <- {} matched {how}", f.teacher, f.student);
    }
    Ok(())
}

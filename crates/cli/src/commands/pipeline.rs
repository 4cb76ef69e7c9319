//! `whittle pipeline`: runs a recipe's steps (TOML or YAML, see docs/RECIPES.md) with a
//! work folder that lets a rerun skip the steps that finished, and writes its report.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use whittle_pipeline::recipe::Recipe;
use whittle_pipeline::report::{self, Report};
use whittle_pipeline::runner::{Runner, StepRun};
use whittle_pipeline::step::evaluate::{describe, Evaluate};

use super::output::{check_output, save_model, InputModel};
use crate::observer::CliObserver;
use crate::report::print_json;

/// Arguments of `whittle pipeline`.
#[derive(clap::Args)]
pub struct Args {
    /// The recipe: RECIPE.toml, RECIPE.yaml or RECIPE.yml.
    recipe: PathBuf,
    /// Where to write the final model [default: the recipe's `output`].
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Folder for the intermediate models and the journal [default: OUT.work beside the
    /// output].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Overwrite an existing output.
    #[arg(long)]
    force: bool,
    /// Machine-readable output: every step's report, and the run's report when the model
    /// is measured (the recipe's `evaluate`, or --report).
    #[arg(long)]
    json: bool,
    /// Write the run's report to R.html (a page with plots) or R.json: metrics of the
    /// input model and after every step, precision and sparsity per layer. Without the
    /// recipe's `evaluate`, it measures size, parameters and MACs.
    #[arg(long, value_name = "R.html|R.json")]
    report: Option<PathBuf>,
}

/// What `--json` prints.
#[derive(Serialize)]
struct PipelineJson<'a> {
    recipe: String,
    output: String,
    work_dir: String,
    steps: &'a [StepRun],
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<&'a Report>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut recipe = Recipe::load(&args.recipe)?;
    if let Some(path) = &args.report {
        report::file_format(path)?;
        recipe.evaluate.get_or_insert_with(Evaluate::default);
    }
    let output = args
        .output
        .clone()
        .or_else(|| recipe.output.clone())
        .with_context(|| format!("{} names no `output`; give -o OUT", args.recipe.display()))?;
    let model = Path::new(recipe.model.path().unwrap_or(Path::new("")));
    check_output(model, &output, args.force, InputModel::Protected)?;
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_dir(&output));
    let observer = CliObserver::new(args.json);
    let runner = Runner {
        work_dir: work_dir.clone(),
        observer: &observer,
    };
    let run = runner.run(&recipe)?;
    save_model(&run.model, &output)?;
    let report = match recipe.evaluate {
        Some(_) => Some(run.report(&format!("whittle pipeline {}", args.recipe.display()))?),
        None => None,
    };
    if let (Some(path), Some(report)) = (&args.report, &report) {
        report::write(report, path)?;
    }
    if args.json {
        return print_json(&PipelineJson {
            recipe: args.recipe.display().to_string(),
            output: output.display().to_string(),
            work_dir: work_dir.display().to_string(),
            steps: &run.steps,
            report: report.as_ref(),
        });
    }
    if let Some(m) = &run.input_metrics {
        println!("input model: {}", describe(m));
    }
    let total = run.steps.len();
    for s in &run.steps {
        let how = if s.cached {
            "done before".to_string()
        } else {
            format!("{:.1} s", s.seconds)
        };
        println!("step {}/{total} {} ({how})", s.index, s.step);
        for line in &s.report.summary {
            println!("  {line}");
        }
        if let Some(m) = &s.metrics {
            println!("  measured: {}", describe(m));
        }
    }
    println!("wrote {}", output.display());
    if let Some(path) = &args.report {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `OUT.work` beside the output `OUT`.
pub(crate) fn default_work_dir(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".work");
    output.with_file_name(name)
}

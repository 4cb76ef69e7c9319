//! `whittle pipeline`: runs a recipe's steps (TOML or YAML, see docs/RECIPES.md) with a
//! work folder that lets a rerun skip the steps that finished.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use whittle_pipeline::recipe::Recipe;
use whittle_pipeline::runner::{Runner, StepRun};

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
    /// Machine-readable output: every step's report.
    #[arg(long)]
    json: bool,
}

/// What `--json` prints.
#[derive(Serialize)]
struct PipelineJson<'a> {
    recipe: String,
    output: String,
    work_dir: String,
    steps: &'a [StepRun],
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let recipe = Recipe::load(&args.recipe)?;
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
    if args.json {
        return print_json(&PipelineJson {
            recipe: args.recipe.display().to_string(),
            output: output.display().to_string(),
            work_dir: work_dir.display().to_string(),
            steps: &run.steps,
        });
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
    }
    println!("wrote {}", output.display());
    Ok(())
}

/// `OUT.work` beside the output `OUT`.
fn default_work_dir(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".work");
    output.with_file_name(name)
}

//! `whittle conformance`: the ONNX backend node tests against whittle's executor.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;
use whittle_exec::conformance::{default_suite_dir, run_suite, Outcome};

/// Arguments of `whittle conformance`.
#[derive(clap::Args)]
pub struct Args {
    /// Folder of `test_*` directories (default: $WHITTLE_ASSETS/onnx-node-tests).
    dir: Option<PathBuf>,
    /// Only tests whose name contains this text.
    #[arg(long, default_value = "")]
    filter: String,
    /// Print every test's outcome, not only failures.
    #[arg(long, short)]
    verbose: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(default_suite_dir);
    let summary =
        run_suite(&dir, &args.filter).with_context(|| format!("reading {}", dir.display()))?;
    if args.json {
        let cases: Vec<_> = summary
            .cases
            .iter()
            .map(|c| {
                let (status, detail) = match &c.outcome {
                    Outcome::Passed => ("passed", ""),
                    Outcome::Failed(m) => ("failed", m.as_str()),
                    Outcome::Unsupported(m) => ("unsupported", m.as_str()),
                };
                json!({"name": c.name, "ops": c.ops, "status": status, "detail": detail})
            })
            .collect();
        return crate::report::print_json(&json!({
            "passed": summary.passed(),
            "failed": summary.failed(),
            "unsupported": summary.unsupported(),
            "cases": cases,
        }));
    }
    for c in &summary.cases {
        match &c.outcome {
            Outcome::Failed(m) => println!("FAIL        {}: {m}", c.name),
            Outcome::Unsupported(m) if args.verbose => println!("UNSUPPORTED {}: {m}", c.name),
            Outcome::Passed if args.verbose => println!("PASS        {}", c.name),
            _ => {}
        }
    }
    println!(
        "{} passed, {} failed, {} unsupported ({} tests in {})",
        summary.passed(),
        summary.failed(),
        summary.unsupported(),
        summary.cases.len(),
        dir.display()
    );
    Ok(())
}

//! `whittle`: make neural networks small and fast. See `whittle --help`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod report;

/// whittle makes ONNX models smaller and faster, and measures what that costs.
#[derive(Parser)]
#[command(name = "whittle", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's opsets, inputs/outputs, operators, parameters, size and MACs.
    Inspect(commands::inspect::Args),
    /// Run a model on .npy inputs and write every output as .npy.
    Run(commands::run::Args),
    /// Measure classification accuracy (top-1, top-5) on a labelled dataset.
    Eval(commands::eval::Args),
    /// Run the ONNX backend node tests and report passed / failed / unsupported counts.
    Conformance(commands::conformance::Args),
    /// Train or fine-tune a classifier on a labelled dataset (SGD/Adam/AdamW, LR schedules).
    Train(Box<commands::train::Args>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Run(a) => commands::run::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Conformance(a) => commands::conformance::run(a),
        Command::Train(a) => commands::train::run(*a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

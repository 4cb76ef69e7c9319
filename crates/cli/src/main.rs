//! `whittle`: make neural networks small and fast. See `whittle --help`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod flags;
mod observer;
mod report;

/// mimalloc keeps freed tensor buffers for reuse; glibc's malloc maps and unmaps every
/// large buffer, and the page faults cost up to a third of a quantize run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Compare a model B against a reference A: sizes, output fidelity, top-1 agreement.
    Compare(commands::compare::Args),
    /// Run the ONNX backend node tests and report passed / failed / unsupported counts.
    Conformance(commands::conformance::Args),
    /// Optimize a graph losslessly: fold constants and BatchNorm, fuse, remove dead code.
    Optimize(commands::optimize::Args),
    /// Write an initialised model of the zoo (mlp, lenet, cnn, resnet, ...), or --list them.
    Zoo(commands::zoo::Args),
    /// Quantize a model to INT8 (static with calibration data, or dynamic).
    Quantize(commands::quantize::Args),
    /// Time every node: MACs, FLOPs, parameters, activations, bottlenecks, peak memory.
    Profile(commands::profile::Args),
    /// Latency percentiles, throughput and peak memory per batch size (whittle or ORT).
    Bench(commands::bench::Args),
    /// Train or fine-tune a classifier on a labelled dataset (SGD/Adam/AdamW, LR schedules).
    Train(Box<commands::train::Args>),
    /// Prune weights (magnitude, global, random, N:M) one-shot, iterative or gradual, with masked fine-tuning.
    Prune(Box<commands::prune::Args>),
    /// Factorize Gemm/MatMul/Conv weights into low-rank pairs (truncated SVD).
    Factorize(commands::factorize::Args),
    /// Quantization-aware training: train with fake quantization, export INT8 QDQ.
    Qat(Box<commands::qat::Args>),
    /// Knowledge distillation of a teacher classifier into a student.
    Distill(Box<commands::distill::Args>),
    /// Run a recipe's steps (TOML or YAML), resuming from its work folder.
    Pipeline(commands::pipeline::Args),
    /// Continual learning over a sequence of tasks with replay (ER, DER++), LwF or EWC: the R matrix, forgetting, baselines.
    Continual(Box<commands::continual::Args>),
    /// Serve the local web UI: pick a model, compress it, watch size, speed and accuracy.
    Ui(commands::ui::Args),
    /// Search an architecture (cnn, mobilenet-v3, resnet, vit) under measured latency, size and accuracy limits.
    Nas(Box<commands::nas::Args>),
    /// Find the best compression (prune, fine-tune, quantize, ...) for a target under an accuracy budget.
    Auto(Box<commands::auto::Args>),
}

fn main() -> ExitCode {
    restore_broken_pipe_exit();
    let cli = Cli::parse();
    // Ctrl-C, SIGTERM or SIGHUP while a model or checkpoint is being written: remove the
    // temporary files, so an interrupted command leaves only complete outputs.
    if let Err(e) = ctrlc::set_handler(|| whittle_ir::files::remove_pending_and_exit(130)) {
        eprintln!("warning: cannot install the interrupt handler: {e}");
    }
    // A recipe names its options as keys; every other command takes them as flags.
    let flag_worded = !matches!(cli.command, Command::Pipeline(_));
    let result = match cli.command {
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Run(a) => commands::run::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Compare(a) => commands::compare::run(a),
        Command::Conformance(a) => commands::conformance::run(a),
        Command::Optimize(a) => commands::optimize::run(a),
        Command::Zoo(a) => commands::zoo::run(a),
        Command::Quantize(a) => commands::quantize::run(a),
        Command::Profile(a) => commands::profile::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Train(a) => commands::train::run(*a),
        Command::Prune(a) => commands::prune::run(*a),
        Command::Factorize(a) => commands::factorize::run(a),
        Command::Qat(a) => commands::qat::run(*a),
        Command::Distill(a) => commands::distill::run(*a),
        Command::Pipeline(a) => commands::pipeline::run(a),
        Command::Continual(a) => commands::continual::run(*a),
        Command::Ui(a) => commands::ui::run(a),
        Command::Nas(a) => commands::nas::run(*a),
        Command::Auto(a) => commands::auto::run(*a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = whittle_pipeline::error::message(&e);
            let message = if flag_worded {
                flags::flag_words(&message, &[])
            } else {
                message
            };
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`whittle eval --json | head`)
/// panics; restoring the default makes whittle end quietly there, as other Unix tools do.
/// Models and reports go to files, never to a pipe, so this cannot cut an output short.
fn restore_broken_pipe_exit() {
    #[cfg(unix)]
    // SAFETY: called first in `main`, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

//! The report of a pruning run (`whittle prune --report`): the model before and after
//! (size, parameters, MACs, accuracy, latency), and the precision and sparsity of every
//! weighted layer of both, read from the models.

use whittle_ir::memory::human_bytes;
use whittle_ir::Model;

use super::{human_count, models, Report};
use crate::eval::Metrics;
use crate::step::prune::PruneOutcome;
use crate::Result;

/// The name of the input model in a pruning report.
pub const INPUT: &str = "input";
/// The name of the pruned model.
pub const PRUNED: &str = "pruned";

/// The report of the run `outcome` that turned `before` into `after`, each with what was
/// measured of it (accuracy, latency); their sizes are the outcome's.
pub fn report(
    outcome: &PruneOutcome,
    (before, mut measured_before): (&Model, Metrics),
    (after, mut measured_after): (&Model, Metrics),
) -> Result<Report> {
    measured_before.size_bytes = Some(outcome.input_size_bytes as u64);
    measured_after.size_bytes = Some(outcome.size_bytes as u64);
    let method = serde_json::to_value(outcome.method)
        .ok()
        .and_then(|m| m.as_str().map(str::to_string))
        .unwrap_or_default();
    let title = format!(
        "whittle prune: {method}, target sparsity {:.1}%",
        100.0 * outcome.target_sparsity
    );
    // Channel pruning's sparsity is the share of the parameters it removed.
    let reached = match outcome.channels {
        Some(_) => "of the parameters removed",
        None => "of prunable weights zero",
    };
    let mut report = models::report(
        title,
        [
            (INPUT, before, measured_before),
            (PRUNED, after, measured_after),
        ],
    )?;
    let mut notes = vec![
        format!(
            "{:.2}% {reached}; {} of {} parameters non-zero",
            100.0 * outcome.sparsity,
            human_count(outcome.nonzero_params as u64),
            human_count(outcome.params as u64)
        ),
        format!(
            "{}: {} -> {}",
            outcome.compression,
            human_bytes(outcome.input_gzip_bytes as u64),
            human_bytes(outcome.gzip_bytes as u64)
        ),
    ];
    if outcome.finetune_epochs > 0 {
        notes.push(format!("fine-tuned {} epochs", outcome.finetune_epochs));
    }
    notes.extend(outcome.notes.iter().map(|n| format!("note: {n}")));
    report.notes.splice(0..0, notes);
    Ok(report)
}

//! The search's report: the pipeline's report with its search section (Pareto plots with
//! the limits drawn, every candidate and why it was kept or dropped), the zoo's own models
//! at the same input as reference points.

use std::path::Path;

use whittle_pipeline::report::search::{Candidate, Figures, Search};
use whittle_pipeline::report::Report;

use crate::nas::error::Result;
use crate::nas::measure::{measure, Limits, Measurement, MB};
use crate::nas::search::{NasResult, Trial};
use crate::nas::trials::model_path;

/// A zoo model measured at the search's input, shown beside the candidates.
#[derive(Clone, Debug)]
pub struct Reference {
    /// Its zoo spec.
    pub spec: String,
    /// Its measurements (untrained: no accuracy).
    pub measurement: Measurement,
}

/// Every zoo model with its default options at `input` and `classes`, measured with
/// `threads` ONNX Runtime threads (models the input does not suit are left out).
pub fn zoo_references(
    input: [usize; 3],
    classes: usize,
    threads: usize,
    work_dir: &Path,
) -> Result<Vec<Reference>> {
    let [c, h, w] = input;
    let mut references = Vec::new();
    for name in whittle_zoo::names() {
        let spec = format!(
            "{}{name}:input={c}x{h}x{w},classes={classes}",
            whittle_zoo::PREFIX
        );
        let Ok(model) = whittle_zoo::build(&spec) else {
            continue;
        };
        let path = model_path(work_dir, &format!("zoo-{name}"));
        crate::nas::trials::save(&model, &path)?;
        references.push(Reference {
            spec,
            measurement: measure(&model, &path, threads)?,
        });
    }
    Ok(references)
}

fn figures(m: &Measurement, accuracy: Option<f64>) -> Figures {
    Figures {
        latency_ms: Some(m.latency_ms),
        size_bytes: Some(m.size_bytes as f64),
        accuracy,
    }
}

/// The report of `result` under `limits`, with `references`.
pub fn report(result: &NasResult, limits: &Limits, references: &[Reference]) -> Report {
    let candidate = |t: &Trial| {
        let best = result.id.as_deref() == Some(t.id.as_str()) && result.output.is_some();
        let (status, reason) = match (t.feasible, t.rung_accuracy.len()) {
            (false, _) => (
                "dropped",
                format!("infeasible: {}", t.violations.join(", ")),
            ),
            (true, 0) => ("skipped", "not trained (the search had enough)".to_string()),
            (true, n) => (
                "kept",
                format!("trained to rung {} of successive halving", n - 1),
            ),
        };
        Candidate {
            name: format!("{} {}", &t.id[..8], t.spec),
            figures: figures(&t.measurement, t.rung_accuracy.last().copied()),
            in_budget: t.feasible,
            best,
            status: status.into(),
            reason,
            ..Candidate::default()
        }
    };
    let mut candidates: Vec<Candidate> = result.trials.iter().map(candidate).collect();
    candidates.extend(references.iter().map(|r| Candidate {
        name: format!("zoo reference {}", r.spec),
        figures: figures(&r.measurement, None),
        in_budget: limits.violations(&r.measurement).is_empty(),
        status: "reference".into(),
        reason: "the zoo's model with its default options, untrained".into(),
        ..Candidate::default()
    }));
    let mut notes = vec![
        format!(
            "{} candidates of the {} space measured, {} trained, {} infeasible (seed {}).",
            result.candidates, result.space, result.trained, result.infeasible, result.seed
        ),
        "Accuracy of a candidate is its validation accuracy at the last rung it reached; the \
         result's is on the test split."
            .into(),
    ];
    if let Some(source) = &result.source {
        notes.push(format!(
            "Shrinking {} (the baseline: {:.2}% test accuracy, {} MACs): each candidate is it \
             with a share of each channel group pruned, then fine-tuned.",
            source.path,
            100.0 * source.accuracy,
            source.measurement.macs
        ));
    }
    notes.extend(result.rechecks.iter().map(|c| {
        format!(
            "Measured again ({:?}, {} runs taking turns with {}: {:.3} ms now, {:.3} ms when \
             the search started; its p90 {:.3} ms above then): {} {:.3} ms median, {:.3} ms \
             p90 - {}.",
            c.stage,
            c.runs,
            result.reference.spec,
            c.reference_ms,
            result.reference.latency_ms,
            c.load_tail_ms,
            &c.id[..8.min(c.id.len())],
            c.latency_ms,
            c.latency_p90_ms,
            if c.passed { "kept" } else { "over the limits" }
        )
    }));
    notes.extend(result.budget_stops.iter().map(|stop| {
        format!(
            "The budget stopped the search ({stop}): the result depends on the machine's speed."
        )
    }));
    if let Some(reason) = &result.reason {
        notes.push(format!("No model returned: {reason}."));
    }
    Report {
        title: match &result.source {
            Some(source) => format!("whittle nas --from {}", source.path),
            None => format!("whittle nas --space {}", result.space),
        },
        notes,
        search: Some(Search {
            objective: "validation accuracy (higher is better) among candidates meeting the limits"
                .into(),
            baseline: (result.source.as_ref()).map_or_else(Figures::default, |s| {
                figures(&s.measurement, Some(s.accuracy))
            }),
            limits: Figures {
                latency_ms: limits.max_latency_ms,
                size_bytes: limits.max_size_mb.map(|mb| mb * MB),
                accuracy: limits.min_accuracy,
            },
            candidates,
        }),
        ..Report::default()
    }
}

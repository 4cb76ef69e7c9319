//! The part every model report shares: the measured models side by side (parameters and
//! MACs counted from each model where not given) and the precision and sparsity of every
//! weighted layer of each.

use std::collections::HashMap;

use whittle_ir::cost::{model_macs, parameter_count};
use whittle_ir::Model;

use super::weights::weight_stats;
use super::{ModelMetrics, Report};
use crate::eval::Metrics;
use crate::Result;

/// A report titled `title` of `models` (name, model, what was measured; the baseline
/// first). A model whose MACs cannot be counted (shapes unknown without running it) gets a
/// note saying why instead of a figure.
pub fn report<'m>(
    title: impl Into<String>,
    models: impl IntoIterator<Item = (&'m str, &'m Model, Metrics)>,
) -> Result<Report> {
    let mut report = Report {
        title: title.into(),
        ..Report::default()
    };
    for (name, model, mut metrics) in models {
        metrics
            .parameters
            .get_or_insert_with(|| parameter_count(model.graph()));
        if metrics.macs.is_none() {
            match model_macs(model, &HashMap::new()) {
                Ok(macs) => metrics.macs = Some(macs),
                Err(e) => report
                    .notes
                    .push(format!("MACs of {name} not counted: {e}")),
            }
        }
        report.models.push(ModelMetrics {
            name: name.to_string(),
            metrics,
        });
        report.weights.push(weight_stats(name, model)?);
    }
    Ok(report)
}

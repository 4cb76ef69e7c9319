//! The report of evaluating one model (`whittle eval --report`): its accuracy, size,
//! parameters and MACs, top-1 accuracy per class, and precision and sparsity per layer.

use whittle_ir::Model;

use super::{models, LayerValues, NamedValue, Report};
use crate::eval::Metrics;
use crate::Result;

/// The report of `model`, called `name`, as `metrics` measured it (classes without samples
/// are left out of the per-class figures).
pub fn report(name: &str, model: &Model, metrics: Metrics) -> Result<Report> {
    let per_class = (metrics.per_class.iter())
        .filter_map(|c| {
            Some(NamedValue {
                name: c.name.clone().unwrap_or_else(|| c.class.to_string()),
                value: 100.0 * c.accuracy?,
            })
        })
        .collect::<Vec<_>>();
    let mut report = models::report(format!("whittle eval: {name}"), [(name, model, metrics)])?;
    if !per_class.is_empty() {
        report.layers.push(LayerValues {
            title: "Top-1 accuracy per class".into(),
            item: "class".into(),
            unit: "top-1 (%)".into(),
            values: per_class,
        });
    }
    Ok(report)
}

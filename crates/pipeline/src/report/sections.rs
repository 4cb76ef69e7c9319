//! The parts of a report in the order shown: each a table ([`Section`]) and the plots that
//! draw it. Text and Markdown show the tables, HTML both.

use whittle_ir::memory::human_bytes;

use super::plot::{self, Series};
use super::{Cell, LayerPrecision, LayerValues, ModelMetrics, Report, Section, WeightStats};
use crate::eval::Metrics;
use crate::Result;

/// A table and its plots.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// The figures as a table.
    pub section: Section,
    /// The same figures drawn.
    pub plots: Vec<Plot>,
}

/// One SVG plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Plot {
    /// A stable identifier ("before-after", "layers-1"), the `id` of its HTML figure.
    pub id: String,
    /// The `<svg>` element.
    pub svg: String,
}

/// One figure of [`Metrics`]: how it is named, read and shown.
struct Measure {
    label: &'static str,
    get: fn(&Metrics) -> Option<f64>,
    show: fn(f64) -> String,
}

/// Every figure of [`Metrics`] a report shows, in order.
const MEASURES: [Measure; 9] = [
    Measure {
        label: "size (bytes)",
        get: |m| m.size_bytes.map(|v| v as f64),
        show: |v| format!("{v:.0}"),
    },
    Measure {
        label: "parameters",
        get: |m| m.parameters.map(|v| v as f64),
        show: |v| format!("{v:.0}"),
    },
    Measure {
        label: "MACs",
        get: |m| m.macs.map(|v| v as f64),
        show: |v| format!("{v:.0}"),
    },
    Measure {
        label: "top-1 (%)",
        get: |m| m.top1.map(|v| 100.0 * v),
        show: |v| format!("{v:.2}"),
    },
    Measure {
        label: "top-5 (%)",
        get: |m| m.top5.map(|v| 100.0 * v),
        show: |v| format!("{v:.2}"),
    },
    Measure {
        label: "output SQNR (dB)",
        get: |m| m.sqnr_db,
        show: |v| format!("{v:.2}"),
    },
    Measure {
        label: "output cosine",
        get: |m| m.cosine,
        show: |v| format!("{v:.5}"),
    },
    Measure {
        label: "latency whittle (ms)",
        get: |m| m.latency_ms_whittle,
        show: |v| format!("{v:.3}"),
    },
    Measure {
        label: "latency ONNX Runtime (ms)",
        get: |m| m.latency_ms_ort,
        show: |v| format!("{v:.3}"),
    },
];

/// The parts of `report` that have data, in the order shown.
pub fn parts(report: &Report) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    if !report.models.is_empty() {
        let (title, layout) = match report.models.len() {
            1 => ("Measurements", Layout::Table),
            _ => ("Before and after", Layout::MeasuresAsBars),
        };
        parts.push(metrics_part(
            title,
            "model",
            "before-after",
            &report.models,
            layout,
        )?);
    }
    if !report.steps.is_empty() {
        parts.push(metrics_part(
            "Metrics after every step",
            "step",
            "steps",
            &report.steps,
            Layout::StepsAsLines,
        )?);
    }
    for (i, layer) in report.layers.iter().enumerate() {
        parts.push(layer_part(layer, &format!("layers-{}", i + 1))?);
    }
    if !report.op_latency.is_empty() {
        parts.push(op_latency_part(report)?);
    }
    if !report.weights.is_empty() {
        parts.push(weights_part(&report.weights)?);
    }
    parts.extend(report.tables.iter().map(|t| Part {
        section: t.clone(),
        plots: Vec::new(),
    }));
    Ok(parts)
}

/// How a chart of several models' metrics is laid out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Measures along the axis, one bar per model (before/after).
    MeasuresAsBars,
    /// Models (pipeline steps) along the axis, one line per measure.
    StepsAsLines,
    /// No chart (one model: every measure would be 100% of itself).
    Table,
}

/// A table of `models` (one row each, one column per measure any of them has) and a chart
/// of every measure relative to the first model's, in percent.
fn metrics_part(
    title: &str,
    first_column: &str,
    id: &str,
    models: &[ModelMetrics],
    layout: Layout,
) -> Result<Part> {
    let shown: Vec<&Measure> = (MEASURES.iter())
        .filter(|m| models.iter().any(|x| (m.get)(&x.metrics).is_some()))
        .collect();
    let mut section = Section::table(title, &[first_column]);
    section
        .columns
        .extend(shown.iter().map(|m| m.label.to_string()));
    for model in models {
        let mut row = vec![model.name.as_str().into()];
        row.extend(
            (shown.iter()).map(|m| (m.get)(&model.metrics).map_or("-".into(), m.show).into()),
        );
        section.rows.push(row);
    }
    if let Some(size) = models.iter().find_map(|m| m.metrics.size_bytes) {
        section
            .notes
            .push(format!("size of {}: {}", models[0].name, human_bytes(size)));
    }
    let base = &models[0];
    let relative: Vec<&Measure> = (shown.into_iter())
        .filter(|m| (m.get)(&base.metrics).is_some_and(|v| v != 0.0 && v.is_finite()))
        .collect();
    if relative.is_empty() || layout == Layout::Table {
        return Ok(Part {
            section,
            plots: Vec::new(),
        });
    }
    let percent =
        |metrics: &Metrics, m: &Measure| Some(100.0 * (m.get)(metrics)? / (m.get)(&base.metrics)?);
    let unit = format!("% of {}", base.name);
    let svg = if layout == Layout::StepsAsLines {
        let steps: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
        let series: Vec<Series> = (relative.iter())
            .map(|m| Series {
                name: m.label.to_string(),
                values: models.iter().map(|x| percent(&x.metrics, m)).collect(),
            })
            .collect();
        plot::lines(title, &unit, &steps, &series)?
    } else {
        let labels: Vec<String> = relative.iter().map(|m| m.label.to_string()).collect();
        let series: Vec<Series> = (models.iter())
            .map(|x| Series {
                name: x.name.clone(),
                values: relative.iter().map(|m| percent(&x.metrics, m)).collect(),
            })
            .collect();
        plot::bars(title, &unit, &labels, &series)?
    };
    Ok(Part {
        section,
        plots: vec![Plot { id: id.into(), svg }],
    })
}

/// A table and bar chart of one figure per layer.
fn layer_part(layer: &LayerValues, id: &str) -> Result<Part> {
    let mut section = Section::table(&layer.title, &[&layer.item, &layer.unit]);
    section.rows = (layer.values.iter())
        .map(|v| vec![v.name.as_str().into(), show_value(v.value).into()])
        .collect();
    let names: Vec<String> = layer.values.iter().map(|v| v.name.clone()).collect();
    let series = [Series {
        name: layer.unit.clone(),
        values: layer.values.iter().map(|v| Some(v.value)).collect(),
    }];
    let svg = plot::bars(&layer.title, &layer.unit, &names, &series)?;
    Ok(Part {
        section,
        plots: vec![Plot { id: id.into(), svg }],
    })
}

/// A figure with four decimals ("inf" when infinite).
pub fn show_value(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        v.to_string()
    }
}

/// Time per operator type of every model: a table (milliseconds and share) and bars of the
/// shares, the operator types in the first model's order (then new ones).
fn op_latency_part(report: &Report) -> Result<Part> {
    let mut ops: Vec<&str> = Vec::new();
    for m in &report.op_latency {
        for o in &m.ops {
            if !ops.contains(&o.op_type.as_str()) {
                ops.push(&o.op_type);
            }
        }
    }
    let title = "Latency share per operator type";
    let mut section = Section::table(title, &["op type"]);
    for m in &report.op_latency {
        section.columns.push(format!("{} ms", m.model));
        section.columns.push(format!("{} share", m.model));
    }
    for op in &ops {
        let mut row = vec![(*op).into()];
        for m in &report.op_latency {
            match m.ops.iter().find(|o| o.op_type == *op) {
                Some(o) => {
                    row.push(format!("{:.3}", o.time_ms).into());
                    row.push(Cell::Share(o.share));
                }
                None => row.extend(["-".into(), "-".into()]),
            }
        }
        section.rows.push(row);
    }
    let names: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    let series: Vec<Series> = (report.op_latency.iter())
        .map(|m| Series {
            name: m.model.clone(),
            values: (ops.iter())
                .map(|op| {
                    let o = m.ops.iter().find(|o| o.op_type == *op)?;
                    Some(100.0 * o.share)
                })
                .collect(),
        })
        .collect();
    let svg = plot::bars(title, "% of the time", &names, &series)?;
    Ok(Part {
        section,
        plots: vec![Plot {
            id: "op-latency".into(),
            svg,
        }],
    })
}

/// Precision and sparsity of every weighted layer of every model: a table and two bar
/// charts (bits per weight, zero fraction). When every model has as many weighted layers,
/// the k-th layers of all models share a row (compression keeps the order of the layers;
/// names change); otherwise each model's layers get rows of their own.
fn weights_part(stats: &[WeightStats]) -> Result<Part> {
    type Row<'a> = (String, Vec<Option<&'a LayerPrecision>>);
    let count = stats[0].layers.len();
    let rows: Vec<Row> = if stats.iter().all(|s| s.layers.len() == count) {
        (0..count)
            .map(|k| {
                let name = stats[0].layers[k].name.clone();
                (name, stats.iter().map(|s| s.layers.get(k)).collect())
            })
            .collect()
    } else {
        (stats.iter().enumerate())
            .flat_map(|(m, s)| {
                s.layers.iter().map(move |l| {
                    let cells = (0..stats.len()).map(|i| (i == m).then_some(l)).collect();
                    (format!("{}: {}", s.model, l.name), cells)
                })
            })
            .collect()
    };
    let title = "Precision and sparsity per layer";
    let mut section = Section::table(title, &["layer"]);
    for s in stats {
        section.columns.push(format!("{} precision", s.model));
        section.columns.push(format!("{} zeros", s.model));
    }
    for (name, cells) in &rows {
        let mut row = vec![name.as_str().into()];
        for cell in cells {
            match cell {
                Some(l) => {
                    row.push(l.precision.as_str().into());
                    row.push(l.sparsity.map_or("-".into(), Cell::Share));
                }
                None => row.extend(["-".into(), "-".into()]),
            }
        }
        section.rows.push(row);
    }
    let names: Vec<String> = rows.iter().map(|(name, _)| name.clone()).collect();
    let series = |get: fn(&LayerPrecision) -> Option<f64>| -> Vec<Series> {
        (stats.iter().enumerate())
            .map(|(m, s)| Series {
                name: s.model.clone(),
                values: rows
                    .iter()
                    .map(|(_, cells)| cells[m].and_then(get))
                    .collect(),
            })
            .collect()
    };
    let bits = plot::bars(
        "Bits per weight",
        "bits",
        &names,
        &series(|l| Some(f64::from(l.bits))),
    )?;
    let zeros = plot::bars(
        "Zero weights",
        "% of the layer's weights",
        &names,
        &series(|l| l.sparsity.map(|s| 100.0 * s)),
    )?;
    Ok(Part {
        section,
        plots: vec![
            Plot {
                id: "precision".into(),
                svg: bits,
            },
            Plot {
                id: "sparsity".into(),
                svg: zeros,
            },
        ],
    })
}

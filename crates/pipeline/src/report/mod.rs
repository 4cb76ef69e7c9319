//! The report of a run, one data model for every command that writes `--report` and for
//! `--json`: before/after measurements of the models, per-layer error or sensitivity,
//! latency share per operator type, precision and sparsity per layer, the metrics after
//! every pipeline step, and plain tables.
//!
//! [`render`] gives plain text, Markdown or a self-contained HTML page with SVG plots
//! ([`html`], [`plot`]); [`write`] writes HTML or JSON by the file's extension. Identical
//! reports give byte-identical output.

pub mod compare;
pub mod continual;
pub mod evaluate;
pub mod html;
pub mod measure;
pub mod models;
pub mod plot;
pub mod prune;
pub mod quantize;
pub mod search;
pub mod sections;
pub mod table;
pub mod weights;

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Context;
use crate::eval::Metrics;
use crate::{PipelineError, Result};
pub use table::{human_count, Cell, Section};
pub use weights::{LayerPrecision, WeightStats};

/// Everything a report shows; every part may be empty (and is then left out).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Title (the page title in HTML).
    pub title: String,
    /// Lines shown under the title.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The models compared, the baseline (the input model) first.
    #[serde(default)]
    pub models: Vec<ModelMetrics>,
    /// The metrics after every step of a pipeline, in order.
    #[serde(default)]
    pub steps: Vec<ModelMetrics>,
    /// Per-layer (or per-tensor) figures: errors, sensitivities.
    #[serde(default)]
    pub layers: Vec<LayerValues>,
    /// Latency share per operator type of each model measured.
    #[serde(default)]
    pub op_latency: Vec<OpLatency>,
    /// Precision and sparsity of each weighted layer, per model.
    #[serde(default)]
    pub weights: Vec<WeightStats>,
    /// Further tables, shown as they are after everything else.
    #[serde(default)]
    pub tables: Vec<Section>,
    /// The candidates of a search (`whittle auto`, `whittle nas`), shown last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<search::Search>,
    /// A continual-learning run (`whittle continual`): the R matrix and its figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continual: Option<crate::continual::ContinualReport>,
}

/// The metrics of one model (or of the model after one pipeline step).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelMetrics {
    /// The model's name as shown ("float", "int8", a file name, a step).
    pub name: String,
    /// What was measured.
    pub metrics: Metrics,
}

/// One figure per layer or tensor, e.g. the SQNR of every quantized tensor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerValues {
    /// What the figure is ("Per-tensor SQNR", "Sensitivity").
    pub title: String,
    /// What each figure belongs to ("layer", "tensor", "class", "output"): the heading of
    /// the names' column.
    #[serde(default = "layer")]
    pub item: String,
    /// Its unit or definition ("dB", "accuracy drop").
    pub unit: String,
    /// The figures, in the order shown.
    pub values: Vec<NamedValue>,
}

/// The default [`LayerValues::item`].
fn layer() -> String {
    "layer".into()
}

/// A named figure.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedValue {
    /// The layer or tensor.
    pub name: String,
    /// Its figure (may be infinite: an exact SQNR).
    #[serde(with = "crate::nonfinite")]
    pub value: f64,
}

/// Where one model's time goes, per operator type.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpLatency {
    /// The model's name, as in [`Report::models`].
    pub model: String,
    /// One entry per operator type, largest share first.
    pub ops: Vec<OpShare>,
}

/// Time of all nodes of one operator type.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpShare {
    /// Operator type (`domain:Op` outside the default domain).
    pub op_type: String,
    /// Summed mean time per run, milliseconds.
    pub time_ms: f64,
    /// Share of the summed node time, 0..1.
    pub share: f64,
}

/// Output format of [`render`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a terminal.
    Text,
    /// GitHub-flavoured Markdown tables.
    Markdown,
    /// A self-contained HTML page with SVG plots.
    Html,
}

impl FromStr for Format {
    type Err = PipelineError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "text" => Ok(Format::Text),
            "md" | "markdown" => Ok(Format::Markdown),
            "html" => Ok(Format::Html),
            other => Err(PipelineError::invalid(
                format!("report format '{other}'"),
                "expected text, md or html",
            )),
        }
    }
}

/// `report` as text, Markdown (tables only) or HTML (tables and plots).
pub fn render(report: &Report, format: Format) -> Result<String> {
    let mut parts = sections::parts(report)?;
    if let Some(s) = &report.search {
        parts.extend(search::parts(s)?);
    }
    if let Some(c) = &report.continual {
        parts.extend(continual::parts(c)?);
    }
    let tables = || parts.iter().map(|p| p.section.clone()).collect::<Vec<_>>();
    let title = &report.title;
    Ok(match format {
        Format::Text => table::text(title, &with_notes(report, tables())),
        Format::Markdown => table::markdown(title, &with_notes(report, tables())),
        Format::Html => html::page(report, &parts),
    })
}

/// The report's notes as a first section of notes only (text and Markdown).
fn with_notes(report: &Report, mut tables: Vec<Section>) -> Vec<Section> {
    if !report.notes.is_empty() {
        let notes = Section {
            title: "Notes".into(),
            notes: report.notes.clone(),
            ..Default::default()
        };
        tables.insert(0, notes);
    }
    tables
}

/// What [`write`] writes, by the file's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// `.html` or `.htm`: the page.
    Html,
    /// `.json`: the report's data.
    Json,
}

/// The format of the report file `path` (an error naming it for another extension), so
/// that a command can refuse the file before its work rather than after.
pub fn file_format(path: &Path) -> Result<FileFormat> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => Ok(FileFormat::Html),
        "json" => Ok(FileFormat::Json),
        _ => Err(PipelineError::invalid(
            format!("report file {}", path.display()),
            "must end in .html or .json",
        )),
    }
}

/// Writes `report` to `path`: HTML for `.html`/`.htm`, pretty JSON for `.json` (atomically).
pub fn write(report: &Report, path: &Path) -> Result<()> {
    let text = match file_format(path)? {
        FileFormat::Html => render(report, Format::Html)?,
        FileFormat::Json => serde_json::to_string_pretty(report)
            .context(|| format!("encoding the report for {}", path.display()))?,
    };
    whittle_ir::files::write_bytes_atomic(path, text.as_bytes())
        .context(|| format!("writing the report {}", path.display()))
}

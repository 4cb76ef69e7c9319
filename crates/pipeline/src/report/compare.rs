//! The report of comparing a model B with a reference model A (`whittle compare
//! --report`): both models side by side, the fidelity of each of B's outputs to A's, and
//! the precision and sparsity per layer of both.

use whittle_ir::Model;

use super::sections::show_value;
use super::{models, LayerValues, NamedValue, Report, Section};
use crate::eval::{Metrics, OutputFidelity};
use crate::Result;

/// One model compared: its name, the model and what was measured of it.
pub type Compared<'m> = (&'m str, &'m Model, Metrics);

/// The report of B against A on `samples` samples: `outputs` holds the fidelity of each
/// of B's outputs to A's (B's output SQNR and cosine in the table are the worst output's),
/// `top1_agreement` the share of samples where both pick the same class.
pub fn report(
    a: Compared<'_>,
    mut b: Compared<'_>,
    outputs: &[OutputFidelity],
    samples: usize,
    top1_agreement: Option<f64>,
) -> Result<Report> {
    b.2.sqnr_db = outputs.iter().map(|o| o.sqnr_db).reduce(f64::min);
    b.2.cosine = outputs.iter().map(|o| o.cosine).reduce(f64::min);
    let title = format!("whittle compare ({}, {})", a.0, b.0);
    let mut report = models::report(title, [a, b])?;
    report.notes.insert(
        0,
        format!("{samples} samples; output SQNR and cosine of B: its worst output's"),
    );
    if let Some(agreement) = top1_agreement {
        report.notes.insert(
            1,
            format!("top-1 agreement of B with A: {:.2}%", 100.0 * agreement),
        );
    }
    report.layers.push(LayerValues {
        title: "Output SQNR of B against A".into(),
        item: "output".into(),
        unit: "SQNR dB".into(),
        values: (outputs.iter())
            .map(|o| NamedValue {
                name: o.name.clone(),
                value: o.sqnr_db,
            })
            .collect(),
    });
    let mut table = Section::table(
        "Fidelity of B to A per output",
        &["output", "MSE", "cosine", "SQNR dB"],
    );
    table.rows = (outputs.iter())
        .map(|o| {
            vec![
                o.name.as_str().into(),
                format!("{:.6e}", o.mse).into(),
                format!("{:.6}", o.cosine).into(),
                show_value(o.sqnr_db).into(),
            ]
        })
        .collect();
    report.tables.push(table);
    Ok(report)
}

//! The continual-learning section of a report: the R matrix as a heat map and a table,
//! the accuracy of every task after each task as lines, the summary figures of the
//! strategy and its baselines, and the efficiency of the compressed variants.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::plot::{self, Series};
use super::sections::{Part, Plot};
use super::{Cell, Section};
use crate::continual::{ContinualReport, Summary};
use crate::error::Context;
use crate::Result;

/// Side of one heat-map cell in pixels.
const CELL: u32 = 56;

/// The parts showing `c`.
pub fn parts(c: &ContinualReport) -> Result<Vec<Part>> {
    let tasks: Vec<String> = c.tasks.iter().map(|classes| task_name(classes)).collect();
    let r = &c.summary.r_matrix;
    let after: Vec<String> = (1..=r.len()).map(|i| format!("after task {i}")).collect();
    let title = format!("Accuracy matrix R ({}, {})", c.strategy, c.scenario);
    let heat = Plot {
        id: "continual-r-matrix".into(),
        svg: heatmap(&title, r, &after, &tasks)?,
    };
    let series: Vec<Series> = (0..tasks.len())
        .map(|j| Series {
            name: format!("task {}", j + 1),
            values: (0..r.len())
                .map(|i| (i >= j || r.len() == 1).then(|| 100.0 * r[i][j]))
                .collect(),
        })
        .collect();
    let over_time = Plot {
        id: "continual-over-time".into(),
        svg: plot::lines(
            "Accuracy per task over time",
            "accuracy (%)",
            &after,
            &series,
        )?,
    };
    let mut matrix = Section::table(title, &[]);
    matrix.columns = std::iter::once("trained through".to_string())
        .chain(tasks.iter().cloned())
        .collect();
    matrix.rows = r
        .iter()
        .zip(&after)
        .map(|(row, name)| {
            std::iter::once(Cell::Text(name.clone()))
                .chain(row.iter().map(|v| Cell::Text(format!("{:.2}", 100.0 * v))))
                .collect()
        })
        .collect();
    matrix.notes = vec![format!(
        "R[i][j]: accuracy (%) on task j's test set after training task i, mean over {} seed(s).",
        c.seeds.len()
    )];
    Ok(vec![
        Part {
            section: matrix,
            plots: vec![heat, over_time],
        },
        Part {
            section: summary_table(c),
            plots: Vec::new(),
        },
    ]
    .into_iter()
    .chain((!c.compressed.is_empty()).then(|| Part {
        section: efficiency_table(c),
        plots: Vec::new(),
    }))
    .collect())
}

/// The title of the efficiency table.
pub const EFFICIENCY: &str = "Efficiency of the compressed learner";

/// The order of the variants in the efficiency table (others follow by name).
const VARIANTS: [&str; 8] = [
    "fp32",
    "fp16",
    "int8",
    "pruned",
    "pruned_fp16",
    "pruned_int8",
    "during_pruned",
    "during_pruned_int8",
];

/// One row per compressed variant (compressed after the run, or `during_*` training):
/// size, parameters, FPS in ONNX Runtime, average accuracy and forgetting.
fn efficiency_table(c: &ContinualReport) -> Section {
    let mut s = Section::table(
        EFFICIENCY,
        &[
            "variant",
            "size (bytes)",
            "parameters",
            "non-zero parameters",
            "FPS (ORT, batch 1)",
            "average accuracy (%)",
            "forgetting (points)",
            "task-IL accuracy (%)",
        ],
    );
    let rank = |name: &str| {
        VARIANTS
            .iter()
            .position(|v| *v == name)
            .unwrap_or(VARIANTS.len())
    };
    let mut names: Vec<&String> = c.compressed.keys().collect();
    names.sort_by_key(|n| (rank(n), n.as_str()));
    let pm = |m: f64, std: Option<f64>| match std {
        Some(sd) => format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * sd),
        None => format!("{:.2}", 100.0 * m),
    };
    for name in names {
        let m = &c.compressed[name];
        s.rows.push(vec![
            Cell::Text(name.clone()),
            Cell::Text(m.size_bytes.to_string()),
            Cell::Text(m.parameters.to_string()),
            Cell::Text(m.nonzero_parameters.to_string()),
            Cell::Text(m.fps.map_or("-".into(), |f| format!("{f:.0}"))),
            Cell::Text(pm(m.average_accuracy, m.average_accuracy_std)),
            Cell::Text(pm(m.forgetting, m.forgetting_std)),
            Cell::Text(
                m.task_il_accuracy
                    .map_or("-".into(), |t| format!("{:.2}", 100.0 * t)),
            ),
        ]);
    }
    s.notes = vec![
        "Compressed after the last task (fp16, int8, pruned, pruned_*) or during training (during_*: pruning rising task by task, QAT on the last task); calibration and recovery use only the replay buffer and the last task's data. Forgetting uses the compressed model's accuracy as the R matrix's last row; means over seeds.".into(),
    ];
    s
}

/// A task named by its classes ("0,1").
fn task_name(classes: &[i64]) -> String {
    if classes.len() > 4 {
        return format!("{} classes", classes.len());
    }
    classes
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The strategy's and the baselines' figures, mean +- std over seeds.
fn summary_table(c: &ContinualReport) -> Section {
    let mut s = Section::table(
        "Continual-learning figures",
        &[
            "strategy",
            "average accuracy (%)",
            "forgetting (points)",
            "BWT (points)",
            "task-IL accuracy (%)",
            "run time (s)",
        ],
    );
    let show = |mean: Option<f64>, std: Option<f64>| match (mean, std) {
        (Some(m), Some(s)) => format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * s),
        (Some(m), None) => format!("{:.2}", 100.0 * m),
        _ => "-".into(),
    };
    let row = |name: &str, m: &Summary| {
        vec![
            Cell::Text(name.to_string()),
            Cell::Text(show(Some(m.average_accuracy), m.average_accuracy_std)),
            Cell::Text(show(Some(m.forgetting), m.forgetting_std)),
            Cell::Text(show(Some(m.bwt), m.bwt_std)),
            Cell::Text(show(m.task_il_accuracy, m.task_il_accuracy_std)),
            Cell::Text(format!("{:.1}", m.seconds)),
        ]
    };
    s.rows.push(row(&c.strategy, &c.summary));
    for (name, m) in &c.baselines {
        s.rows.push(row(name, m));
    }
    s.notes = vec![
        "Forgetting: best earlier accuracy on a task minus its final accuracy, over all but the last task (Chaudhry et al.); BWT: final minus just-learnt accuracy.".into(),
    ];
    s
}

/// A heat map of `matrix` (fractions 0..1, shown in %): rows top to bottom, columns left
/// to right, each cell shaded from white (0) to blue (1) and labelled with its value.
pub fn heatmap(
    title: &str,
    matrix: &[Vec<f64>],
    rows: &[String],
    columns: &[String],
) -> Result<String> {
    let (n_rows, n_cols) = (matrix.len().max(1), columns.len().max(1));
    let label = 110;
    let width = label + n_cols as u32 * CELL + 24;
    let height = 40 + 24 + n_rows as u32 * CELL + 8;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        let fail = || format!("drawing the plot '{title}'");
        root.fill(&WHITE).context(fail)?;
        root.draw_text(title, &("sans-serif", 16).into_font().color(&BLACK), (8, 8))
            .context(fail)?;
        let centre = Pos::new(HPos::Center, VPos::Center);
        let right = Pos::new(HPos::Right, VPos::Center);
        let top = 40 + 24;
        for (j, name) in columns.iter().enumerate() {
            let x = label as i32 + (j as u32 * CELL + CELL / 2) as i32;
            let style = ("sans-serif", 12).into_text_style(&root).pos(centre);
            root.draw_text(name, &style, (x, top - 12)).context(fail)?;
        }
        for (i, row) in matrix.iter().enumerate() {
            let y = top + (i as u32 * CELL) as i32;
            let style = ("sans-serif", 12).into_text_style(&root).pos(right);
            let name = rows.get(i).map_or("", String::as_str);
            root.draw_text(name, &style, (label as i32 - 6, y + CELL as i32 / 2))
                .context(fail)?;
            for (j, &v) in row.iter().enumerate() {
                let x = label as i32 + (j as u32 * CELL) as i32;
                let shade = v.clamp(0.0, 1.0);
                let mix = |white: f64, full: f64| (white + (full - white) * shade).round() as u8;
                let fill = RGBColor(mix(255.0, 74.0), mix(255.0, 123.0), mix(255.0, 208.0));
                let cell = [(x, y), (x + CELL as i32 - 1, y + CELL as i32 - 1)];
                root.draw(&Rectangle::new(cell, fill.filled()))
                    .context(fail)?;
                let ink = if shade > 0.6 { WHITE } else { BLACK };
                let style = ("sans-serif", 12).into_font().color(&ink).pos(centre);
                let text = format!("{:.1}", 100.0 * v);
                let middle = (x + CELL as i32 / 2, y + CELL as i32 / 2);
                root.draw_text(&text, &style, middle).context(fail)?;
            }
        }
        root.present().context(fail)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::continual::ContinualReport;
    use crate::continual_compress::CompressedMetrics;

    fn report() -> ContinualReport {
        ContinualReport {
            scenario: "class-il".into(),
            strategy: "er".into(),
            tasks: vec![vec![0, 1], vec![2, 3]],
            summary: Summary {
                r_matrix: vec![vec![0.99, 0.0], vec![0.8, 0.95]],
                average_accuracy: 0.875,
                forgetting: 0.19,
                bwt: -0.19,
                task_il_accuracy: Some(0.97),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn heat_map_labels_every_cell_and_lines_skip_unlearnt_tasks() {
        let parts = parts(&report()).unwrap();
        let heat = &parts[0].plots[0].svg;
        for v in ["99.0", "0.0", "80.0", "95.0"] {
            assert!(heat.contains(&format!("\n{v}\n</text>")), "{v}: {heat}");
        }
        assert!(
            heat.contains("0,1") && heat.contains("after task 2"),
            "{heat}"
        );
        // Task 1 has a point after both tasks, task 2 only after its own: 3 points.
        assert_eq!(parts[0].plots[1].svg.matches("<circle").count(), 3);
        assert_eq!(parts[0].section.rows[1][1], Cell::Text("80.00".into()));
        assert_eq!(parts[1].section.rows[0][1], Cell::Text("87.50".into()));
        assert_eq!(parts[1].section.rows[0][4], Cell::Text("97.00".into()));
        // No compression, no efficiency table.
        assert_eq!(parts.len(), 2);
    }

    #[test]
    fn efficiency_rows_follow_the_variants_order_with_their_figures() {
        let mut c = report();
        let variant = |acc: f64, size: u64, fps: Option<f64>| CompressedMetrics {
            average_accuracy: acc,
            forgetting: 0.1,
            size_bytes: size,
            parameters: 100,
            nonzero_parameters: 50,
            fps,
            ..Default::default()
        };
        c.compressed
            .insert("int8".into(), variant(0.86, 30, Some(1234.4)));
        c.compressed
            .insert("fp32".into(), variant(0.875, 400, None));
        c.compressed
            .insert("during_pruned_int8".into(), variant(0.8, 30, None));
        let parts = parts(&c).unwrap();
        let rows = &parts[2].section.rows;
        let names: Vec<&Cell> = rows.iter().map(|r| &r[0]).collect();
        let text = |v: &str| Cell::Text(v.into());
        assert_eq!(
            names,
            [&text("fp32"), &text("int8"), &text("during_pruned_int8")]
        );
        assert_eq!(
            rows[1][1..6],
            [
                text("30"),
                text("100"),
                text("50"),
                text("1234"),
                text("86.00")
            ]
        );
        assert_eq!(rows[0][4], text("-"));
    }
}

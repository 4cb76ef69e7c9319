//! The report of a search over candidate models (`whittle auto`'s compositions of steps,
//! `whittle nas`'s architectures): a Pareto plot of size against latency and one of
//! latency against accuracy with the constraints drawn as lines, the best score so far
//! after each trial, predicted against measured accuracy drop, and every candidate with
//! why it was kept or dropped.

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::plot::{self, Series};
use super::sections::{Part, Plot};
use super::{Cell, Section};
use crate::error::Context;
use crate::Result;

/// A search's candidates, as a report shows them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Search {
    /// What the score is ("balanced: geometric mean of latency and size ratios").
    pub objective: String,
    /// The starting model's figures.
    pub baseline: Figures,
    /// The constraints (a figure left None is free).
    pub limits: Figures,
    /// Every candidate, in the order tried.
    pub candidates: Vec<Candidate>,
}

/// Latency, size and accuracy of a model (or limits on them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// ONNX Runtime latency at batch 1, milliseconds.
    pub latency_ms: Option<f64>,
    /// Bytes of the model file.
    pub size_bytes: Option<f64>,
    /// Top-1 accuracy, 0..1.
    pub accuracy: Option<f64>,
}

/// One candidate of a search.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// What it is.
    pub name: String,
    /// Seconds into the search when it finished.
    pub elapsed_s: f64,
    /// What was measured (accuracy None when it was dropped before).
    pub figures: Figures,
    /// The target's score (smaller is better), when measured.
    pub score: Option<f64>,
    /// Whether it meets every constraint.
    pub in_budget: bool,
    /// Whether it is the search's result.
    pub best: bool,
    /// Accuracy drop predicted before it ran, points.
    pub predicted_drop_pts: Option<f64>,
    /// Accuracy drop measured (or estimated on a subset when dropped), points.
    pub measured_drop_pts: Option<f64>,
    /// "kept", "dropped", "failed", "skipped".
    pub status: String,
    /// Why.
    pub reason: String,
}

/// The search's parts, in the order shown.
pub fn parts(s: &Search) -> Result<Vec<Part>> {
    let mut plots = vec![
        Plot {
            id: "search-size-latency".into(),
            svg: pareto(
                s,
                "Size and latency of every candidate",
                ("size (KB)", |f| f.size_bytes.map(|b| b / 1e3)),
                ("latency ONNX Runtime (ms)", |f| f.latency_ms),
            )?,
        },
        Plot {
            id: "search-latency-accuracy".into(),
            svg: pareto(
                s,
                "Latency and accuracy of every candidate",
                ("latency ONNX Runtime (ms)", |f| f.latency_ms),
                ("top-1 (%)", |f| f.accuracy.map(|a| 100.0 * a)),
            )?,
        },
    ];
    let measured: Vec<&Candidate> = s
        .candidates
        .iter()
        .filter(|c| c.status != "skipped")
        .collect();
    let mut best = f64::INFINITY;
    let best_so_far: Vec<Option<f64>> = (measured.iter())
        .map(|c| {
            if c.in_budget {
                best = best.min(c.score.unwrap_or(f64::INFINITY));
            }
            best.is_finite().then_some(best)
        })
        .collect();
    let numbers: Vec<String> = (1..=measured.len()).map(|i| i.to_string()).collect();
    plots.push(Plot {
        id: "search-best".into(),
        svg: plot::lines(
            "Best score within the constraints after each trial",
            &s.objective,
            &numbers,
            &[Series {
                name: "best so far".into(),
                values: best_so_far,
            }],
        )?,
    });
    let drops: Vec<(f64, f64)> = (measured.iter())
        .filter_map(|c| Some((c.predicted_drop_pts?, c.measured_drop_pts?)))
        .filter(|(p, m)| p.is_finite() && m.is_finite())
        .collect();
    if !drops.is_empty() {
        plots.push(Plot {
            id: "search-drop".into(),
            svg: scatter(
                "Predicted and measured accuracy drop",
                ("predicted drop (points)", "measured drop (points)"),
                &[("trial".into(), drops)],
                &Lines {
                    diagonal: true,
                    ..Lines::default()
                },
            )?,
        });
    }
    let mut table = Section::table(
        "Search: every candidate",
        &[
            "#",
            "candidate",
            "time (s)",
            "latency (ms)",
            "size (bytes)",
            "top-1 (%)",
            "predicted drop (pt)",
            "measured drop (pt)",
            "score",
            "status",
            "why",
        ],
    );
    table
        .notes
        .push(format!("score: {} (smaller is better)", s.objective));
    let show = |v: Option<f64>, digits: usize| {
        v.filter(|v| v.is_finite())
            .map_or("-".into(), |v| format!("{v:.digits$}"))
    };
    for (i, c) in s.candidates.iter().enumerate() {
        let status = if c.best {
            format!("{} (best)", c.status)
        } else {
            c.status.clone()
        };
        table.rows.push(vec![
            Cell::from((i + 1).to_string()),
            Cell::from(c.name.as_str()),
            Cell::from(format!("{:.1}", c.elapsed_s)),
            Cell::from(show(c.figures.latency_ms, 3)),
            Cell::from(show(c.figures.size_bytes, 0)),
            Cell::from(show(c.figures.accuracy.map(|a| 100.0 * a), 2)),
            Cell::from(show(c.predicted_drop_pts, 2)),
            Cell::from(show(c.measured_drop_pts, 2)),
            Cell::from(show(c.score, 3)),
            Cell::from(status),
            Cell::from(c.reason.as_str()),
        ]);
    }
    Ok(vec![Part {
        section: table,
        plots,
    }])
}

/// Reads one figure of a candidate, with the axis label.
type Axis = (&'static str, fn(&Figures) -> Option<f64>);

/// A scatter of every measured candidate along `x` and `y`: the baseline, the
/// candidates within and outside the constraints, the best; the constraints as lines.
fn pareto(s: &Search, title: &str, x: Axis, y: Axis) -> Result<String> {
    let point = |f: &Figures| Some(((x.1)(f)?, (y.1)(f)?));
    let group = |keep: &dyn Fn(&Candidate) -> bool| -> Vec<(f64, f64)> {
        (s.candidates.iter())
            .filter(|c| keep(c))
            .filter_map(|c| point(&c.figures))
            .collect()
    };
    let groups = vec![
        (
            "baseline".to_string(),
            point(&s.baseline).into_iter().collect(),
        ),
        (
            "within constraints".to_string(),
            group(&|c| c.in_budget && !c.best),
        ),
        ("outside".to_string(), group(&|c| !c.in_budget && !c.best)),
        ("best".to_string(), group(&|c| c.best)),
    ];
    let lines = Lines {
        vertical: (x.1)(&s.limits),
        horizontal: (y.1)(&s.limits),
        diagonal: false,
    };
    scatter(title, (x.0, y.0), &groups, &lines)
}

/// Lines drawn across a scatter: constraints, or y = x.
#[derive(Default)]
struct Lines {
    vertical: Option<f64>,
    horizontal: Option<f64>,
    diagonal: bool,
}

/// A scatter plot: one colour per group (with a legend), dashed-free constraint lines in
/// grey. Points that are not finite are left out.
fn scatter(
    title: &str,
    (x_unit, y_unit): (&str, &str),
    groups: &[(String, Vec<(f64, f64)>)],
    lines: &Lines,
) -> Result<String> {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all: Vec<(f64, f64)> = groups
        .iter()
        .flat_map(|g| g.1.iter().filter(finite).copied())
        .collect();
    let xs = range(all.iter().map(|p| p.0).chain(lines.vertical));
    let ys = range(all.iter().map(|p| p.1).chain(lines.horizontal));
    let draw = || format!("drawing the plot '{title}'");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 400)).into_drawing_area();
        root.fill(&WHITE).context(draw)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(56)
            .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)
            .context(draw)?;
        chart
            .configure_mesh()
            .x_desc(x_unit)
            .y_desc(y_unit)
            .draw()
            .context(draw)?;
        let grey = RGBColor(127, 140, 141);
        if let Some(x) = lines.vertical {
            chart
                .draw_series(LineSeries::new(
                    [(x, ys.0), (x, ys.1)],
                    grey.stroke_width(1),
                ))
                .context(draw)?;
        }
        if let Some(y) = lines.horizontal {
            chart
                .draw_series(LineSeries::new(
                    [(xs.0, y), (xs.1, y)],
                    grey.stroke_width(1),
                ))
                .context(draw)?;
        }
        if lines.diagonal {
            let (lo, hi) = (xs.0.max(ys.0), xs.1.min(ys.1));
            chart
                .draw_series(LineSeries::new([(lo, lo), (hi, hi)], grey.stroke_width(1)))
                .context(draw)?;
        }
        for (k, (name, points)) in groups.iter().enumerate() {
            let colour = palette(k);
            chart
                .draw_series(
                    points
                        .iter()
                        .filter(finite)
                        .map(|&p| Circle::new(p, 4, colour.filled())),
                )
                .context(draw)?
                .label(name.as_str())
                .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .context(draw)?;
        root.present().context(draw)?;
    }
    Ok(svg)
}

/// The colour of series `k`, as [`plot::colour`] names it.
fn palette(k: usize) -> RGBColor {
    let hex = plot::colour(k);
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0);
    RGBColor(byte(1), byte(3), byte(5))
}

/// An axis from the smallest to the largest value with 5% margins (0..1 without values).
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 0.01).max(1e-9);
    (lo - pad, hi + pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &str, latency: f64, size: f64, in_budget: bool, best: bool) -> Candidate {
        Candidate {
            name: name.into(),
            figures: Figures {
                latency_ms: Some(latency),
                size_bytes: Some(size),
                accuracy: Some(0.9),
            },
            score: Some(latency),
            in_budget,
            best,
            predicted_drop_pts: Some(0.5),
            measured_drop_pts: Some(0.4),
            status: "kept".into(),
            reason: "measured".into(),
            ..Candidate::default()
        }
    }

    #[test]
    fn the_parts_draw_every_candidate_and_the_constraints() {
        let s = Search {
            objective: "latency ratio".into(),
            baseline: Figures {
                latency_ms: Some(2.0),
                size_bytes: Some(4000.0),
                accuracy: Some(0.91),
            },
            limits: Figures {
                latency_ms: Some(1.5),
                size_bytes: None,
                accuracy: Some(0.9),
            },
            candidates: vec![
                candidate("a", 1.0, 1000.0, true, false),
                candidate("b", 0.5, 900.0, true, true),
                candidate("c", 3.0, 800.0, false, false),
            ],
        };
        let parts = parts(&s).unwrap();
        let part = &parts[0];
        assert_eq!(part.section.rows.len(), 3);
        assert_eq!(part.section.rows[1][9], Cell::from("kept (best)"));
        let ids: Vec<&str> = part.plots.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "search-size-latency",
                "search-latency-accuracy",
                "search-best",
                "search-drop"
            ]
        );
        // Four candidates' points plus the baseline, plus a legend swatch per group.
        let first = &part.plots[0].svg;
        assert_eq!(first.matches("<circle").count(), 4 + 4, "{first}");
        // The latency limit is a horizontal line in the first plot.
        assert!(first.contains("polyline"), "{first}");
        // Best so far: trial 1 scores 1.0, trial 2 0.5, trial 3 is outside.
        assert_eq!(part.plots[2].svg.matches("<circle").count(), 3);
    }
}

//! SVG plots of a report, drawn by `plotters` with its SVG backend only: text is written as
//! `<text>` elements (no font files), coordinates are whole pixels, so the same data always
//! gives the same bytes.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::Context;
use crate::Result;

/// Width of every plot in pixels.
const WIDTH: u32 = 720;
/// Height of the legend row under a plot, in pixels.
const LEGEND: u32 = 22;
/// Height of one bar in pixels.
const BAR: u32 = 12;
/// Longest category label drawn (longer ones end in "...").
const LABEL_CHARS: usize = 28;
/// Colours of the series, in order (then repeated).
const PALETTE: [RGBColor; 6] = [
    RGBColor(74, 123, 208),
    RGBColor(230, 126, 34),
    RGBColor(46, 160, 67),
    RGBColor(192, 57, 43),
    RGBColor(142, 68, 173),
    RGBColor(127, 140, 141),
];

/// The fill colour of series `index` as `#rrggbb`, as the SVG writes it.
pub fn colour(index: usize) -> String {
    let RGBColor(r, g, b) = PALETTE[index % PALETTE.len()];
    format!("#{r:02X}{g:02X}{b:02X}")
}

/// One named row of values, one per category (None: not measured, no bar or point).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// One value per category.
    pub values: Vec<Option<f64>>,
}

/// A horizontal bar chart: one group of bars per category (one bar per series), the
/// categories top to bottom, the value axis labelled `unit`. Non-finite values draw no bar.
pub fn bars(title: &str, unit: &str, categories: &[String], series: &[Series]) -> Result<String> {
    let n = categories.len().max(1);
    let per_group = series.len().max(1) as u32 * BAR + 8;
    let height = 70 + LEGEND + n as u32 * per_group;
    let (low, high) = value_range(series);
    let label_area = categories
        .iter()
        .map(|c| short(c).chars().count())
        .max()
        .unwrap_or(0) as u32
        * 7
        + 12;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).context(|| draw(title))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .margin_bottom(8 + LEGEND)
            .x_label_area_size(34)
            .y_label_area_size(label_area)
            .build_cartesian_2d(low..high, 0.0..n as f64)
            .context(|| draw(title))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(unit)
            .x_label_formatter(&|v| tick(*v))
            .draw()
            .context(|| draw(title))?;
        // Category i is drawn top-down: the row from n-1-i to n-i.
        let right = Pos::new(HPos::Right, VPos::Center);
        for (i, name) in categories.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(low, (n - 1 - i) as f64 + 0.5));
            let style = ("sans-serif", 12).into_text_style(&root).pos(right);
            root.draw_text(&short(name), &style, (x - 6, y))
                .context(|| draw(title))?;
        }
        let slot = 1.0 / (series.len() as f64 + 0.5);
        for (k, s) in series.iter().enumerate() {
            let fill = PALETTE[k % PALETTE.len()].filled();
            let bars = s.values.iter().enumerate().filter_map(|(i, v)| {
                let v = v.filter(|v| v.is_finite())?;
                let top = (n - 1 - i) as f64 + 1.0 - slot * (k as f64 + 0.25);
                Some(Rectangle::new([(0.0, top), (v, top - slot * 0.9)], fill))
            });
            chart.draw_series(bars).context(|| draw(title))?;
        }
        legend(&root, series, height, title)?;
        root.present().context(|| draw(title))?;
    }
    Ok(svg)
}

/// A line chart: one point per category along the horizontal axis (left to right), one
/// line per series, the value axis labelled `unit`. Missing values break no line: the
/// line joins the points that exist.
pub fn lines(title: &str, unit: &str, categories: &[String], series: &[Series]) -> Result<String> {
    let n = categories.len().max(1);
    let (low, high) = value_range(series);
    let mut svg = String::new();
    {
        let height = 360;
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).context(|| draw(title))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .margin_bottom(8 + LEGEND)
            .x_label_area_size(34)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..n as f64, low..high)
            .context(|| draw(title))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(unit)
            .y_label_formatter(&|v| tick(*v))
            .draw()
            .context(|| draw(title))?;
        let below = Pos::new(HPos::Center, VPos::Top);
        for (i, name) in categories.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, low));
            let style = ("sans-serif", 12).into_text_style(&root).pos(below);
            root.draw_text(&short(name), &style, (x, y + 6))
                .context(|| draw(title))?;
        }
        for (k, s) in series.iter().enumerate() {
            let colour = PALETTE[k % PALETTE.len()];
            let points: Vec<(f64, f64)> = (s.values.iter().enumerate())
                .filter_map(|(i, v)| Some((i as f64 + 0.5, v.filter(|v| v.is_finite())?)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .context(|| draw(title))?;
            chart
                .draw_series(PointSeries::of_element(
                    points,
                    4,
                    colour.filled(),
                    &|c, s, st| Circle::new(c, s, st),
                ))
                .context(|| draw(title))?;
        }
        legend(&root, series, height, title)?;
        root.present().context(|| draw(title))?;
    }
    Ok(svg)
}

/// `name`, cut to [`LABEL_CHARS`] characters.
fn short(name: &str) -> String {
    if name.chars().count() <= LABEL_CHARS {
        return name.to_string();
    }
    let head: String = name.chars().take(LABEL_CHARS - 3).collect();
    format!("{head}...")
}

/// A tick label: at most four significant decimals, no trailing zeros.
fn tick(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// The value axis: from the smallest to the largest finite value, always including 0, with
/// a margin of 5% on each side that has values.
fn value_range(series: &[Series]) -> (f64, f64) {
    let finite = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .copied()
        .filter(|v| v.is_finite());
    let (low, high) = finite.fold((0.0f64, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
    if low == high {
        return (0.0, 1.0);
    }
    let pad = (high - low) * 0.05;
    (
        if low < 0.0 { low - pad } else { 0.0 },
        if high > 0.0 { high + pad } else { 0.0 },
    )
}

/// Draws the legend in one row along the bottom of `root` (`height` pixels high): a
/// swatch in each series' colour and its name.
fn legend(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    series: &[Series],
    height: u32,
    title: &str,
) -> Result<()> {
    let y = height as i32 - LEGEND as i32 + 4;
    let mut x = 16;
    let style = ("sans-serif", 12).into_text_style(root);
    for (k, s) in series.iter().enumerate() {
        let fill = PALETTE[k % PALETTE.len()].filled();
        root.draw(&Rectangle::new([(x, y), (x + 10, y + 10)], fill))
            .context(|| draw(title))?;
        root.draw_text(&s.name, &style, (x + 14, y))
            .context(|| draw(title))?;
        x += 14 + 7 * s.name.chars().count() as i32 + 18;
    }
    Ok(())
}

fn draw(title: &str) -> String {
    format!("drawing the plot '{title}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> Vec<Series> {
        vec![
            Series {
                name: "float".into(),
                values: vec![Some(2.0), Some(-1.0), None],
            },
            Series {
                name: "int8".into(),
                values: vec![Some(1.5), Some(f64::INFINITY), Some(0.5)],
            },
        ]
    }

    fn names() -> Vec<String> {
        vec![
            "conv1".into(),
            "a_very_long_layer_name_that_goes_on_and_on".into(),
            "fc".into(),
        ]
    }

    #[test]
    fn bars_draw_one_rectangle_per_finite_value_in_the_series_colour() {
        let svg = bars("t", "dB", &names(), &series()).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        // Two bars of the first series, two finite ones of the second, plus one legend
        // swatch each.
        let count = |c: &str| svg.matches(&format!("fill=\"{c}\"")).count();
        assert_eq!(count(&colour(0)), 3, "{svg}");
        assert_eq!(count(&colour(1)), 3, "{svg}");
        let label = |t: &str| svg.contains(&format!("\n{t}\n</text>"));
        assert!(
            label("conv1") && label("fc") && label("float") && label("int8"),
            "{svg}"
        );
        assert!(label("a_very_long_layer_name_th..."), "{svg}");
        assert_eq!(svg, bars("t", "dB", &names(), &series()).unwrap());
    }

    #[test]
    fn lines_draw_a_point_per_finite_value() {
        let svg = lines("steps", "%", &names(), &series()).unwrap();
        assert_eq!(svg.matches("<circle").count(), 4, "{svg}");
        let line = |c: &str| {
            svg.matches(&format!("stroke=\"{c}\" stroke-width=\"2\""))
                .count()
        };
        assert_eq!((line(&colour(0)), line(&colour(1))), (1, 1), "{svg}");
    }

    #[test]
    fn ticks_and_ranges() {
        assert_eq!(tick(0.5), "0.5");
        assert_eq!(tick(-0.0), "0");
        assert_eq!(tick(12.0), "12");
        assert_eq!(value_range(&[]), (0.0, 1.0));
        assert_eq!(value_range(&series()), (-1.15, 2.15));
    }
}

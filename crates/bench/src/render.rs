//! Reports as plain text, a Markdown table or a standalone HTML page (inline bars for
//! time shares, no scripts).

use std::fmt::Write;
use std::str::FromStr;

use crate::error::BenchError;
pub use whittle_ir::memory::human_bytes;

/// Output format of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a terminal.
    Text,
    /// GitHub-flavoured Markdown tables.
    Markdown,
    /// A standalone HTML page.
    Html,
}

impl FromStr for Format {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, BenchError> {
        match s {
            "text" => Ok(Format::Text),
            "md" | "markdown" => Ok(Format::Markdown),
            "html" => Ok(Format::Html),
            other => Err(BenchError::Invalid(format!(
                "--format '{other}': expected text, md or html"
            ))),
        }
    }
}

/// One table cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// Text shown as is.
    Text(String),
    /// A fraction of a whole (0..1): a percentage, drawn as a bar in HTML.
    Share(f64),
}

impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Text(s)
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Text(s.to_string())
    }
}

impl Cell {
    fn plain(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Share(f) => format!("{:.1}%", f * 100.0),
        }
    }
}

/// A titled table with optional lines of notes above it.
#[derive(Clone, Debug, Default)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// Lines shown between heading and table.
    pub notes: Vec<String>,
    /// Column headers.
    pub columns: Vec<String>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<Cell>>,
}

/// A whole report: a title and its sections.
#[derive(Clone, Debug, Default)]
pub struct Document {
    /// Title (page title in HTML).
    pub title: String,
    /// Sections in order.
    pub sections: Vec<Section>,
}

/// Renders `doc` in `format`.
pub fn render(doc: &Document, format: Format) -> String {
    match format {
        Format::Text => text(doc),
        Format::Markdown => markdown(doc),
        Format::Html => html(doc),
    }
}

fn text(doc: &Document) -> String {
    let mut out = format!("{}\n", doc.title);
    for s in &doc.sections {
        let _ = writeln!(out, "\n{}", s.title);
        for n in &s.notes {
            let _ = writeln!(out, "  {n}");
        }
        if s.columns.is_empty() {
            continue;
        }
        let cells: Vec<Vec<String>> = s
            .rows
            .iter()
            .map(|r| r.iter().map(Cell::plain).collect())
            .collect();
        let widths: Vec<usize> = (0..s.columns.len())
            .map(|c| {
                cells
                    .iter()
                    .filter_map(|r| r.get(c).map(|x| x.chars().count()))
                    .chain([s.columns[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in std::iter::once(&s.columns).chain(&cells) {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (x, w))| {
                    if i == 0 {
                        format!("{x:<w$}")
                    } else {
                        format!("{x:>w$}")
                    }
                })
                .collect();
            let _ = writeln!(out, "  {}", line.join("  ").trim_end());
        }
    }
    out
}

fn markdown(doc: &Document) -> String {
    let mut out = format!("# {}\n", doc.title);
    for s in &doc.sections {
        let _ = writeln!(out, "\n## {}\n", s.title);
        for n in &s.notes {
            let _ = writeln!(out, "{n}  ");
        }
        if s.columns.is_empty() {
            continue;
        }
        let esc = |x: &str| x.replace('|', "\\|");
        let _ = writeln!(
            out,
            "\n| {} |",
            s.columns
                .iter()
                .map(|c| esc(c))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let _ = writeln!(out, "|{}|", vec!["---"; s.columns.len()].join("|"));
        for r in &s.rows {
            let row: Vec<String> = r.iter().map(|c| esc(&c.plain())).collect();
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
    }
    out
}

fn escape(x: &str) -> String {
    x.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child,th:first-child\
{text-align:left}.bar{display:inline-block;height:0.8em;background:#4a7bd0;margin-right:4px}";

fn html(doc: &Document) -> String {
    let title = escape(&doc.title);
    let mut out = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{STYLE}</style></head>\n<body><h1>{title}</h1>\n"
    );
    for s in &doc.sections {
        let _ = writeln!(out, "<h2>{}</h2>", escape(&s.title));
        for n in &s.notes {
            let _ = writeln!(out, "<p>{}</p>", escape(n));
        }
        if s.columns.is_empty() {
            continue;
        }
        out.push_str("<table>\n<tr>");
        for c in &s.columns {
            let _ = write!(out, "<th>{}</th>", escape(c));
        }
        out.push_str("</tr>\n");
        for r in &s.rows {
            out.push_str("<tr>");
            for c in r {
                let _ = write!(out, "<td>{}</td>", html_cell(c));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

fn html_cell(c: &Cell) -> String {
    match c {
        Cell::Text(s) => escape(s),
        Cell::Share(f) => format!(
            "<span class=\"bar\" style=\"width:{:.0}px\"></span>{}",
            (f.clamp(0.0, 1.0) * 200.0).round(),
            c.plain()
        ),
    }
}

/// A large count with an SI suffix (K, M, G).
pub fn human_count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Document {
        Document {
            title: "t <1>".into(),
            sections: vec![Section {
                title: "nodes".into(),
                notes: vec!["total 2 ms".into()],
                columns: vec!["name".into(), "share".into()],
                rows: vec![
                    vec!["conv|a".into(), Cell::Share(0.75)],
                    vec!["relu".into(), Cell::Share(0.25)],
                ],
            }],
        }
    }

    #[test]
    fn markdown_is_a_table_with_escaped_pipes() {
        let md = render(&doc(), Format::Markdown);
        assert!(
            md.contains("| name | share |\n|---|---|\n| conv\\|a | 75.0% |\n| relu | 25.0% |"),
            "{md}"
        );
    }

    #[test]
    fn html_is_standalone_with_bars_and_escapes() {
        let h = render(&doc(), Format::Html);
        assert!(h.starts_with("<!DOCTYPE html>") && h.trim_end().ends_with("</html>"));
        assert!(h.contains("<title>t &lt;1&gt;</title>"));
        assert!(h.contains("style=\"width:150px\"></span>75.0%"), "{h}");
        assert!(!h.contains("<script"));
    }

    #[test]
    fn text_aligns_columns() {
        let t = render(&doc(), Format::Text);
        assert!(
            t.contains("  name    share\n  conv|a  75.0%\n  relu    25.0%\n"),
            "{t}"
        );
        assert!("pdf".parse::<Format>().is_err());
        assert_eq!("md".parse::<Format>().unwrap(), Format::Markdown);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512u64), "512 B");
        assert_eq!(human_bytes(3u64 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(human_count(648_226), "648.2K");
        assert_eq!(human_count(4_467_712), "4.47M");
    }
}

//! Tables of a report ([`Section`]s of [`Cell`]s) and their plain-text and Markdown forms;
//! the HTML form is [`super::html`]'s.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// One table cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
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
    /// The cell as text (a share as a percentage with one decimal).
    pub fn plain(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Share(f) => format!("{:.1}%", f * 100.0),
        }
    }
}

/// A titled table with optional lines of notes above it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// Lines shown between heading and table.
    pub notes: Vec<String>,
    /// Column headers (none: the section is only its notes).
    pub columns: Vec<String>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<Cell>>,
}

impl Section {
    /// A table titled `title` with `columns`, no notes and no rows yet.
    pub fn table(title: impl Into<String>, columns: &[&str]) -> Self {
        Section {
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }
    }
}

/// `sections` under `title` as aligned columns for a terminal.
pub fn text(title: &str, sections: &[Section]) -> String {
    let mut out = format!("{title}\n");
    for s in sections {
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

/// `sections` under `title` as GitHub-flavoured Markdown tables.
pub fn markdown(title: &str, sections: &[Section]) -> String {
    let mut out = format!("# {title}\n");
    for s in sections {
        let _ = writeln!(out, "\n## {}\n", s.title);
        for n in &s.notes {
            let _ = writeln!(out, "{n}  ");
        }
        if s.columns.is_empty() {
            continue;
        }
        let esc = |x: &str| x.replace('|', "\\|");
        let header: Vec<String> = s.columns.iter().map(|c| esc(c)).collect();
        let _ = writeln!(out, "\n| {} |", header.join(" | "));
        let _ = writeln!(out, "|{}|", vec!["---"; s.columns.len()].join("|"));
        for r in &s.rows {
            let row: Vec<String> = r.iter().map(|c| esc(&c.plain())).collect();
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
    }
    out
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
pub(super) mod tests {
    use super::*;

    /// Two rows, a pipe to escape and a share.
    pub fn sections() -> Vec<Section> {
        vec![Section {
            title: "nodes".into(),
            notes: vec!["total 2 ms".into()],
            columns: vec!["name".into(), "share".into()],
            rows: vec![
                vec!["conv|a".into(), Cell::Share(0.75)],
                vec!["relu".into(), Cell::Share(0.25)],
            ],
        }]
    }

    #[test]
    fn markdown_is_a_table_with_escaped_pipes() {
        let md = markdown("t", &sections());
        assert!(
            md.contains("| name | share |\n|---|---|\n| conv\\|a | 75.0% |\n| relu | 25.0% |"),
            "{md}"
        );
    }

    #[test]
    fn text_aligns_columns() {
        let t = text("t", &sections());
        assert!(
            t.contains("  name    share\n  conv|a  75.0%\n  relu    25.0%\n"),
            "{t}"
        );
    }

    #[test]
    fn counts_read_well() {
        assert_eq!(human_count(9_999), "9999");
        assert_eq!(human_count(648_226), "648.2K");
        assert_eq!(human_count(4_467_712), "4.47M");
        assert_eq!(human_count(3_000_000_000), "3.00G");
    }
}

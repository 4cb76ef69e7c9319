//! The one HTML renderer of whittle's reports: a self-contained page (inline CSS, inline
//! SVG plots, no script, nothing fetched) that reads the same in any browser.

use std::fmt::Write;

use super::sections::Part;
use super::{Cell, Report};

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:60em}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}\
td:first-child,th:first-child{text-align:left}\
.bar{display:inline-block;height:0.8em;background:#4a7bd0;margin-right:4px}\
figure{margin:0.5em 0}svg{max-width:100%;height:auto}";

/// `report` as a standalone page: title, notes, then every part's plots and table.
pub fn page(report: &Report, parts: &[Part]) -> String {
    let title = escape(&report.title);
    let mut out = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"/><title>{title}</title>\
         <style>{STYLE}</style></head>\n<body><h1>{title}</h1>\n"
    );
    for n in &report.notes {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(n));
    }
    for part in parts {
        let s = &part.section;
        let _ = writeln!(out, "<section><h2>{}</h2>", escape(&s.title));
        for n in &s.notes {
            let _ = writeln!(out, "<p>{}</p>", escape(n));
        }
        for plot in &part.plots {
            let _ = writeln!(
                out,
                "<figure class=\"plot\" id=\"plot-{}\">\n{}\n</figure>",
                plot.id,
                plot.svg.trim_end()
            );
        }
        if !s.columns.is_empty() {
            out.push_str("<table>\n<tr>");
            for c in &s.columns {
                let _ = write!(out, "<th>{}</th>", escape(c));
            }
            out.push_str("</tr>\n");
            for r in &s.rows {
                out.push_str("<tr>");
                for c in r {
                    let _ = write!(out, "<td>{}</td>", cell(c));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table>\n");
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// `x` with the characters HTML gives a meaning escaped.
pub fn escape(x: &str) -> String {
    x.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn cell(c: &Cell) -> String {
    match c {
        Cell::Text(s) => escape(s),
        Cell::Share(f) => format!(
            "<span class=\"bar\" style=\"width:{:.0}px\"></span>{}",
            (f.clamp(0.0, 1.0) * 200.0).round(),
            c.plain()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{render, Format, Report};
    use crate::report::table::tests::sections;

    #[test]
    fn html_is_standalone_with_bars_and_escapes() {
        let report = Report {
            title: "t <1>".into(),
            tables: sections(),
            ..Default::default()
        };
        let h = render(&report, Format::Html).unwrap();
        assert!(h.starts_with("<!DOCTYPE html>") && h.trim_end().ends_with("</html>"));
        assert!(h.contains("<title>t &lt;1&gt;</title>"));
        assert!(h.contains("<td>conv|a</td>"), "{h}");
        assert!(h.contains("style=\"width:150px\"></span>75.0%"), "{h}");
        assert!(!h.contains("<script") && !h.contains("http://") && !h.contains("src="));
    }
}

//! Reading a report page back in tests: the page parsed as XML (the renderer writes
//! well-formed XHTML), its plots' bars and its tables, and the check that the models'
//! table shows the figures of the report's JSON. Shared by the pipeline's and the CLI's
//! report tests (the CLI's include this file by path).
#![allow(dead_code)] // each test crate uses its own share of the helpers

use roxmltree::{Document, Node};
use serde_json::Value as Json;
use whittle_pipeline::report::plot;

/// The page parsed as XML.
pub fn parse(html: &str) -> Document<'_> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    Document::parse_with_options(html, options)
        .unwrap_or_else(|e| panic!("the page is not well-formed: {e}"))
}

/// The element whose `id` is `id`.
pub fn by_id<'a, 'i>(doc: &'a Document<'i>, id: &str) -> Node<'a, 'i> {
    doc.descendants()
        .find(|n| n.attribute("id") == Some(id))
        .unwrap_or_else(|| panic!("no element with id {id}"))
}

/// Rectangles of the plot `id` filled in series `k`'s colour (bars and one legend swatch).
pub fn bars(doc: &Document, id: &str, k: usize) -> usize {
    let svg = by_id(doc, id)
        .children()
        .find(|n| n.has_tag_name("svg"))
        .unwrap_or_else(|| panic!("plot {id} has no <svg>"));
    let colour = plot::colour(k);
    svg.descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some(colour.as_str()))
        .count()
}

/// The rows (cells as text, the header first) of the table in the section headed `title`.
pub fn table(doc: &Document, title: &str) -> Vec<Vec<String>> {
    let section = doc
        .descendants()
        .find(|n| {
            n.has_tag_name("section")
                && n.children()
                    .any(|h| h.has_tag_name("h2") && h.text() == Some(title))
        })
        .unwrap_or_else(|| panic!("no section {title}"));
    let table = section
        .children()
        .find(|n| n.has_tag_name("table"))
        .unwrap();
    table
        .children()
        .filter(|r| r.has_tag_name("tr"))
        .map(|r| {
            r.children()
                .filter(|c| c.has_tag_name("td") || c.has_tag_name("th"))
                .map(|c| {
                    c.descendants()
                        .filter(|t| t.is_text())
                        .filter_map(|t| t.text())
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Checks that the models' table (section `title`) has one row per model of the JSON
/// report `json`, named as there, and that each of `columns` shows the JSON's figure
/// ("-" where it has none): counts exactly, accuracies in percent and SQNR with two
/// decimals, cosine with five. Returns the table.
pub fn models_match_json(
    doc: &Document,
    json: &Json,
    title: &str,
    columns: &[&str],
) -> Vec<Vec<String>> {
    let rows = table(doc, title);
    let models = json["models"].as_array().expect("models in the JSON");
    assert_eq!(rows.len(), models.len() + 1, "{rows:?}");
    for column in columns {
        let c = (rows[0].iter().position(|h| h == column))
            .unwrap_or_else(|| panic!("no column {column} in {:?}", rows[0]));
        for (row, model) in rows[1..].iter().zip(models) {
            assert_eq!(row[0], model["name"].as_str().unwrap());
            let m = &model["metrics"];
            let want = match *column {
                "size (bytes)" => m["size_bytes"].as_u64().map(|v| v.to_string()),
                "parameters" => m["parameters"].as_u64().map(|v| v.to_string()),
                "MACs" => m["macs"].as_u64().map(|v| v.to_string()),
                "top-1 (%)" => m["top1"].as_f64().map(|v| format!("{:.2}", 100.0 * v)),
                "top-5 (%)" => m["top5"].as_f64().map(|v| format!("{:.2}", 100.0 * v)),
                "output SQNR (dB)" => m["sqnr_db"].as_f64().map(|v| format!("{v:.2}")),
                "output cosine" => m["cosine"].as_f64().map(|v| format!("{v:.5}")),
                other => panic!("no rule for column {other}"),
            };
            assert_eq!(row[c], want.unwrap_or_else(|| "-".into()), "{column}");
        }
    }
    rows
}

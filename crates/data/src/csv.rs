//! CSV tables (`csv:FILE`): one sample per line, numeric feature columns and one label column,
//! loaded as float32 features `[N, F]`. The same table serves both splits.
//!
//! Fields are separated by commas (quotes around a field are dropped; a field cannot itself
//! hold a comma), blank lines are skipped, and the file may be gzip-compressed. Options:
//! - `label=NAME` (a header name) or `label=INDEX` (a column number, from 1): the label
//!   column; the last column by default.
//! - `header=true|false`: whether the first line names the columns. By default it does when
//!   `label` is a name or one of its feature fields is not a number.
//!
//! Labels that are all integers are class indices (`max + 1` classes); any other labels are
//! class names, numbered in sorted order.

use std::collections::BTreeMap;
use std::path::Path;

use whittle_ir::TensorData;

use crate::arrays::classes_of;
use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::raw::read_file;
use crate::spec::SpecOptions;

/// One non-blank line of the file: its number (from 1) and its fields.
struct Line<'t> {
    number: usize,
    fields: Vec<&'t str>,
}

/// Loads a CSV table; see the module documentation for the layout and `options`.
pub(crate) fn load_csv(
    path: &Path,
    options: &SpecOptions,
    limit: Option<usize>,
) -> Result<Dataset> {
    let file = path.display().to_string();
    let bytes = read_file(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let at = e.valid_up_to();
        DataError::format(
            &file,
            format!("not UTF-8 text (invalid byte at offset {at})"),
        )
    })?;
    let lines = split_lines(text);
    let first = lines
        .first()
        .ok_or_else(|| DataError::format(&file, "has no lines: the dataset is empty"))?;
    let columns = first.fields.len();
    if columns < 2 {
        return Err(DataError::format(
            &file,
            "needs at least 2 columns (features and a label), line 1 has 1",
        ));
    }
    let header = has_header(first, options)?;
    let names = header.then_some(first.fields.as_slice());
    let label = label_column(options, names, columns)?;
    let rows = &lines[usize::from(header)..];
    if let Some(row) = rows.iter().find(|r| r.fields.len() != columns) {
        return Err(DataError::format(
            &file,
            format!(
                "line {} has {} columns, expected {columns}",
                row.number,
                row.fields.len()
            ),
        ));
    }
    // Classes are counted on every row, whatever the limit.
    let (labels, class_names) = class_labels(rows.iter().map(|r| r.fields[label]));
    let n = limit.map_or(rows.len(), |l| l.min(rows.len()));
    let features = parse_features(&rows[..n], label, names, &file)?;
    let images = TensorData::from_slice(vec![n, columns - 1], &features)?;
    let classes = class_names.as_ref().map_or(classes_of(&labels), Vec::len);
    let data = Dataset::new(images, labels[..n].to_vec(), classes)?;
    match class_names {
        Some(names) => data.with_class_names(names),
        None => Ok(data),
    }
}

/// The non-blank lines of `text`, split into trimmed, unquoted fields.
fn split_lines(text: &str) -> Vec<Line<'_>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| Line {
            number: i + 1,
            fields: line
                .split(',')
                .map(|f| f.trim().trim_matches('"'))
                .collect(),
        })
        .collect()
}

/// Whether the first line is a header: as the `header` option says, else when `label` is a
/// name or a field of the line other than the last (or the `label` column) is not a number.
fn has_header(first: &Line, options: &SpecOptions) -> Result<bool> {
    let given = options.parsed("header", "true or false", |v| v.parse::<bool>().ok())?;
    if let Some(header) = given {
        return Ok(header);
    }
    let label = match options.get("label") {
        Some(label) => match label.parse::<usize>() {
            Ok(index) => index.wrapping_sub(1),
            Err(_) => return Ok(true),
        },
        None => first.fields.len() - 1,
    };
    Ok(first
        .fields
        .iter()
        .enumerate()
        .any(|(i, f)| i != label && f.parse::<f64>().is_err()))
}

/// The index (from 0) of the label column among `columns`, from the `label` option.
fn label_column(options: &SpecOptions, names: Option<&[&str]>, columns: usize) -> Result<usize> {
    let Some(label) = options.get("label") else {
        return Ok(columns - 1);
    };
    if let Some(i) = names.and_then(|n| n.iter().position(|&name| name == label)) {
        return Ok(i);
    }
    match label.parse::<usize>() {
        Ok(i) if (1..=columns).contains(&i) => Ok(i - 1),
        Ok(i) => Err(DataError::Invalid(format!(
            "option label={i}: columns are numbered 1 to {columns}"
        ))),
        Err(_) => Err(DataError::Invalid(format!(
            "option label={label}: no such column (header: {})",
            names.unwrap_or_default().join(", ")
        ))),
    }
}

/// Class indices of the label fields, and the class names when the labels are not all integers
/// (names sorted, then numbered).
fn class_labels<'t>(
    fields: impl Iterator<Item = &'t str> + Clone,
) -> (Vec<i64>, Option<Vec<String>>) {
    let integers: Option<Vec<i64>> = fields.clone().map(|f| f.parse::<i64>().ok()).collect();
    if let Some(labels) = integers {
        return (labels, None);
    }
    let mut classes: BTreeMap<&str, i64> = fields.clone().map(|f| (f, 0)).collect();
    for (index, class) in classes.values_mut().enumerate() {
        *class = index as i64;
    }
    let labels = fields.map(|f| classes[f]).collect();
    (
        labels,
        Some(classes.keys().map(|k| k.to_string()).collect()),
    )
}

/// The feature fields of `rows` (every column but `label`) as numbers, row after row.
fn parse_features(
    rows: &[Line],
    label: usize,
    names: Option<&[&str]>,
    file: &str,
) -> Result<Vec<f32>> {
    let mut values = Vec::with_capacity(rows.len() * rows.first().map_or(0, |r| r.fields.len()));
    for row in rows {
        for (column, field) in row.fields.iter().enumerate().filter(|(c, _)| *c != label) {
            let value = field.parse::<f32>().map_err(|_| {
                let name = names.map_or(String::new(), |n| format!(" ({})", n[column]));
                DataError::format(
                    file,
                    format!(
                        "line {}, column {}{name}: '{field}' is not a number",
                        row.number,
                        column + 1
                    ),
                )
            })?;
            values.push(value);
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Split;
    use crate::spec::load;
    use crate::testutil::scratch_dir;

    /// Writes `text` to a scratch CSV file and returns its spec with `options`.
    fn csv_spec(name: &str, text: &[u8], options: &str) -> String {
        let path = scratch_dir(&format!("csv-{name}")).join(format!("{name}.csv"));
        std::fs::write(&path, text).unwrap();
        format!("csv:{}{options}", path.display())
    }

    fn features(d: &Dataset) -> Vec<f32> {
        d.images.to_vec::<f32>().unwrap()
    }

    #[test]
    fn header_and_class_names_are_detected() {
        let text = b"sepal, petal ,species\n1.5,2,setosa\r\n\n3,4,\"virginica\"\n5,-6e1,setosa\n";
        let d = load(&csv_spec("iris", text, ""), Split::Train, None).unwrap();
        assert_eq!(d.images.dims(), [3, 2]);
        assert_eq!(features(&d), [1.5, 2.0, 3.0, 4.0, 5.0, -60.0]);
        assert_eq!(
            (d.labels.clone(), d.class_names.clone()),
            (
                vec![0, 1, 0],
                vec!["setosa".to_string(), "virginica".into()]
            )
        );
        let two = load(&csv_spec("iris2", text, ""), Split::Test, Some(2)).unwrap();
        assert_eq!((two.labels.clone(), two.num_classes), (vec![0, 1], 2));
    }

    #[test]
    fn integer_labels_and_label_columns_by_name_or_number() {
        let plain = csv_spec("plain", b"1,2,3\n4,5,0\n", "");
        let d = load(&plain, Split::Train, None).unwrap();
        assert_eq!(
            (features(&d), d.labels.clone(), d.num_classes),
            (vec![1.0, 2.0, 4.0, 5.0], vec![3, 0], 4)
        );
        assert!(d.class_names.is_empty());
        let one = load(&plain, Split::Train, Some(1)).unwrap();
        assert_eq!((one.labels.clone(), one.num_classes), (vec![3], 4));
        let first = load(
            &csv_spec("first", b"1,2,3\n0,5,6\n", "?label=1"),
            Split::Train,
            None,
        )
        .unwrap();
        assert_eq!(
            (features(&first), first.labels.clone()),
            (vec![2.0, 3.0, 5.0, 6.0], vec![1, 0])
        );
        let named = csv_spec("named", b"a,kind,b\n1,2,3\n4,0,6\n", "?label=kind");
        let d = load(&named, Split::Train, None).unwrap();
        assert_eq!(
            (features(&d), d.labels.clone()),
            (vec![1.0, 3.0, 4.0, 6.0], vec![2, 0])
        );
        // Numeric column names are only a header when told so.
        let numbered = b"10,20,30\n1,2,1\n";
        let d = load(
            &csv_spec("numbered", numbered, "?header=true"),
            Split::Train,
            None,
        )
        .unwrap();
        assert_eq!((d.len(), d.labels.clone()), (1, vec![1]));
        let d = load(
            &csv_spec("numbered2", numbered, "?header=false"),
            Split::Train,
            None,
        )
        .unwrap();
        assert_eq!((d.len(), d.num_classes), (2, 31));
    }

    #[test]
    fn malformed_tables_name_the_file_line_and_column() {
        let err = |name: &str, text: &[u8], options: &str| {
            load(&csv_spec(name, text, options), Split::Train, None)
                .unwrap_err()
                .to_string()
        };
        let text = err("nan", b"a,b,c\n1,2,0\n3,x,1\n", "");
        assert!(
            text.ends_with("nan.csv: line 3, column 2 (b): 'x' is not a number"),
            "{text}"
        );
        let text = err("nohead", b"1,2,0\n3,,1\n", "");
        assert!(
            text.ends_with("nohead.csv: line 2, column 2: '' is not a number"),
            "{text}"
        );
        let text = err("ragged", b"1,2,0\n\n3,1\n", "");
        assert!(
            text.ends_with("ragged.csv: line 3 has 2 columns, expected 3"),
            "{text}"
        );
        assert!(err("one", b"1\n2\n", "")
            .ends_with("one.csv: needs at least 2 columns (features and a label), line 1 has 1"));
        assert!(
            err("empty", b"\n \n", "").ends_with("empty.csv: has no lines: the dataset is empty")
        );
        assert!(err("head", b"a,b\n", "").ends_with("the dataset is empty"));
        assert!(err("utf", b"1,2\n\xff,1\n", "")
            .ends_with("utf.csv: not UTF-8 text (invalid byte at offset 4)"));
        let text = err("label", b"a,b\n1,2\n", "?label=c");
        assert!(
            text.ends_with("option label=c: no such column (header: a, b)"),
            "{text}"
        );
        assert!(err("index", b"1,2\n", "?label=3")
            .ends_with("option label=3: columns are numbered 1 to 2"));
        assert!(err("neg", b"1,2\n3,-1\n", "").ends_with("label -1 of sample 1 is outside 0..3"));
        assert!(err("missing", b"", "").contains("has no lines"));
        let missing = load(
            &format!("csv:{}", scratch_dir("csv-none").join("no.csv").display()),
            Split::Train,
            None,
        );
        assert!(missing
            .unwrap_err()
            .to_string()
            .contains("no.csv: No such file"));
    }
}

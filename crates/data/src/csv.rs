//! CSV tables (`csv:FILE`): one sample per record, numeric feature columns and one label
//! column of class indices, loaded as float32 features `[N, F]`. The same table serves both
//! splits.
//!
//! Records are parsed by the `csv` crate: fields are separated by commas and may be quoted
//! (a quoted field may hold commas, and a doubled quote stands for one), blanks around
//! fields are trimmed, blank lines are skipped, and the file may be gzip-compressed. Options:
//! - `label=NAME` (a header name) or `label=INDEX` (a column number, from 1): the label
//!   column. By default the column a header names `label` (in any case), else the last one.
//! - `header=true|false`: whether the first record names the columns. By default it does
//!   when one of its fields is not a number (every field of a sample is one).
//!
//! Labels are class indices, integers from 0 (`3` or `3.0`), and there are `max + 1`
//! classes. Any other label (a class name, a fraction, a negative number) is refused,
//! naming its line and column: class names have no order a model could have been trained
//! on, so they must be numbered before.

use std::path::Path;

use csv::{ErrorKind, StringRecord};
use whittle_ir::TensorData;

use crate::arrays::classes_of;
use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::raw::read_file;
use crate::spec::SpecOptions;

/// The header name of the default label column (compared in any case).
const LABEL: &str = "label";

/// Loads a CSV table; see the module documentation for the layout and `options`.
pub(crate) fn load_csv(
    path: &Path,
    options: &SpecOptions,
    limit: Option<usize>,
) -> Result<Dataset> {
    let file = path.display().to_string();
    let bytes = read_file(path)?;
    let mut records = Records::new(&bytes, &file);
    let first = records
        .next()
        .transpose()?
        .ok_or_else(|| DataError::format(&file, "has no lines: the dataset is empty"))?;
    let columns = first.fields.len();
    if columns < 2 {
        return Err(DataError::format(
            &file,
            format!(
                "needs at least 2 columns (features and a label), line {} has 1",
                first.line
            ),
        ));
    }
    let header = has_header(&first.fields, options)?;
    let names: Option<Vec<&str>> = header.then(|| first.fields.iter().collect());
    let label = label_column(options, names.as_deref(), columns)?;
    let table = Table {
        file: &file,
        names: names.as_deref(),
        label,
    };
    let limit = limit.unwrap_or(usize::MAX);
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    let data_records = std::iter::once(Ok(first.clone()))
        .filter(|_| !header)
        .chain(records);
    for record in data_records {
        let record = record?;
        if record.fields.len() != columns {
            return Err(table.fail(format!(
                "line {} has {} columns, expected {columns}",
                record.line,
                record.fields.len()
            )));
        }
        // Classes are counted on every record, whatever the limit.
        labels.push(table.label(&record)?);
        if labels.len() <= limit {
            table.features(&record, &mut features)?;
        }
    }
    let classes = classes_of(&labels);
    labels.truncate(limit);
    let images = TensorData::from_slice(vec![labels.len(), columns - 1], &features)?;
    Dataset::new(images, labels, classes)
}

/// One non-blank record: the line it starts on (from 1) and its trimmed fields.
#[derive(Clone)]
struct Record {
    line: u64,
    fields: StringRecord,
}

/// The non-blank records of a CSV file, with errors naming the file and line.
struct Records<'b> {
    inner: csv::StringRecordsIntoIter<&'b [u8]>,
    bytes: &'b [u8],
    file: &'b str,
    /// A byte offset and the line it is on: lines are counted from the bytes, as the
    /// parser's own count leaves out blank lines.
    seen: (usize, u64),
}

impl<'b> Records<'b> {
    fn new(bytes: &'b [u8], file: &'b str) -> Self {
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(bytes);
        Records {
            inner: reader.into_records(),
            bytes,
            file,
            seen: (0, 1),
        }
    }

    /// The line (from 1) of the record starting at byte `offset` (at or after the last one
    /// asked for), past the empty lines the parser skips before it.
    fn line_at(&mut self, offset: usize) -> u64 {
        let (from, line) = self.seen;
        let mut offset = offset.clamp(from, self.bytes.len());
        while matches!(self.bytes.get(offset), Some(b'\r' | b'\n')) {
            offset += 1;
        }
        let newlines = self.bytes[from..offset].iter().filter(|&&b| b == b'\n');
        self.seen = (offset, line + newlines.count() as u64);
        self.seen.1
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            let fields = match self.inner.next()? {
                Ok(fields) => fields,
                Err(e) => {
                    let line = e.position().map(|p| self.line_at(p.byte() as usize));
                    return Some(Err(DataError::format(self.file, csv_error(&e, line))));
                }
            };
            // A line of blanks is one empty field once trimmed.
            if fields.len() == 1 && fields[0].is_empty() {
                continue;
            }
            let line = self.line_at(fields.position().map_or(0, |p| p.byte() as usize));
            return Some(Ok(Record { line, fields }));
        }
    }
}

/// What a CSV parse error at `line` says.
fn csv_error(e: &csv::Error, line: Option<u64>) -> String {
    match (e.kind(), line) {
        (ErrorKind::Utf8 { err, .. }, Some(line)) => {
            format!("line {line}, column {}: not UTF-8 text", err.field() + 1)
        }
        _ => e.to_string(),
    }
}

/// Whether the first record is a header: as the `header` option says, else when `label` is
/// a name or one of its fields is not a number.
fn has_header(first: &StringRecord, options: &SpecOptions) -> Result<bool> {
    let given = options.parsed("header", "true or false", |v| v.parse::<bool>().ok())?;
    let label_is_name = options
        .get("label")
        .is_some_and(|l| l.parse::<usize>().is_err());
    Ok(given.unwrap_or_else(|| label_is_name || first.iter().any(|f| f.parse::<f64>().is_err())))
}

/// The index (from 0) of the label column among `columns`: the `label` option, else the
/// header's `label` column, else the last.
fn label_column(options: &SpecOptions, names: Option<&[&str]>, columns: usize) -> Result<usize> {
    let named = |label: &str, same: fn(&str, &str) -> bool| {
        names.and_then(|n| n.iter().position(|&name| same(name, label)))
    };
    let Some(label) = options.get("label") else {
        let by_name = named(LABEL, |name, label| name.eq_ignore_ascii_case(label));
        return Ok(by_name.unwrap_or(columns - 1));
    };
    if let Some(i) = named(label, |name, label| name == label) {
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

/// How to read the data records of one table.
struct Table<'t> {
    /// The file, for errors.
    file: &'t str,
    /// The header's column names, if it has one.
    names: Option<&'t [&'t str]>,
    /// The label column, from 0.
    label: usize,
}

impl Table<'_> {
    fn fail(&self, reason: String) -> DataError {
        DataError::format(self.file, reason)
    }

    /// "line L, column C (NAME)".
    fn at(&self, record: &Record, column: usize) -> String {
        let name = self
            .names
            .map_or(String::new(), |n| format!(" ({})", n[column]));
        format!("line {}, column {}{name}", record.line, column + 1)
    }

    /// The class index in the label field of `record`: an integer from 0, written as one
    /// or as a number without fraction.
    fn label(&self, record: &Record) -> Result<i64> {
        let field = &record.fields[self.label];
        let as_float = || {
            let v = field.parse::<f64>().ok()?;
            (v.fract() == 0.0 && v.abs() < 2f64.powi(53)).then_some(v as i64)
        };
        match field.parse::<i64>().ok().or_else(as_float) {
            Some(class) if class >= 0 => Ok(class),
            _ => Err(self.fail(format!(
                "{}: label '{field}' is not a class index (an integer from 0; number class \
                 names 0, 1, ... first)",
                self.at(record, self.label)
            ))),
        }
    }

    /// Appends the feature fields of `record` (every column but the label) as numbers.
    fn features(&self, record: &Record, out: &mut Vec<f32>) -> Result<()> {
        for (column, field) in record.fields.iter().enumerate() {
            if column == self.label {
                continue;
            }
            let value = field.parse::<f32>().map_err(|_| {
                let at = self.at(record, column);
                self.fail(format!("{at}: '{field}' is not a number"))
            })?;
            out.push(value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Split;
    use crate::spec::load;
    use whittle_testkit::{scratch, Scratch};

    /// Writes `text` to a CSV file in a scratch folder; returns the folder (removed when
    /// dropped) and the file's spec with `options`.
    fn csv_spec(name: &str, text: &[u8], options: &str) -> (Scratch, String) {
        let dir = scratch(&format!("csv-{name}"));
        let path = dir.join(format!("{name}.csv"));
        std::fs::write(&path, text).unwrap();
        let spec = format!("csv:{}{options}", path.display());
        (dir, spec)
    }

    /// Loads the training split of `text` as a CSV file with `options`.
    fn load_csv(name: &str, text: &[u8], options: &str) -> crate::Result<Dataset> {
        let (_dir, spec) = csv_spec(name, text, options);
        load(&spec, Split::Train, None)
    }

    fn features(d: &Dataset) -> Vec<f32> {
        d.images.to_vec::<f32>().unwrap()
    }

    fn load_ok(name: &str, text: &[u8], options: &str) -> Dataset {
        load_csv(name, text, options).unwrap()
    }

    #[test]
    fn quoted_fields_hold_commas_and_quotes() {
        let text = b"\"width, cm\",\"say \"\"hi\"\"\" ,kind\n1.5,2,1\r\n\n3,4,\"0\"\n \n5,6e0,2\n";
        let d = load_ok("quoted", text, "?label=kind");
        assert_eq!(d.images.dims(), [3, 2]);
        assert_eq!(features(&d), [1.5, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!((d.labels.clone(), d.num_classes), (vec![1, 0, 2], 3));
        let named = load_ok("quoted2", text, "?label=say \"hi\"");
        assert_eq!(features(&named), [1.5, 1.0, 3.0, 0.0, 5.0, 2.0]);
        assert_eq!(
            (named.labels.clone(), named.num_classes),
            (vec![2, 4, 6], 7)
        );
        let err = load_csv("quoted3", text, "?label=width");
        let err = err.unwrap_err().to_string();
        assert!(
            err.ends_with(
                "option label=width: no such column (header: width, cm, say \"hi\", kind)"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_label_column_is_preferred_over_the_last_column() {
        // `label` in any case, wherever it stands; the last column is a feature.
        let text = b"Label,a,b\n2,0.5,7\n0,1.5,9\n";
        let d = load_ok("labelcol", text, "");
        assert_eq!(
            (features(&d), d.labels.clone(), d.num_classes),
            (vec![0.5, 7.0, 1.5, 9.0], vec![2, 0], 3)
        );
        // Without a header, or without such a column, the last column is the label.
        let d = load_ok("lastcol", b"x,y,class\n0.5,7,1\n", "");
        assert_eq!((features(&d), d.labels.clone()), (vec![0.5, 7.0], vec![1]));
        // The option wins over the name.
        let d = load_ok("option", text, "?label=3");
        assert_eq!(
            (features(&d), d.labels.clone()),
            (vec![2.0, 0.5, 0.0, 1.5], vec![7, 9])
        );
    }

    #[test]
    fn integer_labels_and_label_columns_by_name_or_number() {
        let (_dir, plain) = csv_spec("plain", b"1,2,3\n4,5,0.0\n", "");
        let d = load(&plain, Split::Train, None).unwrap();
        assert_eq!(
            (features(&d), d.labels.clone(), d.num_classes),
            (vec![1.0, 2.0, 4.0, 5.0], vec![3, 0], 4)
        );
        assert!(d.class_names.is_empty());
        let one = load(&plain, Split::Train, Some(1)).unwrap();
        assert_eq!(
            (features(&one), one.labels.clone(), one.num_classes),
            (vec![1.0, 2.0], vec![3], 4),
            "classes counted on every record"
        );
        let first = load_ok("first", b"1,2,3\n0,5,6\n", "?label=1");
        assert_eq!(
            (features(&first), first.labels.clone()),
            (vec![2.0, 3.0, 5.0, 6.0], vec![1, 0])
        );
        let named = load_ok("named", b"a,kind,b\n1,2,3\n4,0,6\n", "?label=kind");
        assert_eq!(
            (features(&named), named.labels.clone()),
            (vec![1.0, 3.0, 4.0, 6.0], vec![2, 0])
        );
        // Numeric column names are only a header when told so.
        let numbered = b"10,20,30\n1,2,1\n";
        let d = load_ok("numbered", numbered, "?header=true");
        assert_eq!((d.len(), d.labels.clone()), (1, vec![1]));
        let d = load_ok("numbered2", numbered, "?header=false");
        assert_eq!((d.len(), d.num_classes), (2, 31));
    }

    #[test]
    fn labels_that_are_not_class_indices_are_refused() {
        let err = |name: &str, text: &[u8], options: &str| {
            load_csv(name, text, options).unwrap_err().to_string()
        };
        let hint = "is not a class index (an integer from 0; number class names 0, 1, ... first)";
        // Class names were once numbered in sorted order: silently wrong for any model.
        let text = err(
            "names",
            b"sepal,petal,species\n1.5,2,setosa\n3,4,virginica\n",
            "",
        );
        assert!(
            text.ends_with(&format!(
                "names.csv: line 2, column 3 (species): label 'setosa' {hint}"
            )),
            "{text}"
        );
        let text = err("fraction", b"1,2,0\n3,4,1.5\n", "");
        assert!(
            text.ends_with(&format!(
                "fraction.csv: line 2, column 3: label '1.5' {hint}"
            )),
            "{text}"
        );
        let text = err("neg", b"1,2\n3,-1\n", "");
        assert!(
            text.ends_with(&format!("neg.csv: line 2, column 2: label '-1' {hint}")),
            "{text}"
        );
        let text = err("one-bad", b"a,label\n1,0\n2,1\n3,x2\n", "");
        assert!(
            text.ends_with(&format!("line 4, column 2 (label): label 'x2' {hint}")),
            "{text}"
        );
    }

    #[test]
    fn malformed_tables_name_the_file_line_and_column() {
        let err = |name: &str, text: &[u8], options: &str| {
            load_csv(name, text, options).unwrap_err().to_string()
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
        let text = err("comma", b"a,b,c\n1,\"2,5\",0\n", "");
        assert!(
            text.ends_with("comma.csv: line 2, column 2 (b): '2,5' is not a number"),
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
        let text = err("utf", b"1,2\n\xff,1\n", "");
        assert!(
            text.ends_with("utf.csv: line 2, column 1: not UTF-8 text"),
            "{text}"
        );
        let text = err("label", b"a,b\n1,2\n", "?label=c");
        assert!(
            text.ends_with("option label=c: no such column (header: a, b)"),
            "{text}"
        );
        assert!(err("index", b"1,2\n", "?label=3")
            .ends_with("option label=3: columns are numbered 1 to 2"));
        assert!(err("missing", b"", "").contains("has no lines"));
        let none = scratch("csv-none");
        let missing = load(
            &format!("csv:{}", none.join("no.csv").display()),
            Split::Train,
            None,
        );
        assert!(missing
            .unwrap_err()
            .to_string()
            .contains("no.csv: No such file"));
    }
}

//! Dataset specs: `SCHEME:LOCATION[?KEY=VALUE&...]`, e.g. `mnist:DIR`, `npz:FILE.npz`,
//! `csv:FILE?label=species` or `images:DIR?size=32x32&channels=3`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::arrays::{load_npy, load_npz, read_npz};
use crate::csv::load_csv;
use crate::dataset::{Dataset, Split};
use crate::error::{DataError, Result};
use crate::images::{load_images, requested, Requested};
use crate::mnist::load_idx;
use whittle_ir::TensorData;

/// The accepted spec forms, for error messages and help texts.
pub const SPEC_FORMS: &str = "mnist:DIR, fashion-mnist:DIR, npy:X.npy,Y.npy, npz:FILE.npz, \
     csv:FILE[?label=COLUMN&header=true|false], images:DIR[?size=HxW&channels=1|3]";

/// The scheme of unlabelled named input arrays: `feeds:FILE.npz` holds one array per model
/// input (named after it, samples on the first axis, dtype kept), for models with several
/// inputs or integer inputs. [`load`] refuses it (it has no labels); [`load_feeds`] reads it.
pub const FEEDS_PREFIX: &str = "feeds:";

/// The archive of a `feeds:FILE.npz` spec, `None` for the labelled schemes.
pub fn feeds_archive(spec: &str) -> Option<&Path> {
    spec.strip_prefix(FEEDS_PREFIX).map(Path::new)
}

/// The arrays of a `feeds:FILE.npz` spec by name, in name order. Errors name the file.
pub fn load_feeds(spec: &str) -> Result<Vec<(String, TensorData)>> {
    let Some(file) = feeds_archive(spec) else {
        return Err(DataError::spec(
            spec,
            format!("not a {FEEDS_PREFIX}FILE.npz spec"),
        ));
    };
    let mut arrays = read_npz(file)?;
    arrays.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(arrays)
}

/// Loads the `split` of the dataset named by `spec`, keeping at most `limit` samples.
///
/// - `mnist:DIR`, `fashion-mnist:DIR`: IDX files (raw or gzip), float32 `[N, 1, 28, 28]` in `[0, 1]`.
/// - `npy:X.npy,Y.npy`: X any numeric array (samples on the first axis) as float32, Y integer
///   labels with `max(Y) + 1` classes; the same pair serves both splits.
/// - `npz:FILE.npz`: arrays `x_train`/`y_train` or `x_test`/`y_test` by split, else `x`/`y`.
/// - `csv:FILE`: numeric feature columns and a label column (see [`crate::csv`]); both splits.
/// - `images:DIR`: one subfolder of PNG/JPEG files per class (see [`crate::images`]).
///
/// Errors name the spec and, where one is at fault, the file.
pub fn load(spec: &str, split: Split, limit: Option<usize>) -> Result<Dataset> {
    load_scheme(spec, split, limit).map_err(|e| DataError::spec(spec, e.to_string()))
}

/// The sample shape an `images:` spec asks for through its `size` and `channels` options
/// (checked against [`crate::images::MAX_PIXELS`]), without reading any file; `None` for the
/// other schemes. Lets a caller that knows the model's input refuse a mismatched size before
/// loading.
pub fn requested_image_shape(spec: &str) -> Result<Option<Requested>> {
    let parsed = Spec::parse(spec).and_then(|s| match s.scheme {
        "images" => requested(&s.options.only(IMAGE_OPTIONS)?).map(Some),
        _ => Ok(None),
    });
    parsed.map_err(|e| DataError::spec(spec, e.to_string()))
}

/// The options an `images:` spec takes.
const IMAGE_OPTIONS: &[&str] = &["size", "channels"];

/// [`load`] without the spec prefix on errors.
fn load_scheme(spec: &str, split: Split, limit: Option<usize>) -> Result<Dataset> {
    let Spec {
        scheme,
        location,
        options,
    } = Spec::parse(spec)?;
    let path = Path::new(location);
    match scheme {
        "mnist" | "fashion-mnist" => options.only(&[]).and_then(|_| load_idx(path, split, limit)),
        "npy" => options.only(&[]).and_then(|_| load_npy(location, limit)),
        "npz" => options.only(&[]).and_then(|_| load_npz(path, split, limit)),
        "csv" => load_csv(path, &options.only(&["label", "header"])?, limit),
        "images" => load_images(path, split, &options.only(IMAGE_OPTIONS)?, limit),
        "feeds" => Err(DataError::Invalid(
            "feeds:FILE.npz holds input arrays without labels; a labelled dataset is needed here"
                .into(),
        )),
        _ => Err(unknown_scheme()),
    }
}

/// The error for a spec without a known scheme.
fn unknown_scheme() -> DataError {
    DataError::Invalid(format!(
        "unknown dataset scheme; valid forms are {SPEC_FORMS}"
    ))
}

/// A dataset spec split into its parts (the scheme is not checked against the known ones).
#[derive(Debug)]
pub struct Spec<'s> {
    /// What comes before the first `:`, e.g. `csv`.
    pub scheme: &'s str,
    /// The file or folder (for `npy`, two files), between the `:` and the last `?`.
    pub location: &'s str,
    /// The `KEY=VALUE` options after the last `?`.
    options: SpecOptions,
}

impl<'s> Spec<'s> {
    /// Splits `SCHEME:LOCATION[?KEY=VALUE&...]`; fails without a `:`, on an option that is
    /// not `KEY=VALUE` and on a key given twice.
    pub fn parse(spec: &'s str) -> Result<Self> {
        let (scheme, rest) = spec.split_once(':').ok_or_else(unknown_scheme)?;
        let (location, options) = SpecOptions::parse(rest)?;
        Ok(Spec {
            scheme,
            location,
            options,
        })
    }

    /// The value of option `key`, if given.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key)
    }
}

/// The `KEY=VALUE` options after the `?` of a spec.
#[derive(Debug, Default)]
pub(crate) struct SpecOptions {
    values: BTreeMap<String, String>,
}

impl SpecOptions {
    /// Splits `LOCATION?K=V&K=V` into the location and its options (each key at most once).
    fn parse(text: &str) -> Result<(&str, SpecOptions)> {
        let Some((location, query)) = text.rsplit_once('?') else {
            return Ok((text, SpecOptions::default()));
        };
        let mut values = BTreeMap::new();
        for pair in query.split('&') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| DataError::Invalid(format!("option '{pair}' is not KEY=VALUE")))?;
            if values.insert(key.to_string(), value.to_string()).is_some() {
                return Err(DataError::Invalid(format!("option '{key}' given twice")));
            }
        }
        Ok((location, SpecOptions { values }))
    }

    /// These options, when every key is one of `allowed`.
    fn only(self, allowed: &[&str]) -> Result<Self> {
        match self.values.keys().find(|k| !allowed.contains(&k.as_str())) {
            None => Ok(self),
            Some(key) if allowed.is_empty() => Err(DataError::Invalid(format!(
                "unknown option '{key}': this scheme takes none"
            ))),
            Some(key) => Err(DataError::Invalid(format!(
                "unknown option '{key}' (valid: {})",
                allowed.join(", ")
            ))),
        }
    }

    /// The value of option `key`, if given.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The value of option `key` parsed by `parse`, or `None` when absent; `expected`
    /// describes valid values in the error.
    pub(crate) fn parsed<T>(
        &self,
        key: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>> {
        self.get(key)
            .map(|v| {
                parse(v).ok_or_else(|| {
                    DataError::Invalid(format!("option {key}={v}: expected {expected}"))
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_err(spec: &str) -> String {
        load(spec, Split::Test, None).unwrap_err().to_string()
    }

    #[test]
    fn unknown_schemes_list_the_valid_forms() {
        let unknown = load_err("cifar:/tmp");
        assert_eq!(
            unknown,
            format!("dataset 'cifar:/tmp': unknown dataset scheme; valid forms are {SPEC_FORMS}")
        );
        assert!(load_err("mnist").contains("unknown dataset scheme"));
        let missing = load_err("mnist:/no/such/dir");
        assert_eq!(
            missing,
            "dataset 'mnist:/no/such/dir': directory /no/such/dir not found"
        );
    }

    #[test]
    fn options_are_parsed_and_checked_per_scheme() {
        let (location, options) = SpecOptions::parse("a/b.csv?label=kind&header=true").unwrap();
        assert_eq!(location, "a/b.csv");
        assert_eq!(
            (options.get("label"), options.get("x")),
            (Some("kind"), None)
        );
        let number = |v: &str| v.parse::<u32>().ok();
        let options = options.only(&["label", "header"]).unwrap();
        assert!(options
            .parsed("header", "a number", number)
            .unwrap_err()
            .to_string()
            .contains("option header=true: expected a number"));
        assert_eq!(options.parsed("none", "a number", number).unwrap(), None);
        assert!(load_err("csv:x.csv?lable=a")
            .ends_with("unknown option 'lable' (valid: label, header)"));
        assert!(
            load_err("mnist:/x?size=3").ends_with("unknown option 'size': this scheme takes none")
        );
        assert!(load_err("csv:x.csv?label").ends_with("option 'label' is not KEY=VALUE"));
        assert!(load_err("csv:x.csv?label=a&label=b").ends_with("option 'label' given twice"));
    }
}

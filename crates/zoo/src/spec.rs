//! Model specs: `NAME` or `NAME:key=value,key=value`, checked against each model's
//! declared options ([`ModelInfo`]), with defaults filled in.

use std::collections::BTreeMap;

use whittle_ir::Model;

use crate::error::{Result, ZooError};

/// One option a model accepts.
#[derive(Clone, Copy, Debug)]
pub struct OptionInfo {
    /// The key, as written in a spec.
    pub key: &'static str,
    /// The value used when the spec does not give one.
    pub default: &'static str,
    /// What the option changes.
    pub help: &'static str,
}

/// A model of the zoo: its name, what it is and the options it takes besides
/// [`COMMON_OPTIONS`].
#[derive(Clone, Copy, Debug)]
pub struct ModelInfo {
    /// The name used in specs.
    pub name: &'static str,
    /// One line on the architecture.
    pub summary: &'static str,
    /// Options of this model only.
    pub options: &'static [OptionInfo],
    /// Builds the model from resolved options.
    pub(crate) build: fn(&Options) -> Result<Model>,
}

/// Options every model takes.
pub const COMMON_OPTIONS: &[OptionInfo] = &[
    OptionInfo {
        key: "input",
        default: "1x28x28",
        help: "input channels x height x width",
    },
    OptionInfo {
        key: "classes",
        default: "10",
        help: "number of classes (width of the logits)",
    },
    OptionInfo {
        key: "seed",
        default: "0",
        help: "seed of the weight initialisation",
    },
];

impl ModelInfo {
    /// Every option of this model: its own, then the common ones.
    pub fn all_options(&self) -> impl Iterator<Item = &'static OptionInfo> {
        self.options.iter().chain(COMMON_OPTIONS)
    }
}

/// The resolved options of one model: every declared key with its given or default value.
#[derive(Clone, Debug)]
pub struct Options {
    model: &'static str,
    values: BTreeMap<&'static str, String>,
}

impl Options {
    /// Resolves `text` (`key=value,key=value`, possibly empty) against `info`'s options.
    pub fn parse(info: &ModelInfo, text: &str) -> Result<Self> {
        let mut values: BTreeMap<&'static str, String> = info
            .all_options()
            .map(|o| (o.key, o.default.to_string()))
            .collect();
        let mut given = Vec::new();
        for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
            let bad = |message: String| ZooError::BadOption {
                model: info.name.to_string(),
                message,
            };
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("option '{pair}' must be key=value")))?;
            let key = key.trim();
            let Some(info_opt) = info.all_options().find(|o| o.key == key) else {
                let keys: Vec<&str> = info.all_options().map(|o| o.key).collect();
                return Err(bad(format!(
                    "unknown option '{key}'; options are: {}",
                    keys.join(", ")
                )));
            };
            if given.contains(&key) {
                return Err(bad(format!("option '{key}' is given twice")));
            }
            given.push(info_opt.key);
            values.insert(info_opt.key, value.trim().to_string());
        }
        Ok(Options {
            model: info.name,
            values,
        })
    }

    /// The model these options belong to.
    pub fn model(&self) -> &'static str {
        self.model
    }

    /// The full spec, every option spelled out: `NAME:key=value,...` in key order. An
    /// option left empty is left out: options added to a model later default to empty, so
    /// the specs (and bytes) of the models built before them stay the same.
    pub fn canonical(&self) -> String {
        let pairs: Vec<String> = self
            .values
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{}:{}", self.model, pairs.join(","))
    }

    fn raw(&self, key: &str) -> Result<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| self.bad(key, "is not an option of this model"))
    }

    /// The error for option `key`, naming its value and `reason`.
    pub(crate) fn bad(&self, key: &str, reason: &str) -> ZooError {
        let value = self.values.get(key).map_or("", String::as_str);
        ZooError::BadOption {
            model: self.model.to_string(),
            message: format!("option '{key}' = '{value}' {reason}"),
        }
    }

    /// The value as written (or its default), for options with a text form.
    pub fn text(&self, key: &str) -> Result<&str> {
        self.raw(key)
    }

    /// A whole number of at least 1.
    pub fn positive(&self, key: &str) -> Result<usize> {
        parse_positive(self.raw(key)?).ok_or_else(|| self.bad(key, "must be a whole number ≥ 1"))
    }

    /// A whole number of at least 0 (as u64, e.g. a seed).
    pub fn number(&self, key: &str) -> Result<u64> {
        self.raw(key)?
            .parse()
            .map_err(|_| self.bad(key, "must be a whole number ≥ 0"))
    }

    /// A real number in `[low, high)`.
    pub fn real_in(&self, key: &str, low: f32, high: f32) -> Result<f32> {
        let v: f32 = self
            .raw(key)?
            .parse()
            .map_err(|_| self.bad(key, "must be a number"))?;
        if !(low..high).contains(&v) {
            return Err(self.bad(key, &format!("must be in [{low}, {high})")));
        }
        Ok(v)
    }

    /// Whole numbers ≥ 1 joined by `-`, e.g. `32-64-128`.
    pub fn sizes(&self, key: &str) -> Result<Vec<usize>> {
        self.raw(key)?
            .split('-')
            .map(parse_positive)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.bad(key, "must be whole numbers ≥ 1 joined by '-', e.g. 32-64"))
    }

    /// The `input` option: `CxHxW`, three whole numbers ≥ 1.
    pub fn input_shape(&self) -> Result<[usize; 3]> {
        let dims: Option<Vec<usize>> = self.raw("input")?.split('x').map(parse_positive).collect();
        dims.and_then(|d| <[usize; 3]>::try_from(d).ok())
            .ok_or_else(|| self.bad("input", "must be CxHxW, e.g. 1x28x28"))
    }
}

fn parse_positive(s: &str) -> Option<usize> {
    s.trim().parse().ok().filter(|&n| n >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: ModelInfo = ModelInfo {
        name: "toy",
        summary: "a test model",
        options: &[OptionInfo {
            key: "widths",
            default: "8-16",
            help: "stage widths",
        }],
        build: |_| Err(ZooError::Build("not built in tests".into())),
    };

    #[test]
    fn defaults_fill_in_and_given_values_win() {
        let o = Options::parse(&INFO, "widths=4-5-6, seed=7").unwrap();
        assert_eq!(o.sizes("widths").unwrap(), vec![4, 5, 6]);
        assert_eq!(o.number("seed").unwrap(), 7);
        assert_eq!(o.positive("classes").unwrap(), 10);
        assert_eq!(o.input_shape().unwrap(), [1, 28, 28]);
        assert_eq!(
            o.canonical(),
            "toy:classes=10,input=1x28x28,seed=7,widths=4-5-6"
        );
    }

    #[test]
    fn errors_name_the_model_and_option() {
        let err = |text: &str| Options::parse(&INFO, text).unwrap_err().to_string();
        let e = err("depth=3");
        assert!(
            e.contains("toy") && e.contains("'depth'") && e.contains("widths"),
            "{e}"
        );
        assert!(err("seed=1,seed=2").contains("given twice"));
        assert!(err("widths").contains("key=value"));
        let o = Options::parse(&INFO, "widths=8-x,input=3x32,classes=0").unwrap();
        assert!(o.sizes("widths").unwrap_err().to_string().contains("'8-x'"));
        assert!(o.input_shape().unwrap_err().to_string().contains("CxHxW"));
        assert!(o
            .positive("classes")
            .unwrap_err()
            .to_string()
            .contains("≥ 1"));
        let o = Options::parse(&INFO, "seed=0.5").unwrap();
        assert!(o
            .real_in("seed", 0.0, 0.4)
            .unwrap_err()
            .to_string()
            .contains("[0, 0.4)"));
    }
}

//! Where models and data come from: [`ModelSource`] (an ONNX file or `zoo:NAME[:opts]`)
//! and [`DataSource`] (any dataset SPEC of [`whittle_data::spec`], `feeds:FILE.npz`
//! included), checked against the model's inputs before anything is read.

use std::fmt;
use std::path::{Path, PathBuf};

use whittle_data::{Dataset, Split};
use whittle_exec::{InputSpec, Value};
use whittle_ir::{Model, TensorData};

use crate::error::{Context, PipelineError, Result};
use crate::feed::{self, Feed};
use crate::refuse;

/// A model to start from: an ONNX file, or a model of the zoo built from its spec.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", from = "String")]
pub enum ModelSource {
    /// An ONNX file.
    File(PathBuf),
    /// A zoo spec, `zoo:NAME[:key=value,...]` (kept with its prefix).
    Zoo(String),
}

impl ModelSource {
    /// `zoo:...` names a zoo model, anything else a file.
    pub fn parse(text: &str) -> Self {
        if text.starts_with(whittle_zoo::PREFIX) {
            ModelSource::Zoo(text.to_string())
        } else {
            ModelSource::File(PathBuf::from(text))
        }
    }

    /// The file, when the source is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ModelSource::File(p) => Some(p),
            ModelSource::Zoo(_) => None,
        }
    }

    /// Loads and validates the file, or builds the zoo model.
    pub fn load(&self) -> Result<Model> {
        match self {
            ModelSource::Zoo(spec) => whittle_zoo::build(spec).context(|| spec.clone()),
            ModelSource::File(path) => {
                let model = Model::load(path).context(|| format!("loading {}", path.display()))?;
                whittle_ir::validate(&model).context(|| path.display().to_string())?;
                Ok(model)
            }
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::File(p) => write!(f, "{}", p.display()),
            ModelSource::Zoo(spec) => f.write_str(spec),
        }
    }
}

impl From<ModelSource> for String {
    fn from(source: ModelSource) -> String {
        source.to_string()
    }
}

impl From<String> for ModelSource {
    fn from(text: String) -> Self {
        ModelSource::parse(&text)
    }
}

/// Data for a model: a labelled dataset SPEC (`mnist:DIR`, `npy:X.npy,Y.npy`, `images:DIR`,
/// ... see [`whittle_data::spec`]) that feeds a model's single input, or `feeds:FILE.npz`
/// with one array per input. Errors name the data by its role (default "the data"; the CLI
/// sets its option's name) and its spec.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataSource {
    /// The SPEC.
    pub spec: String,
    /// What the data is for, in errors ("the calibration data", `--calib-data`).
    #[serde(skip, default = "default_role")]
    pub role: String,
}

fn default_role() -> String {
    "the data".into()
}

impl DataSource {
    /// The data named by `spec`, with the default role.
    pub fn new(spec: impl Into<String>) -> Self {
        DataSource {
            spec: spec.into(),
            role: default_role(),
        }
    }

    /// The same data, named `role` in errors.
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.role = role.into();
        self
    }

    /// Whether the spec is a labelled dataset (not `feeds:`).
    pub fn is_labelled(&self) -> bool {
        whittle_data::spec::feeds_archive(&self.spec).is_none()
    }

    /// Refuses, before any file is read, data that cannot feed `inputs`: a dataset SPEC for
    /// a model with several inputs, or an `images:` SPEC whose `size`/`channels` options
    /// disagree with the fixed dims of the model's `[N, C, H, W]` input.
    pub fn check_inputs(&self, inputs: &[InputSpec]) -> Result<()> {
        if self.is_labelled() {
            check_image_shape(&self.single_input(inputs)?, &self.spec, &self.role)?;
        }
        Ok(())
    }

    /// The labelled `split` (at most `limit` samples) for a model taking `inputs`, checked
    /// before loading ([`DataSource::check_inputs`]) and after (the first sample against
    /// the input's declared type and shape).
    pub fn load(
        &self,
        inputs: &[InputSpec],
        split: Split,
        limit: Option<usize>,
    ) -> Result<Dataset> {
        if !self.is_labelled() {
            refuse!(
                "{} needs a labelled dataset; feeds:FILE.npz has no labels",
                self.role
            );
        }
        let input = self.single_input(inputs)?;
        check_image_shape(&input, &self.spec, &self.role)?;
        let data = whittle_data::spec::load(&self.spec, split, limit)
            .context(|| format!("loading {} {}", self.role, self.spec))?;
        let first = dataset_batches(&input.name, &data.images, 1, 1)?;
        feed::check_fits(&[input], &first, &self.role)?;
        Ok(data)
    }

    /// Batches of at most [`feed::BATCH`] samples (at most `limit` in all) for a model
    /// taking `inputs`: the images of `split` of a dataset SPEC, or the arrays of a
    /// `feeds:` archive (named after the inputs, one per input), checked against the inputs.
    pub fn feeds(&self, inputs: &[InputSpec], split: Split, limit: usize) -> Result<Vec<Feed>> {
        let feeds = match whittle_data::spec::feeds_archive(&self.spec) {
            Some(file) => self.archive_feeds(inputs, file, limit)?,
            None => {
                let input = self.single_input(inputs)?;
                check_image_shape(&input, &self.spec, &self.role)?;
                let data = whittle_data::spec::load(&self.spec, split, Some(limit))
                    .context(|| format!("loading {} {}", self.role, self.spec))?;
                dataset_batches(&input.name, &data.images, limit, feed::BATCH)?
            }
        };
        feed::check_fits(inputs, &feeds, &self.role)?;
        Ok(feeds)
    }

    /// The model's only input (a dataset SPEC feeds one input).
    fn single_input(&self, inputs: &[InputSpec]) -> Result<InputSpec> {
        match inputs {
            [one] => Ok(one.clone()),
            many => {
                let names: Vec<&str> = many.iter().map(|i| i.name.as_str()).collect();
                refuse!(
                    "{} SPEC feeds one input, but the model has {} ({}); give feeds:FILE.npz \
                     with one array per input",
                    self.role,
                    many.len(),
                    names.join(", ")
                )
            }
        }
    }

    /// The arrays of `file` as batches for `inputs`: one array per input, no other.
    fn archive_feeds(&self, inputs: &[InputSpec], file: &Path, limit: usize) -> Result<Vec<Feed>> {
        let at = format!("{} feeds:{}", self.role, file.display());
        // The message alone: the data error already names the file and its cause.
        let arrays = whittle_data::spec::load_feeds(&self.spec)
            .map_err(|e| PipelineError::invalid(format!("loading {at}"), e.to_string()))?;
        let held: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        if let Some(extra) = held.iter().find(|h| !names.contains(h)) {
            return Err(PipelineError::invalid(
                &at,
                format!(
                    "array '{extra}' is not a model input (inputs: {})",
                    names.join(", ")
                ),
            ));
        }
        let mut values = Vec::with_capacity(inputs.len());
        for input in inputs {
            let Some((_, data)) = arrays.iter().find(|(n, _)| *n == input.name) else {
                return Err(PipelineError::invalid(
                    &at,
                    format!(
                        "no array for model input '{}' (it holds {held:?})",
                        input.name
                    ),
                ));
            };
            let value =
                Value::try_from(data).context(|| format!("{at}: array '{}'", input.name))?;
            values.push((input.name.clone(), value));
        }
        let batches = feed::batches(&values, limit, feed::BATCH).context(|| at.clone())?;
        if batches.is_empty() {
            return Err(PipelineError::invalid(at, "no samples"));
        }
        Ok(batches)
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

/// Rows of `images` in batches of `batch`, at most `limit` rows, feeding `input`.
fn dataset_batches(
    input: &str,
    images: &TensorData,
    limit: usize,
    batch: usize,
) -> Result<Vec<Feed>> {
    let value = Value::try_from(images).context(|| format!("feeding input '{input}'"))?;
    feed::batches(&[(input.to_string(), value)], limit, batch)
}

/// Refuses an `images:` SPEC whose `size` or `channels` option disagrees with the fixed
/// dims of `input` (`[N, C, H, W]`), naming both, before any image is read; images from a
/// SPEC that asks for neither are checked once loaded.
fn check_image_shape(input: &InputSpec, spec: &str, role: &str) -> Result<()> {
    let requested = whittle_data::spec::requested_image_shape(spec)
        .map_err(|e| PipelineError::invalid(role, e.to_string()))?;
    let (Some(requested), Some(dims)) = (requested, input.dims.as_deref()) else {
        return Ok(());
    };
    let shown: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".into(), |d| d.to_string()))
        .collect();
    let takes = format!(
        "the model's input '{}' takes [{}]",
        input.name,
        shown.join(", ")
    );
    let [_, c, h, w] = dims else {
        refuse!("{role} {spec} gives images of shape [N, C, H, W], but {takes}");
    };
    let differs = |want: Option<usize>, have: &Option<usize>| {
        want.zip(*have).is_some_and(|(want, have)| want != have)
    };
    let (height, width) = requested.size.unzip();
    if differs(height, h) || differs(width, w) || differs(requested.channels, c) {
        let (hw, ch) = (
            requested.size.map(|(h, w)| format!("size {h}x{w}")),
            requested.channels.map(|c| format!("{c} channels")),
        );
        let asked: Vec<String> = hw.into_iter().chain(ch).collect();
        refuse!(
            "{role} {spec} asks for images of {}, but {takes}",
            asked.join(" and ")
        );
    }
    Ok(())
}

//! Dataset SPECs (`mnist:DIR`, `npy:X.npy,Y.npy`, ...) turned into feeds for a model's
//! single input: calibration batches and labelled evaluation sets. Multi-input models take
//! `feeds:FILE.npz` instead (see [`super::feeds`]).

use anyhow::{bail, Context};
use whittle_data::{Dataset, Split};
use whittle_exec::executor::check_input;
use whittle_exec::{InputSpec, Value};
use whittle_ir::TensorData;
use whittle_passes::quantize::sensitivity::EvalSet;
use whittle_pipeline::DataSource;

use super::feeds::{self, Feed};

/// The model's only input (dataset SPECs feed one input).
pub(crate) fn single_input(inputs: &[InputSpec], flag: &str) -> anyhow::Result<InputSpec> {
    match inputs {
        [one] => Ok(one.clone()),
        many => {
            let names: Vec<&str> = many.iter().map(|i| i.name.as_str()).collect();
            bail!(
                "{flag} SPEC feeds one input, but the model has {} ({}); give feeds:FILE.npz \
                 with one array per input",
                many.len(),
                names.join(", ")
            )
        }
    }
}

/// Rows of `images` in batches of [`feeds::BATCH`], at most `limit` rows, feeding `input`.
pub(crate) fn dataset_batches(
    input: &str,
    images: &TensorData,
    limit: usize,
) -> anyhow::Result<Vec<Feed>> {
    feeds::feed_batches(&[(input.to_string(), Value::try_from(images)?)], limit)
}

/// Checks the first batch against the input's declared type and shape.
pub(crate) fn check_batch(input: &InputSpec, batches: &[Feed], flag: &str) -> anyhow::Result<()> {
    let Some(value) = batches.first().and_then(|b| b.get(&input.name)) else {
        bail!("{flag} is empty");
    };
    check_input(input, value).with_context(|| format!("{flag} does not fit the model"))?;
    Ok(())
}

/// Samples per evaluation run.
const EVAL_BATCH: usize = 256;

/// Labelled eval data (the test split of `spec`, given as option `flag`) feeding the
/// model's single input.
pub(crate) fn eval_set(
    inputs: &[InputSpec],
    spec: &str,
    limit: Option<usize>,
    flag: &str,
) -> anyhow::Result<EvalSet> {
    let data: Dataset = DataSource::new(spec)
        .with_role(flag)
        .load(inputs, Split::Test, limit)?;
    let input = single_input(inputs, flag)?;
    Ok(EvalSet::from_rows(
        &input.name,
        &data.images,
        Some(data.labels),
        EVAL_BATCH,
    )?)
}

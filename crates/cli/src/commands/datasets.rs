//! Dataset SPECs (`mnist:DIR`, `npy:X.npy,Y.npy`, ...) turned into feeds for a model's
//! single input: calibration batches and labelled evaluation sets. Multi-input models take
//! `feeds:FILE.npz` instead (see [`super::feeds`]).

use anyhow::{bail, Context};
use whittle_data::{Dataset, Split};
use whittle_exec::executor::check_input;
use whittle_exec::{InputSpec, Value};
use whittle_ir::TensorData;
use whittle_passes::quantize::sensitivity::EvalSet;

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

/// Refuses an `images:` SPEC whose `size` or `channels` option disagrees with the fixed
/// dims of `input` (`[N, C, H, W]`), naming both, before any image is read; images from a
/// SPEC that asks for neither are checked once loaded.
pub(crate) fn check_image_shape(input: &InputSpec, spec: &str, flag: &str) -> anyhow::Result<()> {
    let (Some(requested), Some(dims)) = (
        whittle_data::spec::requested_image_shape(spec)?,
        input.dims.as_deref(),
    ) else {
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
        bail!("{flag} {spec} gives images of shape [N, C, H, W], but {takes}");
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
        bail!(
            "{flag} {spec} asks for images of {}, but {takes}",
            asked.join(" and ")
        );
    }
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
    if feeds::archive(spec).is_some() {
        bail!("{flag} needs a labelled dataset; feeds:FILE.npz has no labels");
    }
    let input = single_input(inputs, flag)?;
    check_image_shape(&input, spec, flag)?;
    let data: Dataset = whittle_data::spec::load(spec, Split::Test, limit)
        .with_context(|| format!("loading {flag} {spec}"))?;
    check_batch(
        &input,
        &dataset_batches(&input.name, &data.images, 1)?,
        flag,
    )?;
    Ok(EvalSet::from_rows(
        &input.name,
        &data.images,
        Some(data.labels),
        EVAL_BATCH,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(dims: Option<Vec<Option<usize>>>) -> InputSpec {
        InputSpec {
            name: "x".into(),
            dtype: None,
            dims,
        }
    }

    #[test]
    fn image_shapes_the_model_cannot_take_are_refused_before_loading() {
        // No folder exists: the check reads the SPEC alone.
        let lenet = input(Some(vec![None, Some(1), Some(28), Some(28)]));
        let check = |spec: &str| check_image_shape(&lenet, spec, "--data");
        check("images:/none?size=28&channels=1").unwrap();
        check("images:/none").unwrap();
        check("mnist:/none").unwrap();
        let err = |spec: &str| format!("{:#}", check(spec).unwrap_err());
        let takes = "but the model's input 'x' takes [?, 1, 28, 28]";
        assert_eq!(
            err("images:/none?size=32x28"),
            format!("--data images:/none?size=32x28 asks for images of size 32x28, {takes}")
        );
        assert_eq!(
            err("images:/none?size=28&channels=3"),
            format!(
                "--data images:/none?size=28&channels=3 asks for images of size 28x28 and 3 \
                 channels, {takes}"
            )
        );
        assert!(err("images:/none?size=100000x100000").ends_with(
            "100000x100000 is 10000000000 pixels, more than the limit of 67108864 (8192x8192)"
        ));
        let flat = input(Some(vec![None, Some(784)]));
        let err = check_image_shape(&flat, "images:/none", "--data").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--data images:/none gives images of shape [N, C, H, W], but the model's input 'x' \
             takes [?, 784]"
        );
        let open = input(Some(vec![None, None, None, None]));
        check_image_shape(&open, "images:/none?size=300x200", "--data").unwrap();
        check_image_shape(&input(None), "images:/none?size=3", "--data").unwrap();
    }
}

//! `feeds:FILE.npz`: named input arrays for models with several inputs (a transformer's
//! `input_ids` and `attention_mask`, ...). Each array is named after a model input, holds
//! the samples on its first axis and keeps its dtype (int64 token ids stay int64).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use whittle_exec::executor::check_input;
use whittle_exec::{feed_samples, InputSpec, Value};

/// One run's inputs, by input name.
pub(crate) type Feed = HashMap<String, Value>;

/// Samples per calibration / verification run.
pub(crate) const BATCH: usize = 32;

/// The archive named by `spec` when it is a `feeds:FILE.npz` spec.
pub(crate) fn archive(spec: &str) -> Option<&Path> {
    spec.strip_prefix("feeds:").map(Path::new)
}

/// Batches of at most [`BATCH`] samples for every one of `inputs`, from the arrays of
/// `file` named after the inputs (at most `limit` samples), checked against the inputs'
/// declared types and shapes. `flag` names the option in errors.
pub(crate) fn load(
    inputs: &[InputSpec],
    file: &Path,
    limit: usize,
    flag: &str,
) -> anyhow::Result<Vec<Feed>> {
    let at = || format!("{flag} feeds:{}", file.display());
    // The message alone: the data error already names the file and its cause.
    let mut arrays: BTreeMap<String, _> = whittle_data::read_npz(file)
        .map_err(|e| anyhow!("loading {}: {e}", at()))?
        .into_iter()
        .collect();
    let held: Vec<String> = arrays.keys().cloned().collect();
    let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    if let Some(extra) = held.iter().find(|h| !names.contains(&h.as_str())) {
        bail!(
            "{}: array '{extra}' is not a model input (inputs: {})",
            at(),
            names.join(", ")
        );
    }
    let mut values = Vec::with_capacity(inputs.len());
    for input in inputs {
        let Some(data) = arrays.remove(&input.name) else {
            bail!(
                "{}: no array for model input '{}' (it holds {held:?})",
                at(),
                input.name
            );
        };
        let value =
            Value::try_from(&data).with_context(|| format!("{}: array '{}'", at(), input.name))?;
        values.push((input.name.clone(), value));
    }
    let batches = feed_batches(&values, limit).with_context(at)?;
    if batches.is_empty() {
        bail!("{}: no samples", at());
    }
    for input in inputs {
        if let Some(value) = batches[0].get(&input.name) {
            check_input(input, value)
                .with_context(|| format!("{} does not fit the model", at()))?;
        }
    }
    Ok(batches)
}

/// The first `len` samples of every array of `feed`.
fn first_rows(feed: &Feed, len: usize) -> anyhow::Result<Feed> {
    feed.iter()
        .map(|(name, v)| {
            let rows = v.tensor().narrow(0, 0, len)?;
            Ok((name.clone(), Value::new(rows, v.dtype())?))
        })
        .collect()
}

/// The first `n` samples of `batches` (the last batch kept narrowed to fit).
pub(crate) fn first_samples(batches: &[Feed], n: usize) -> anyhow::Result<Vec<Feed>> {
    let mut left = n;
    let mut out = Vec::new();
    for feed in batches {
        if left == 0 {
            break;
        }
        let rows = feed_samples(feed);
        let take = rows.min(left);
        let narrowed = if take == rows {
            feed.clone()
        } else {
            first_rows(feed, take)?
        };
        out.push(narrowed);
        left -= take;
    }
    Ok(out)
}

/// Splits named arrays (samples on the first axis, the same count in each) into feeds of
/// at most [`BATCH`] samples, keeping at most `limit` samples.
pub(crate) fn feed_batches(arrays: &[(String, Value)], limit: usize) -> anyhow::Result<Vec<Feed>> {
    let count = |v: &Value| v.shape().first().copied();
    let mut counts = arrays.iter().map(|(name, v)| (name, count(v)));
    let Some((first, first_count)) = counts.next() else {
        bail!("no arrays");
    };
    let Some(n) = first_count else {
        bail!("array '{first}' has no sample axis");
    };
    if let Some((name, other)) = counts.find(|(_, c)| *c != Some(n)) {
        let other = other.map_or("no sample axis".to_string(), |c| format!("{c} samples"));
        bail!("array '{first}' holds {n} samples but '{name}' holds {other}");
    }
    let n = n.min(limit);
    (0..n)
        .step_by(BATCH)
        .map(|start| {
            arrays
                .iter()
                .map(|(name, v)| {
                    let rows = v.tensor().narrow(0, start, BATCH.min(n - start))?;
                    Ok((name.clone(), Value::new(rows, v.dtype())?))
                })
                .collect()
        })
        .collect()
}

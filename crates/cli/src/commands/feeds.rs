//! `feeds:FILE.npz` for the commands not yet on the pipeline layer: thin wrappers over
//! [`whittle_pipeline::feed`] and [`DataSource`], with the option's name in errors.

use std::path::Path;

use whittle_data::Split;
use whittle_exec::{InputSpec, Value};
use whittle_pipeline::feed;
use whittle_pipeline::DataSource;

pub(crate) use whittle_pipeline::feed::BATCH;
/// One run's inputs, by input name.
pub(crate) use whittle_pipeline::Feed;

/// The archive named by `spec` when it is a `feeds:FILE.npz` spec.
pub(crate) fn archive(spec: &str) -> Option<&Path> {
    whittle_data::spec::feeds_archive(spec)
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
    let spec = format!("{}{}", whittle_data::spec::FEEDS_PREFIX, file.display());
    Ok(DataSource::new(spec)
        .with_role(flag)
        .feeds(inputs, Split::Train, limit)?)
}

/// The first `n` samples of `batches` (the last batch kept narrowed to fit).
pub(crate) fn first_samples(batches: &[Feed], n: usize) -> anyhow::Result<Vec<Feed>> {
    Ok(feed::first_samples(batches, n)?)
}

/// Splits named arrays (samples on the first axis, the same count in each) into feeds of
/// at most [`BATCH`] samples, keeping at most `limit` samples.
pub(crate) fn feed_batches(arrays: &[(String, Value)], limit: usize) -> anyhow::Result<Vec<Feed>> {
    Ok(feed::batches(arrays, limit, BATCH)?)
}

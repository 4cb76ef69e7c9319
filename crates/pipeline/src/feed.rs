//! [`Feed`]: named input tensors for one run of a model (one or more samples on the first
//! axis of each), and the batching every step that runs a model on data shares.

use std::collections::HashMap;

use whittle_exec::executor::check_input;
use whittle_exec::{InputSpec, Value};

use crate::error::{Context, PipelineError, Result};

pub use whittle_exec::feed_samples as samples;

/// One run's inputs, by input name; each tensor holds the samples on its first axis.
pub type Feed = HashMap<String, Value>;

/// Samples per calibration / verification run.
pub const BATCH: usize = 32;

/// Splits named arrays (samples on the first axis, the same count in each) into feeds of
/// at most `batch` samples, keeping at most `limit` samples.
pub fn batches(arrays: &[(String, Value)], limit: usize, batch: usize) -> Result<Vec<Feed>> {
    let invalid = |reason: String| PipelineError::invalid("input arrays", reason);
    let count = |v: &Value| v.shape().first().copied();
    let mut counts = arrays.iter().map(|(name, v)| (name, count(v)));
    let Some((first, first_count)) = counts.next() else {
        return Err(invalid("no arrays".into()));
    };
    let Some(n) = first_count else {
        return Err(invalid(format!("array '{first}' has no sample axis")));
    };
    if let Some((name, other)) = counts.find(|(_, c)| *c != Some(n)) {
        let other = other.map_or("no sample axis".to_string(), |c| format!("{c} samples"));
        return Err(invalid(format!(
            "array '{first}' holds {n} samples but '{name}' holds {other}"
        )));
    }
    let n = n.min(limit);
    let batch = batch.max(1);
    (0..n)
        .step_by(batch)
        .map(|start| {
            arrays
                .iter()
                .map(|(name, v)| {
                    let rows = narrow(v, start, batch.min(n - start))?;
                    Ok((name.clone(), rows))
                })
                .collect()
        })
        .collect()
}

/// Rows `start..start + len` of `value`.
pub fn narrow(value: &Value, start: usize, len: usize) -> Result<Value> {
    let rows = value
        .tensor()
        .narrow(0, start, len)
        .context(|| format!("taking samples {start}..{}", start + len))?;
    Value::new(rows, value.dtype()).context(|| "taking samples".into())
}

/// The first `n` samples of `batches` (the last batch kept narrowed to fit).
pub fn first_samples(batches: &[Feed], n: usize) -> Result<Vec<Feed>> {
    let mut left = n;
    let mut out = Vec::new();
    for feed in batches {
        if left == 0 {
            break;
        }
        let rows = samples(feed);
        let take = rows.min(left);
        let narrowed = if take == rows {
            feed.clone()
        } else {
            feed.iter()
                .map(|(name, v)| Ok((name.clone(), narrow(v, 0, take)?)))
                .collect::<Result<Feed>>()?
        };
        out.push(narrowed);
        left -= take;
    }
    Ok(out)
}

/// Checks the first feed of `feeds` against every input's declared type and shape; `what`
/// names the data in the error.
pub fn check_fits(inputs: &[InputSpec], feeds: &[Feed], what: &str) -> Result<()> {
    let Some(first) = feeds.first() else {
        return Err(PipelineError::invalid(what, "no samples"));
    };
    for input in inputs {
        if let Some(value) = first.get(&input.name) {
            check_input(input, value).context(|| format!("{what} does not fit the model"))?;
        }
    }
    Ok(())
}

/// One synthetic sample of every input in `inputs`, by whittle's one synthetic-input policy
/// ([`whittle_bench::inputs::inputs_from_specs`] for the shapes: open batch dimension 1,
/// other open ones 16; [`whittle_bench::inputs::random_inputs`] with `seed` for the values).
pub fn synthetic(inputs: &[InputSpec], seed: u64) -> Result<Feed> {
    let what = || "synthetic inputs (give data to use real ones)".to_string();
    let resolved = whittle_bench::inputs::inputs_from_specs(inputs, &HashMap::new())
        .map_err(|e| PipelineError::Refused(format!("{}: {e}", what())))?;
    whittle_bench::inputs::random_inputs(&resolved, seed)
        .map_err(|e| PipelineError::Refused(format!("{}: {e}", what())))?
        .iter()
        .map(|(name, data)| Ok((name.clone(), Value::try_from(data).context(what)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle_ir::DataType;

    #[test]
    fn synthetic_feeds_follow_the_one_policy() {
        let inputs = [
            InputSpec {
                name: "input_ids".into(),
                dtype: Some(DataType::Int64),
                dims: Some(vec![None, None]),
            },
            InputSpec {
                name: "attention_mask".into(),
                dtype: Some(DataType::Int64),
                dims: Some(vec![None, None]),
            },
        ];
        let feed = synthetic(&inputs, 0).unwrap();
        assert_eq!(samples(&feed), 1);
        assert_eq!(feed["input_ids"].shape(), [1, 16]);
        let mask = feed["attention_mask"]
            .to_data()
            .unwrap()
            .to_vec::<i64>()
            .unwrap();
        assert_eq!(mask, vec![1; 16]);
        let ids = feed["input_ids"]
            .to_data()
            .unwrap()
            .to_vec::<i64>()
            .unwrap();
        assert!(ids.iter().all(|i| (0..100).contains(i)) && ids.iter().any(|&i| i != ids[0]));
        let half = [InputSpec {
            name: "x".into(),
            dtype: Some(DataType::Float16),
            dims: Some(vec![Some(2)]),
        }];
        let err = synthetic(&half, 0).unwrap_err().to_string();
        assert!(err.starts_with("synthetic inputs (give data"), "{err}");
        assert!(err.contains("input 'x'"), "{err}");
    }
}

//! A labelled classification dataset held in memory.

use whittle_ir::{DataType, TensorData};

use crate::error::{DataError, Result};

/// Most classes a dataset may declare (guards one-hot and confusion-matrix allocations).
const MAX_CLASSES: usize = 1 << 20;

/// Which part of a dataset to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training samples.
    Train,
    /// The held-out test samples.
    Test,
}

/// Samples (`images`, float32 `[N, ...]`) with one class label each.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// The inputs, float32, first axis indexing samples.
    pub images: TensorData,
    /// The class of each sample, in `0..num_classes`.
    pub labels: Vec<i64>,
    /// The number of classes.
    pub num_classes: usize,
}

impl Dataset {
    /// Checks and builds a dataset: `images` float32 with one row per label, at least one
    /// sample, every label in `0..num_classes`.
    pub fn new(images: TensorData, labels: Vec<i64>, num_classes: usize) -> Result<Self> {
        let invalid = |reason: String| DataError::Invalid(reason);
        if images.dtype() != DataType::Float {
            return Err(invalid(format!(
                "images are {}, not float32",
                images.dtype()
            )));
        }
        let rows = images.dims().first().copied();
        if rows != Some(labels.len()) {
            return Err(invalid(format!(
                "{} labels for images of shape {:?}",
                labels.len(),
                images.dims()
            )));
        }
        if labels.is_empty() {
            return Err(invalid("the dataset is empty".into()));
        }
        if num_classes > MAX_CLASSES {
            return Err(invalid(format!(
                "{num_classes} classes (at most {MAX_CLASSES})"
            )));
        }
        if let Some((i, l)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::try_from(l).map_or(true, |l| l >= num_classes))
        {
            return Err(invalid(format!(
                "label {l} of sample {i} is outside 0..{num_classes}"
            )));
        }
        Ok(Dataset {
            images,
            labels,
            num_classes,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no samples (never, for a dataset built by [`Dataset::new`]).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Shape of one sample (the image shape without the leading sample axis).
    pub fn sample_dims(&self) -> &[usize] {
        &self.images.dims()[1..]
    }

    /// Samples `start..end`: their images as one `[end - start, ...]` tensor, and their labels.
    pub fn batch(&self, start: usize, end: usize) -> Result<(TensorData, &[i64])> {
        let images = slice_rows(&self.images, start, end)?;
        Ok((images, &self.labels[start..end]))
    }

    /// The samples at `rows` (in that order): their images as one `[rows.len(), ...]` tensor,
    /// and their labels.
    pub fn gather(&self, rows: &[usize]) -> Result<(TensorData, Vec<i64>)> {
        let n = self.len();
        if let Some(bad) = rows.iter().find(|&&r| r >= n) {
            return Err(DataError::Invalid(format!(
                "sample {bad} out of range for {n} samples"
            )));
        }
        let all = self.images.bytes().unwrap_or_default();
        let row_len = all.len() / n.max(1);
        let mut bytes = Vec::with_capacity(row_len * rows.len());
        for &r in rows {
            bytes.extend_from_slice(&all[r * row_len..(r + 1) * row_len]);
        }
        let mut dims = self.images.dims().to_vec();
        dims[0] = rows.len();
        let images = TensorData::from_bytes(self.images.dtype(), dims, bytes)?;
        Ok((images, rows.iter().map(|&r| self.labels[r]).collect()))
    }

    /// Consecutive batches of `size` samples (the last may be shorter; a size of 0 counts as 1).
    pub fn batches(&self, size: usize) -> impl Iterator<Item = Result<(TensorData, &[i64])>> {
        let size = size.max(1);
        (0..self.len())
            .step_by(size)
            .map(move |start| self.batch(start, (start + size).min(self.len())))
    }
}

/// Rows `start..end` along the first axis of a tensor with fixed-size elements.
pub(crate) fn slice_rows(t: &TensorData, start: usize, end: usize) -> Result<TensorData> {
    let rows = t.dims().first().copied().unwrap_or(0);
    let bytes = t
        .bytes()
        .filter(|_| start <= end && end <= rows)
        .ok_or_else(|| {
            DataError::Invalid(format!(
                "rows {start}..{end} out of range for shape {:?}",
                t.dims()
            ))
        })?;
    let row_len = bytes.len() / rows.max(1);
    let mut dims = t.dims().to_vec();
    dims[0] = end - start;
    let data = bytes[start * row_len..end * row_len].to_vec();
    Ok(TensorData::from_bytes(t.dtype(), dims, data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn four_samples() -> Dataset {
        let images =
            TensorData::from_slice(vec![4, 2], &[0.0f32, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]);
        Dataset::new(images.unwrap(), vec![1, 0, 2, 1], 3).unwrap()
    }

    #[test]
    fn batches_slice_images_and_labels_together() {
        let d = four_samples();
        assert_eq!((d.len(), d.sample_dims()), (4, &[2usize][..]));
        let (x, y) = d.batch(1, 3).unwrap();
        assert_eq!(x.dims(), [2, 2]);
        assert_eq!(x.to_vec::<f32>().unwrap(), [1.0, 1.5, 2.0, 2.5]);
        assert_eq!(y, [0, 2]);
        let sizes: Vec<usize> = d.batches(3).map(|b| b.unwrap().1.len()).collect();
        assert_eq!(sizes, [3, 1]);
        assert_eq!(d.batches(0).count(), 4);
        let err = d.batch(3, 5).unwrap_err().to_string();
        assert_eq!(err, "rows 3..5 out of range for shape [4, 2]");
        assert!(d.batch(3, 2).is_err());
    }

    #[test]
    fn new_rejects_inconsistent_data() {
        let err = |images: TensorData, labels: Vec<i64>| {
            Dataset::new(images, labels, 10).unwrap_err().to_string()
        };
        let f32s =
            |dims: Vec<usize>, n: usize| TensorData::from_slice(dims, &vec![0f32; n]).unwrap();
        assert_eq!(
            err(f32s(vec![2, 3], 6), vec![1]),
            "1 labels for images of shape [2, 3]"
        );
        assert_eq!(err(f32s(vec![0, 3], 0), vec![]), "the dataset is empty");
        assert_eq!(
            err(f32s(vec![2], 2), vec![1, 10]),
            "label 10 of sample 1 is outside 0..10"
        );
        assert_eq!(
            err(f32s(vec![1], 1), vec![-1]),
            "label -1 of sample 0 is outside 0..10"
        );
        let ints = TensorData::from_slice(vec![1], &[1u8]).unwrap();
        assert_eq!(err(ints, vec![0]), "images are uint8, not float32");
        assert!(err(TensorData::scalar(1f32), vec![0]).contains("shape []"));
    }
}

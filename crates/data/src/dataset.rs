//! A labelled classification dataset held in memory.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
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
    /// The name of each class (folder names, CSV label strings), or empty when the source
    /// has none.
    pub class_names: Vec<String>,
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
            class_names: Vec::new(),
        })
    }

    /// The same dataset with named classes; `names` must hold one name per class.
    pub fn with_class_names(mut self, names: Vec<String>) -> Result<Self> {
        if names.len() != self.num_classes {
            return Err(DataError::Invalid(format!(
                "{} class names for {} classes",
                names.len(),
                self.num_classes
            )));
        }
        self.class_names = names;
        Ok(self)
    }

    /// The name of class `class`: its given name, else its number.
    pub fn class_name(&self, class: usize) -> String {
        self.class_names
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string())
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

    /// A new dataset of the samples at `rows` (in that order), with the same classes.
    pub fn subset(&self, rows: &[usize]) -> Result<Dataset> {
        let (images, labels) = self.gather(rows)?;
        let subset = Dataset::new(images, labels, self.num_classes)?;
        if self.class_names.is_empty() {
            Ok(subset)
        } else {
            subset.with_class_names(self.class_names.clone())
        }
    }

    /// Splits off a validation set, stratified: each class gives `round(fraction * its count)`
    /// of its samples, chosen at random from `seed`. Both parts keep the original sample order
    /// and the classes; it fails when `fraction` is not in `(0, 1)` or a part would be empty.
    pub fn split_validation(&self, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(DataError::Invalid(format!(
                "validation fraction {fraction} is not between 0 and 1"
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut in_val = vec![false; self.len()];
        for mut rows in self.rows_by_class() {
            rows.shuffle(&mut rng);
            let take = (rows.len() as f64 * fraction).round() as usize;
            rows[..take].iter().for_each(|&r| in_val[r] = true);
        }
        let (val, train): (Vec<usize>, Vec<usize>) = (0..self.len()).partition(|&r| in_val[r]);
        if val.is_empty() || train.is_empty() {
            return Err(DataError::Invalid(format!(
                "a validation fraction of {fraction} leaves an empty split of {} samples",
                self.len()
            )));
        }
        Ok((self.subset(&train)?, self.subset(&val)?))
    }

    /// The sample indices of each class, in order.
    fn rows_by_class(&self) -> Vec<Vec<usize>> {
        let mut rows = vec![Vec::new(); self.num_classes];
        for (i, &l) in self.labels.iter().enumerate() {
            if let Some(class) = usize::try_from(l).ok().and_then(|l| rows.get_mut(l)) {
                class.push(i);
            }
        }
        rows
    }

    /// Consecutive batches of `size` samples (the last may be shorter; a size of 0 counts as 1).
    pub fn batches(&self, size: usize) -> impl Iterator<Item = Result<(TensorData, &[i64])>> {
        let size = size.max(1);
        (0..self.len())
            .step_by(size)
            .map(move |start| self.batch(start, (start + size).min(self.len())))
    }
}

/// Samples `x` and labels `y` read from the sources named `x_name` and `y_name`: checks that
/// their counts agree and keeps the first `limit` rows of each.
pub(crate) fn paired_rows(
    x: TensorData,
    y: TensorData,
    x_name: &str,
    y_name: &str,
    limit: Option<usize>,
) -> Result<(TensorData, TensorData)> {
    let count = |t: &TensorData, name: &str| {
        t.dims()
            .first()
            .copied()
            .ok_or_else(|| DataError::format(name, "is a scalar, not one row per sample"))
    };
    let (nx, ny) = (count(&x, x_name)?, count(&y, y_name)?);
    same_count(nx, ny, x_name, y_name)?;
    let n = limit.map_or(nx, |l| l.min(nx));
    Ok((slice_rows(&x, 0, n)?, slice_rows(&y, 0, n)?))
}

/// Fails unless the `nx` samples of `x_name` and the `ny` labels of `y_name` pair up.
pub(crate) fn same_count(nx: usize, ny: usize, x_name: &str, y_name: &str) -> Result<()> {
    if nx != ny {
        return Err(DataError::Invalid(format!(
            "{x_name} holds {nx} samples but {y_name} holds {ny} labels"
        )));
    }
    Ok(())
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

    #[test]
    fn validation_split_is_stratified_seeded_and_disjoint() {
        // 10 samples of class 0 and 20 of class 1; each sample's value is its index.
        let x: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let labels = (0..30).map(|i| i64::from(i >= 10)).collect();
        let images = TensorData::from_slice(vec![30, 1], &x).unwrap();
        let d = Dataset::new(images, labels, 2)
            .unwrap()
            .with_class_names(vec!["cat".into(), "dog".into()])
            .unwrap();
        let (train, val) = d.split_validation(0.2, 9).unwrap();
        assert_eq!((train.len(), val.len()), (24, 6));
        let count = |d: &Dataset, c| d.labels.iter().filter(|&&l| l == c).count();
        assert_eq!((count(&val, 0), count(&val, 1)), (2, 4));
        assert_eq!(val.class_names, ["cat", "dog"]);
        let mut all: Vec<f32> = [&train, &val]
            .iter()
            .flat_map(|d| d.images.to_vec::<f32>().unwrap())
            .collect();
        let val_rows = val.images.to_vec::<f32>().unwrap();
        assert!(val_rows.windows(2).all(|w| w[0] < w[1]), "original order");
        for (&row, &label) in val_rows.iter().zip(&val.labels) {
            assert_eq!(label, i64::from(row >= 10.0), "labels follow rows");
        }
        all.sort_by(f32::total_cmp);
        assert_eq!(all, x, "every sample in exactly one part");
        assert_eq!(d.split_validation(0.2, 9).unwrap().1, val);
        assert_ne!(d.split_validation(0.2, 10).unwrap().1, val);
        for bad in [0.0, 1.0, f64::NAN, 0.01] {
            assert!(d.split_validation(bad, 0).is_err(), "{bad}");
        }
        assert!(d.clone().with_class_names(vec!["x".into()]).is_err());
        let unnamed = four_samples().subset(&[3, 1]).unwrap();
        assert_eq!((unnamed.labels, unnamed.class_names.len()), (vec![1, 0], 0));
        assert_eq!(
            (d.class_name(1), four_samples().class_name(2)),
            ("dog".into(), "2".into())
        );
    }
}

//! MNIST-layout folders of IDX files (`mnist:DIR`, `fashion-mnist:DIR`).

use std::path::{Path, PathBuf};

use whittle_ir::memory::{ensure_fits, tensor_bytes};
use whittle_ir::{DataType, TensorData};

use crate::dataset::{paired_rows, same_count, Dataset, Split};
use crate::error::{DataError, Result};
use crate::idx::{read_idx, read_idx_rows};

/// Classes of MNIST and Fashion-MNIST.
const MNIST_CLASSES: usize = 10;

/// MNIST-layout IDX files in `dir`: `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
pub(crate) fn load_idx(dir: &Path, split: Split, limit: Option<usize>) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(DataError::Invalid(format!(
            "directory {} not found",
            dir.display()
        )));
    }
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let x_path = find_idx(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let y_path = find_idx(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (images, labels) = match limit {
        // Only the rows asked for are decoded (a calibration run reads 512 of 60,000).
        Some(limit) => {
            let (images, x_rows) = read_idx_rows(&x_path, limit)?;
            let (labels, y_rows) = read_idx_rows(&y_path, limit)?;
            same_count(
                x_rows,
                y_rows,
                &x_path.display().to_string(),
                &y_path.display().to_string(),
            )?;
            (images, labels)
        }
        None => paired_rows(
            read_idx(&x_path)?,
            read_idx(&y_path)?,
            &x_path.display().to_string(),
            &y_path.display().to_string(),
            None,
        )?,
    };
    expect_u8(&images, 3, &x_path)?;
    expect_u8(&labels, 1, &y_path)?;
    let dims = images.dims();
    let dims = vec![dims[0], 1, dims[1], dims[2]];
    let what = format!("{} as float32", x_path.display());
    ensure_fits(tensor_bytes(&dims, size_of::<f32>()), &what)?;
    let pixels = images
        .bytes()
        .unwrap_or_default()
        .iter()
        .flat_map(|&p| (f32::from(p) / 255.0).to_le_bytes())
        .collect();
    let images = TensorData::from_bytes(DataType::Float, dims, pixels)?;
    Dataset::new(images, labels.to_i64_vec()?, MNIST_CLASSES)
}

/// `dir/name` when present, else `dir/name.gz`.
fn find_idx(dir: &Path, name: &str) -> Result<PathBuf> {
    let raw = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    [raw, gz].into_iter().find(|p| p.is_file()).ok_or_else(|| {
        DataError::Invalid(format!(
            "missing {} (nor {name}.gz)",
            dir.join(name).display()
        ))
    })
}

/// Checks that an IDX tensor is uint8 of the given rank.
fn expect_u8(t: &TensorData, rank: usize, path: &Path) -> Result<()> {
    if t.dtype() != DataType::Uint8 || t.dims().len() != rank {
        return Err(DataError::format(
            &path.display().to_string(),
            format!(
                "expected uint8 of rank {rank}, found {} of shape {:?}",
                t.dtype(),
                t.dims()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::load;
    use crate::testutil::{assets_dir, idx_bytes};
    use whittle_testkit::scratch;

    fn spec(scheme: &str, dir: &Path) -> String {
        format!("{scheme}:{}", dir.display())
    }

    fn load_err(spec: &str) -> String {
        load(spec, Split::Test, None).unwrap_err().to_string()
    }

    #[test]
    fn mnist_test_split_matches_the_real_files() {
        let d = load(
            &spec("mnist", &assets_dir().join("mnist")),
            Split::Test,
            None,
        )
        .unwrap();
        assert_eq!((d.len(), d.num_classes), (10000, 10));
        assert_eq!(d.images.dims(), [10000, 1, 28, 28]);
        assert_eq!(d.labels[..5], [7, 2, 1, 0, 4]);
        let pixels = d.images.to_vec::<f32>().unwrap();
        let (lo, hi) = pixels
            .iter()
            .fold((1f32, 0f32), |(lo, hi), &p| (lo.min(p), hi.max(p)));
        assert_eq!((lo, hi), (0.0, 1.0));
        // The first test image: pixel (7, 6) is 84/255 and its raw bytes sum to 18454.
        assert_eq!(pixels[7 * 28 + 6], 84.0 / 255.0);
        let sum: f32 = pixels[..784].iter().map(|p| (p * 255.0).round()).sum();
        assert_eq!(sum, 18454.0);
    }

    #[test]
    fn train_splits_and_gzip_fashion_mnist_load() {
        let assets = assets_dir();
        let mnist = load(&spec("mnist", &assets.join("mnist")), Split::Train, None).unwrap();
        assert_eq!(
            (mnist.len(), mnist.labels[..3].to_vec()),
            (60000, vec![5, 0, 4])
        );
        let fashion = spec("fashion-mnist", &assets.join("fashion-mnist"));
        let test = load(&fashion, Split::Test, None).unwrap();
        assert_eq!(
            (test.len(), test.labels[..3].to_vec()),
            (10000, vec![9, 2, 1])
        );
        assert_eq!(test.sample_dims(), [1, 28, 28]);
        let train = load(&fashion, Split::Train, Some(4)).unwrap();
        assert_eq!(
            (train.images.dims()[0], train.labels.clone()),
            (4, vec![9, 0, 0, 3])
        );
        let full = load(&fashion, Split::Train, None).unwrap();
        assert_eq!(full.len(), 60000);
    }

    #[test]
    fn limit_keeps_the_first_samples() {
        let dir = assets_dir().join("mnist");
        let d = load(&spec("mnist", &dir), Split::Test, Some(5)).unwrap();
        assert_eq!(
            (d.images.dims(), d.labels.as_slice()),
            (&[5, 1, 28, 28][..], &[7, 2, 1, 0, 4][..])
        );
        let err = load(&spec("mnist", &dir), Split::Test, Some(0)).unwrap_err();
        assert!(err.to_string().ends_with("the dataset is empty"), "{err}");
    }

    #[test]
    fn bad_idx_files_are_named_in_errors() {
        let dir = scratch("spec-idx");
        let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
        let no_labels = load_err(&spec("mnist", &dir));
        assert!(no_labels.contains("missing") && no_labels.contains("t10k-images-idx3-ubyte"));
        write(
            "t10k-images-idx3-ubyte",
            idx_bytes(0x08, &[3, 2, 2], &[0; 12]),
        );
        write("t10k-labels-idx1-ubyte", idx_bytes(0x08, &[2], &[1, 2]));
        let counts = load_err(&spec("mnist", &dir));
        assert!(
            counts.contains("holds 3 samples but") && counts.contains("holds 2 labels"),
            "{counts}"
        );
        std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
        write(
            "t10k-labels-idx1-ubyte.gz",
            idx_bytes(0x08, &[3], &[1, 2, 10]),
        );
        let range = load_err(&spec("mnist", &dir));
        assert!(
            range.ends_with("label 10 of sample 2 is outside 0..10"),
            "{range}"
        );
        write("t10k-labels-idx1-ubyte.gz", idx_bytes(0x0C, &[3], &[0; 12]));
        let dtype = load_err(&spec("mnist", &dir));
        assert!(
            dtype.contains("labels-idx1-ubyte.gz: expected uint8 of rank 1"),
            "{dtype}"
        );
        write(
            "t10k-images-idx3-ubyte",
            idx_bytes(0x08, &[3, 2, 2], &[0; 11]),
        );
        let cut = load_err(&spec("mnist", &dir));
        assert!(cut.contains("t10k-images-idx3-ubyte: truncated"), "{cut}");
    }
}

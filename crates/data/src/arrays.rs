//! Datasets from numpy arrays: `npy:X.npy,Y.npy` and `npz:FILE.npz`.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use whittle_ir::memory::{ensure_fits, tensor_bytes};
use whittle_ir::{DataType, TensorData};
use zip::ZipArchive;

use crate::dataset::{paired_rows, Dataset, Split};
use crate::error::{DataError, Result};
use crate::npy::{parse_npy, read_npy};
use crate::raw::{read_bounded, read_plain};

/// `X.npy,Y.npy`: X any numeric array with samples on the first axis, Y integer labels.
pub(crate) fn load_npy(files: &str, limit: Option<usize>) -> Result<Dataset> {
    let (x, y) = files
        .split_once(',')
        .ok_or_else(|| DataError::Invalid("expected npy:X.npy,Y.npy".into()))?;
    let (images, labels) = (read_npy(Path::new(x))?, read_npy(Path::new(y))?);
    labelled(images, labels, x, y, limit, 0)
}

/// An `.npz` archive (as `np.savez` or `np.savez_compressed` write it) holding `x_train`,
/// `y_train`, `x_test` and `y_test`, or `x` and `y` for both splits.
pub(crate) fn load_npz(path: &Path, split: Split, limit: Option<usize>) -> Result<Dataset> {
    let file = path.display().to_string();
    let mut arrays: BTreeMap<String, TensorData> = read_npz(path)?.into_iter().collect();
    let (suffix, other_labels) = match split {
        Split::Train => ("_train", "y_test"),
        Split::Test => ("_test", "y_train"),
    };
    let by_split = [format!("x{suffix}"), format!("y{suffix}")];
    let keys = match by_split.iter().all(|k| arrays.contains_key(k)) {
        true => by_split.clone(),
        false => ["x".to_string(), "y".to_string()],
    };
    let held: Vec<String> = arrays.keys().cloned().collect();
    let (Some(x), Some(y)) = (arrays.remove(&keys[0]), arrays.remove(&keys[1])) else {
        let [x, y] = by_split;
        return Err(DataError::format(
            &file,
            format!("needs arrays {x} and {y} (or x and y); it holds {held:?}"),
        ));
    };
    let (x_name, y_name) = (format!("{file}:{}", keys[0]), format!("{file}:{}", keys[1]));
    // Both splits count the classes of either (a test split may lack the last class).
    let other = arrays
        .get(other_labels)
        .filter(|y| keys == by_split && y.dtype().is_integer());
    let at_least = other.map_or(Ok(0), |y| y.to_i64_vec().map(|l| classes_of(&l)))?;
    labelled(x, y, &x_name, &y_name, limit, at_least)
}

/// Every array of an `.npz` archive, by name (without `.npy`), in archive order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, TensorData)>> {
    let file = path.display().to_string();
    let bytes = read_plain(path)?;
    let corrupt = |e: zip::result::ZipError| {
        DataError::format(&file, format!("not a readable .npz (zip) archive: {e}"))
    };
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(corrupt)?;
    let mut arrays = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(corrupt)?;
        let name = entry.name().map_err(corrupt)?;
        let Some(name) = name.strip_suffix(".npy").map(str::to_string) else {
            continue;
        };
        let entry_file = format!("{file}:{name}");
        let data = read_bounded(&mut entry, &entry_file, "corrupt archive entry")?;
        arrays.push((name, parse_npy(&data, &entry_file)?));
    }
    Ok(arrays)
}

/// A dataset from samples `x` (any numeric type, converted to float32) and 1-D integer labels
/// `y` with `max(y) + 1` classes (counted before `limit`), or `at_least` classes when that is
/// more; `x_name` and `y_name` name the sources in errors.
fn labelled(
    x: TensorData,
    y: TensorData,
    x_name: &str,
    y_name: &str,
    limit: Option<usize>,
    at_least: usize,
) -> Result<Dataset> {
    if !y.dtype().is_integer() || y.dims().len() != 1 {
        return Err(DataError::format(
            y_name,
            format!(
                "labels must be a 1-D integer array, found {} of shape {:?}",
                y.dtype(),
                y.dims()
            ),
        ));
    }
    let classes = classes_of(&y.to_i64_vec()?).max(at_least);
    let (images, labels) = paired_rows(x, y, x_name, y_name, limit)?;
    let images = match images.dtype() {
        DataType::Float => images,
        dtype => {
            // Through float64 (8 bytes a value) into the float32 tensor's bytes (4 more).
            let what = format!("converting {x_name} from {dtype} to float32");
            ensure_fits(tensor_bytes(images.dims(), 12), &what)?;
            let bytes = images
                .to_f64_vec()?
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect();
            TensorData::from_bytes(DataType::Float, images.dims().to_vec(), bytes)?
        }
    };
    Dataset::new(images, labels.to_i64_vec()?, classes)
}

/// The class count of integer labels: `max + 1` (0 when there are none).
pub(crate) fn classes_of(labels: &[i64]) -> usize {
    labels
        .iter()
        .max()
        .map_or(0, |&m| (m.max(0) as usize).saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::write_npy;
    use crate::spec::load;
    use crate::testutil::write_npz;
    use whittle_testkit::scratch;

    fn load_err(spec: &str) -> String {
        load(spec, Split::Test, None).unwrap_err().to_string()
    }

    #[test]
    fn npy_pairs_convert_samples_and_check_labels() {
        let dir = scratch("spec-npy");
        let save = |name: &str, t: TensorData| {
            let path = dir.join(name);
            write_npy(&path, &t).unwrap();
            path.display().to_string()
        };
        let x = save(
            "x.npy",
            TensorData::from_slice(vec![3, 2], &[1i16, -2, 3, 4, 5, 6]).unwrap(),
        );
        let y = save(
            "y.npy",
            TensorData::from_slice(vec![3], &[0u8, 4, 2]).unwrap(),
        );
        let d = load(&format!("npy:{x},{y}"), Split::Train, None).unwrap();
        assert_eq!(
            d.images.to_vec::<f32>().unwrap(),
            [1.0, -2.0, 3.0, 4.0, 5.0, 6.0]
        );
        assert_eq!((d.labels.clone(), d.num_classes), (vec![0, 4, 2], 5));
        let neg = save(
            "neg.npy",
            TensorData::from_slice(vec![3], &[0i64, -1, 2]).unwrap(),
        );
        assert!(
            load_err(&format!("npy:{x},{neg}")).ends_with("label -1 of sample 1 is outside 0..3")
        );
        let float = save(
            "f.npy",
            TensorData::from_slice(vec![3], &[0f32, 1., 2.]).unwrap(),
        );
        let err = load_err(&format!("npy:{x},{float}"));
        assert!(
            err.contains("f.npy: labels must be a 1-D integer array, found float"),
            "{err}"
        );
        let short = save(
            "short.npy",
            TensorData::from_slice(vec![2], &[0i32, 1]).unwrap(),
        );
        assert!(load_err(&format!("npy:{x},{short}")).contains("holds 3 samples but"));
        assert!(load_err(&format!("npy:{x}")).ends_with("expected npy:X.npy,Y.npy"));
        let missing = load_err(&format!("npy:{x},{}", dir.join("none.npy").display()));
        assert!(missing.contains("none.npy: No such file"), "{missing}");
    }

    #[test]
    fn npz_archives_pick_arrays_by_split() {
        let dir = scratch("npz");
        let f32s = |dims: Vec<usize>, v: &[f32]| TensorData::from_slice(dims, v).unwrap();
        let i64s = |v: &[i64]| TensorData::from_slice(vec![v.len()], v).unwrap();
        let path = dir.join("split.npz");
        write_npz(
            &path,
            &[
                ("x_train", f32s(vec![2, 2], &[1.0, 2.0, 3.0, 4.0])),
                ("y_train", i64s(&[1, 0])),
                ("x_test", f32s(vec![1, 2], &[5.0, 6.0])),
                ("y_test", i64s(&[2])),
            ],
            true,
        );
        let spec = format!("npz:{}", path.display());
        let train = load(&spec, Split::Train, None).unwrap();
        assert_eq!(train.images.to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            (train.labels.clone(), train.num_classes),
            (vec![1, 0], 3),
            "y_test has 2"
        );
        let test = load(&spec, Split::Test, None).unwrap();
        assert_eq!(
            (test.images.dims(), test.labels.clone()),
            (&[1, 2][..], vec![2])
        );
        let names: Vec<String> = read_npz(&path)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["x_train", "y_train", "x_test", "y_test"]);

        let plain = dir.join("plain.npz");
        let bytes = TensorData::from_slice(vec![3, 1], &[7u8, 8, 9]).unwrap();
        write_npz(&plain, &[("x", bytes), ("y", i64s(&[0, 1, 1]))], false);
        let d = load(&format!("npz:{}", plain.display()), Split::Test, Some(2)).unwrap();
        assert_eq!(d.images.to_vec::<f32>().unwrap(), [7.0, 8.0]);
        assert_eq!(
            (d.labels.clone(), d.num_classes),
            (vec![0, 1], 2),
            "counted before the limit"
        );
    }

    #[test]
    fn bad_npz_archives_are_named_in_errors() {
        let dir = scratch("npz-bad");
        let i64s = |v: &[i64]| TensorData::from_slice(vec![v.len()], v).unwrap();
        let other = dir.join("other.npz");
        write_npz(&other, &[("a", i64s(&[1])), ("x", i64s(&[1]))], true);
        let err = load_err(&format!("npz:{}", other.display()));
        assert!(
            err.ends_with(
                "other.npz: needs arrays x_test and y_test (or x and y); it holds [\"a\", \"x\"]"
            ),
            "{err}"
        );
        let short = dir.join("short.npz");
        write_npz(&short, &[("x", i64s(&[1, 2])), ("y", i64s(&[1]))], true);
        let err = load_err(&format!("npz:{}", short.display()));
        assert!(err.contains("short.npz:x holds 2 samples but"), "{err}");
        let junk = dir.join("junk.npz");
        std::fs::write(&junk, b"PK\x03\x04 not really a zip").unwrap();
        let err = load_err(&format!("npz:{}", junk.display()));
        assert!(
            err.contains("junk.npz: not a readable .npz (zip) archive"),
            "{err}"
        );
        // A valid archive whose entry is not an NPY file.
        let bad_entry = dir.join("entry.npz");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&bad_entry).unwrap());
        zip.start_file("x.npy", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut zip, b"not npy").unwrap();
        zip.finish().unwrap();
        let err = load_err(&format!("npz:{}", bad_entry.display()));
        assert!(err.contains("entry.npz:x: "), "{err}");
        let missing = load_err(&format!("npz:{}", dir.join("none.npz").display()));
        assert!(missing.contains("none.npz: No such file"), "{missing}");
    }
}

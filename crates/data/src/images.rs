//! Image folders (`images:DIR`): one subfolder of PNG and JPEG files per class, the sorted
//! folder names numbering the classes; loaded as float32 `[N, C, H, W]` in `[0, 1]`.
//!
//! When `DIR` holds both `train/` and `test/`, each split reads its own folder (the classes
//! are the folders of either); otherwise both splits read `DIR`. Files are taken in sorted
//! order, class after class. Options:
//! - `size=HxW` (or `size=S` for `SxS`): the size every image is resized to (bilinear);
//!   by default the size of the first training image.
//! - `channels=1|3`: grey or RGB (grey images are repeated into RGB, RGB becomes grey by
//!   luma, alpha is dropped); by default those of the first training image.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use whittle_ir::TensorData;

use crate::dataset::{Dataset, Split};
use crate::error::{DataError, Result};
use crate::image_decode::{decode_image, resize_bilinear, Image};
use crate::spec::SpecOptions;

/// File name extensions (lower case) of the images read.
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Loads one split of an image folder; see the module documentation.
pub(crate) fn load_images(
    dir: &Path,
    split: Split,
    options: &SpecOptions,
    limit: Option<usize>,
) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(DataError::Invalid(format!(
            "directory {} not found",
            dir.display()
        )));
    }
    let (train, test) = (dir.join("train"), dir.join("test"));
    let split_dirs = match train.is_dir() && test.is_dir() {
        true => vec![train, test],
        false => vec![dir.to_path_buf()],
    };
    let classes = class_names(&split_dirs)?;
    let reference = image_files(&split_dirs[0], &classes)?;
    let files = match (split, split_dirs.get(1)) {
        (Split::Test, Some(test)) => image_files(test, &classes)?,
        _ => reference.clone(),
    };
    let (mut files, first) = match (files.is_empty(), reference.first()) {
        (false, Some(first)) => (files, first),
        _ => {
            return Err(DataError::Invalid(format!(
                "no PNG or JPEG files in the class folders of {}",
                dir.display()
            )))
        }
    };
    files.truncate(limit.unwrap_or(usize::MAX));
    let shape = target_shape(options, &first.0)?;
    let images = decode_all(&files, shape)?;
    let labels = files.iter().map(|(_, class)| *class as i64).collect();
    Dataset::new(images, labels, classes.len())?.with_class_names(classes)
}

/// The output shape of one image: channels, height, width.
type Shape = (usize, usize, usize);

/// The sorted names of the class subfolders of the `dirs` together (hidden ones skipped).
fn class_names(dirs: &[PathBuf]) -> Result<Vec<String>> {
    let mut names = BTreeSet::new();
    for dir in dirs {
        for (path, name) in entries(dir)? {
            if path.is_dir() && !name.starts_with('.') {
                names.insert(name);
            }
        }
    }
    if names.is_empty() {
        return Err(DataError::Invalid(format!(
            "{} has no class subfolders (expected DIR/CLASS/IMAGE.png)",
            dirs[0].display()
        )));
    }
    Ok(names.into_iter().collect())
}

/// The image files of `dir/CLASS/` for each class, with the class index, in sorted order.
fn image_files(dir: &Path, classes: &[String]) -> Result<Vec<(PathBuf, usize)>> {
    let mut files = Vec::new();
    for (class, name) in classes.iter().enumerate() {
        let folder = dir.join(name);
        if !folder.is_dir() {
            continue;
        }
        let mut images: Vec<PathBuf> = entries(&folder)?
            .into_iter()
            .map(|(path, _)| path)
            .filter(|path| path.is_file() && is_image(path))
            .collect();
        images.sort();
        files.extend(images.into_iter().map(|path| (path, class)));
    }
    Ok(files)
}

/// The entries of a folder with their names.
fn entries(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| {
            let entry = entry.map_err(io)?;
            Ok((
                entry.path(),
                entry.file_name().to_string_lossy().into_owned(),
            ))
        })
        .collect()
}

/// Whether a file name has an image extension.
fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Reads and decodes one image file.
fn read_image(path: &Path) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_image(&bytes, &path.display().to_string())
}

/// The shape images are brought to: the `size` and `channels` options, else those of the
/// image at `first`.
fn target_shape(options: &SpecOptions, first: &Path) -> Result<Shape> {
    let size = options.parsed("size", "HxW or S, positive", parse_size)?;
    let channels = options.parsed("channels", "1 or 3", |v| {
        v.parse::<usize>().ok().filter(|c| [1, 3].contains(c))
    })?;
    if let (Some((height, width)), Some(channels)) = (size, channels) {
        return Ok((channels, height, width));
    }
    let image = read_image(first)?;
    let (height, width) = size.unwrap_or((image.height, image.width));
    Ok((channels.unwrap_or(image.channels), height, width))
}

/// `HxW` or `S` (for `SxS`), both positive.
fn parse_size(text: &str) -> Option<(usize, usize)> {
    let (h, w) = text.split_once('x').unwrap_or((text, text));
    let (h, w) = (h.parse().ok()?, w.parse().ok()?);
    (h > 0 && w > 0).then_some((h, w))
}

/// Decodes, converts and resizes every file into one `[N, C, H, W]` tensor.
fn decode_all(files: &[(PathBuf, usize)], (channels, height, width): Shape) -> Result<TensorData> {
    let mut values = Vec::with_capacity(files.len() * channels * height * width);
    for (path, _) in files {
        let image = read_image(path)?;
        let planes = image.planes(channels);
        let from = (image.height, image.width);
        values.extend(resize_bilinear(&planes, from, (height, width)));
    }
    Ok(TensorData::from_slice(
        vec![files.len(), channels, height, width],
        &values,
    )?)
}

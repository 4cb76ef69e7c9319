//! Image folders (`images:DIR`): one subfolder of PNG and JPEG files per class, the sorted
//! folder names numbering the classes; loaded as float32 `[N, C, H, W]` in `[0, 1]`.
//!
//! When `DIR` holds both `train/` and `test/`, each split reads its own folder (the classes
//! are the folders of either); otherwise both splits read `DIR`. Files are taken in sorted
//! order, class after class. Options:
//! - `size=HxW` (or `size=S` for `SxS`): the size every image is resized to (bilinear);
//!   by default the size of the first training image.
//!
//! Neither a `size` nor an image header may exceed [`MAX_PIXELS`] (checked before anything is
//! decoded), and the whole dataset must fit in the memory available.
//! - `channels=1|3`: grey or RGB (grey images are repeated into RGB, RGB becomes grey by
//!   luma, alpha is dropped); by default those of the first training image.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use whittle_ir::memory::{ensure_fits, tensor_bytes};
use whittle_ir::{DataType, TensorData};

use crate::dataset::{Dataset, Split};
use crate::error::{DataError, Result};
use crate::image_decode::{check_pixels, read_header, resize_bilinear};
pub use crate::image_decode::{decode_image, Image, MAX_PIXELS};
use crate::raw::read_plain;
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
    let (channels, height, width) = target_shape(options, &first.0)?;
    let dims = [files.len(), channels, height, width];
    let what = format!(
        "{} images of {channels}x{height}x{width} float32 from {}",
        files.len(),
        dir.display()
    );
    ensure_fits(tensor_bytes(&dims, size_of::<f32>()), &what)?;
    let images = decode_all(&files, dims)?;
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

/// The sample shape the options of an `images:` spec ask for; each part is `None` when the
/// option is absent (the first training image's then applies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requested {
    /// `channels=1|3`.
    pub channels: Option<usize>,
    /// `size=HxW` as (height, width).
    pub size: Option<(usize, usize)>,
}

/// Parses the `size` and `channels` options; a size over [`MAX_PIXELS`] is an error.
pub(crate) fn requested(options: &SpecOptions) -> Result<Requested> {
    let size = options.parsed("size", "HxW or S, positive", parse_size)?;
    if let Some((height, width)) = size {
        check_pixels(
            height,
            width,
            &format!("option size={}", options.get("size").unwrap_or("")),
        )?;
    }
    let channels = options.parsed("channels", "1 or 3", |v| {
        v.parse::<usize>().ok().filter(|c| [1, 3].contains(c))
    })?;
    Ok(Requested { channels, size })
}

/// The shape images are brought to: the `size` and `channels` options, else those of the
/// image at `first` (from its header alone).
fn target_shape(options: &SpecOptions, first: &Path) -> Result<Shape> {
    let Requested { channels, size } = requested(options)?;
    if let (Some((height, width)), Some(channels)) = (size, channels) {
        return Ok((channels, height, width));
    }
    let header = read_header(&read_plain(first)?, &first.display().to_string())?;
    let (height, width) = size.unwrap_or((header.height, header.width));
    Ok((channels.unwrap_or(header.channels), height, width))
}

/// `HxW` or `S` (for `SxS`), both positive.
fn parse_size(text: &str) -> Option<(usize, usize)> {
    let (h, w) = text.split_once('x').unwrap_or((text, text));
    let (h, w) = (h.parse().ok()?, w.parse().ok()?);
    (h > 0 && w > 0).then_some((h, w))
}

/// Decodes, converts and resizes every file into one float32 tensor of `dims`
/// (`[N, C, H, W]`), written straight into its little-endian bytes.
fn decode_all(files: &[(PathBuf, usize)], dims: [usize; 4]) -> Result<TensorData> {
    let [_, channels, height, width] = dims;
    let mut bytes = Vec::with_capacity(dims.iter().product::<usize>() * size_of::<f32>());
    for (path, _) in files {
        let image = decode_image(&read_plain(path)?, &path.display().to_string())?;
        let planes = image.planes(channels);
        let from = (image.height, image.width);
        let resized = resize_bilinear(&planes, from, (height, width));
        bytes.extend(resized.iter().flat_map(|v| v.to_le_bytes()));
    }
    Ok(TensorData::from_bytes(
        DataType::Float,
        dims.to_vec(),
        bytes,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::load;
    use crate::testutil::{write_jpeg, write_png};
    use png::ColorType;
    use whittle_testkit::{scratch, Scratch};

    fn folder(root: &Path, parts: &[&str]) -> PathBuf {
        let dir = parts.iter().fold(root.to_path_buf(), |d, p| d.join(p));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn load_dir(dir: &Path, options: &str, split: Split) -> Result<Dataset> {
        load(&format!("images:{}{options}", dir.display()), split, None)
    }

    /// cat/a.png: 2x2 RGB; cat/b.jpg: 2x2 grey 100; dog/c.png: 4x4 grey in 2x2 blocks.
    fn pets() -> Scratch {
        let root = scratch("images-pets");
        let cat = folder(&root, &["cat"]);
        let rgb = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
        write_png(&cat.join("a.png"), 2, 2, ColorType::Rgb, &rgb);
        write_jpeg(&cat.join("b.JPG"), 2, 2, &[100; 4]);
        std::fs::write(cat.join("notes.txt"), "not an image").unwrap();
        let blocks: Vec<u8> = (0..16)
            .map(|i| [0, 51, 102, 153][(i / 8) * 2 + (i % 4) / 2])
            .collect();
        write_png(
            &folder(&root, &["dog"]).join("c.png"),
            4,
            4,
            ColorType::Grayscale,
            &blocks,
        );
        folder(&root, &[".hidden"]);
        root
    }

    #[test]
    fn class_folders_load_with_the_first_images_shape() {
        let d = load_dir(&pets(), "", Split::Train).unwrap();
        assert_eq!(d.images.dims(), [3, 3, 2, 2]);
        assert_eq!(
            (d.labels.clone(), d.class_names.clone()),
            (vec![0, 0, 1], vec!["cat".to_string(), "dog".into()])
        );
        let x = d.images.to_vec::<f32>().unwrap();
        // a.png, planes R, G, B.
        assert_eq!(
            x[..12],
            [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]
        );
        // b.JPG: grey 100 in every channel, up to JPEG rounding.
        assert!(
            x[12..24].iter().all(|v| (v * 255.0 - 100.0).abs() <= 1.0),
            "{:?}",
            &x[12..24]
        );
        // c.png: each 2x2 block averages to its value, repeated into RGB.
        let dog: Vec<f32> = [0.0, 0.2, 0.4, 0.6].repeat(3);
        assert_eq!(x[24..], dog);
    }

    #[test]
    fn size_and_channels_options_convert_every_image() {
        let d = load_dir(&pets(), "?size=1x1&channels=1", Split::Test).unwrap();
        assert_eq!(d.images.dims(), [3, 1, 1, 1]);
        let x = d.images.to_vec::<f32>().unwrap();
        // a.png: the mean of its four pixels' luma, (0.299 + 0.587 + 0.114 + 1) / 4.
        assert!((x[0] - 0.5).abs() < 1e-6, "{x:?}");
        assert!((x[2] - 0.3).abs() < 1e-6, "{x:?}");
        let d = load_dir(&pets(), "?size=3", Split::Train).unwrap();
        assert_eq!(d.images.dims(), [3, 3, 3, 3]);
        let root = pets();
        let limited = load(&format!("images:{}", root.display()), Split::Train, Some(2)).unwrap();
        assert_eq!(limited.labels, [0, 0]);
        assert_eq!(limited.num_classes, 2);
    }

    #[test]
    fn train_and_test_folders_serve_their_split() {
        let root = scratch("images-split");
        write_png(
            &folder(&root, &["train", "a"]).join("1.png"),
            1,
            1,
            ColorType::Grayscale,
            &[0],
        );
        write_png(
            &folder(&root, &["train", "b"]).join("2.png"),
            1,
            1,
            ColorType::Grayscale,
            &[255],
        );
        let rgba = [255, 255, 255, 0, 0, 0, 0, 255];
        write_png(
            &folder(&root, &["test", "c"]).join("3.png"),
            2,
            1,
            ColorType::Rgba,
            &rgba,
        );
        let train = load_dir(&root, "", Split::Train).unwrap();
        assert_eq!(train.images.to_vec::<f32>().unwrap(), [0.0, 1.0]);
        assert_eq!(
            (train.labels.clone(), train.class_names.len()),
            (vec![0, 1], 3)
        );
        let test = load_dir(&root, "", Split::Test).unwrap();
        assert_eq!(
            test.images.dims(),
            [1, 1, 1, 1],
            "resized to the first training image"
        );
        assert_eq!(
            (test.labels.clone(), test.images.to_vec::<f32>().unwrap()),
            (vec![2], vec![0.5])
        );
    }

    #[test]
    fn bad_folders_and_files_are_named() {
        let err = |dir: &Path, options: &str| {
            load_dir(dir, options, Split::Train)
                .unwrap_err()
                .to_string()
        };
        let root = scratch("images-bad");
        assert!(err(&root, "").ends_with("has no class subfolders (expected DIR/CLASS/IMAGE.png)"));
        let class = folder(&root, &["x"]);
        assert!(err(&root, "").contains("no PNG or JPEG files in the class folders of"));
        std::fs::write(class.join("broken.png"), b"\x89PNG\r\n\x1a\n junk").unwrap();
        let broken = err(&root, "");
        assert!(broken.contains("x/broken.png: corrupt PNG: "), "{broken}");
        std::fs::write(class.join("broken.png"), b"GIF89a").unwrap();
        assert!(err(&root, "?size=2&channels=3")
            .contains("broken.png: is neither a PNG nor a JPEG image"));
        assert!(err(&root, "?size=0x2").ends_with("option size=0x2: expected HxW or S, positive"));
        assert!(err(&root, "?channels=2").ends_with("option channels=2: expected 1 or 3"));
        assert!(err(&root.join("none"), "").ends_with("none not found"));
    }

    #[test]
    fn huge_sizes_and_headers_are_refused_before_decoding() {
        let root = scratch("images-huge");
        let class = folder(&root, &["x"]);
        write_png(&class.join("a.png"), 2, 2, ColorType::Grayscale, &[0; 4]);
        let err = |options: &str| {
            load_dir(&root, options, Split::Train)
                .unwrap_err()
                .to_string()
        };
        let limit = "more than the limit of 67108864 (8192x8192)";
        assert!(err("?size=100000x100000").ends_with(&format!(
            "option size=100000x100000: 100000x100000 is 10000000000 pixels, {limit}"
        )));
        // A file of under 100 bytes claiming 30000x30000: refused from its header, whether
        // it sets the shape (first file) or is only decoded (size and channels given).
        std::fs::write(
            class.join("0.png"),
            crate::testutil::png_claiming(30000, 30000),
        )
        .unwrap();
        let bomb = format!("0.png: 30000x30000 is 900000000 pixels, {limit}");
        assert!(err("").ends_with(&bomb), "{}", err(""));
        assert!(err("?size=28&channels=1").ends_with(&bomb));
        // Requested shapes are read from the spec alone, without touching the folder.
        use crate::spec::requested_image_shape;
        let shape = requested_image_shape("images:/none?size=28x32&channels=3").unwrap();
        let expected = Requested {
            channels: Some(3),
            size: Some((28, 32)),
        };
        assert_eq!(shape, Some(expected));
        assert_eq!(
            requested_image_shape("images:/none").unwrap(),
            Some(Requested::default())
        );
        assert_eq!(
            requested_image_shape("csv:/none.csv?label=a").unwrap(),
            None
        );
        let huge = requested_image_shape("images:/none?size=9000").unwrap_err();
        assert_eq!(
            huge.to_string(),
            format!(
                "dataset 'images:/none?size=9000': option size=9000: 9000x9000 is 81000000 \
                 pixels, {limit}"
            )
        );
        assert!(requested_image_shape("images:/none?colour=3").is_err());
    }

    #[test]
    fn mnist_digits_saved_as_png_load_back_unchanged() {
        let mnist = format!(
            "mnist:{}",
            crate::testutil::assets_dir().join("mnist").display()
        );
        let digits = load(&mnist, Split::Test, Some(60)).unwrap();
        let root = scratch("images-mnist");
        let pixels = digits.images.to_vec::<f32>().unwrap();
        for (i, (image, &label)) in pixels.chunks(784).zip(&digits.labels).enumerate() {
            let bytes: Vec<u8> = image.iter().map(|p| (p * 255.0).round() as u8).collect();
            let class = folder(&root, &[&format!("digit{label}")]);
            write_png(
                &class.join(format!("{i:03}.png")),
                28,
                28,
                ColorType::Grayscale,
                &bytes,
            );
        }
        let folder_set = load_dir(&root, "", Split::Test).unwrap();
        assert_eq!(folder_set.images.dims(), [60, 1, 28, 28]);
        // The folder groups samples by class; sort the MNIST samples the same way.
        let mut rows: Vec<usize> = (0..60).collect();
        rows.sort_by_key(|&r| digits.labels[r]);
        let (images, labels) = digits.gather(&rows).unwrap();
        let names: Vec<String> = folder_set
            .labels
            .iter()
            .map(|&l| folder_set.class_name(l as usize))
            .collect();
        let expected: Vec<String> = labels.iter().map(|l| format!("digit{l}")).collect();
        assert_eq!(names, expected);
        assert_eq!(folder_set.images, images);
        // No 8 among the first 60 test digits: 9 classes, 9 numbered 8.
        assert_eq!(folder_set.num_classes, 9);
    }
}

//! Fuzzing the data readers: NPY (raw and gzip), IDX (whole and row-limited), NPZ, CSV and
//! PNG/JPEG files made by the writers these formats come from, then edited byte by byte, and
//! dataset SPEC strings at random. Each input must give `Ok` or an error, never a panic, and
//! no allocation may exceed what the input's size (or, for images, the pixel limit)
//! justifies (see `fuzz_support`, shared with the model loader's suite). Seeds are fixed;
//! case counts keep the suite to seconds.

#[path = "../../ir/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::io::Write;
use std::path::Path;

use fuzz_support::{apply, check_allocations, config, edits, limit_memory, Bounded};
use proptest::prelude::*;
use whittle_data::images::{decode_image, MAX_PIXELS};
use whittle_data::spec::{requested_image_shape, Spec};
use whittle_data::{load, Split};
use whittle_ir::TensorData;
use whittle_testkit::scratch;

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

/// The bound for readers of small files: a few copies of what they hold.
const SMALL: usize = 16 << 20;

/// The bound for image decoders: a header may claim up to the pixel limit, whose 8-bit RGBA
/// buffer is allocated before the (short) data is found missing.
const IMAGE: usize = MAX_PIXELS as usize * 4;

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Valid NPY files of several element types, ranks and byte orders.
fn npy_seeds() -> Vec<Vec<u8>> {
    let tensors = [
        TensorData::from_slice(vec![3, 4], &[1.5f32; 12]).unwrap(),
        TensorData::from_slice(vec![5], &[-3i64, 0, 7, 1, 2]).unwrap(),
        TensorData::from_slice(vec![2, 1, 2], &[1u8, 2, 3, 4]).unwrap(),
        TensorData::from_slice(vec![0, 3], &[] as &[f64]).unwrap(),
        TensorData::scalar(true),
    ];
    tensors
        .iter()
        .map(|t| whittle_data::npy::to_npy_bytes(t).unwrap())
        .collect()
}

/// Valid IDX files: MNIST-like images and labels, and wider element types.
fn idx_seeds() -> Vec<Vec<u8>> {
    let idx = |code: u8, dims: &[u32], data: &[u8]| {
        let mut out = vec![0, 0, code, dims.len() as u8];
        dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
        out.extend_from_slice(data);
        out
    };
    vec![
        idx(0x08, &[3, 4, 4], &[9; 48]),
        idx(0x08, &[6], &[0, 1, 2, 3, 4, 5]),
        idx(0x0D, &[2, 2], &[0x3f; 16]),
        idx(0x0B, &[1, 3], &[1, 2, 3, 4, 5, 6]),
    ]
}

/// A valid NPZ archive of `x` and `y`, deflated or stored.
fn npz_seed(deflate: bool) -> Vec<u8> {
    let method = match deflate {
        true => zip::CompressionMethod::Deflated,
        false => zip::CompressionMethod::Stored,
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let x = TensorData::from_slice(vec![3, 2], &[1f32, 2., 3., 4., 5., 6.]).unwrap();
    let y = TensorData::from_slice(vec![3], &[0i64, 2, 1]).unwrap();
    for (name, t) in [("x", x), ("y", y)] {
        zip.start_file(format!("{name}.npy"), options).unwrap();
        zip.write_all(&whittle_data::npy::to_npy_bytes(&t).unwrap())
            .unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Valid CSV tables: a header with a label column and quoted fields, and bare numbers.
const CSV_SEEDS: [&str; 2] = [
    "\"width, cm\",height,Label\n1.5,2,0\n3,\"4\",2\n\n5,-6e1,1\n",
    "0.1,0.2,0.3,3\n1,2,3,0\n4,5,6,1\n",
];

/// Options a CSV spec is tried with.
const CSV_OPTIONS: [&str; 5] = [
    "",
    "?label=2",
    "?label=Label",
    "?header=true",
    "?header=false",
];

/// Valid PNG files: grey, RGB, grey+alpha, 16-bit RGBA and palette.
fn png_seeds() -> Vec<Vec<u8>> {
    use png::{BitDepth, ColorType};
    let png = |w: u32, h: u32, color: ColorType, depth: BitDepth| {
        let per_pixel = match color {
            ColorType::Grayscale | ColorType::Indexed => 1,
            ColorType::GrayscaleAlpha => 2,
            ColorType::Rgb => 3,
            ColorType::Rgba => 4,
        } * if depth == BitDepth::Sixteen { 2 } else { 1 };
        let pixels: Vec<u8> = (0..w * h * per_pixel)
            .map(|i| (i * 37 % 251) as u8)
            .collect();
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, w, h);
        encoder.set_color(color);
        encoder.set_depth(depth);
        if color == ColorType::Indexed {
            encoder.set_palette(
                (0..=255u8)
                    .flat_map(|i| [i, 255 - i, i / 2])
                    .collect::<Vec<_>>(),
            );
        }
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&pixels).unwrap();
        writer.finish().unwrap();
        bytes
    };
    vec![
        png(3, 2, ColorType::Grayscale, BitDepth::Eight),
        png(4, 4, ColorType::Rgb, BitDepth::Eight),
        png(2, 3, ColorType::GrayscaleAlpha, BitDepth::Eight),
        png(2, 2, ColorType::Rgba, BitDepth::Sixteen),
        png(5, 1, ColorType::Indexed, BitDepth::Eight),
    ]
}

/// Valid JPEG files: grey and RGB, one with a size that is not a multiple of the 8x8 block.
fn jpeg_seeds() -> Vec<Vec<u8>> {
    let jpeg = |w: u16, h: u16, color: jpeg_encoder::ColorType, channels: usize| {
        let pixels: Vec<u8> = (0..usize::from(w) * usize::from(h) * channels)
            .map(|i| (i * 13 % 256) as u8)
            .collect();
        let mut bytes = Vec::new();
        jpeg_encoder::Encoder::new(&mut bytes, 90)
            .encode(&pixels, w, h, color)
            .unwrap();
        bytes
    };
    vec![
        jpeg(8, 8, jpeg_encoder::ColorType::Luma, 1),
        jpeg(11, 5, jpeg_encoder::ColorType::Rgb, 3),
    ]
}

/// Options an image folder is tried with.
const IMAGE_OPTIONS: [&str; 4] = ["", "?size=5x3", "?channels=1", "?size=2&channels=3"];

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn npy_bytes_parse_or_fail_cleanly(which in 0..5usize, edits in edits(4)) {
        limit_memory();
        let bytes = apply(&npy_seeds()[which], &edits);
        let _ = whittle_data::npy::parse_npy(&bytes, "f.npy");
        check_allocations(SMALL)?;
    }

    #[test]
    fn idx_bytes_parse_or_fail_cleanly(which in 0..4usize, edits in edits(4)) {
        limit_memory();
        let bytes = apply(&idx_seeds()[which], &edits);
        let _ = whittle_data::idx::parse_idx(&bytes, "f.idx");
        check_allocations(SMALL)?;
    }

    #[test]
    fn image_bytes_decode_or_fail_cleanly(which in 0..7usize, edits in edits(4)) {
        limit_memory();
        let seeds: Vec<Vec<u8>> = png_seeds().into_iter().chain(jpeg_seeds()).collect();
        if let Ok(image) = decode_image(&apply(&seeds[which], &edits), "f.img") {
            prop_assert_eq!(image.pixels.len(), image.width * image.height * image.channels);
        }
        check_allocations(IMAGE)?;
    }

    #[test]
    fn spec_strings_parse_or_fail_cleanly(spec in "[a-z-]{0,14}:?[a-zA-Z0-9_.,:?&= x-]{0,40}") {
        limit_memory();
        if let Ok(parsed) = Spec::parse(&spec) {
            prop_assert!(spec.starts_with(parsed.scheme));
            prop_assert!(spec.contains(parsed.location));
        }
        let _ = requested_image_shape(&spec);
        check_allocations(SMALL)?;
    }

    #[test]
    fn specs_naming_missing_files_fail_cleanly(
        scheme in prop::sample::select(vec!["mnist", "fashion-mnist", "npy", "npz", "csv", "images"]),
        rest in "[a-zA-Z0-9_.,?&= x-]{0,30}",
        limit in prop::option::of(0usize..5),
    ) {
        limit_memory();
        // Inside a folder that does not exist, whatever the string adds.
        let missing = std::env::temp_dir().join("whittle-fuzz-no-such-folder");
        let spec = format!("{scheme}:{}/{rest}", missing.display());
        prop_assert!(load(&spec, Split::Test, limit).is_err());
        check_allocations(SMALL)?;
    }
}

proptest! {
    #![proptest_config(config(100))]

    #[test]
    fn gzip_npy_and_idx_files_read_or_fail_cleanly(
        which in 0..9usize,
        edits in edits(4),
        rows in 0usize..4,
    ) {
        limit_memory();
        let dir = scratch("fuzz-gzip");
        let seeds: Vec<Vec<u8>> = npy_seeds().into_iter().chain(idx_seeds()).collect();
        let path = dir.join("f.gz");
        write(&path, &apply(&gzip(&seeds[which]), &edits));
        let _ = whittle_data::npy::read_npy(&path);
        let _ = whittle_data::idx::read_idx(&path);
        let _ = whittle_data::idx::read_idx_rows(&path, rows);
        check_allocations(SMALL)?;
    }

    #[test]
    fn npz_archives_read_or_fail_cleanly(deflate: bool, edits in edits(4)) {
        limit_memory();
        let dir = scratch("fuzz-npz");
        let path = dir.join("f.npz");
        write(&path, &apply(&npz_seed(deflate), &edits));
        let _ = whittle_data::read_npz(&path);
        let _ = load(&format!("npz:{}", path.display()), Split::Train, Some(2));
        check_allocations(SMALL)?;
    }

    #[test]
    fn csv_tables_load_or_fail_cleanly(
        which in 0..2usize,
        options in prop::sample::select(CSV_OPTIONS.to_vec()),
        limit in prop::option::of(0usize..4),
        edits in edits(4),
    ) {
        limit_memory();
        let dir = scratch("fuzz-csv");
        let path = dir.join("f.csv");
        write(&path, &apply(CSV_SEEDS[which].as_bytes(), &edits));
        if let Ok(data) = load(&format!("csv:{}{options}", path.display()), Split::Test, limit) {
            prop_assert!(data.labels.iter().all(|&l| l >= 0 && (l as usize) < data.num_classes));
        }
        check_allocations(SMALL)?;
    }

    #[test]
    fn image_folders_load_or_fail_cleanly(
        which in 0..7usize,
        options in prop::sample::select(IMAGE_OPTIONS.to_vec()),
        edits in edits(4),
    ) {
        limit_memory();
        let dir = scratch("fuzz-images");
        let class = dir.join("class");
        std::fs::create_dir_all(&class).unwrap();
        let seeds: Vec<Vec<u8>> = png_seeds().into_iter().chain(jpeg_seeds()).collect();
        let name = if which < 5 { "x.png" } else { "x.jpg" };
        let _ = std::fs::remove_file(class.join("x.png"));
        let _ = std::fs::remove_file(class.join("x.jpg"));
        write(&class.join(name), &apply(&seeds[which], &edits));
        let spec = format!("images:{}{options}", class.parent().unwrap().display());
        if let Ok(data) = load(&spec, Split::Train, None) {
            prop_assert_eq!(data.images.dims()[0], 1);
        }
        check_allocations(IMAGE)?;
    }
}

#[test]
fn the_unedited_seeds_load() {
    // The seeds are worth fuzzing only if they are valid as they are.
    for bytes in npy_seeds() {
        whittle_data::npy::parse_npy(&bytes, "seed.npy").unwrap();
    }
    for bytes in idx_seeds() {
        whittle_data::idx::parse_idx(&bytes, "seed.idx").unwrap();
    }
    for bytes in png_seeds().into_iter().chain(jpeg_seeds()) {
        decode_image(&bytes, "seed").unwrap();
    }
    let dir = scratch("fuzz-seeds");
    for (i, deflate) in [false, true].into_iter().enumerate() {
        let path = dir.join(format!("{i}.npz"));
        write(&path, &npz_seed(deflate));
        let data = load(&format!("npz:{}", path.display()), Split::Train, None).unwrap();
        assert_eq!(data.labels, [0, 2, 1]);
    }
    for (i, text) in CSV_SEEDS.iter().enumerate() {
        let path = dir.join(format!("{i}.csv"));
        write(&path, text.as_bytes());
        let data = load(&format!("csv:{}", path.display()), Split::Train, None).unwrap();
        assert_eq!(data.len(), 3);
    }
}

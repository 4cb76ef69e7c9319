//! Helpers shared by the unit tests: the assets folder and scratch files.

use std::io::Write;
use std::path::{Path, PathBuf};

use whittle_ir::TensorData;

/// The assets folder (`$WHITTLE_ASSETS`, else `~/.cache/whittle-assets`); panics with a clear
/// message when it is missing, so that dataset tests never pass vacuously.
pub fn assets_dir() -> PathBuf {
    let dir = crate::assets_dir();
    assert!(
        dir.join("mnist").is_dir() && dir.join("fashion-mnist").is_dir(),
        "assets folder {} lacks mnist/ and fashion-mnist/: set WHITTLE_ASSETS to the folder \
         holding the MNIST and Fashion-MNIST files",
        dir.display()
    );
    dir
}

/// A fresh, empty scratch folder unique to this process and `name`.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("whittle-data-{}-{name}", std::process::id()));
    // Leftovers of an earlier run with the same pid may or may not exist.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch folder");
    dir
}

/// The bytes of an IDX file of type `code` and shape `dims` holding `data` (already big-endian).
pub fn idx_bytes(code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, code, dims.len() as u8];
    dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
    out.extend_from_slice(data);
    out
}

/// Writes an 8-bit PNG of `width x height` pixels of `color` to `path`.
pub fn write_png(path: &Path, width: u32, height: u32, color: png::ColorType, pixels: &[u8]) {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().expect("png header");
    writer.write_image_data(pixels).expect("png data");
    writer.finish().expect("png end");
    std::fs::write(path, bytes).expect("write png");
}

/// Writes a best-quality JPEG of `width x height` grey (1 byte) or RGB (3 bytes) pixels.
pub fn write_jpeg(path: &Path, width: u16, height: u16, pixels: &[u8]) {
    let color = match pixels.len() / (usize::from(width) * usize::from(height)) {
        1 => jpeg_encoder::ColorType::Luma,
        _ => jpeg_encoder::ColorType::Rgb,
    };
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, 100)
        .encode(pixels, width, height, color)
        .expect("encode jpeg");
    std::fs::write(path, bytes).expect("write jpeg");
}

/// Writes an `.npz` archive of named arrays, deflated or stored.
pub fn write_npz(path: &Path, arrays: &[(&str, TensorData)], deflate: bool) {
    let method = match deflate {
        true => zip::CompressionMethod::Deflated,
        false => zip::CompressionMethod::Stored,
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).expect("create npz"));
    for (name, array) in arrays {
        zip.start_file(format!("{name}.npy"), options)
            .expect("npz entry");
        zip.write_all(&crate::npy::to_npy_bytes(array).expect("npy bytes"))
            .expect("write entry");
    }
    zip.finish().expect("finish npz");
}

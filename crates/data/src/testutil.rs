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

/// The bytes of an IDX file of type `code` and shape `dims` holding `data` (already big-endian).
pub fn idx_bytes(code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, code, dims.len() as u8];
    dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
    out.extend_from_slice(data);
    out
}

/// The bytes of an 8-bit PNG of `width x height` pixels of `color`.
pub fn png_bytes(width: u32, height: u32, color: png::ColorType, pixels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().expect("png header");
    writer.write_image_data(pixels).expect("png data");
    writer.finish().expect("png end");
    bytes
}

/// Writes an 8-bit PNG of `width x height` pixels of `color` to `path`.
pub fn write_png(path: &Path, width: u32, height: u32, color: png::ColorType, pixels: &[u8]) {
    std::fs::write(path, png_bytes(width, height, color, pixels)).expect("write png");
}

/// A 1x1 grey PNG (under 100 bytes) whose header claims `width x height` pixels: its IHDR
/// chunk (bytes 16..24 after the 8-byte signature and the chunk's length and type) patched,
/// with its CRC (over type and data, bytes 12..29) recomputed.
pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png_bytes(1, 1, png::ColorType::Grayscale, &[0]);
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    bytes
}

/// The bytes of a best-quality JPEG of `width x height` grey (1 byte) or RGB (3 bytes) pixels.
pub fn jpeg_bytes(width: u16, height: u16, pixels: &[u8]) -> Vec<u8> {
    let color = match pixels.len() / (usize::from(width) * usize::from(height)) {
        1 => jpeg_encoder::ColorType::Luma,
        _ => jpeg_encoder::ColorType::Rgb,
    };
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, 100)
        .encode(pixels, width, height, color)
        .expect("encode jpeg");
    bytes
}

/// Writes a best-quality JPEG of `width x height` grey (1 byte) or RGB (3 bytes) pixels.
pub fn write_jpeg(path: &Path, width: u16, height: u16, pixels: &[u8]) {
    std::fs::write(path, jpeg_bytes(width, height, pixels)).expect("write jpeg");
}

/// An 8x8 grey JPEG whose frame header (SOF0: marker, length, precision, then height and
/// width) claims `width x height` pixels.
pub fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = jpeg_bytes(8, 8, &[128; 64]);
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline JPEG has an SOF0 marker");
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
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

//! Decoding PNG and JPEG files to 8-bit pixels, channel conversion and bilinear resizing.

use std::io::Cursor;

use png::{ColorType, Transformations};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::JpegDecoder;

use crate::error::{DataError, Result};

/// The bytes PNG files start with.
const PNG_MAGIC: &[u8] = b"\x89PNG";

/// The bytes JPEG files start with.
const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8];

/// ITU-R BT.601 luma weights of red, green and blue.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// A decoded image: `height` rows of `width` pixels of `channels` (1 or 3) interleaved bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `height * width * channels` bytes.
    pub pixels: Vec<u8>,
}

/// Decodes a PNG or JPEG file (told apart by content); alpha is dropped, palettes and
/// 16-bit samples become 8-bit grey or RGB. `file` names the source in errors.
pub fn decode_image(bytes: &[u8], file: &str) -> Result<Image> {
    if bytes.starts_with(PNG_MAGIC) {
        decode_png(bytes).map_err(|e| DataError::format(file, format!("corrupt PNG: {e}")))
    } else if bytes.starts_with(JPEG_MAGIC) {
        decode_jpeg(bytes).map_err(|e| DataError::format(file, format!("corrupt JPEG: {e}")))
    } else {
        Err(DataError::format(file, "is neither a PNG nor a JPEG image"))
    }
}

/// Decodes a PNG to 8-bit grey or RGB.
fn decode_png(bytes: &[u8]) -> std::result::Result<Image, png::DecodingError> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(Transformations::normalize_to_color8());
    let mut reader = decoder.read_info()?;
    let mut buffer = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader.next_frame(&mut buffer)?;
    buffer.truncate(info.buffer_size());
    let (stored, kept) = match info.color_type {
        ColorType::Grayscale => (1, 1),
        ColorType::GrayscaleAlpha => (2, 1),
        ColorType::Rgba => (4, 3),
        ColorType::Rgb | ColorType::Indexed => (3, 3),
    };
    let (width, height) = (info.width as usize, info.height as usize);
    let pixels = buffer
        .chunks(info.line_size)
        .flat_map(|row| row[..width * stored].chunks(stored))
        .flat_map(|pixel| pixel[..kept].iter().copied())
        .collect();
    Ok(Image {
        width,
        height,
        channels: kept,
        pixels,
    })
}

/// Decodes a JPEG to 8-bit grey (for greyscale files) or RGB.
fn decode_jpeg(bytes: &[u8]) -> std::result::Result<Image, zune_jpeg::errors::DecodeErrors> {
    let mut decoder = JpegDecoder::new(ZCursor::new(bytes));
    let rgb = decoder.decode()?;
    let (width, height) = decoder.dimensions().unwrap_or((0, 0));
    let grey = decoder.input_colorspace() == Some(ColorSpace::Luma);
    let pixels = match grey {
        true => rgb.chunks(3).map(|p| p[0]).collect(),
        false => rgb,
    };
    Ok(Image {
        width,
        height,
        channels: if grey { 1 } else { 3 },
        pixels,
    })
}

impl Image {
    /// The image as `channels` (1 or 3) planes of float32 in `[0, 1]` (`[C, H, W]`):
    /// grey is repeated into RGB, RGB becomes grey by BT.601 luma.
    pub fn planes(&self, channels: usize) -> Vec<f32> {
        let plane = self.width * self.height;
        let mut out = vec![0f32; plane * channels];
        for (i, pixel) in self.pixels.chunks(self.channels).enumerate() {
            let value = |c: usize| f32::from(pixel[c.min(pixel.len() - 1)]) / 255.0;
            if channels == 1 && self.channels == 3 {
                out[i] = (0..3).map(|c| LUMA[c] * value(c)).sum();
            } else {
                (0..channels).for_each(|c| out[c * plane + i] = value(c));
            }
        }
        out
    }
}

/// Resizes planes of `from = (height, width)` to `to = (height, width)` by bilinear
/// interpolation with pixel centres aligned (as OpenCV's `INTER_LINEAR`, no antialiasing).
pub fn resize_bilinear(planes: &[f32], from: (usize, usize), to: (usize, usize)) -> Vec<f32> {
    if from == to {
        return planes.to_vec();
    }
    let rows = source_taps(from.0, to.0);
    let cols = source_taps(from.1, to.1);
    let mut out = Vec::with_capacity(planes.len() / (from.0 * from.1).max(1) * to.0 * to.1);
    for plane in planes.chunks((from.0 * from.1).max(1)) {
        for &(y0, y1, fy) in &rows {
            for &(x0, x1, fx) in &cols {
                let at = |y: usize, x: usize| plane[y * from.1 + x];
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    out
}

/// For each of `to` output positions: the two source positions among `from` and the weight
/// of the second.
fn source_taps(from: usize, to: usize) -> Vec<(usize, usize, f32)> {
    let scale = from as f32 / to.max(1) as f32;
    let last = from.saturating_sub(1);
    (0..to)
        .map(|i| {
            let x = ((i as f32 + 0.5) * scale - 0.5).clamp(0.0, last as f32);
            let x0 = x.floor() as usize;
            (x0, (x0 + 1).min(last), x - x0 as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_resize_matches_hand_computed_values() {
        // [[0, 1], [2, 3]] to 4x4: source coordinates -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
        let out = resize_bilinear(&[0.0, 1.0, 2.0, 3.0], (2, 2), (4, 4));
        assert_eq!(out[..4], [0.0, 0.25, 0.75, 1.0]);
        assert_eq!(out[4..8], [0.5, 0.75, 1.25, 1.5]);
        assert_eq!(out[12..], [2.0, 2.25, 2.75, 3.0]);
        // 4x1 to 2x1 averages neighbours: source rows 0.5 and 2.5.
        assert_eq!(
            resize_bilinear(&[0.0, 2.0, 4.0, 8.0], (4, 1), (2, 1)),
            [1.0, 6.0]
        );
        let planes = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(resize_bilinear(&planes, (1, 3), (1, 3)), planes);
        assert_eq!(resize_bilinear(&planes, (1, 3), (1, 1)), [2.0, 5.0]);
    }

    #[test]
    fn channels_convert_between_grey_and_rgb() {
        let rgb = Image {
            width: 2,
            height: 1,
            channels: 3,
            pixels: vec![255, 0, 0, 0, 0, 255],
        };
        assert_eq!(rgb.planes(3), [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(rgb.planes(1), [0.299, 0.114]);
        let grey = Image {
            width: 2,
            height: 1,
            channels: 1,
            pixels: vec![0, 51],
        };
        assert_eq!(grey.planes(3), [0.0, 0.2, 0.0, 0.2, 0.0, 0.2]);
        assert_eq!(grey.planes(1), [0.0, 0.2]);
    }

    #[test]
    fn unknown_and_truncated_files_are_named() {
        let err = |bytes: &[u8]| decode_image(bytes, "a.png").unwrap_err().to_string();
        assert_eq!(err(b"GIF89a"), "a.png: is neither a PNG nor a JPEG image");
        assert!(err(b"\x89PNG\r\n\x1a\n\0\0").starts_with("a.png: corrupt PNG: "));
        assert!(err(&[0xFF, 0xD8, 0xFF]).starts_with("a.png: corrupt JPEG: "));
    }
}

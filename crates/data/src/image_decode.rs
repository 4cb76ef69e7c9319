//! Decoding PNG and JPEG files to 8-bit pixels, channel conversion and bilinear resizing.

use std::io::Cursor;

use png::{ColorType, Transformations};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
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

/// Most pixels an image may have, in a file's header or asked for by `size=HxW`: 8192 x 8192.
/// A decoded RGB image of that size holds 192 MiB of bytes and 768 MiB of float planes; a
/// larger header is refused before anything is decoded (a tiny file can claim any size).
pub const MAX_PIXELS: u64 = 1 << 26;

/// What an image file's header says: its size and the channels it decodes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// 1 (grey) or 3 (RGB), alpha dropped.
    pub channels: usize,
}

/// A PNG or JPEG file whose header has been read (and checked), ready to decode (boxed:
/// a JPEG decoder holds 29 KiB of tables).
enum Opened<'b> {
    Png(Box<png::Reader<Cursor<&'b [u8]>>>),
    Jpeg(Box<JpegDecoder<ZCursor<&'b [u8]>>>),
}

/// Reads the header of a PNG or JPEG file (told apart by content) without decoding its
/// pixels; fails when it claims more than [`MAX_PIXELS`]. `file` names the source in errors.
pub fn read_header(bytes: &[u8], file: &str) -> Result<Header> {
    open(bytes, file).map(|(header, _)| header)
}

/// Decodes a PNG or JPEG file (told apart by content) after checking the size its header
/// claims against [`MAX_PIXELS`]; alpha is dropped, palettes and 16-bit samples become 8-bit
/// grey or RGB. `file` names the source in errors.
pub fn decode_image(bytes: &[u8], file: &str) -> Result<Image> {
    let (header, opened) = open(bytes, file)?;
    let pixels = match opened {
        Opened::Png(reader) => decode_png(reader, header).map_err(|e| corrupt("PNG", e)),
        Opened::Jpeg(decoder) => decode_jpeg(decoder, header).map_err(|e| corrupt("JPEG", e)),
    }
    .map_err(|reason| DataError::format(file, reason))?;
    let expected = header.width * header.height * header.channels;
    if pixels.len() != expected {
        return Err(DataError::format(
            file,
            format!(
                "decoded to {} bytes, its {}x{} header with {} channels needs {expected}",
                pixels.len(),
                header.width,
                header.height,
                header.channels
            ),
        ));
    }
    Ok(Image {
        width: header.width,
        height: header.height,
        channels: header.channels,
        pixels,
    })
}

/// "corrupt FORMAT: cause".
fn corrupt(format: &str, cause: impl std::fmt::Display) -> String {
    format!("corrupt {format}: {cause}")
}

/// Reads the header of a PNG or JPEG file and checks its size against [`MAX_PIXELS`].
fn open<'b>(bytes: &'b [u8], file: &str) -> Result<(Header, Opened<'b>)> {
    let fail = |reason: String| DataError::format(file, reason);
    let (header, opened) = if bytes.starts_with(PNG_MAGIC) {
        let mut decoder = png::Decoder::new(Cursor::new(bytes));
        decoder.set_transformations(Transformations::normalize_to_color8());
        let reader = decoder.read_info().map_err(|e| fail(corrupt("PNG", e)))?;
        let (width, height) = (reader.info().width, reader.info().height);
        let channels = match reader.output_color_type().0 {
            ColorType::Grayscale | ColorType::GrayscaleAlpha => 1,
            ColorType::Rgb | ColorType::Rgba | ColorType::Indexed => 3,
        };
        let header = Header {
            width: width as usize,
            height: height as usize,
            channels,
        };
        (header, Opened::Png(Box::new(reader)))
    } else if bytes.starts_with(JPEG_MAGIC) {
        // JPEG's own limit is 65535 on each side; the pixel count is checked below.
        let options = DecoderOptions::default()
            .set_max_width(usize::from(u16::MAX))
            .set_max_height(usize::from(u16::MAX));
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
        decoder
            .decode_headers()
            .map_err(|e| fail(corrupt("JPEG", e)))?;
        let (width, height) = decoder.dimensions().unwrap_or((0, 0));
        let grey = decoder.input_colorspace() == Some(ColorSpace::Luma);
        let channels = if grey { 1 } else { 3 };
        let header = Header {
            width,
            height,
            channels,
        };
        (header, Opened::Jpeg(Box::new(decoder)))
    } else {
        return Err(fail("is neither a PNG nor a JPEG image".into()));
    };
    check_pixels(header.height, header.width, file)?;
    Ok((header, opened))
}

/// Fails, naming `what`, when `height x width` has no pixels or more than [`MAX_PIXELS`].
pub fn check_pixels(height: usize, width: usize, what: &str) -> Result<()> {
    let pixels = height as u64 * width as u64;
    let side = (MAX_PIXELS as f64).sqrt() as u64;
    let reason = match pixels {
        0 => format!("{height}x{width} has no pixels"),
        p if p > MAX_PIXELS => format!(
            "{height}x{width} is {p} pixels, more than the limit of {MAX_PIXELS} ({side}x{side})"
        ),
        _ => return Ok(()),
    };
    Err(DataError::format(what, reason))
}

/// Decodes the pixels of a PNG to 8-bit grey or RGB rows without padding.
fn decode_png(
    mut reader: Box<png::Reader<Cursor<&[u8]>>>,
    header: Header,
) -> std::result::Result<Vec<u8>, png::DecodingError> {
    let mut buffer = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader.next_frame(&mut buffer)?;
    buffer.truncate(info.buffer_size());
    let stored = match info.color_type {
        ColorType::Grayscale => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgba => 4,
        ColorType::Rgb | ColorType::Indexed => 3,
    };
    let width = (info.width as usize).min(header.width);
    Ok(buffer
        .chunks(info.line_size.max(1))
        .flat_map(|row| row[..(width * stored).min(row.len())].chunks(stored))
        .flat_map(|pixel| pixel[..header.channels.min(pixel.len())].iter().copied())
        .collect())
}

/// Decodes the pixels of a JPEG to 8-bit grey (for greyscale files) or RGB.
fn decode_jpeg(
    mut decoder: Box<JpegDecoder<ZCursor<&[u8]>>>,
    header: Header,
) -> std::result::Result<Vec<u8>, zune_jpeg::errors::DecodeErrors> {
    let rgb = decoder.decode()?;
    Ok(match header.channels {
        1 => rgb.chunks(3).map(|p| p[0]).collect(),
        _ => rgb,
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
    fn headers_are_read_without_decoding_and_checked_against_the_pixel_limit() {
        use crate::testutil::{jpeg_bytes, jpeg_claiming, png_bytes, png_claiming};
        let rgba = png_bytes(3, 2, ColorType::Rgba, &[9; 24]);
        let header = |width, height, channels| Header {
            width,
            height,
            channels,
        };
        assert_eq!(read_header(&rgba, "a.png").unwrap(), header(3, 2, 3));
        let image = decode_image(&rgba, "a.png").unwrap();
        assert_eq!((image.channels, image.pixels), (3, vec![9; 18]));
        let grey = jpeg_bytes(8, 4, &[7; 32]);
        assert_eq!(read_header(&grey, "g.jpg").unwrap(), header(8, 4, 1));
        // Tiny files whose headers claim huge images are refused before any pixel is decoded.
        let bomb = png_claiming(30000, 30000);
        assert!(bomb.len() < 100, "{} bytes", bomb.len());
        let limit = "more than the limit of 67108864 (8192x8192)";
        for err in [
            read_header(&bomb, "bomb.png").unwrap_err(),
            decode_image(&bomb, "bomb.png").unwrap_err(),
        ] {
            let expected = format!("bomb.png: 30000x30000 is 900000000 pixels, {limit}");
            assert_eq!(err.to_string(), expected);
        }
        let err = decode_image(&jpeg_claiming(60000, 40000), "bomb.jpg").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("bomb.jpg: 40000x60000 is 2400000000 pixels, {limit}")
        );
        // The limit itself is allowed: the header is read without decoding 64M pixels.
        assert_eq!(
            read_header(&png_claiming(8192, 8192), "edge.png").unwrap(),
            header(8192, 8192, 1)
        );
        assert!(read_header(&png_claiming(8192, 8193), "over.png").is_err());
        // A header whose size disagrees with its data is corrupt, not a panic.
        let lying = png_claiming(2, 2);
        assert!(decode_image(&lying, "lie.png")
            .unwrap_err()
            .to_string()
            .starts_with("lie.png: corrupt PNG: "));
    }

    #[test]
    fn check_pixels_names_what_is_at_fault() {
        assert!(check_pixels(8192, 8192, "x").is_ok());
        let zero = check_pixels(0, 5, "option size=0x5").unwrap_err();
        assert_eq!(zero.to_string(), "option size=0x5: 0x5 has no pixels");
        let huge = check_pixels(100000, 100000, "option size=100000").unwrap_err();
        assert_eq!(
            huge.to_string(),
            "option size=100000: 100000x100000 is 10000000000 pixels, more than the limit of \
             67108864 (8192x8192)"
        );
    }

    #[test]
    fn unknown_and_truncated_files_are_named() {
        let err = |bytes: &[u8]| decode_image(bytes, "a.png").unwrap_err().to_string();
        assert_eq!(err(b"GIF89a"), "a.png: is neither a PNG nor a JPEG image");
        assert!(err(b"\x89PNG\r\n\x1a\n\0\0").starts_with("a.png: corrupt PNG: "));
        assert!(err(&[0xFF, 0xD8, 0xFF]).starts_with("a.png: corrupt JPEG: "));
    }
}

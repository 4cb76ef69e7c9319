//! Raw file bytes shared by the readers: transparent gzip, byte order, and size guards in
//! bytes against the memory available (a header or a compressed stream can claim any size).

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;
use whittle_ir::memory::{available_bytes, ensure_fits, human_bytes, tensor_bytes};

use crate::error::{DataError, Result};

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Most bytes a compressed stream may expand to when the memory available is unknown.
const MAX_DECODED_BYTES: u64 = 1 << 34;

/// Reads a whole file, after checking its size against the memory available.
pub fn read_plain(path: &Path) -> Result<Vec<u8>> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    ensure_fits(
        Some(u128::from(len)),
        &format!("reading {}", path.display()),
    )?;
    std::fs::read(path).map_err(io)
}

/// Reads a whole file, decompressing it when it starts with the gzip magic bytes (whatever its name).
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_plain(path)?;
    if bytes.starts_with(&GZIP_MAGIC) {
        gunzip(&bytes, &path.display().to_string())
    } else {
        Ok(bytes)
    }
}

/// A reader of a file's bytes, decompressing them when it starts with the gzip magic bytes
/// (whatever its name): for reading a prefix without loading the whole file.
pub fn open_file(path: &Path) -> Result<Box<dyn Read>> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    let head = std::io::BufRead::fill_buf(&mut reader).map_err(io)?;
    Ok(if head.starts_with(&GZIP_MAGIC) {
        Box::new(MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    })
}

/// Decompresses a gzip stream; `file` names the source in errors.
pub fn gunzip(bytes: &[u8], file: &str) -> Result<Vec<u8>> {
    read_bounded(
        MultiGzDecoder::new(bytes),
        file,
        "truncated or corrupt gzip data",
    )
}

/// Reads a (decompressing) stream to its end; fails, naming `file`, when it yields more
/// bytes than the memory available (or [`MAX_DECODED_BYTES`] when that is unknown), or
/// with `corrupt` and the cause when reading fails.
pub fn read_bounded(reader: impl Read, file: &str, corrupt: &str) -> Result<Vec<u8>> {
    let cap = available_bytes().map_or(MAX_DECODED_BYTES, |a| a.min(MAX_DECODED_BYTES));
    let mut out = Vec::new();
    reader
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| DataError::format(file, format!("{corrupt} ({e})")))?;
    if out.len() as u64 > cap {
        return Err(DataError::format(
            file,
            format!(
                "decompresses to more than {}, the memory available",
                human_bytes(u128::from(cap))
            ),
        ));
    }
    Ok(out)
}

/// Bytes needed for `dims` elements of `elem_size` bytes each; fails, naming `file`, when
/// that overflows or is more than the memory available.
pub fn data_len(dims: &[usize], elem_size: usize, file: &str) -> Result<usize> {
    let bytes = tensor_bytes(dims, elem_size);
    let what = format!("shape {dims:?} of {elem_size}-byte elements");
    ensure_fits(bytes, &what).map_err(|e| DataError::format(file, e.to_string()))?;
    bytes
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| DataError::format(file, format!("{what} is too large")))
}

/// Checks that `data` holds exactly `want` bytes, naming truncation or trailing bytes otherwise.
pub fn exact_data<'a>(data: &'a [u8], want: usize, file: &str) -> Result<&'a [u8]> {
    if data.len() < want {
        return Err(DataError::format(
            file,
            format!("truncated: {} data bytes, expected {want}", data.len()),
        ));
    }
    if data.len() > want {
        return Err(DataError::format(
            file,
            format!(
                "size mismatch: {} data bytes, expected {want} ({} trailing)",
                data.len(),
                data.len() - want
            ),
        ));
    }
    Ok(data)
}

/// Reverses the byte order of every `elem_size`-byte element (big-endian <-> little-endian).
pub fn swap_bytes(data: &mut [u8], elem_size: usize) {
    if elem_size > 1 {
        data.chunks_exact_mut(elem_size).for_each(<[u8]>::reverse);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gunzip_round_trips_and_rejects_truncation() {
        let data: Vec<u8> = (0..200u8).collect();
        let packed = gzip(&data);
        assert_eq!(gunzip(&packed, "x").unwrap(), data);
        for cut in 2..packed.len() {
            let err = gunzip(&packed[..cut], "x.gz").unwrap_err().to_string();
            assert!(err.starts_with("x.gz: truncated or corrupt gzip"), "{err}");
        }
    }

    #[test]
    fn read_file_detects_gzip_by_content_not_name() {
        let dir = whittle_testkit::scratch("raw");
        std::fs::write(dir.join("packed.bin"), gzip(b"hello")).unwrap();
        std::fs::write(dir.join("plain.gz"), b"hello").unwrap();
        assert_eq!(read_file(&dir.join("packed.bin")).unwrap(), b"hello");
        assert_eq!(read_file(&dir.join("plain.gz")).unwrap(), b"hello");
        let missing = read_file(&dir.join("none")).unwrap_err().to_string();
        assert!(missing.contains("none: No such file"), "{missing}");
    }

    #[test]
    fn data_len_guards_overflow_and_sizes_beyond_memory() {
        assert_eq!(data_len(&[2, 3], 4, "f").unwrap(), 24);
        assert_eq!(data_len(&[], 8, "f").unwrap(), 8);
        let err = data_len(&[usize::MAX, usize::MAX, usize::MAX], 8, "f").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "f: shape {:?} of 8-byte elements is too large (its size overflows)",
                [usize::MAX; 3]
            )
        );
        // 2^60 elements of 4 bytes: 4 EiB, more than any machine has.
        let err = data_len(&[1 << 30, 1 << 30], 4, "f")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "f: shape [1073741824, 1073741824] of 4-byte elements needs 4096.0 PiB but only"
            ),
            "{err}"
        );
    }

    #[test]
    fn exact_data_names_truncation_and_trailing_bytes() {
        assert_eq!(exact_data(&[1, 2], 2, "f").unwrap(), &[1, 2]);
        let short = exact_data(&[1], 2, "f").unwrap_err().to_string();
        assert_eq!(short, "f: truncated: 1 data bytes, expected 2");
        let long = exact_data(&[1, 2, 3], 2, "f").unwrap_err().to_string();
        assert!(long.contains("1 trailing"), "{long}");
    }

    #[test]
    fn swap_bytes_reverses_each_element() {
        let mut d = vec![1, 2, 3, 4, 5, 6];
        swap_bytes(&mut d, 2);
        assert_eq!(d, [2, 1, 4, 3, 6, 5]);
        swap_bytes(&mut d, 1);
        assert_eq!(d, [2, 1, 4, 3, 6, 5]);
    }
}

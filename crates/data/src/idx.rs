//! IDX files (the MNIST format): `0 0 TYPE RANK`, big-endian u32 dims, then big-endian data.

use std::io::Read;
use std::path::Path;

use whittle_ir::{DataType, TensorData};

use crate::error::{DataError, Result};
use crate::raw::{data_len, exact_data, open_file, read_file, swap_bytes};

/// Largest rank accepted in an IDX header.
const MAX_RANK: usize = 8;

/// Reads an IDX file, raw or gzip-compressed (detected by content), into a tensor.
pub fn read_idx(path: &Path) -> Result<TensorData> {
    parse_idx(&read_file(path)?, &path.display().to_string())
}

/// Reads the first `limit` rows (entries of the first axis) of an IDX file, raw or
/// gzip-compressed, decoding only the bytes they need; returns them and the number of rows
/// the file declares. The bytes after those rows are not read, so only a read of every row
/// ([`read_idx`]) notices trailing data.
pub fn read_idx_rows(path: &Path, limit: usize) -> Result<(TensorData, usize)> {
    let file = path.display().to_string();
    let mut reader = open_file(path)?;
    let mut read = |buf: &mut [u8], what: &str| {
        reader
            .read_exact(buf)
            .map_err(|e| DataError::format(&file, format!("truncated or unreadable {what} ({e})")))
    };
    let mut header = vec![0u8; 4];
    read(&mut header, "IDX header")?;
    let rank = header[3] as usize;
    if (1..=MAX_RANK).contains(&rank) {
        header.resize(4 + 4 * rank, 0);
        read(&mut header[4..], "IDX header")?;
    }
    let (dtype, mut dims) = parse_header(&header, &file)?;
    let size = dtype.size().unwrap_or(1);
    let declared = dims[0];
    dims[0] = declared.min(limit);
    // Read, not allocated up front: the header's size is only a claim.
    let want = data_len(&dims, size, &file)?;
    let mut data = Vec::new();
    let got = reader
        .take(want as u64)
        .read_to_end(&mut data)
        .map_err(|e| DataError::format(&file, format!("truncated or unreadable data ({e})")))?;
    if got < want {
        return Err(DataError::format(
            &file,
            format!("truncated: {got} data bytes, expected {want}"),
        ));
    }
    swap_bytes(&mut data, size);
    Ok((TensorData::from_bytes(dtype, dims, data)?, declared))
}

/// Decodes the bytes of an (uncompressed) IDX file; `file` names the source in errors.
pub fn parse_idx(bytes: &[u8], file: &str) -> Result<TensorData> {
    let (dtype, dims) = parse_header(bytes, file)?;
    let dims_end = 4 + 4 * dims.len();
    let size = dtype.size().unwrap_or(1);
    let want = data_len(&dims, size, file)?;
    let mut data = exact_data(&bytes[dims_end..], want, file)?.to_vec();
    swap_bytes(&mut data, size);
    Ok(TensorData::from_bytes(dtype, dims, data)?)
}

/// The element type and dims of the IDX header at the start of `bytes`.
fn parse_header(bytes: &[u8], file: &str) -> Result<(DataType, Vec<usize>)> {
    let fail = |reason: String| DataError::format(file, reason);
    let header = bytes
        .get(..4)
        .ok_or_else(|| fail(format!("truncated: {} bytes, no IDX header", bytes.len())))?;
    if header[..2] != [0, 0] {
        return Err(fail(format!(
            "bad magic {:02x?}: not an IDX file (expected 00 00 TYPE RANK)",
            header
        )));
    }
    let dtype = idx_dtype(header[2]).ok_or_else(|| {
        fail(format!(
            "unknown IDX element type 0x{:02x} (expected 08, 09, 0b, 0c, 0d or 0e)",
            header[2]
        ))
    })?;
    let rank = header[3] as usize;
    if !(1..=MAX_RANK).contains(&rank) {
        return Err(fail(format!("IDX rank {rank} is not in 1..={MAX_RANK}")));
    }
    let dims_end = 4 + 4 * rank;
    let dim_bytes = bytes.get(4..dims_end).ok_or_else(|| {
        fail(format!(
            "truncated: {} bytes, header of rank {rank} needs {dims_end}",
            bytes.len()
        ))
    })?;
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    Ok((dtype, dims))
}

/// The element type of an IDX type byte.
fn idx_dtype(code: u8) -> Option<DataType> {
    Some(match code {
        0x08 => DataType::Uint8,
        0x09 => DataType::Int8,
        0x0B => DataType::Int16,
        0x0C => DataType::Int32,
        0x0D => DataType::Float,
        0x0E => DataType::Double,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assets_dir, idx_bytes as idx};

    #[test]
    fn decodes_every_element_type_from_big_endian() {
        let t = parse_idx(&idx(0x08, &[3], &[0, 7, 255]), "f").unwrap();
        assert_eq!((t.dtype(), t.dims()), (DataType::Uint8, &[3usize][..]));
        assert_eq!(t.to_vec::<u8>().unwrap(), [0, 7, 255]);
        let t = parse_idx(&idx(0x09, &[2], &[0xff, 0x80]), "f").unwrap();
        assert_eq!(t.to_vec::<i8>().unwrap(), [-1, -128]);
        let t = parse_idx(&idx(0x0B, &[1, 2], &[0x01, 0x02, 0xff, 0xfe]), "f").unwrap();
        assert_eq!(t.dims(), [1, 2]);
        assert_eq!(t.to_vec::<i16>().unwrap(), [0x0102, -2]);
        let t = parse_idx(&idx(0x0C, &[1], &(-5i32).to_be_bytes()), "f").unwrap();
        assert_eq!(t.to_vec::<i32>().unwrap(), [-5]);
        let t = parse_idx(&idx(0x0D, &[1], &1.5f32.to_be_bytes()), "f").unwrap();
        assert_eq!(t.to_vec::<f32>().unwrap(), [1.5]);
        let t = parse_idx(&idx(0x0E, &[1], &(-0.25f64).to_be_bytes()), "f").unwrap();
        assert_eq!(t.to_vec::<f64>().unwrap(), [-0.25]);
    }

    #[test]
    fn bad_headers_give_clear_errors() {
        let err = |bytes: &[u8]| parse_idx(bytes, "x.idx").unwrap_err().to_string();
        assert!(err(&[1, 0, 8, 1, 0, 0, 0, 0]).contains("bad magic"));
        assert!(err(&idx(0x0A, &[1], &[0])).contains("unknown IDX element type 0x0a"));
        assert!(err(&[0, 0, 8, 0]).contains("rank 0"));
        assert!(err(&[0, 0, 8, 200]).contains("rank 200"));
        // 2^50 doubles: 8 PiB, more than any machine has.
        let big = err(&idx(0x0E, &[65536, 65536, 65536, 4], &[]));
        assert!(
            big.starts_with(
                "x.idx: shape [65536, 65536, 65536, 4] of 8-byte elements needs 8.0 PiB but only"
            ),
            "{big}"
        );
        let extra = err(&idx(0x08, &[2], &[1, 2, 3]));
        assert!(extra.contains("size mismatch"), "{extra}");
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_file() {
        let full = idx(0x0C, &[2, 2], &[1; 16]);
        assert!(parse_idx(&full, "f").is_ok());
        for cut in 0..full.len() {
            let err = parse_idx(&full[..cut], "cut.idx").unwrap_err().to_string();
            assert!(err.starts_with("cut.idx: truncated"), "cut {cut}: {err}");
        }
    }

    #[test]
    fn row_limited_reads_decode_only_a_prefix_raw_or_gzip() {
        let assets = assets_dir();
        let (labels, rows) =
            read_idx_rows(&assets.join("mnist/train-labels-idx1-ubyte"), 5).unwrap();
        assert_eq!(
            (rows, labels.to_vec::<u8>().unwrap()),
            (60000, vec![5, 0, 4, 1, 9])
        );
        let gz = assets.join("fashion-mnist/t10k-images-idx3-ubyte.gz");
        let (head, rows) = read_idx_rows(&gz, 3).unwrap();
        assert_eq!((rows, head.dims()), (10000, &[3usize, 28, 28][..]));
        let all = read_idx(&gz).unwrap();
        assert_eq!(head.bytes().unwrap(), &all.bytes().unwrap()[..3 * 784]);
        // A limit past the end reads every row; a short file is an error naming it.
        let dir = whittle_testkit::scratch("idx-rows");
        let path = dir.join("short.idx");
        std::fs::write(&path, idx(0x0C, &[2, 2], &[1; 16])).unwrap();
        assert_eq!(read_idx_rows(&path, 9).unwrap().0.dims(), [2, 2]);
        std::fs::write(&path, &idx(0x0C, &[2, 2], &[1; 16])[..20]).unwrap();
        let err = read_idx_rows(&path, 9).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: truncated", path.display())),
            "{err}"
        );
    }

    #[test]
    fn reads_real_mnist_test_labels_raw_and_fashion_gzip() {
        let assets = assets_dir();
        let labels = read_idx(&assets.join("mnist/t10k-labels-idx1-ubyte")).unwrap();
        assert_eq!(
            (labels.dtype(), labels.dims()),
            (DataType::Uint8, &[10000usize][..])
        );
        assert_eq!(labels.to_vec::<u8>().unwrap()[..5], [7, 2, 1, 0, 4]);
        let images = read_idx(&assets.join("fashion-mnist/t10k-images-idx3-ubyte.gz")).unwrap();
        assert_eq!(images.dims(), [10000, 28, 28]);
    }
}

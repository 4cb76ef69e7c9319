//! NPY files (format versions 1, 2 and 3) to and from [`TensorData`].

use std::io::Write;
use std::path::Path;

use whittle_ir::{DataType, TensorData};

use crate::error::{DataError, Result};
use crate::npy_header::{format_header, parse_header};
use crate::raw::{data_len, exact_data, read_file, swap_bytes};

/// The six bytes every NPY file starts with.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Header alignment numpy uses (the data starts at a multiple of this).
const ALIGN: usize = 64;

/// Bytes before the header text of a version 1.0 file: magic, version, u16 length.
const V1_PREFIX: usize = 10;

/// numpy type codes (without byte-order character) and the element types they hold.
const TYPES: [(&str, DataType); 12] = [
    ("f2", DataType::Float16),
    ("f4", DataType::Float),
    ("f8", DataType::Double),
    ("u1", DataType::Uint8),
    ("i1", DataType::Int8),
    ("u2", DataType::Uint16),
    ("i2", DataType::Int16),
    ("u4", DataType::Uint32),
    ("i4", DataType::Int32),
    ("u8", DataType::Uint64),
    ("i8", DataType::Int64),
    ("b1", DataType::Bool),
];

/// Reads an NPY file (gzip-compressed too, detected by content).
pub fn read_npy(path: &Path) -> Result<TensorData> {
    parse_npy(&read_file(path)?, &path.display().to_string())
}

/// Writes `tensor` as an NPY file that numpy's `np.load` reads back unchanged. The file
/// appears atomically (temporary file, then rename), and the tensor's bytes are written
/// straight from it, not copied into an encoded buffer first.
pub fn write_npy(path: &Path, tensor: &TensorData) -> Result<()> {
    let header = npy_header(tensor)?;
    let data = tensor.bytes().unwrap_or_default();
    whittle_ir::files::write_atomic(path, |tmp| {
        let io = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::io::BufWriter::new(std::fs::File::create(tmp).map_err(io)?);
        file.write_all(&header).map_err(io)?;
        file.write_all(data).map_err(io)?;
        file.flush().map_err(io)
    })
}

/// Decodes the bytes of an NPY file; `file` names the source in errors.
pub fn parse_npy(bytes: &[u8], file: &str) -> Result<TensorData> {
    let fail = |reason: String| DataError::format(file, reason);
    let (text, data) = split_header(bytes, file)?;
    let header = parse_header(&text, file)?;
    if header.fortran_order {
        return Err(fail(
            "fortran_order True is not supported (save a C-ordered array, \
             e.g. np.save(f, np.ascontiguousarray(a)))"
                .into(),
        ));
    }
    let (dtype, big_endian) = parse_descr(&header.descr)
        .ok_or_else(|| fail(format!("unsupported dtype descr '{}'", header.descr)))?;
    let size = dtype.size().unwrap_or(1);
    let want = data_len(&header.shape, size, file)?;
    let mut data = exact_data(data, want, file)?.to_vec();
    if big_endian {
        swap_bytes(&mut data, size);
    }
    Ok(TensorData::from_bytes(dtype, header.shape, data)?)
}

/// The encoded NPY file of `tensor`, byte for byte what numpy's `np.save` writes (version 1.0).
pub fn to_npy_bytes(tensor: &TensorData) -> Result<Vec<u8>> {
    let mut out = npy_header(tensor)?;
    out.extend_from_slice(tensor.bytes().unwrap_or_default());
    Ok(out)
}

/// The bytes of an NPY file before its data: magic, version 1.0, header length and the
/// header text padded so that the data starts at a multiple of [`ALIGN`].
fn npy_header(tensor: &TensorData) -> Result<Vec<u8>> {
    let fail = |reason: String| DataError::format("NPY output", reason);
    let descr = descr_of(tensor.dtype())
        .ok_or_else(|| fail(format!("{} cannot be stored in NPY", tensor.dtype())))?;
    let mut header = format_header(&descr, tensor.dims());
    let pad = (ALIGN - (V1_PREFIX + header.len() + 1) % ALIGN) % ALIGN;
    header.extend(std::iter::repeat_n(' ', pad));
    header.push('\n');
    let len = u16::try_from(header.len()).map_err(|_| {
        fail(format!(
            "shape of rank {} is too long for an NPY header",
            tensor.dims().len()
        ))
    })?;
    let mut out = Vec::with_capacity(V1_PREFIX + header.len());
    out.extend_from_slice(MAGIC);
    out.extend([1, 0]);
    out.extend(len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    Ok(out)
}

/// Splits an NPY file into its header text and its data bytes.
fn split_header<'a>(bytes: &'a [u8], file: &str) -> Result<(String, &'a [u8])> {
    let fail = |reason: String| DataError::format(file, reason);
    match bytes.get(..MAGIC.len()) {
        Some(magic) if magic == MAGIC => {}
        None if MAGIC.starts_with(bytes) => {
            return Err(fail("truncated: incomplete NPY magic".into()))
        }
        _ => return Err(fail("bad magic: not an NPY file".into())),
    }
    let version = bytes
        .get(6..8)
        .ok_or_else(|| fail("truncated: no NPY version".into()))?;
    let (len_bytes, utf8) = match version[0] {
        1 => (2, false),
        2 => (4, false),
        3 => (4, true),
        v => return Err(fail(format!("unsupported NPY version {v}.{}", version[1]))),
    };
    let start = 8 + len_bytes;
    let len_field = bytes
        .get(8..start)
        .ok_or_else(|| fail("truncated: incomplete NPY header length".into()))?;
    let len = len_field
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    let rest = &bytes[start..];
    let text = rest.get(..len).ok_or_else(|| {
        fail(format!(
            "truncated: NPY header of {len} bytes, only {} present",
            rest.len()
        ))
    })?;
    let text = if utf8 {
        String::from_utf8(text.to_vec()).map_err(|_| fail("NPY header is not UTF-8".into()))?
    } else {
        text.iter().map(|&b| char::from(b)).collect()
    };
    Ok((text, &rest[len..]))
}

/// The element type of a numpy descr and whether its data is big-endian.
fn parse_descr(descr: &str) -> Option<(DataType, bool)> {
    let order = descr.chars().next()?;
    let (_, dtype) = TYPES
        .iter()
        .find(|(code, _)| *code == &descr[order.len_utf8()..])?;
    let single = dtype.size() == Some(1);
    match order {
        '<' | '=' => Some((*dtype, false)),
        '>' => Some((*dtype, !single)),
        '|' if single => Some((*dtype, false)),
        _ => None,
    }
}

/// The descr numpy writes for an element type (`None` when NPY cannot hold it).
fn descr_of(dtype: DataType) -> Option<String> {
    let (code, _) = TYPES.iter().find(|(_, d)| *d == dtype)?;
    let order = if dtype.size() == Some(1) { '|' } else { '<' };
    Some(format!("{order}{code}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle_testkit::scratch;

    /// An NPY file exactly as numpy 2.4 writes it: version 1.0, `dict` padded with `pad` blanks.
    fn numpy_v1(dict: &str, pad: usize, data: &[u8]) -> Vec<u8> {
        let header = format!("{dict}{}\n", " ".repeat(pad));
        let len = (header.len() as u16).to_le_bytes();
        [&MAGIC[..], &[1, 0], &len, header.as_bytes(), data].concat()
    }

    /// One tensor of every element type NPY can hold, with extreme values.
    fn every_dtype() -> Vec<TensorData> {
        let half = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect();
        vec![
            TensorData::from_bytes(DataType::Float16, vec![2], half(&[0x3c00, 0xc000])).unwrap(),
            TensorData::from_slice(vec![2, 2], &[1.5f32, -0.0, f32::MAX, f32::MIN_POSITIVE])
                .unwrap(),
            TensorData::from_slice(vec![3], &[1e300f64, -2.5, 0.1]).unwrap(),
            TensorData::from_slice(vec![3], &[0u8, 128, 255]).unwrap(),
            TensorData::from_slice(vec![2], &[i8::MIN, i8::MAX]).unwrap(),
            TensorData::from_slice(vec![2], &[0u16, u16::MAX]).unwrap(),
            TensorData::from_slice(vec![2, 1], &[i16::MIN, -1]).unwrap(),
            TensorData::from_slice(vec![1], &[u32::MAX]).unwrap(),
            TensorData::from_slice(vec![2], &[i32::MIN, 7]).unwrap(),
            TensorData::from_slice(vec![1, 1, 1], &[u64::MAX]).unwrap(),
            TensorData::from_slice(vec![0, 3], &[] as &[i64]).unwrap(),
            TensorData::from_slice(vec![3], &[true, false, true]).unwrap(),
            TensorData::scalar(-9i64),
        ]
    }

    #[test]
    fn round_trips_every_dtype_with_aligned_headers() {
        for t in every_dtype() {
            let bytes = to_npy_bytes(&t).unwrap();
            let data_start = bytes.len() - t.byte_len();
            assert_eq!(data_start % ALIGN, 0, "{:?}", t.dtype());
            assert_eq!(bytes[data_start - 1], b'\n');
            assert_eq!(parse_npy(&bytes, "t.npy").unwrap(), t);
        }
    }

    #[test]
    fn reads_and_writes_the_exact_bytes_numpy_writes() {
        let data: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let file = numpy_v1(dict, 58, &data);
        let t = parse_npy(&file, "np.npy").unwrap();
        assert_eq!(t.dims(), [2, 3]);
        assert_eq!(t.to_vec::<f32>().unwrap(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(to_npy_bytes(&t).unwrap(), file);
        let dict = "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }";
        let file = numpy_v1(dict, 60, &[1, 0]);
        let t = parse_npy(&file, "np.npy").unwrap();
        assert_eq!(t.to_vec::<bool>().unwrap(), [true, false]);
        assert_eq!(to_npy_bytes(&t).unwrap(), file);
    }

    #[test]
    fn reads_big_endian_scalars_and_versions_2_and_3() {
        let dict = "{'descr': '>i4', 'fortran_order': False, 'shape': (), }";
        let t = parse_npy(&numpy_v1(dict, 62, &[0, 0, 0, 3]), "be.npy").unwrap();
        assert_eq!((t.dims(), t.to_vec::<i32>().unwrap()), (&[][..], vec![3]));
        let dict = "{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }";
        let data = [1.0f64.to_be_bytes(), (-2.0f64).to_be_bytes()].concat();
        let t = parse_npy(&numpy_v1(dict, 60, &data), "be.npy").unwrap();
        assert_eq!(t.to_vec::<f64>().unwrap(), [1.0, -2.0]);
        let header = "{'descr': '<u2', 'fortran_order': False, 'shape': (2,), }\n";
        for version in [2u8, 3] {
            let len = (header.len() as u32).to_le_bytes();
            let file = [
                &MAGIC[..],
                &[version, 0],
                &len,
                header.as_bytes(),
                &[1, 0, 2, 0],
            ]
            .concat();
            let t = parse_npy(&file, "v.npy").unwrap();
            assert_eq!(t.to_vec::<u16>().unwrap(), [1, 2], "version {version}");
        }
    }

    #[test]
    fn unsupported_content_gives_clear_errors() {
        let err = |dict: &str, data: &[u8]| {
            parse_npy(&numpy_v1(dict, 0, data), "e.npy")
                .unwrap_err()
                .to_string()
        };
        let fortran = err(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }",
            &[0; 4],
        );
        assert!(
            fortran.starts_with("e.npy: fortran_order True is not supported"),
            "{fortran}"
        );
        let complex = err(
            "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
            &[0; 8],
        );
        assert_eq!(complex, "e.npy: unsupported dtype descr '<c8'");
        assert!(err(
            "{'descr': '|i4', 'fortran_order': False, 'shape': (1,), }",
            &[0; 4]
        )
        .contains("unsupported dtype descr '|i4'"));
        let extra = err(
            "{'descr': '<i2', 'fortran_order': False, 'shape': (1,), }",
            &[0; 3],
        );
        assert!(extra.contains("size mismatch"), "{extra}");
        let huge = err(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (99999, 99999, 99999), }",
            &[],
        );
        assert!(
            huge.starts_with("e.npy: shape [99999, 99999, 99999] of 8-byte elements needs"),
            "{huge}"
        );
        let bad = parse_npy(b"\x93NUMPX\x01\x00", "m.npy")
            .unwrap_err()
            .to_string();
        assert_eq!(bad, "m.npy: bad magic: not an NPY file");
        let version = parse_npy(b"\x93NUMPY\x04\x00\x00\x00", "m.npy").unwrap_err();
        assert!(version.to_string().contains("unsupported NPY version 4.0"));
        let strings = TensorData::from_strings(vec![1], vec![b"a".to_vec()]).unwrap();
        assert!(to_npy_bytes(&strings)
            .unwrap_err()
            .to_string()
            .contains("cannot be stored"));
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_file() {
        let full = to_npy_bytes(&TensorData::from_slice(vec![2], &[1i32, 2]).unwrap()).unwrap();
        for cut in 0..full.len() {
            let err = parse_npy(&full[..cut], "cut.npy").unwrap_err().to_string();
            assert!(err.starts_with("cut.npy: truncated"), "cut {cut}: {err}");
        }
    }

    #[test]
    fn files_round_trip_through_disk() {
        // Files written by write_npy were checked once by hand to load in numpy 2.4
        // (np.load gives the same dtype, shape and values for every dtype above).
        let dir = scratch("npy");
        for (i, t) in every_dtype().into_iter().enumerate() {
            let path = dir.join(format!("{i}.npy"));
            write_npy(&path, &t).unwrap();
            assert_eq!(read_npy(&path).unwrap(), t);
        }
        let missing = read_npy(&dir.join("none.npy")).unwrap_err().to_string();
        assert!(missing.contains("none.npy"), "{missing}");
    }
}

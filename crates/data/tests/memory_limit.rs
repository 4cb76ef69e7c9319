//! Readers refuse, before allocating, what would not fit in memory: every test here runs
//! with `WHITTLE_MEMORY_LIMIT` at 1 MiB (set once for this test binary, whose tests all
//! want it), against files of a few hundred bytes that claim or expand to more.

use std::io::Write;
use std::path::Path;
use std::sync::Once;

use whittle_data::{load, Split};
use whittle_testkit::scratch;

/// The memory every test here may use.
const LIMIT: u64 = 1 << 20;

fn limit_memory() {
    static SET: Once = Once::new();
    SET.call_once(|| std::env::set_var(whittle_ir::memory::LIMIT_ENV, LIMIT.to_string()));
}

fn load_err(spec: String, limit: Option<usize>) -> String {
    limit_memory();
    load(&spec, Split::Test, limit).unwrap_err().to_string()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn an_image_dataset_larger_than_memory_is_refused_before_decoding() {
    let dir = scratch("memlimit-images");
    std::fs::create_dir(dir.join("a")).unwrap();
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, 2, 2);
    encoder.set_color(png::ColorType::Grayscale);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&[0; 4]).unwrap();
    writer.finish().unwrap();
    write(&dir.join("a/x.png"), &png);
    // 1000x1000 is under the pixel limit, but 3 x 1000 x 1000 float32 is 11.4 MiB.
    let err = load_err(
        format!("images:{}?size=1000x1000&channels=3", dir.display()),
        None,
    );
    assert!(
        err.ends_with(&format!(
            "1 images of 3x1000x1000 float32 from {} needs 11.4 MiB but only 1.0 MiB of memory \
             is available",
            dir.display()
        )),
        "{err}"
    );
    let small = load(
        &format!("images:{}?size=100", dir.display()),
        Split::Test,
        None,
    );
    assert_eq!(small.unwrap().images.dims(), [1, 1, 100, 100]);
}

#[test]
fn idx_headers_claiming_more_than_memory_are_refused() {
    let dir = scratch("memlimit-idx");
    let header = |rank_dims: &[u32]| {
        let mut out = vec![0, 0, 0x08, rank_dims.len() as u8];
        rank_dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
        out
    };
    write(
        &dir.join("t10k-images-idx3-ubyte"),
        &header(&[100000, 28, 28]),
    );
    write(&dir.join("t10k-labels-idx1-ubyte"), &header(&[100000]));
    let images = dir.join("t10k-images-idx3-ubyte").display().to_string();
    // Read in full, or only the rows asked for: the claimed size is checked first.
    let err = load_err(format!("mnist:{}", dir.display()), None);
    assert!(
        err.ends_with(&format!(
            "{images}: shape [100000, 28, 28] of 1-byte elements needs 74.8 MiB but only 1.0 \
             MiB of memory is available"
        )),
        "{err}"
    );
    let err = load_err(format!("mnist:{}", dir.display()), Some(5000));
    assert!(
        err.ends_with("shape [5000, 28, 28] of 1-byte elements needs 3.7 MiB but only 1.0 MiB of memory is available"),
        "{err}"
    );
}

#[test]
fn compressed_streams_that_expand_beyond_memory_are_cut_off() {
    let dir = scratch("memlimit-bombs");
    let zeros = vec![0u8; 2 << 20];
    let packed = gzip(&zeros);
    assert!(packed.len() < 4096, "{} bytes", packed.len());
    let npy = dir.join("x.npy");
    write(&npy, &packed);
    let err = load_err(format!("npy:{},{}", npy.display(), npy.display()), None);
    assert!(
        err.ends_with(&format!(
            "{}: decompresses to more than 1.0 MiB, the memory available",
            npy.display()
        )),
        "{err}"
    );
    let npz = dir.join("bomb.npz");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&npz).unwrap());
    let deflate = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("x.npy", deflate).unwrap();
    zip.write_all(&zeros).unwrap();
    zip.finish().unwrap();
    let err = load_err(format!("npz:{}", npz.display()), None);
    assert!(
        err.ends_with(&format!(
            "{}:x: decompresses to more than 1.0 MiB, the memory available",
            npz.display()
        )),
        "{err}"
    );
}

#[test]
fn files_larger_than_memory_are_not_read() {
    let dir = scratch("memlimit-big");
    let csv = dir.join("big.csv");
    write(&csv, &"1,0\n".repeat(600_000).into_bytes());
    let err = load_err(format!("csv:{}", csv.display()), None);
    assert!(
        err.ends_with(&format!(
            "reading {} needs 2.3 MiB but only 1.0 MiB of memory is available",
            csv.display()
        )),
        "{err}"
    );
}

#[test]
fn conversions_to_float32_are_checked_before_they_are_made() {
    let dir = scratch("memlimit-convert");
    // 100,000 bytes of uint8 samples: 1.1 MiB through float64 to float32.
    let x = whittle_ir::TensorData::from_slice(vec![1000, 100], &[7u8; 100_000]).unwrap();
    let y = whittle_ir::TensorData::from_slice(vec![1000], &[0u8; 1000]).unwrap();
    let (xp, yp) = (dir.join("x.npy"), dir.join("y.npy"));
    whittle_data::write_npy(&xp, &x).unwrap();
    whittle_data::write_npy(&yp, &y).unwrap();
    let err = load_err(format!("npy:{},{}", xp.display(), yp.display()), None);
    assert!(
        err.ends_with(&format!(
            "converting {} from uint8 to float32 needs 1.1 MiB but only 1.0 MiB of memory is \
             available",
            xp.display()
        )),
        "{err}"
    );
    // 400 MNIST-sized images: 306 KiB of bytes, 1.2 MiB as float32.
    let idx = |dims: &[u32], data: &[u8]| {
        let mut out = vec![0, 0, 0x08, dims.len() as u8];
        dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
        out.extend_from_slice(data);
        out
    };
    write(
        &dir.join("t10k-images-idx3-ubyte"),
        &idx(&[400, 28, 28], &[1; 400 * 784]),
    );
    write(&dir.join("t10k-labels-idx1-ubyte"), &idx(&[400], &[3; 400]));
    let err = load_err(format!("mnist:{}", dir.display()), None);
    assert!(
        err.ends_with(&format!(
            "{} as float32 needs 1.2 MiB but only 1.0 MiB of memory is available",
            dir.join("t10k-images-idx3-ubyte").display()
        )),
        "{err}"
    );
}

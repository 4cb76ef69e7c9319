//! ONNX Runtime contrib operators (`com.microsoft` domain): `MatMulNBits`.
//!
//! `MatMulNBits` multiplies A `[..., K]` by a weight stored block-wise along K with
//! `bits`-bit codes: B uint8 `[N, k_blocks, blob]` (codes packed low bits first), scales
//! `[N * k_blocks]`, optional zero points (uint8 packed per column the same way, or
//! float like the scales; default `2^(bits-1)`), optional bias `[N]`. The weight is
//! dequantised to float32 `[K, N]` and multiplied like `MatMul`, as ORT's reference
//! path does with `accuracy_level` 0.

use candle_core::Tensor;
use whittle_ir::NodeAttrs;

use super::linalg::{float_matmul, numpy_matmul};
use super::util::require_float;
use super::{OpCtx, Registry};
use crate::bail;
use crate::error::Result;
use crate::value::Value;

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add_in("com.microsoft", "MatMulNBits", matmul_nbits);
}

/// Shape attributes of a MatMulNBits node.
#[derive(Clone, Copy, Debug)]
struct NBits {
    k: usize,
    n: usize,
    bits: usize,
    block_size: usize,
}

impl NBits {
    fn from_node(c: &OpCtx) -> Result<Self> {
        let get = |name: &str| -> Result<usize> {
            match c.node.int(name)? {
                Some(v) if v > 0 => Ok(v as usize),
                Some(v) => bail!("attribute {name} = {v} must be positive"),
                None => bail!("attribute {name} is required"),
            }
        };
        let bits = c.node.int_or("bits", 4)? as usize;
        if !matches!(bits, 2 | 4 | 8) {
            bail!("bits = {bits} is not supported (2, 4 or 8)");
        }
        let block_size = get("block_size")?;
        if block_size < 16 || !block_size.is_power_of_two() {
            bail!("block_size = {block_size} must be a power of two >= 16");
        }
        Ok(NBits {
            k: get("K")?,
            n: get("N")?,
            bits,
            block_size,
        })
    }

    fn k_blocks(self) -> usize {
        self.k.div_ceil(self.block_size)
    }

    /// Bytes of one packed block of codes.
    fn blob(self) -> usize {
        self.block_size * self.bits / 8
    }
}

fn matmul_nbits(c: &OpCtx) -> Result<Vec<Value>> {
    let a = c.input(0)?;
    require_float(a)?;
    if c.opt_input(4).is_some() {
        bail!("input g_idx is not supported");
    }
    let p = NBits::from_node(c)?;
    let codes = packed_bytes(c.input(1)?, p.n * p.k_blocks() * p.blob(), "B")?;
    let scales = c.input(2)?.to_f64_vec()?;
    if scales.len() != p.n * p.k_blocks() {
        bail!(
            "scales has {} elements, expected N * k_blocks = {}",
            scales.len(),
            p.n * p.k_blocks()
        );
    }
    let zero_points = zero_points(c.opt_input(3), p)?;
    let w = dequantize(p, &codes, &scales, &zero_points);
    let w = Tensor::from_vec(w, (p.k, p.n), a.tensor().device())?;
    let a32 = a.tensor().to_dtype(candle_core::DType::F32)?;
    if a32.dims().last() != Some(&p.k) {
        bail!(
            "A has shape {:?}, its last dim must be K = {}",
            a.shape(),
            p.k
        );
    }
    let mut y = numpy_matmul(&a32, &w, float_matmul)?;
    if let Some(bias) = c.opt_input(5) {
        y = y.broadcast_add(&bias.tensor().to_dtype(candle_core::DType::F32)?)?;
    }
    Ok(vec![Value::new(y, a.dtype())?])
}

/// The bytes of a uint8 input, checking its element count.
fn packed_bytes(v: &Value, expected: usize, what: &str) -> Result<Vec<u8>> {
    if v.dtype() != whittle_ir::DataType::Uint8 {
        bail!("{what} must be uint8, got {}", v.dtype());
    }
    if v.numel() != expected {
        bail!("{what} has {} elements, expected {expected}", v.numel());
    }
    Ok(v.tensor().flatten_all()?.to_vec1::<u8>()?)
}

/// Zero point of every block, `[N * k_blocks]`.
fn zero_points(v: Option<&Value>, p: NBits) -> Result<Vec<f64>> {
    let blocks = p.n * p.k_blocks();
    let Some(v) = v else {
        return Ok(vec![(1u32 << (p.bits - 1)) as f64; blocks]);
    };
    if v.dtype().is_float() {
        let z = v.to_f64_vec()?;
        if z.len() != blocks {
            bail!(
                "float zero_points has {} elements, expected {blocks}",
                z.len()
            );
        }
        return Ok(z);
    }
    let per_row = (p.k_blocks() * p.bits).div_ceil(8);
    let bytes = packed_bytes(v, p.n * per_row, "zero_points")?;
    Ok(bytes
        .chunks(per_row)
        .flat_map(|row| unpack(row, p.bits).into_iter().take(p.k_blocks()))
        .map(f64::from)
        .collect())
}

/// Codes packed low bits first.
fn unpack(bytes: &[u8], bits: usize) -> Vec<u8> {
    let mask = ((1u16 << bits) - 1) as u8;
    bytes
        .iter()
        .flat_map(|&b| (0..8 / bits).map(move |i| (b >> (i * bits)) & mask))
        .collect()
}

/// The float32 weight `[K, N]` row-major: `(code - zero_point) * scale`.
fn dequantize(p: NBits, codes: &[u8], scales: &[f64], zero_points: &[f64]) -> Vec<f32> {
    let mut w = vec![0f32; p.k * p.n];
    let row_bytes = p.k_blocks() * p.blob();
    for (j, row) in codes.chunks(row_bytes).enumerate() {
        for (k, &q) in unpack(row, p.bits).iter().take(p.k).enumerate() {
            let blk = j * p.k_blocks() + k / p.block_size;
            w[k * p.n + j] = ((q as f64 - zero_points[blk]) * scales[blk]) as f32;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_unpack_low_bits_first() {
        assert_eq!(unpack(&[0x21, 0xF0], 4), vec![1, 2, 0, 15]);
        assert_eq!(unpack(&[0b1110_0100], 2), vec![0, 1, 2, 3]);
    }

    #[test]
    fn dequantisation_by_hand() {
        // K = 20, block 16: two blocks per column, the second padded; N = 1.
        let p = NBits {
            k: 20,
            n: 1,
            bits: 4,
            block_size: 16,
        };
        let mut codes = vec![0x31u8; 8]; // block 0: codes 1, 3, 1, 3, ...
        codes.extend([0x0Fu8; 8]); // block 1: codes 15, 0, ...
        let w = dequantize(p, &codes, &[0.5, 2.0], &[2.0, 8.0]);
        assert_eq!(w.len(), 20);
        assert_eq!(&w[..4], &[-0.5, 0.5, -0.5, 0.5]);
        assert_eq!(&w[16..], &[14.0, -16.0, 14.0, -16.0]);
    }
}

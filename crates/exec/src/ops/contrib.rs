//! ONNX Runtime contrib operators (`com.microsoft` domain): `MatMulNBits` and
//! `GatherBlockQuantized`.
//!
//! `MatMulNBits` multiplies A `[..., K]` by a weight stored block-wise along K with
//! `bits`-bit codes: B uint8 `[N, k_blocks, blob]` (codes packed low bits first), scales
//! `[N * k_blocks]`, optional zero points (uint8 packed per column the same way, or
//! float like the scales; default `2^(bits-1)`), optional bias `[N]`. The weight is
//! dequantised to float32 `[K, N]` and multiplied like `MatMul`, as ORT's reference
//! path does with `accuracy_level` 0.
//!
//! `GatherBlockQuantized` gathers rows of a table stored the same way (uint8 data packed
//! low bits first along its last axis, blocks of `block_size` along that axis, scales
//! and packed zero points per block) and dequantises only the rows it gathers. As in
//! ORT, an index out of range gives a row of zeros.

use candle_core::Tensor;
use whittle_ir::NodeAttrs;

use super::linalg::{float_matmul, numpy_matmul};
use super::util::{data_axis, require_float};
use super::{OpCtx, Registry};
use crate::bail;
use crate::error::Result;
use crate::value::Value;

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add_in("com.microsoft", "MatMulNBits", matmul_nbits);
    r.add_in(
        "com.microsoft",
        "GatherBlockQuantized",
        gather_block_quantized,
    );
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
        get("block_size")?;
        let (bits, block_size) = bits_and_block(c, 0)?;
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

/// `bits` and `block_size` of a node, checked.
fn bits_and_block(c: &OpCtx, default_block: i64) -> Result<(usize, usize)> {
    let bits = c.node.int_or("bits", 4)?;
    if !matches!(bits, 2 | 4 | 8) {
        bail!("bits = {bits} is not supported (2, 4 or 8)");
    }
    let block = c.node.int_or("block_size", default_block)?;
    if block < 16 || !(block as u64).is_power_of_two() {
        bail!("block_size = {block} must be a power of two >= 16");
    }
    Ok((bits as usize, block as usize))
}

/// GatherBlockQuantized on uint8 data gathered along axis 0 and quantized along its last
/// axis (the layout ORT requires for uint8 data); see the module documentation.
fn gather_block_quantized(c: &OpCtx) -> Result<Vec<Value>> {
    let (data, idx, scales) = (c.input(0)?, c.input(1)?, c.input(2)?);
    if data.dtype() != whittle_ir::DataType::Uint8 {
        bail!("data must be uint8 (packed codes), got {}", data.dtype());
    }
    require_float(scales)?;
    let (bits, block) = bits_and_block(c, 128)?;
    let rank = data.rank();
    let gather_axis = data_axis(c.node.int_or("gather_axis", 0)?, rank)?;
    let quantize_axis = data_axis(c.node.int_or("quantize_axis", 1)?, rank)?;
    if rank < 2 || gather_axis != 0 || quantize_axis != rank - 1 {
        bail!(
            "uint8 data of shape {:?} must have rank >= 2, gather_axis 0 and quantize_axis its last axis",
            data.shape()
        );
    }
    let shape = data.shape();
    let (rows, line_bytes) = (shape[0], shape[rank - 1]);
    let width = line_bytes * 8 / bits;
    let k_blocks = width.div_ceil(block);
    let lines_per_row: usize = shape[1..rank - 1].iter().product();
    let scales = scales.tensor().to_dtype(candle_core::DType::F32)?;
    let scales = scales.flatten_all()?.to_vec1::<f32>()?;
    if scales.len() != rows * lines_per_row * k_blocks {
        bail!(
            "scales has {} elements, expected {} (one per block of {block})",
            scales.len(),
            rows * lines_per_row * k_blocks
        );
    }
    let zp_bytes = (k_blocks * bits).div_ceil(8);
    let zero_points = match c.opt_input(3) {
        Some(z) => Some(packed_bytes(
            z,
            rows * lines_per_row * zp_bytes,
            "zero_points",
        )?),
        None => None,
    };
    let default_zp = (1u32 << (bits - 1)) as f32;
    let ids = idx.to_i64_vec()?;
    let line_len = lines_per_row * width;
    let mut out = vec![0f32; ids.len() * line_len];
    data.with_slice(|codes: &[u8]| {
        for (&id, dst) in ids.iter().zip(out.chunks_mut(line_len)) {
            let row = if id < 0 { id + rows as i64 } else { id };
            if !(0..rows as i64).contains(&row) {
                continue;
            }
            for (l, dst) in dst.chunks_mut(width).enumerate() {
                let line = row as usize * lines_per_row + l;
                let zps = zero_points
                    .as_ref()
                    .map(|z| unpack(&z[line * zp_bytes..(line + 1) * zp_bytes], bits));
                let src = &codes[line * line_bytes..(line + 1) * line_bytes];
                for (k, (&q, y)) in unpack(src, bits).iter().zip(dst).enumerate() {
                    let b = k / block;
                    let zp = zps.as_ref().map_or(default_zp, |z| f32::from(z[b]));
                    *y = (f32::from(q) - zp) * scales[line * k_blocks + b];
                }
            }
        }
    })?;
    let dims: Vec<usize> = [idx.shape(), &shape[1..rank - 1], &[width]].concat();
    let dtype = c.input(2)?.tensor().dtype();
    let y = Tensor::from_vec(out, dims, data.tensor().device())?.to_dtype(dtype)?;
    Ok(vec![Value::new(y, c.input(2)?.dtype())?])
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

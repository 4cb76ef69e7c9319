//! Non-finite values (NaN, ±inf): training data holding one is refused before training,
//! and a loss, parameter or statistic becoming one stops training (a model of NaN weights
//! is never written).

use candle_core::{DType, Tensor};
use whittle_data::Dataset;
use whittle_exec::kernels::dispatch;
use whittle_exec::Value;

use crate::bail;
use crate::error::Result;

/// Refuses `data` (called `what`, e.g. "training") when one of its values is not finite,
/// naming the first such sample.
pub fn check_dataset(data: &Dataset, what: &str) -> Result<()> {
    let Some(bytes) = data.images.bytes() else {
        return Ok(());
    };
    let per_sample = data.sample_dims().iter().product::<usize>().max(1);
    let found = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .enumerate()
        .find(|(_, v)| !v.is_finite());
    if let Some((i, v)) = found {
        bail!(
            "the {what} data holds a non-finite value ({v}) in sample {} (element {}): training needs finite inputs",
            i / per_sample,
            i % per_sample
        );
    }
    Ok(())
}

/// Whether every element of float tensor `t` is finite. Read on the host in one pass (a
/// candle reduction would run on candle's spinning thread pool after every step); float32
/// where it lies (no copy), in blocks without an early exit so that the test vectorises.
pub fn is_finite(t: &Tensor) -> Result<bool> {
    if t.dtype() == DType::F32 {
        let all = |v: &[f32]| {
            dispatch(
                #[inline(always)]
                || {
                    v.chunks(1024)
                        .all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()))
                },
            )
        };
        return Ok(Value::from_float(t.clone())?.with_f32(all)?);
    }
    let flat = t.flatten_all()?.to_dtype(DType::F64)?;
    Ok(flat.to_vec1::<f64>()?.iter().all(|v| v.is_finite()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use whittle_ir::TensorData;

    #[test]
    fn a_nan_or_infinity_anywhere_is_found() {
        let t = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
        assert!(is_finite(&t(&[1.0, -3e38, 0.0])).unwrap());
        assert!(!is_finite(&t(&[1.0, f32::NAN, 0.0])).unwrap());
        assert!(!is_finite(&t(&[f32::NEG_INFINITY, 2.0])).unwrap());
    }

    #[test]
    fn the_first_non_finite_sample_is_named() {
        let mut values = vec![0.5f32; 3 * 4];
        values[2 * 4 + 1] = f32::INFINITY;
        let images = TensorData::from_slice(vec![3, 2, 2], &values).unwrap();
        let data = Dataset::new(images, vec![0, 1, 0], 2).unwrap();
        let err = check_dataset(&data, "training").unwrap_err().to_string();
        assert!(err.contains("(inf) in sample 2 (element 1)"), "{err}");
        let fine = Dataset::new(
            TensorData::from_slice(vec![1, 1], &[1.0f32]).unwrap(),
            vec![0],
            1,
        );
        check_dataset(&fine.unwrap(), "training").unwrap();
    }
}

//! `Erf` on f32 tensors as one vectorisable pass (candle's maps every element through a
//! libm call; in MiniLM's GELUs that was 12% of a forward pass). Other float types use
//! candle's `erf`.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

/// erf(x) within 1e-6 of libm's: the Taylor series below |x| = 0.5 (terms to x^13, truncation
/// under 1e-9), Abramowitz & Stegun 7.1.28 above (`1 - (1 + a1 x + ... + a6 x^6)^-16`,
/// error at most 3e-7). Both branches are computed and one is selected, so a loop over a
/// slice vectorises.
#[inline]
pub fn erf_f32(x: f32) -> f32 {
    // 2/sqrt(pi) * (-1)^n / (n! (2n + 1)), n = 0..6.
    const SERIES: [f32; 7] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        -0.376_126_4,
        0.112_837_92,
        -0.026_866_17,
        0.005_223_977,
        -0.000_854_832,
        0.000_120_549_1,
    ];
    const AS: [f32; 6] = [
        0.070_523_08,
        0.042_282_01,
        0.009_270_527,
        0.000_152_014_3,
        0.000_276_567_2,
        0.000_043_063_8,
    ];
    // Horner from the highest coefficient (a fold from 0 would turn 0 * inf into NaN).
    let horner = |cs: &[f32], v: f32| {
        cs.iter()
            .rev()
            .skip(1)
            .fold(cs[cs.len() - 1], |acc, &c| acc * v + c)
    };
    let x2 = x * x;
    let series = x * horner(&SERIES, x2);
    let a = x.abs();
    let t = 1.0 + a * horner(&AS, a);
    let t4 = (t * t) * (t * t);
    let t16 = (t4 * t4) * (t4 * t4);
    let tail = (1.0 - 1.0 / t16).copysign(x);
    if a < 0.5 {
        series
    } else {
        tail
    }
}

/// The candle op: f32 forward on the host, derivative `2/sqrt(pi) exp(-x^2)`.
struct FastErf;

impl CustomOp1 for FastErf {
    fn name(&self) -> &'static str {
        "erf-f32"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(v), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("erf-f32 expects a contiguous f32 tensor");
        };
        let out = v[start..end].iter().map(|&x| erf_f32(x)).collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let slope = arg
            .sqr()?
            .neg()?
            .exp()?
            .affine(std::f64::consts::FRAC_2_SQRT_PI, 0.0)?;
        Ok(Some(grad_res.mul(&slope)?))
    }
}

/// erf of every element: [`erf_f32`] for f32 CPU tensors, candle's `erf` otherwise.
pub fn erf(t: &Tensor) -> candle_core::Result<Tensor> {
    if t.dtype() == candle_core::DType::F32 && t.device().is_cpu() {
        t.contiguous()?.apply_op1(FastErf)
    } else {
        t.erf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_libm_erf_and_keeps_the_gradient() {
        let xs: Vec<f32> = (-6000..=6000).map(|i| i as f32 * 1e-3).collect();
        let t = Tensor::new(xs.as_slice(), &candle_core::Device::Cpu).unwrap();
        let (fast, libm) = (erf(&t).unwrap(), t.erf().unwrap());
        let (a, b) = (
            fast.to_vec1::<f32>().unwrap(),
            libm.to_vec1::<f32>().unwrap(),
        );
        let worst = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "largest difference {worst}");
        // Tiny inputs keep their relative accuracy (the series branch).
        assert!((erf_f32(1e-6) / (1e-6 * std::f32::consts::FRAC_2_SQRT_PI) - 1.0).abs() < 1e-6);
        assert!(erf_f32(f32::NAN).is_nan());
        assert_eq!((erf_f32(f32::INFINITY), erf_f32(-20.0)), (1.0, -1.0));
        let v = candle_core::Var::new(&[0.3f32, -1.2][..], &candle_core::Device::Cpu).unwrap();
        let grads = erf(v.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g = grads.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for (x, g) in [0.3f32, -1.2].iter().zip(g) {
            let want = std::f32::consts::FRAC_2_SQRT_PI * (-x * x).exp();
            assert!((g - want).abs() < 1e-6, "d erf/dx at {x}: {g} vs {want}");
        }
    }
}

//! `Erf` on f32 tensors on the kernels' vectorised, chunk-parallel map
//! ([`crate::kernels::activation::erf_f32`]; candle's maps every element through a libm call,
//! in MiniLM's GELUs 12% of a forward pass). Other float types use candle's `erf`.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::kernels::activation::{unary, UnaryOp};

/// The candle op: f32 forward on the kernels, derivative `2/sqrt(pi) exp(-x^2)`.
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
        let x = &v[start..end];
        let mut out = crate::kernels::zeros(x.len());
        unary(UnaryOp::Erf, x, &mut out).map_err(candle_core::Error::wrap)?;
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

/// erf of every element: the kernels' [`erf_f32`](crate::kernels::activation::erf_f32) for f32 CPU tensors, candle's `erf` otherwise.
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
    use crate::kernels::activation::erf_f32;

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

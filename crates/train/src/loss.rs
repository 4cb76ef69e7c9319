//! Differentiable losses as candle tensor ops: cross-entropy with label smoothing, mean
//! squared error, and the temperature-scaled KL divergence of knowledge distillation.

use candle_core::{DType, Tensor, D};

use crate::bail;
use crate::error::Result;

/// Row-wise `log_softmax` of `[N, C]` scores.
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// Checks that `logits` is `[N, C]` with `N = labels.len()` and every label in `0..C`.
fn check_classes(logits: &Tensor, labels: &[i64]) -> Result<()> {
    let (n, c) = match logits.dims() {
        [n, c] => (*n, *c),
        dims => bail!("the loss needs class scores [N, classes], the output is {dims:?}"),
    };
    if n != labels.len() {
        bail!("{n} rows of class scores for {} labels", labels.len());
    }
    if let Some(l) = labels.iter().find(|&&l| l < 0 || l as usize >= c) {
        bail!("label {l} is out of range for a model with {c} outputs");
    }
    Ok(())
}

/// Mean cross-entropy of `[N, C]` logits against integer labels, with label smoothing
/// `smoothing` in `[0, 1)`: the target puts `1 - smoothing + smoothing / C` on the label and
/// `smoothing / C` on every other class.
pub fn cross_entropy(logits: &Tensor, labels: &[i64], smoothing: f64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&smoothing) {
        bail!("label smoothing {smoothing} is outside [0, 1)");
    }
    check_classes(logits, labels)?;
    let logp = log_softmax(&logits.to_dtype(DType::F32)?)?;
    let idx: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
    let idx = Tensor::from_vec(idx, (labels.len(), 1), logits.device())?;
    let nll = logp.gather(&idx, 1)?.mean_all()?.neg()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = logp.mean(D::Minus1)?.mean_all()?.neg()?;
    Ok(((nll * (1.0 - smoothing))? + (uniform * smoothing)?)?)
}

/// Mean squared error of two tensors of the same shape.
pub fn mse(prediction: &Tensor, target: &Tensor) -> Result<Tensor> {
    if prediction.dims() != target.dims() {
        bail!(
            "MSE of shapes {:?} and {:?}",
            prediction.dims(),
            target.dims()
        );
    }
    Ok((prediction - target)?.sqr()?.mean_all()?)
}

/// Distillation loss `T^2 * KL(softmax(teacher / T) || softmax(student / T))`, averaged over
/// the `N` rows of `[N, C]` scores. The teacher's scores are soft targets (no gradient).
pub fn kl_divergence(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        bail!("distillation temperature {temperature} must be positive");
    }
    if student.dims() != teacher.dims() || student.rank() != 2 {
        bail!(
            "KL divergence needs two [N, C] score tensors, got {:?} and {:?}",
            student.dims(),
            teacher.dims()
        );
    }
    let log_q = log_softmax(&(student.to_dtype(DType::F32)? / temperature)?)?;
    let log_p = log_softmax(&(teacher.to_dtype(DType::F32)?.detach() / temperature)?)?;
    let kl = (log_p.exp()? * (log_p - log_q)?)?
        .sum(D::Minus1)?
        .mean_all()?;
    Ok((kl * (temperature * temperature))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn scores(v: &[f32], n: usize) -> Tensor {
        Tensor::new(v, &Device::Cpu)
            .unwrap()
            .reshape((n, ()))
            .unwrap()
    }

    fn scalar(t: Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    #[test]
    fn cross_entropy_matches_hand_computed_values() {
        // Logits [0, ln 3]: softmax [0.25, 0.75].
        let logits = scores(&[0.0, 3f32.ln()], 1);
        let ce = scalar(cross_entropy(&logits, &[1], 0.0).unwrap());
        assert!((ce - -(0.75f64.ln())).abs() < 1e-6);
        // Smoothing 0.2 over 2 classes: target [0.1, 0.9].
        let smooth = scalar(cross_entropy(&logits, &[1], 0.2).unwrap());
        let want = -(0.1 * 0.25f64.ln() + 0.9 * 0.75f64.ln());
        assert!((smooth - want).abs() < 1e-6, "{smooth} vs {want}");
        assert!(cross_entropy(&logits, &[2], 0.0).is_err());
        assert!(cross_entropy(&logits, &[0], 1.0).is_err());
    }

    #[test]
    fn mse_and_kl_match_hand_computed_values() {
        let a = scores(&[1.0, 2.0], 1);
        let b = scores(&[0.0, 4.0], 1);
        assert!((scalar(mse(&a, &b).unwrap()) - 2.5).abs() < 1e-6);
        // T = 2: student softmax([0, 0]) = [0.5, 0.5]; teacher softmax([0, 2 ln 3] / 2) = [0.25, 0.75].
        let student = scores(&[0.0, 0.0], 1);
        let teacher = scores(&[0.0, 2.0 * 3f32.ln()], 1);
        let kl = scalar(kl_divergence(&student, &teacher, 2.0).unwrap());
        let want = 4.0 * (0.25 * (0.25f64 / 0.5).ln() + 0.75 * (0.75f64 / 0.5).ln());
        assert!((kl - want).abs() < 1e-5, "{kl} vs {want}");
        assert!(scalar(kl_divergence(&teacher, &teacher, 3.0).unwrap()).abs() < 1e-6);
        assert!(kl_divergence(&student, &teacher, 0.0).is_err());
    }
}

//! Transforms of a batch's samples: random crop with zero padding and horizontal flip on
//! images (`[B, ..., H, W]`), and per-channel normalisation (channels on axis 1).

use rand::Rng;

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// Per-channel normalisation along axis 1: `x -> (x - mean[c]) / std[c]`.
/// One value in `mean` and `std` applies to every channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    /// The mean subtracted from each channel.
    pub mean: Vec<f32>,
    /// The standard deviation each channel is divided by.
    pub std: Vec<f32>,
}

impl Normalize {
    /// Checks and builds a normalisation: as many means as deviations, and every deviation
    /// finite and positive.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.len() != std.len() || mean.is_empty() {
            return Err(DataError::Invalid(format!(
                "normalisation needs as many means as deviations, got {} and {}",
                mean.len(),
                std.len()
            )));
        }
        if let Some(bad) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::Invalid(format!(
                "normalisation deviation {bad} is not finite and positive"
            )));
        }
        Ok(Normalize { mean, std })
    }

    /// The mean and (population) standard deviation of each channel (axis 1) of a dataset.
    pub fn from_dataset(data: &Dataset) -> Result<Self> {
        let dims = data.images.dims();
        let values = data.images.to_vec::<f32>()?;
        let channels = dims.get(1).copied().unwrap_or(1).max(1);
        let plane = dims.iter().skip(2).product::<usize>().max(1);
        let mut sums = vec![(0f64, 0f64); channels];
        for (i, &v) in values.iter().enumerate() {
            let s = &mut sums[(i / plane) % channels];
            s.0 += f64::from(v);
            s.1 += f64::from(v) * f64::from(v);
        }
        let count = (values.len() / channels).max(1) as f64;
        let (mean, std) = sums
            .iter()
            .map(|&(s, s2)| {
                let m = s / count;
                (
                    m as f32,
                    ((s2 / count - m * m).max(0.0).sqrt() as f32).max(1e-6),
                )
            })
            .unzip();
        Normalize::new(mean, std)
    }

    /// Normalises `values` of shape `dims` in place.
    pub fn apply(&self, values: &mut [f32], dims: &[usize]) -> Result<()> {
        let channels = dims.get(1).copied().unwrap_or(1);
        if self.mean.len() != 1 && self.mean.len() != channels {
            return Err(DataError::Invalid(format!(
                "normalisation has {} values but the inputs {dims:?} have {channels} channels",
                self.mean.len()
            )));
        }
        let plane = dims.iter().skip(2).product::<usize>().max(1);
        for (i, chunk) in values.chunks_mut(plane).enumerate() {
            let c = if self.mean.len() == 1 {
                0
            } else {
                i % channels
            };
            let (m, s) = (self.mean[c], self.std[c]);
            chunk.iter_mut().for_each(|v| *v = (*v - m) / s);
        }
        Ok(())
    }
}

/// Random image augmentation, drawn independently for each sample of a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// Pad each side with this many zero pixels, then crop back to the original size at a
    /// random offset (0 = no cropping).
    pub crop_padding: usize,
    /// Mirror each sample left-right with probability 1/2.
    pub horizontal_flip: bool,
}

impl Augment {
    /// True when this augmentation leaves every sample unchanged.
    pub fn is_identity(&self) -> bool {
        self.crop_padding == 0 && !self.horizontal_flip
    }

    /// Augments a batch `values` of shape `[B, ..., H, W]` in place, drawing from `rng`.
    /// All channels of a sample get the same crop and flip.
    pub fn apply(&self, values: &mut [f32], dims: &[usize], rng: &mut impl Rng) -> Result<()> {
        if dims.len() < 3 {
            return Err(DataError::Invalid(format!(
                "crop and flip need image batches [B, ..., H, W], got shape {dims:?}"
            )));
        }
        let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let batch = dims[0].max(1);
        let sample_len = values.len() / batch;
        let pad = self.crop_padding as i64;
        for sample in values.chunks_mut(sample_len.max(1)) {
            let mut offset = || match pad {
                0 => 0,
                _ => rng.random_range(-pad..=pad) as isize,
            };
            let (dy, dx) = (offset(), offset());
            let flip = self.horizontal_flip && rng.random_bool(0.5);
            for plane in sample.chunks_mut((h * w).max(1)) {
                if (dy, dx) != (0, 0) {
                    shift_with_zero_padding(plane, w, dy, dx);
                }
                if flip {
                    flip_horizontal(plane, w);
                }
            }
        }
        Ok(())
    }
}

/// Mirrors an image plane (rows of `width` values) left-right.
pub fn flip_horizontal(plane: &mut [f32], width: usize) {
    plane.chunks_mut(width.max(1)).for_each(<[f32]>::reverse);
}

/// Moves an image plane (rows of `width` values) so that output pixel `(y, x)` takes input
/// pixel `(y + dy, x + dx)`, and zero where that lies outside: a crop at offset `(dy, dx)`
/// of the plane padded with zeros.
pub fn shift_with_zero_padding(plane: &mut [f32], width: usize, dy: isize, dx: isize) {
    let height = plane.len() / width.max(1);
    let source = plane.to_vec();
    let inside = |v: isize, len: usize| usize::try_from(v).ok().filter(|&v| v < len);
    for (y, row) in plane.chunks_mut(width.max(1)).enumerate() {
        let sy = inside(y as isize + dy, height);
        for (x, out) in row.iter_mut().enumerate() {
            let sx = inside(x as isize + dx, width);
            *out = match (sy, sx) {
                (Some(sy), Some(sx)) => source[sy * width + sx],
                _ => 0.0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use whittle_ir::TensorData;

    #[test]
    fn flipping_twice_is_the_identity() {
        let plane: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let mut flipped = plane.clone();
        flip_horizontal(&mut flipped, 3);
        assert_eq!(flipped, [2.0, 1.0, 0.0, 5.0, 4.0, 3.0]);
        flip_horizontal(&mut flipped, 3);
        assert_eq!(flipped, plane);
    }

    #[test]
    fn shifting_fills_the_padding_with_zeros() {
        // 1 2 3
        // 4 5 6
        // 7 8 9
        let mut plane: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        shift_with_zero_padding(&mut plane, 3, 1, -1);
        assert_eq!(plane, [0.0, 4.0, 5.0, 0.0, 7.0, 8.0, 0.0, 0.0, 0.0]);
        let mut plane: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        shift_with_zero_padding(&mut plane, 3, -2, 2);
        assert_eq!(plane, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0]);
    }

    #[test]
    fn crops_keep_channels_aligned_and_stay_within_the_padding() {
        // Two channels holding the same ramp must get the same crop.
        let ramp: Vec<f32> = (1..=16).map(|v| v as f32).collect();
        let augment = Augment {
            crop_padding: 1,
            horizontal_flip: true,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            let mut values = [ramp.clone(), ramp.clone()].concat();
            augment.apply(&mut values, &[1, 2, 4, 4], &mut rng).unwrap();
            assert_eq!(values[..16], values[16..]);
            let zeros = values[..16].iter().filter(|&&v| v == 0.0).count();
            assert!([0, 4, 7].contains(&zeros), "{zeros} zeros: {values:?}");
            let kept: f32 = values[..16].iter().sum();
            assert!(kept > 0.0);
        }
        let err = augment.apply(&mut [0.0; 4], &[2, 2], &mut rng).unwrap_err();
        assert!(err.to_string().contains("shape [2, 2]"), "{err}");
    }

    #[test]
    fn normalisation_uses_each_channels_statistics() {
        // Channel 0 holds 1 and 3 (mean 2, std 1), channel 1 holds 10 twice (std floored).
        let images = TensorData::from_slice(vec![2, 2, 1], &[1f32, 10.0, 3.0, 10.0]).unwrap();
        let data = Dataset::new(images, vec![0, 1], 2).unwrap();
        let norm = Normalize::from_dataset(&data).unwrap();
        assert_eq!((norm.mean.clone(), norm.std[0]), (vec![2.0, 10.0], 1.0));
        let mut values = vec![1f32, 10.0, 3.0, 12.0];
        norm.apply(&mut values, &[2, 2, 1]).unwrap();
        assert_eq!(values[..3], [-1.0, 0.0, 1.0]);
        let three = Normalize::new(vec![0.0; 3], vec![1.0; 3]).unwrap();
        assert!(three.apply(&mut values, &[2, 2, 1]).is_err());
        assert!(Normalize::new(vec![0.0], vec![0.0]).is_err());
        assert!(Normalize::new(vec![0.0, 1.0], vec![1.0]).is_err());
    }
}

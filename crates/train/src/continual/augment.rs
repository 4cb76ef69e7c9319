//! Light augmentation of replayed images: a random horizontal flip and a random shift of
//! a few pixels, so that the few hundred samples of the buffer, replayed thousands of
//! times, are not learnt by heart.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::bail;
use crate::error::Result;

/// Flips and shifts image samples `[C, H, W]` in place, each at random.
pub struct Augment {
    channels: usize,
    height: usize,
    width: usize,
    /// Largest shift in pixels, each way, along both axes.
    shift: usize,
    /// The value of the pixels a shift uncovers (the background).
    fill: f32,
    rng: ChaCha8Rng,
    scratch: Vec<f32>,
}

impl Augment {
    /// For samples shaped `sample_dims` (`[C, H, W]`), shifting by up to `shift` pixels and
    /// filling what a shift uncovers with `fill`; `seed` drives the choices.
    pub fn new(sample_dims: &[usize], shift: usize, fill: f32, seed: u64) -> Result<Self> {
        let &[channels, height, width] = sample_dims else {
            bail!(
                "--replay-augment flips and shifts images: it needs samples shaped [C, H, W], these are {sample_dims:?}"
            );
        };
        Ok(Augment {
            channels,
            height,
            width,
            shift,
            fill,
            rng: ChaCha8Rng::seed_from_u64(seed),
            scratch: Vec::new(),
        })
    }

    /// Augments every sample of `rows` (samples of `C * H * W` values one after another):
    /// flipped left to right with probability 1/2, then shifted by `dy`, `dx` in
    /// `-shift..=shift`.
    pub fn apply(&mut self, rows: &mut [f32]) {
        let (h, w) = (self.height, self.width);
        let len = self.channels * h * w;
        if len == 0 {
            return;
        }
        let reach = self.shift as i64;
        for row in rows.chunks_exact_mut(len) {
            let flip = self.rng.random_bool(0.5);
            let dy = self.rng.random_range(-reach..=reach) as isize;
            let dx = self.rng.random_range(-reach..=reach) as isize;
            self.scratch.clear();
            self.scratch.extend_from_slice(row);
            for (plane, out) in self
                .scratch
                .chunks_exact(h * w)
                .zip(row.chunks_exact_mut(h * w))
            {
                for y in 0..h {
                    let sy = y as isize - dy;
                    for x in 0..w {
                        let sx = x as isize - dx;
                        let inside = (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx);
                        out[y * w + x] = if inside {
                            let sx = sx as usize;
                            let sx = if flip { w - 1 - sx } else { sx };
                            plane[sy as usize * w + sx]
                        } else {
                            self.fill
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_and_shifts_keep_the_pixels_and_fill_the_uncovered_ones() {
        // One 1x3x4 image; no shift: every sample is itself or its mirror image.
        let image: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mirror: Vec<f32> = image
            .chunks(4)
            .flat_map(|r| r.iter().rev().copied())
            .collect();
        let mut flips = Augment::new(&[1, 3, 4], 0, -1.0, 7).unwrap();
        let mut seen = (0, 0);
        for _ in 0..50 {
            let mut row = image.clone();
            flips.apply(&mut row);
            if row == image {
                seen.0 += 1;
            } else {
                assert_eq!(row, mirror);
                seen.1 += 1;
            }
        }
        assert!(seen.0 > 10 && seen.1 > 10, "{seen:?}");
        // Shifts of up to 1: the pixels move as a whole, the uncovered ones are the fill.
        let mut shifts = Augment::new(&[1, 3, 4], 1, -1.0, 3).unwrap();
        for _ in 0..50 {
            let mut row = image.clone();
            shifts.apply(&mut row);
            let kept: Vec<f32> = row.iter().copied().filter(|&v| v >= 0.0).collect();
            let filled = row.len() - kept.len();
            assert!([0, 3, 4, 6].contains(&filled), "{filled} filled: {row:?}");
            // Neighbours in a row stay neighbours (differ by 1, either way).
            for r in row.chunks(4) {
                for pair in r.windows(2).filter(|p| p[0] >= 0.0 && p[1] >= 0.0) {
                    assert_eq!((pair[0] - pair[1]).abs(), 1.0, "{row:?}");
                }
            }
        }
        let err = Augment::new(&[784], 2, 0.0, 0).err().unwrap().to_string();
        assert!(
            err.contains("--replay-augment") && err.contains("[784]"),
            "{err}"
        );
    }
}

//! Mini-batches for training and evaluation: shuffled (deterministically, from a seed and
//! the epoch number) or in order, with an optional dropped short last batch.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use whittle_ir::TensorData;

use crate::dataset::Dataset;
use crate::error::Result;

/// How a [`Loader`] cuts a dataset into batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderOptions {
    /// Samples per batch (0 counts as 1).
    pub batch_size: usize,
    /// Visit the samples in a new random order each epoch.
    pub shuffle: bool,
    /// Seed of the shuffling order; the same seed and epoch give the same order.
    pub seed: u64,
    /// Skip a last batch shorter than `batch_size`.
    pub drop_last: bool,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            batch_size: 32,
            shuffle: false,
            seed: 0,
            drop_last: false,
        }
    }
}

/// One mini-batch: float32 inputs `[B, ...]` and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The samples, stacked along a new first axis.
    pub inputs: TensorData,
    /// The class of each sample.
    pub labels: Vec<i64>,
}

/// Cuts a dataset into batches, epoch after epoch.
#[derive(Clone, Debug)]
pub struct Loader<'d> {
    dataset: &'d Dataset,
    options: LoaderOptions,
}

impl<'d> Loader<'d> {
    /// A loader over `dataset`.
    pub fn new(dataset: &'d Dataset, options: LoaderOptions) -> Self {
        Loader { dataset, options }
    }

    /// The options this loader was built with.
    pub fn options(&self) -> &LoaderOptions {
        &self.options
    }

    /// Number of batches one epoch yields.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.options.batch_size.max(1));
        if self.options.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order in which epoch `epoch` visits the samples.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.options.shuffle {
            let seed = self.options.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        }
        order
    }

    /// The batches of epoch `epoch`, built lazily.
    pub fn epoch(&self, epoch: u64) -> impl Iterator<Item = Result<Batch>> + '_ {
        let order = self.order(epoch);
        let size = self.options.batch_size.max(1);
        (0..self.batches_per_epoch()).map(move |i| {
            let rows = &order[i * size..((i + 1) * size).min(order.len())];
            let (inputs, labels) = self.dataset.gather(rows)?;
            Ok(Batch { inputs, labels })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ten_samples() -> Dataset {
        let x: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let images = TensorData::from_slice(vec![10, 1], &x).unwrap();
        Dataset::new(images, (0..10).collect(), 10).unwrap()
    }

    #[test]
    fn batches_cover_every_sample_once_in_order() {
        let d = ten_samples();
        let loader = Loader::new(
            &d,
            LoaderOptions {
                batch_size: 4,
                ..Default::default()
            },
        );
        let batches: Vec<Batch> = loader.epoch(0).map(Result::unwrap).collect();
        let sizes: Vec<usize> = batches.iter().map(|b| b.labels.len()).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(batches[2].labels, [8, 9]);
        assert_eq!(batches[2].inputs.to_vec::<f32>().unwrap(), [8.0, 9.0]);
        assert_eq!(batches[0].inputs.dims(), [4, 1]);
    }

    #[test]
    fn shuffling_is_seeded_per_epoch_and_drop_last_skips_the_tail() {
        let d = ten_samples();
        let options = LoaderOptions {
            batch_size: 3,
            shuffle: true,
            seed: 7,
            drop_last: true,
        };
        let loader = Loader::new(&d, options.clone());
        assert_eq!(loader.batches_per_epoch(), 3);
        let (e0, e1) = (loader.order(0), loader.order(1));
        assert_ne!(e0, e1, "each epoch has its own order");
        assert_eq!(
            Loader::new(&d, options).order(0),
            e0,
            "same seed, same order"
        );
        let mut sorted = e0.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let first: Vec<i64> = loader.epoch(0).next().unwrap().unwrap().labels;
        let expected: Vec<i64> = e0[..3].iter().map(|&i| i as i64).collect();
        assert_eq!(first, expected, "labels follow the images' rows");
    }
}

//! Mini-batches for training and evaluation: shuffled (deterministically, from a seed and
//! the epoch number) or in order, with an optional dropped short last batch, optional
//! augmentation and normalisation, built on demand or ahead of time by a background thread.

use std::sync::mpsc;
use std::thread::Scope;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use whittle_ir::TensorData;

use crate::augment::{Augment, Normalize};
use crate::dataset::Dataset;
use crate::error::Result;

/// How a [`Loader`] cuts a dataset into batches.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderOptions {
    /// Samples per batch (0 counts as 1).
    pub batch_size: usize,
    /// Visit the samples in a new random order each epoch.
    pub shuffle: bool,
    /// Seed of the shuffling order; the same seed and epoch give the same order.
    pub seed: u64,
    /// Skip a last batch shorter than `batch_size`.
    pub drop_last: bool,
    /// Random crop and flip of each sample, drawn from `seed`, the epoch and the batch number.
    pub augment: Augment,
    /// Per-channel normalisation, applied after augmentation (so padding becomes `-mean/std`).
    pub normalize: Option<Normalize>,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            batch_size: 32,
            shuffle: false,
            seed: 0,
            drop_last: false,
            augment: Augment::default(),
            normalize: None,
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
            let seed = whittle_ir::seed::derive(self.options.seed, epoch);
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        }
        order
    }

    /// The batches of epoch `epoch`, built lazily.
    pub fn epoch(&self, epoch: u64) -> impl Iterator<Item = Result<Batch>> + '_ {
        let order = self.order(epoch);
        (0..self.batches_per_epoch()).map(move |i| self.build_batch(&order, epoch, i))
    }

    /// The batches of epoch `epoch`, the same as [`Loader::epoch`] gives, built by a thread
    /// of `scope` that stays up to `depth` batches (at least 1) ahead of the caller:
    ///
    /// ```no_run
    /// # fn demo(loader: &whittle_data::Loader) {
    /// std::thread::scope(|s| {
    ///     for batch in loader.prefetch(s, 0, 2) {
    ///         // train on batch? while the next ones are being built
    ///     }
    /// });
    /// # }
    /// ```
    /// Dropping the iterator early stops the thread after the batch it is building.
    pub fn prefetch<'s>(
        &'s self,
        scope: &'s Scope<'s, '_>,
        epoch: u64,
        depth: usize,
    ) -> impl Iterator<Item = Result<Batch>> + 's {
        let (sender, receiver) = mpsc::sync_channel(depth.max(1));
        scope.spawn(move || {
            for batch in self.epoch(epoch) {
                let failed = batch.is_err();
                if sender.send(batch).is_err() || failed {
                    break;
                }
            }
        });
        receiver.into_iter()
    }

    /// Batch `index` of epoch `epoch` visiting the samples in `order`: gathered, augmented
    /// with its own random stream, then normalised.
    fn build_batch(&self, order: &[usize], epoch: u64, index: usize) -> Result<Batch> {
        let size = self.options.batch_size.max(1);
        let rows = &order[index * size..((index + 1) * size).min(order.len())];
        let (inputs, labels) = self.dataset.gather(rows)?;
        let (augment, normalize) = (&self.options.augment, &self.options.normalize);
        if augment.is_identity() && normalize.is_none() {
            return Ok(Batch { inputs, labels });
        }
        let dims = inputs.dims().to_vec();
        let mut values = inputs.to_vec::<f32>()?;
        if !augment.is_identity() {
            let mut rng = batch_rng(self.options.seed, epoch, index);
            augment.apply(&mut values, &dims, &mut rng)?;
        }
        if let Some(normalize) = normalize {
            normalize.apply(&mut values, &dims)?;
        }
        let inputs = TensorData::from_slice(dims, &values)?;
        Ok(Batch { inputs, labels })
    }
}

/// The random stream of one batch: a function of the seed, the epoch and the batch number only.
fn batch_rng(seed: u64, epoch: u64, index: usize) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, word) in key.chunks_mut(8).zip([seed, epoch, index as u64, 0xA06]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
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
            ..Default::default()
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

    /// 12 images of 1 channel, 3x3, every pixel 1.
    fn ones() -> Dataset {
        let images = TensorData::from_slice(vec![12, 1, 3, 3], &[1f32; 108]).unwrap();
        Dataset::new(images, (0..12).map(|i| i % 3).collect(), 3).unwrap()
    }

    fn augmenting(seed: u64) -> LoaderOptions {
        LoaderOptions {
            batch_size: 5,
            shuffle: true,
            seed,
            augment: Augment {
                crop_padding: 1,
                horizontal_flip: true,
            },
            normalize: Some(Normalize::new(vec![0.5], vec![0.25]).unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn augmented_padding_is_normalised_zero_and_each_epoch_differs() {
        let d = ones();
        let loader = Loader::new(&d, augmenting(1));
        let values: Vec<f32> = loader
            .epoch(0)
            .flat_map(|b| b.unwrap().inputs.to_vec::<f32>().unwrap())
            .collect();
        // Kept pixels: (1 - 0.5) / 0.25 = 2; zero padding: (0 - 0.5) / 0.25 = -2.
        assert!(values.iter().all(|&v| v == 2.0 || v == -2.0), "{values:?}");
        let padded = values.iter().filter(|&&v| v == -2.0).count();
        assert!(padded > 0 && padded < values.len() / 2, "{padded}");
        let epoch = |e| -> Vec<Batch> { loader.epoch(e).map(Result::unwrap).collect() };
        assert_eq!(epoch(0), epoch(0), "same seed and epoch, same batches");
        assert_ne!(epoch(0), epoch(1));
        let other = Loader::new(&d, augmenting(2));
        assert_ne!(
            epoch(0)[0].inputs,
            other.epoch(0).next().unwrap().unwrap().inputs
        );
    }

    #[test]
    fn prefetched_batches_equal_the_lazy_ones() {
        let d = ones();
        let loader = Loader::new(&d, augmenting(5));
        for depth in [0, 1, 4] {
            let prefetched: Vec<Batch> =
                std::thread::scope(|s| loader.prefetch(s, 3, depth).map(Result::unwrap).collect());
            let lazy: Vec<Batch> = loader.epoch(3).map(Result::unwrap).collect();
            assert_eq!(prefetched.len(), 3);
            assert_eq!(prefetched, lazy, "depth {depth}");
        }
        let first = std::thread::scope(|s| loader.prefetch(s, 0, 1).next());
        assert_eq!(
            first.unwrap().unwrap(),
            loader.epoch(0).next().unwrap().unwrap()
        );
    }

    #[test]
    fn bad_transforms_fail_on_the_batch() {
        let d = ten_samples();
        let options = LoaderOptions {
            augment: Augment {
                crop_padding: 0,
                horizontal_flip: true,
            },
            ..Default::default()
        };
        let loader = Loader::new(&d, options);
        let err = std::thread::scope(|s| {
            let mut batches = loader.prefetch(s, 0, 2);
            let err = batches.next().unwrap().unwrap_err();
            assert!(
                batches.next().is_none(),
                "the thread stops at the first error"
            );
            err
        });
        assert!(err.to_string().contains("need image batches"), "{err}");
    }
}

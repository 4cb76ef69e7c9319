//! The replay buffer: a fixed number of past samples, each stored as uint8 (an affine code
//! over the data's value range, exact for 8-bit images), with its label and, for DER++, the
//! logits the model gave it when it was stored. Samples enter by reservoir sampling (every
//! sample of the stream equally likely to be kept) or class-balanced reservoir sampling
//! (the largest class gives up a slot to a newcomer of a smaller class).

use std::collections::BTreeMap;
use std::str::FromStr;

use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use whittle_data::Dataset;
use whittle_ir::TensorData;

use crate::bail;
use crate::error::{Result, TrainError};

/// Which samples a full buffer keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BufferPolicy {
    /// Reservoir sampling: a uniform sample of everything seen.
    Reservoir,
    /// Class-balanced reservoir sampling (Chrysakis and Moens, 2020): a newcomer of a class
    /// that is not among the largest replaces a random sample of a largest class; one of a
    /// largest class replaces a sample of its own class with reservoir probability.
    ClassBalanced,
}

impl FromStr for BufferPolicy {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "reservoir" => Ok(BufferPolicy::Reservoir),
            "class-balanced" => Ok(BufferPolicy::ClassBalanced),
            _ => bail!("unknown --buffer-policy '{s}': use reservoir or class-balanced"),
        }
    }
}

/// Past samples kept for replay.
#[derive(Clone, Debug)]
pub struct ReplayBuffer {
    capacity: usize,
    policy: BufferPolicy,
    row_len: usize,
    low: f32,
    step: f32,
    codes: Vec<u8>,
    labels: Vec<i64>,
    logits: Vec<Vec<f32>>,
    seen: usize,
    seen_per_class: BTreeMap<i64, usize>,
    rng: ChaCha8Rng,
}

impl ReplayBuffer {
    /// An empty buffer of `capacity` samples of `row_len` values each, coding values in
    /// `range` (lowest, highest) as 0..=255; `seed` drives its random choices.
    pub fn new(
        capacity: usize,
        policy: BufferPolicy,
        row_len: usize,
        range: (f32, f32),
        seed: u64,
    ) -> Self {
        let (low, high) = range;
        let step = if high > low {
            (high - low) / 255.0
        } else {
            1.0
        };
        ReplayBuffer {
            capacity,
            policy,
            row_len,
            low,
            step,
            codes: Vec::with_capacity(capacity * row_len),
            labels: Vec::with_capacity(capacity),
            logits: Vec::with_capacity(capacity),
            seen: 0,
            seen_per_class: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_B0FF),
        }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when no sample is held.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Samples offered so far.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// The label of each held sample.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// The logits stored with held sample `slot` (empty when none were given).
    pub fn logits(&self, slot: usize) -> &[f32] {
        &self.logits[slot]
    }

    /// Bytes the buffer's samples take (uint8 codes, labels and stored logits).
    pub fn stored_bytes(&self) -> usize {
        self.codes.len()
            + 8 * self.labels.len()
            + 4 * self.logits.iter().map(Vec::len).sum::<usize>()
    }

    /// Held samples per class.
    pub fn class_counts(&self) -> BTreeMap<i64, usize> {
        let mut counts = BTreeMap::new();
        for &l in &self.labels {
            *counts.entry(l).or_insert(0) += 1;
        }
        counts
    }

    /// Offers one sample (`row_len` values) with its label and optional logits; the policy
    /// decides whether it is kept and which held sample it replaces.
    pub fn add(&mut self, row: &[f32], label: i64, logits: Option<&[f32]>) {
        debug_assert_eq!(row.len(), self.row_len);
        self.seen += 1;
        let class_seen = {
            let n = self.seen_per_class.entry(label).or_insert(0);
            *n += 1;
            *n
        };
        if self.capacity == 0 {
            return;
        }
        let slot = if self.len() < self.capacity {
            Some(self.len())
        } else {
            match self.policy {
                BufferPolicy::Reservoir => {
                    let j = self.rng.random_range(0..self.seen);
                    (j < self.capacity).then_some(j)
                }
                BufferPolicy::ClassBalanced => self.balanced_slot(label, class_seen),
            }
        };
        let Some(slot) = slot else {
            return;
        };
        let (low, step) = (self.low, self.step);
        let codes = row.iter().map(|&v| encode(v, low, step));
        let logits = logits.map(<[f32]>::to_vec).unwrap_or_default();
        if slot == self.len() {
            self.codes.extend(codes);
            self.labels.push(label);
            self.logits.push(logits);
        } else {
            let at = slot * self.row_len;
            self.codes.splice(at..at + self.row_len, codes);
            self.labels[slot] = label;
            self.logits[slot] = logits;
        }
    }

    /// Where a full class-balanced buffer puts a newcomer of `label`, the `class_seen`-th
    /// of its class (None: dropped).
    fn balanced_slot(&mut self, label: i64, class_seen: usize) -> Option<usize> {
        let counts = self.class_counts();
        let largest = counts.values().copied().max().unwrap_or(0);
        let held = counts.get(&label).copied().unwrap_or(0);
        let victim_class = if held < largest {
            // A random class among the largest gives up a slot.
            let big: Vec<i64> = counts
                .iter()
                .filter(|(_, &n)| n == largest)
                .map(|(&c, _)| c)
                .collect();
            big[self.rng.random_range(0..big.len())]
        } else {
            // Reservoir sampling within the newcomer's own class.
            if self.rng.random_range(0..class_seen) >= held {
                return None;
            }
            label
        };
        let slots: Vec<usize> = (0..self.len())
            .filter(|&s| self.labels[s] == victim_class)
            .collect();
        Some(slots[self.rng.random_range(0..slots.len())])
    }

    /// Up to `n` distinct held samples, chosen at random.
    pub fn sample(&mut self, n: usize) -> Vec<usize> {
        let len = self.len();
        index::sample(&mut self.rng, len, n.min(len)).into_vec()
    }

    /// Appends the decoded values of held sample `slot` to `out`.
    pub fn decode_into(&self, slot: usize, out: &mut Vec<f32>) {
        let codes = &self.codes[slot * self.row_len..(slot + 1) * self.row_len];
        out.extend(codes.iter().map(|&q| self.low + self.step * f32::from(q)));
    }

    /// Draws up to `n` held samples at random, appending their decoded values to `values`
    /// and their labels to `labels`; returns their slots.
    pub fn draw_into(
        &mut self,
        n: usize,
        values: &mut Vec<f32>,
        labels: &mut Vec<i64>,
    ) -> Vec<usize> {
        let slots = self.sample(n);
        for &s in &slots {
            self.decode_into(s, values);
            labels.push(self.labels[s]);
        }
        slots
    }

    /// The held samples, decoded, as a dataset of samples shaped `sample_dims` over
    /// `num_classes` classes (what compression calibrates and recovers on).
    pub fn dataset(&self, sample_dims: &[usize], num_classes: usize) -> Result<Dataset> {
        if self.is_empty() {
            bail!("the replay buffer is empty (--buffer 0 or nothing seen yet)");
        }
        let mut values = Vec::with_capacity(self.len() * self.row_len);
        for slot in 0..self.len() {
            self.decode_into(slot, &mut values);
        }
        let mut dims = vec![self.len()];
        dims.extend_from_slice(sample_dims);
        let images = TensorData::from_slice(dims, &values)?;
        Ok(Dataset::new(images, self.labels.clone(), num_classes)?)
    }
}

/// The uint8 code of `v` in the range starting at `low` with steps of `step`.
fn encode(v: f32, low: f32, step: f32) -> u8 {
    ((v - low) / step).round().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(buffer: &mut ReplayBuffer, labels: impl Iterator<Item = i64>) {
        for l in labels {
            buffer.add(&[l as f32 / 255.0], l, None);
        }
    }

    #[test]
    fn reservoir_keeps_every_part_of_the_stream_equally_often() {
        // 1000 samples into 100 slots, 400 times: each tenth of the stream should hold
        // 10 of the 100 slots on average.
        let mut per_tenth = [0usize; 10];
        for seed in 0..400 {
            let mut b = ReplayBuffer::new(100, BufferPolicy::Reservoir, 1, (0.0, 1000.0), seed);
            for i in 0..1000 {
                b.add(&[i as f32], 0, None);
            }
            assert_eq!(b.len(), 100);
            for slot in 0..b.len() {
                let mut v = Vec::new();
                b.decode_into(slot, &mut v);
                per_tenth[((v[0] / 1000.0 * 10.0) as usize).min(9)] += 1;
            }
        }
        for (tenth, &n) in per_tenth.iter().enumerate() {
            let mean = n as f64 / 400.0;
            assert!(
                (mean - 10.0).abs() < 0.6,
                "tenth {tenth} holds {mean} slots"
            );
        }
    }

    #[test]
    fn class_balanced_evens_out_a_skewed_stream() {
        // 900 samples of class 0, then 100 of class 1 and 20 of class 2, into 90 slots.
        let mut b = ReplayBuffer::new(90, BufferPolicy::ClassBalanced, 1, (0.0, 1.0), 3);
        offer(&mut b, std::iter::repeat_n(0, 900));
        offer(&mut b, std::iter::repeat_n(1, 100));
        offer(&mut b, std::iter::repeat_n(2, 20));
        let counts = b.class_counts();
        assert_eq!(counts[&2], 20, "{counts:?}");
        assert_eq!(counts[&0], 35, "{counts:?}");
        assert_eq!(counts[&1], 35, "{counts:?}");
        // Plain reservoir keeps the skew.
        let mut r = ReplayBuffer::new(90, BufferPolicy::Reservoir, 1, (0.0, 1.0), 3);
        offer(&mut r, std::iter::repeat_n(0, 900));
        offer(&mut r, std::iter::repeat_n(1, 100));
        offer(&mut r, std::iter::repeat_n(2, 20));
        assert!(r.class_counts()[&0] > 60, "{:?}", r.class_counts());
    }

    #[test]
    fn uint8_codes_round_trip_8_bit_images_exactly() {
        let mut b = ReplayBuffer::new(4, BufferPolicy::Reservoir, 3, (0.0, 1.0), 0);
        let row = [0.0, 17.0 / 255.0, 1.0];
        b.add(&row, 1, Some(&[0.5, -2.0]));
        assert_eq!(b.stored_bytes(), 3 + 8 + 8);
        let mut out = Vec::new();
        b.decode_into(0, &mut out);
        assert_eq!(out, row);
        assert_eq!(b.logits(0), &[0.5, -2.0]);
        let data = b.dataset(&[3], 2).unwrap();
        assert_eq!(data.labels, vec![1]);
        assert_eq!(data.images.to_vec::<f32>().unwrap(), row);
        // Other ranges code to within half a step.
        let mut w = ReplayBuffer::new(1, BufferPolicy::Reservoir, 2, (-1.0, 1.0), 0);
        w.add(&[-0.3, 0.77], 0, None);
        let mut out = Vec::new();
        w.decode_into(0, &mut out);
        assert!((out[0] + 0.3).abs() <= 1.0 / 255.0 && (out[1] - 0.77).abs() <= 1.0 / 255.0);
        assert!("fifo".parse::<BufferPolicy>().is_err());
        let empty = ReplayBuffer::new(0, BufferPolicy::Reservoir, 2, (0.0, 1.0), 0);
        assert!(empty
            .dataset(&[2], 2)
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }
}

//! Summary statistics of latency samples.

use serde::{Deserialize, Serialize};

/// Latency summary in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Median (50th percentile).
    pub median_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Population standard deviation.
    pub std_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
    /// Slowest run.
    pub max_ms: f64,
}

impl Latency {
    /// Summarises `samples` (milliseconds); `None` when there are none. Percentiles
    /// interpolate linearly between the nearest ranks (as numpy's default).
    pub fn from_samples(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        let var = sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        Some(Latency {
            mean_ms: mean,
            median_ms: percentile(&sorted, 0.5),
            p90_ms: percentile(&sorted, 0.9),
            p99_ms: percentile(&sorted, 0.99),
            std_ms: var.sqrt(),
            min_ms: sorted[0],
            max_ms: sorted[sorted.len() - 1],
        })
    }
}

/// The `q` quantile of ascending, non-empty `sorted`.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_match_hand_computed_values() {
        // 1..=10 ms: mean 5.5, median 5.5, p90 at rank 8.1 -> 9.1, p99 at 8.91 -> 9.91,
        // population variance 8.25.
        let samples: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let l = Latency::from_samples(&samples).unwrap();
        assert_eq!(l.mean_ms, 5.5);
        assert_eq!(l.median_ms, 5.5);
        assert!((l.p90_ms - 9.1).abs() < 1e-12);
        assert!((l.p99_ms - 9.91).abs() < 1e-12);
        assert!((l.std_ms - 8.25f64.sqrt()).abs() < 1e-12);
        assert_eq!((l.min_ms, l.max_ms), (1.0, 10.0));
        assert!(Latency::from_samples(&[]).is_none());
        let one = Latency::from_samples(&[2.0]).unwrap();
        assert_eq!((one.median_ms, one.p99_ms, one.std_ms), (2.0, 2.0, 0.0));
    }
}

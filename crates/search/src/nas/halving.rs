//! Successive halving: every candidate first trains briefly on a subset of the training
//! data, the best third of them train again on more, and the best few of those train on all
//! of it. Each rung trains from the same initial weights, so a rung's result depends on the
//! candidate and the rung only (an independent, content-keyed job).

use serde::{Deserialize, Serialize};

/// Share of candidates kept from one rung to the next (1 in `ETA`).
pub const ETA: usize = 3;
/// Candidates that train on the whole training set.
pub const FINALISTS: usize = 2;
/// Share of each rung's samples held out to rank the candidates.
pub const VAL_FRACTION: f64 = 0.2;

/// How long one rung trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    /// The rung's number, from 0.
    pub index: usize,
    /// Training samples (the first ones of the training split), validation included.
    pub samples: usize,
    /// Epochs.
    pub epochs: usize,
}

/// The rungs for a training split of `samples`: a thirtieth of it for one epoch, a sixth
/// for one epoch, all of it for two epochs (each at least 100 samples, at most `samples`).
pub fn rungs(samples: usize) -> [Rung; 3] {
    let part = |d: usize| (samples / d).max(100).min(samples);
    [
        Rung {
            index: 0,
            samples: part(30),
            epochs: 1,
        },
        Rung {
            index: 1,
            samples: part(6),
            epochs: 1,
        },
        Rung {
            index: 2,
            samples,
            epochs: 2,
        },
    ]
}

/// How many of `n` candidates ranked at rung `from` go on to the next rung: a third, at
/// least one, and at most [`FINALISTS`] into the last rung.
pub fn survivors(n: usize, from: usize, rungs: usize) -> usize {
    let kept = n.div_ceil(ETA).max(1).min(n);
    if from + 2 == rungs {
        kept.min(FINALISTS)
    } else {
        kept
    }
}

/// The ids of the `keep` best of `scored` (id, accuracy): highest accuracy first, ties by
/// id, so that the order never depends on the order of arrival.
pub fn best(scored: &[(String, f64)], keep: usize) -> Vec<String> {
    let mut ranked: Vec<&(String, f64)> = scored.iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked
        .into_iter()
        .take(keep)
        .map(|(id, _)| id.clone())
        .collect()
}

/// How many rung-0 trainings one training at `rung` costs: the samples times the epochs,
/// relative to the first rung's.
pub fn cost_ratio(rungs: &[Rung], rung: &Rung) -> f64 {
    let work = |r: &Rung| (r.samples * r.epochs) as f64;
    work(rung) / work(&rungs[0])
}

/// Seconds one rung-0 training takes per multiply-accumulate of its model on this
/// machine: the median over `trainings`, each (seconds, the model's MACs, the rung's
/// [`cost_ratio`]). A training slowed by a burst of load (three times its peers at load 5
/// on 2 cores) is one sample of many, where predicting from its own seconds would reserve
/// three times its real cost. `None` without a training of a model with MACs.
pub fn seconds_per_mac(trainings: impl IntoIterator<Item = (f64, u64, f64)>) -> Option<f64> {
    let mut rates: Vec<f64> = trainings
        .into_iter()
        .filter(|&(_, macs, ratio)| macs > 0 && ratio > 0.0)
        .map(|(seconds, macs, ratio)| seconds / (macs as f64 * ratio))
        .collect();
    rates.sort_by(f64::total_cmp);
    let n = rates.len();
    (n > 0).then(|| (rates[(n - 1) / 2] + rates[n / 2]) / 2.0)
}

/// How many of the candidates ranked best first fit `remaining` seconds: the longest
/// prefix whose predicted seconds at this rung (`now`), plus, before the last rung, the
/// costliest [`FINALISTS`] of the prefix at the last rung (`last`), fit; at least one.
pub fn affordable(now: &[f64], last: Option<&[f64]>, remaining: f64) -> usize {
    (1..=now.len())
        .take_while(|&n| {
            let mut finals: Vec<f64> = last.map_or(Vec::new(), |l| l[..n].to_vec());
            finals.sort_by(|a, b| b.total_cmp(a));
            let reserve: f64 = finals.iter().take(FINALISTS).sum();
            now[..n].iter().sum::<f64>() + reserve <= remaining
        })
        .last()
        .unwrap_or(1)
        .min(now.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_grow_and_survivors_shrink() {
        let r = rungs(60_000);
        assert_eq!(
            (r[0].samples, r[1].samples, r[2].samples),
            (2_000, 10_000, 60_000)
        );
        assert_eq!(rungs(150)[0].samples, 100);
        assert_eq!(rungs(50)[0].samples, 50);
        assert_eq!(survivors(24, 0, 3), 8);
        assert_eq!(survivors(8, 1, 3), 2);
        assert_eq!(survivors(1, 0, 3), 1);
        let scored = vec![("b".into(), 0.5), ("a".into(), 0.5), ("c".into(), 0.9)];
        assert_eq!(best(&scored, 2), vec!["c".to_string(), "a".to_string()]);
    }

    #[test]
    fn the_rungs_kept_fit_the_budget() {
        let r = rungs(60_000);
        assert_eq!(cost_ratio(&r, &r[1]), 5.0);
        assert_eq!(cost_ratio(&r, &r[2]), 60.0);
        // The last rung: 10 + 20 s fit 35 s, the third does not.
        assert_eq!(affordable(&[10.0, 20.0, 30.0], None, 35.0), 2);
        assert_eq!(affordable(&[10.0, 20.0], None, 1e9), 2);
        // Nothing fits: the best still trains.
        assert_eq!(affordable(&[50.0, 1.0], None, 10.0), 1);
        // Before the last rung, the two costliest of the prefix at the last rung are
        // reserved: 1 + 100 fits 150; 1 + 1 + 100 + 60 does not.
        let last = [100.0, 60.0, 1.0];
        assert_eq!(affordable(&[1.0, 1.0, 1.0], Some(&last), 150.0), 1);
        assert_eq!(affordable(&[1.0, 1.0, 1.0], Some(&last), 163.0), 3);
    }

    #[test]
    fn the_machine_rate_ignores_a_slowed_training() {
        // Three rung-0 trainings at 0.5 us per MAC, one slowed threefold, one at rung 1
        // (5 times the work): the median is 0.5 us.
        let trainings = [
            (5.0, 10_000_000, 1.0),
            (15.0, 10_000_000, 1.0),
            (1.0, 2_000_000, 1.0),
            (25.0, 10_000_000, 5.0),
            (1.0, 0, 1.0),
        ];
        assert_eq!(seconds_per_mac(trainings), Some(0.5e-6));
        assert_eq!(
            seconds_per_mac([(2.0, 1_000_000, 1.0), (4.0, 1_000_000, 1.0)]),
            Some(3e-6)
        );
        assert_eq!(seconds_per_mac([]), None);
    }
}

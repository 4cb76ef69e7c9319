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
}

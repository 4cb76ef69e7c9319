//! Continual-learning metrics on the accuracy matrix `R`, where `R[i][j]` is the accuracy
//! on task `j`'s test set after training task `i` (fractions 0..1). The last row is the
//! final model; a matrix of fewer rows than tasks (joint training: one row) has nothing
//! earlier to forget.

use serde::Serialize;

/// Mean accuracy of the final model over all tasks (the last row's mean).
pub fn average_accuracy(r: &[Vec<f64>]) -> f64 {
    r.last().map_or(0.0, |row| mean(row))
}

/// Forgetting (Chaudhry et al., 2018): for each task trained before the last row, its best
/// accuracy from the row where it was learnt until before the last, minus its final
/// accuracy; averaged over those tasks.
pub fn forgetting(r: &[Vec<f64>]) -> f64 {
    let Some((last, earlier)) = r.split_last() else {
        return 0.0;
    };
    let drops: Vec<f64> = (0..earlier.len())
        .map(|j| {
            let best = earlier[j..]
                .iter()
                .map(|row| row[j])
                .fold(f64::NEG_INFINITY, f64::max);
            best - last[j]
        })
        .collect();
    mean(&drops)
}

/// Backward transfer (Lopez-Paz and Ranzato, 2017): the final accuracy on each task minus
/// its accuracy right after it was learnt, averaged over all but the last task (negative
/// when the model forgets).
pub fn bwt(r: &[Vec<f64>]) -> f64 {
    let Some((last, earlier)) = r.split_last() else {
        return 0.0;
    };
    let gains: Vec<f64> = (0..earlier.len()).map(|j| last[j] - r[j][j]).collect();
    mean(&gains)
}

/// Forward transfer (Lopez-Paz and Ranzato, 2017): the accuracy on task `j` just before it
/// is learnt minus that of the untrained model (`initial[j]`), averaged over tasks 1..T.
pub fn fwt(r: &[Vec<f64>], initial: &[f64]) -> f64 {
    let gains: Vec<f64> = (1..r.len().min(initial.len()))
        .map(|j| r[j - 1][j] - initial[j])
        .collect();
    mean(&gains)
}

/// Mean of `values` (0 for none).
fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Mean and sample standard deviation of one figure over seeds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MeanStd {
    /// Mean over seeds.
    pub mean: f64,
    /// Sample standard deviation over seeds (0 for one seed).
    pub std: f64,
}

impl MeanStd {
    /// The mean and sample standard deviation of `values`.
    pub fn of(values: &[f64]) -> Self {
        let m = mean(values);
        let std = match values.len() {
            0 | 1 => 0.0,
            n => (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt(),
        };
        MeanStd { mean: m, std }
    }
}

/// The element-wise mean and sample standard deviation of several matrices of one shape.
pub fn matrix_mean_std(matrices: &[Vec<Vec<f64>>]) -> Vec<Vec<MeanStd>> {
    let Some(first) = matrices.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|i| {
            (0..first[i].len())
                .map(|j| MeanStd::of(&matrices.iter().map(|m| m[i][j]).collect::<Vec<_>>()))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three tasks: task 0 learnt to 0.9, then 0.6 after task 1 (best 0.9), 0.5 at the end;
    /// task 1 learnt to 0.8, peak 0.8, final 0.7; task 2 final 0.95.
    fn r() -> Vec<Vec<f64>> {
        vec![
            vec![0.9, 0.1, 0.0],
            vec![0.6, 0.8, 0.2],
            vec![0.5, 0.7, 0.95],
        ]
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let r = r();
        assert!(close(average_accuracy(&r), (0.5 + 0.7 + 0.95) / 3.0));
        // Forgetting: task 0: max(0.9, 0.6) - 0.5 = 0.4; task 1: 0.8 - 0.7 = 0.1.
        assert!(close(forgetting(&r), 0.25));
        // BWT: (0.5 - 0.9 + 0.7 - 0.8) / 2.
        assert!(close(bwt(&r), -0.25));
        // FWT against an untrained model at 0.05 / 0.1 / 0.1: (0.1 - 0.1 + 0.2 - 0.1) / 2.
        assert!(close(fwt(&r, &[0.05, 0.1, 0.1]), 0.05));
        // The best earlier accuracy counts, not the one right after learning.
        let later_peak = vec![vec![0.5, 0.0], vec![0.7, 0.9], vec![0.2, 0.9]];
        assert!(close(forgetting(&later_peak), (0.7 - 0.2 + 0.0) / 2.0));
    }

    #[test]
    fn one_row_has_nothing_to_forget() {
        let joint = vec![vec![0.9, 0.8]];
        assert!(close(average_accuracy(&joint), 0.85));
        assert_eq!(forgetting(&joint), 0.0);
        assert_eq!(bwt(&joint), 0.0);
        assert_eq!(average_accuracy(&[]), 0.0);
    }

    #[test]
    fn mean_and_sample_std_over_seeds() {
        let s = MeanStd::of(&[0.78, 0.80, 0.82]);
        assert!(close(s.mean, 0.80));
        assert!((s.std - 0.02).abs() < 1e-12, "{}", s.std);
        assert_eq!(MeanStd::of(&[0.5]).std, 0.0);
        let m = matrix_mean_std(&[vec![vec![0.2, 0.4]], vec![vec![0.4, 0.4]]]);
        assert!(close(m[0][0].mean, 0.3) && close(m[0][1].std, 0.0));
    }
}

//! Comparing numbers the way tests and verification need: a value that is not finite on
//! one side only is an infinite difference, never a silently ignored one (`f64::max`
//! drops NaN).

/// `|x - y|`, with equal values (including equal infinities) and NaN on both sides counting
/// as 0 and any other pair holding a non-finite value as infinity.
pub fn element_diff(x: f64, y: f64) -> f64 {
    if x == y || (x.is_nan() && y.is_nan()) {
        0.0
    } else if x.is_finite() && y.is_finite() {
        (x - y).abs()
    } else {
        f64::INFINITY
    }
}

/// Largest [`element_diff`] over two equally long sequences; infinity when their lengths
/// differ, 0 when both are empty.
pub fn max_abs_diff<A, B>(a: A, b: B) -> f64
where
    A: IntoIterator,
    B: IntoIterator,
    A::Item: Into<f64>,
    B::Item: Into<f64>,
{
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    let mut worst = 0.0f64;
    loop {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) => {
                let d = element_diff(x.into(), y.into());
                if d > worst {
                    worst = d;
                }
            }
            (None, None) => return worst,
            _ => return f64::INFINITY,
        }
    }
}

/// The class of highest score, the first one on a tie (as numpy's and ONNX Runtime's
/// `argmax`); 0 for an empty row. A NaN score never wins: callers refuse non-finite rows.
pub fn argmax<T: Copy + PartialOrd>(row: &[T]) -> usize {
    let mut best = 0;
    for (i, s) in row.iter().enumerate().skip(1) {
        if *s > row[best] {
            best = i;
        }
    }
    best
}

/// The place of `class` when the classes are ordered by falling score, ties by index (the
/// order [`argmax`] takes first): 0 is the top-1 prediction, `rank < k` a top-k hit.
pub fn rank<T: Copy + PartialOrd>(row: &[T], class: usize) -> usize {
    let target = row[class];
    let above = row.iter().filter(|&&s| s > target).count();
    let tied_before = row[..class].iter().filter(|&&s| s == target).count();
    above + tied_before
}

/// How many rows of class scores (`scores` holds `labels.len()` rows of `classes` each,
/// row-major) have their label as top-1 class ([`argmax`], the first maximum). A row with a
/// score that is not finite counts as wrong; callers that must refuse such rows check first.
pub fn top1_correct<T: Copy + PartialOrd + Into<f64>>(
    scores: &[T],
    classes: usize,
    labels: &[i64],
) -> usize {
    scores
        .chunks(classes.max(1))
        .zip(labels)
        .filter(|(row, &label)| {
            row.iter().all(|&s| s.into().is_finite())
                && usize::try_from(label).is_ok_and(|l| argmax(row) == l)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_on_one_side_is_an_infinite_difference() {
        assert_eq!(
            max_abs_diff([f32::NAN, f32::NAN], [1.0f32, 2.0]),
            f64::INFINITY
        );
        assert_eq!(
            max_abs_diff([1.0f32, f32::INFINITY], [1.0f32, 2.0]),
            f64::INFINITY
        );
        assert_eq!(max_abs_diff([0.0f64], [f64::NEG_INFINITY]), f64::INFINITY);
    }

    #[test]
    fn equal_non_finite_values_agree() {
        assert_eq!(
            max_abs_diff([f32::NAN, f32::INFINITY], [f32::NAN, f32::INFINITY]),
            0.0
        );
    }

    #[test]
    fn finite_values_give_the_largest_gap() {
        assert_eq!(max_abs_diff([1.0f32, 5.0, -2.0], [1.5f32, 5.0, 1.0]), 3.0);
        assert_eq!(max_abs_diff(Vec::<f32>::new(), Vec::<f32>::new()), 0.0);
    }

    #[test]
    fn ties_go_to_the_first_maximum() {
        assert_eq!(argmax(&[1.0f32, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[5i64]), 0);
        assert_eq!(argmax::<f64>(&[]), 0);
        let row = [0.5f64, 0.9, 0.9, 0.1];
        assert_eq!(rank(&row, 1), 0);
        assert_eq!(rank(&row, 2), 1);
        assert_eq!(rank(&row, 0), 2);
        assert_eq!(rank(&row, 3), 3);
        // The top-1 hit of `rank` is exactly `argmax`.
        assert!((0..4).all(|c| (rank(&row, c) == 0) == (argmax(&row) == c)));
    }

    #[test]
    fn top1_counts_first_maximum_hits_and_never_a_non_finite_row() {
        // Rows: tie 1/2 (first wins, label 1 hit), clear 0 (label 2 miss), NaN row with
        // label 0 (argmax would say 0, but the row is not finite: wrong).
        let scores = [0.1f32, 0.7, 0.7, 0.9, 0.0, 0.0, f32::NAN, 0.5, 0.2];
        assert_eq!(top1_correct(&scores, 3, &[1, 2, 0]), 1);
        assert_eq!(top1_correct(&scores, 3, &[2, 0, 0]), 1);
        assert_eq!(top1_correct(&scores[..6], 3, &[1, 0]), 2);
        assert_eq!(top1_correct(&scores[..3], 3, &[-1]), 0);
    }

    #[test]
    fn different_lengths_are_an_infinite_difference() {
        assert_eq!(max_abs_diff([1.0f32], [1.0f32, 2.0]), f64::INFINITY);
    }
}

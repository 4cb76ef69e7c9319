//! Which channels each group keeps: per-layer or global ranking, rounded to multiples,
//! the same number in each of a group's balanced segments.

use std::collections::HashMap;

use super::groups::lcm;
use super::{ChannelConfig, Scope};

/// Scores of one prunable group, by root id.
pub struct Scored {
    /// Root id of the group.
    pub id: usize,
    /// Importance of each channel.
    pub scores: Vec<f64>,
    /// Equal consecutive segments of the channels that keep as many channels each.
    pub segments: usize,
}

/// Kept channel indices (ascending) of every scored group.
pub fn select(scored: &[Scored], cfg: &ChannelConfig) -> HashMap<usize, Vec<usize>> {
    let counts = match cfg.scope {
        Scope::PerLayer => (scored.iter().enumerate())
            .map(|(i, s)| {
                let width = s.scores.len();
                let ratio = cfg.group_ratios.as_ref().map_or(cfg.ratio, |r| r[i]);
                let removed = (ratio * width as f64).floor() as usize;
                (s.id, width - removed)
            })
            .collect(),
        Scope::Global => global_counts(scored, cfg),
    };
    (scored.iter())
        .map(|s| {
            let keep = rounded(counts[&s.id], s, cfg);
            (s.id, top_balanced(&s.scores, keep, s.segments))
        })
        .collect()
}

/// Kept channel counts of `s` are multiples of `round_to` and of its segment count.
fn step(s: &Scored, cfg: &ChannelConfig) -> usize {
    lcm(cfg.round_to.max(1), s.segments.max(1))
}

/// The smallest number of channels `s` may keep (at least one per segment).
fn min_keep(s: &Scored, cfg: &ChannelConfig) -> usize {
    let step = step(s, cfg);
    let least = cfg.min_channels.max(cfg.round_to).max(1);
    (least.div_ceil(step) * step).min(s.scores.len())
}

/// `keep` rounded up to a multiple of the step of `s`, within `[min_keep, width]`.
fn rounded(keep: usize, s: &Scored, cfg: &ChannelConfig) -> usize {
    let step = step(s, cfg);
    (keep.div_ceil(step) * step).clamp(min_keep(s, cfg), s.scores.len())
}

/// Channels kept per group when the lowest-ranked channels of all groups go first; each
/// group's scores are divided by their mean so that layers of different scale compare.
fn global_counts(scored: &[Scored], cfg: &ChannelConfig) -> HashMap<usize, usize> {
    let mut all: Vec<(f64, usize)> = Vec::new();
    for s in scored {
        let mean = s.scores.iter().sum::<f64>() / s.scores.len().max(1) as f64;
        let scale = if mean > 0.0 { 1.0 / mean } else { 0.0 };
        all.extend(s.scores.iter().map(|&v| (v * scale, s.id)));
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut keep: HashMap<usize, usize> = scored.iter().map(|s| (s.id, s.scores.len())).collect();
    let floor: HashMap<usize, usize> = (scored.iter()).map(|s| (s.id, min_keep(s, cfg))).collect();
    let mut to_remove = (cfg.ratio * all.len() as f64).floor() as usize;
    for (_, id) in all {
        if to_remove == 0 {
            break;
        }
        let k = keep.entry(id).or_default();
        if *k > floor[&id] {
            *k -= 1;
            to_remove -= 1;
        }
    }
    keep
}

/// Indices of the `keep / segments` highest scores of each of `segments` equal
/// consecutive segments, ascending.
fn top_balanced(scores: &[f64], keep: usize, segments: usize) -> Vec<usize> {
    let segments = segments.max(1);
    let len = scores.len() / segments;
    (scores.chunks(len.max(1)).enumerate())
        .flat_map(|(s, chunk)| {
            top(chunk, keep / segments)
                .into_iter()
                .map(move |k| s * len + k)
        })
        .collect()
}

/// Indices of the `keep` highest scores, ascending (ties keep the earlier channel).
fn top(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(keep);
    order.sort_unstable();
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(scores: &[f64], segments: usize) -> Scored {
        Scored {
            id: 0,
            scores: scores.to_vec(),
            segments,
        }
    }

    #[test]
    fn balanced_selection_keeps_the_best_of_each_segment() {
        let scores = [1.0, 5.0, 3.0, 2.0, 9.0, 0.0, 4.0, 8.0];
        // Globally the best four are 9, 8, 5, 4 (three in the second half); balanced over
        // two segments each half keeps its two best.
        assert_eq!(top_balanced(&scores, 4, 2), vec![1, 2, 4, 7]);
        assert_eq!(top_balanced(&scores, 4, 1), vec![1, 4, 6, 7]);
        let cfg = ChannelConfig {
            ratio: 0.75,
            round_to: 3,
            ..ChannelConfig::default()
        };
        // 2 kept, rounded to a multiple of lcm(3, 2) = 6.
        let kept = select(&[scored(&scores, 2)], &cfg);
        assert_eq!(kept[&0], vec![1, 2, 3, 4, 6, 7]);
        // Four segments of two: at least one channel each, whatever the ratio.
        let cfg = ChannelConfig { round_to: 1, ..cfg };
        assert_eq!(min_keep(&scored(&scores, 4), &cfg), 4);
        // Per-group ratios: the first group keeps 6 of 8, the second 2 of 8.
        let cfg = ChannelConfig {
            group_ratios: Some(vec![0.25, 0.75]),
            ..cfg
        };
        let second = Scored {
            id: 1,
            ..scored(&scores, 1)
        };
        let kept = select(&[scored(&scores, 1), second], &cfg);
        assert_eq!((kept[&0].len(), kept[&1].len()), (6, 2));
        assert_eq!(kept[&1], vec![4, 7]);
    }
}

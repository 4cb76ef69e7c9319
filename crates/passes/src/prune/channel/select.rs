//! Which channels each group keeps: per-layer or global ranking, rounded to multiples.

use std::collections::HashMap;

use super::{ChannelConfig, Scope};

/// Scores of one prunable group, by root id.
pub struct Scored {
    /// Root id of the group.
    pub id: usize,
    /// Importance of each channel.
    pub scores: Vec<f64>,
}

/// Kept channel indices (ascending) of every scored group.
pub fn select(scored: &[Scored], cfg: &ChannelConfig) -> HashMap<usize, Vec<usize>> {
    let counts = match cfg.scope {
        Scope::PerLayer => (scored.iter())
            .map(|s| {
                let width = s.scores.len();
                let removed = (cfg.ratio * width as f64).floor() as usize;
                (s.id, width - removed)
            })
            .collect(),
        Scope::Global => global_counts(scored, cfg),
    };
    (scored.iter())
        .map(|s| {
            let keep = rounded(counts[&s.id], s.scores.len(), cfg);
            (s.id, top(&s.scores, keep))
        })
        .collect()
}

/// The smallest number of channels a group of `width` may keep.
fn min_keep(width: usize, cfg: &ChannelConfig) -> usize {
    cfg.min_channels.max(cfg.round_to).max(1).min(width)
}

/// `keep` rounded up to a multiple of `round_to`, within `[min_keep, width]`.
fn rounded(keep: usize, width: usize, cfg: &ChannelConfig) -> usize {
    let k = cfg.round_to.max(1);
    (keep.div_ceil(k) * k).clamp(min_keep(width, cfg), width)
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
    let floor: HashMap<usize, usize> = (scored.iter())
        .map(|s| (s.id, min_keep(s.scores.len(), cfg)))
        .collect();
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

/// Indices of the `keep` highest scores, ascending (ties keep the earlier channel).
fn top(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(keep);
    order.sort_unstable();
    order
}

//! Evolution under measured constraints: every trained candidate already meets the limits,
//! so parents are the most accurate of them (the best third by first-rung accuracy, at
//! least two); children are their uniform crossover with one or more genes mutated. A child
//! already seen is mutated again; after a few tries a fresh sample takes its place.
//!
//! Parents are not taken from the Pareto front of accuracy and latency: under a latency
//! limit that front is mostly fast, weak models, and their children stay weak (the search
//! then lost to random sampling). The front is still reported ([`front`]).

use std::collections::HashSet;

use rand::Rng;

use crate::nas::candidate::Candidate;
use crate::nas::space::{Genome, Space};
use crate::pareto::{Direction, Objectives};

/// Tries at an unseen child before drawing a fresh sample.
const TRIES: usize = 32;

/// A trained candidate as evolution sees it.
#[derive(Clone, Debug)]
pub struct Scored {
    /// The candidate.
    pub candidate: Candidate,
    /// Its first-rung validation accuracy.
    pub accuracy: f64,
    /// Its median latency, milliseconds.
    pub latency_ms: f64,
}

/// Share of the trained candidates that are parents (1 in `PARENT_SHARE`).
const PARENT_SHARE: usize = 3;
/// Fewest parents (when that many candidates trained).
const MIN_PARENTS: usize = 2;

/// Indices of the parents among `scored`: the best third by accuracy (at least
/// [`MIN_PARENTS`]), ties broken by id so that the order of arrival never matters.
pub fn parents(scored: &[Scored]) -> Vec<usize> {
    let mut ranked: Vec<usize> = (0..scored.len()).collect();
    ranked.sort_by(|&a, &b| {
        scored[b]
            .accuracy
            .total_cmp(&scored[a].accuracy)
            .then_with(|| scored[a].candidate.id.cmp(&scored[b].candidate.id))
    });
    let keep = scored
        .len()
        .div_ceil(PARENT_SHARE)
        .max(MIN_PARENTS)
        .min(scored.len());
    ranked.truncate(keep);
    ranked
}

/// Indices of the non-dominated members of `scored` (higher accuracy, lower latency).
pub fn front(scored: &[Scored]) -> Vec<usize> {
    let objectives =
        Objectives::new([("accuracy", Direction::Max), ("latency_ms", Direction::Min)]);
    let points: Vec<[f64; 2]> = scored.iter().map(|s| [s.accuracy, s.latency_ms]).collect();
    let points: Vec<&[f64]> = points.iter().map(|p| p.as_slice()).collect();
    objectives.front(&points)
}

/// A genome not in `seen` (candidate ids): a child of two of the [`parents`] of `scored`,
/// or a fresh sample when there is no parent yet or no unseen child is found.
pub fn propose(
    space: &Space,
    scored: &[Scored],
    seen: &HashSet<String>,
    rng: &mut impl Rng,
) -> Genome {
    let parents = parents(scored);
    if !parents.is_empty() {
        for _ in 0..TRIES {
            let a = &scored[parents[rng.random_range(0..parents.len())]]
                .candidate
                .genome;
            let b = &scored[parents[rng.random_range(0..parents.len())]]
                .candidate
                .genome;
            let child = mutate(space, &crossover(a, b, rng), rng);
            if !seen.contains(&Candidate::new(space, &child).id) {
                return child;
            }
        }
    }
    fresh(space, seen, rng)
}

/// A random genome not in `seen`, if one is found within a few draws (else the last draw).
pub fn fresh(space: &Space, seen: &HashSet<String>, rng: &mut impl Rng) -> Genome {
    let mut genome = space.sample(rng);
    for _ in 0..TRIES {
        if !seen.contains(&Candidate::new(space, &genome).id) {
            break;
        }
        genome = space.sample(rng);
    }
    genome
}

/// Each gene from `a` or `b`, with even odds.
pub fn crossover(a: &[u32], b: &[u32], rng: &mut impl Rng) -> Genome {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| if rng.random_bool(0.5) { x } else { y })
        .collect()
}

/// `genome` with one gene set to another of its values, then each other gene changed with
/// odds 1 in the number of genes.
pub fn mutate(space: &Space, genome: &[u32], rng: &mut impl Rng) -> Genome {
    let mut child = genome.to_vec();
    let forced = rng.random_range(0..child.len());
    let odds = 1.0 / child.len() as f64;
    for (i, gene) in space.genes.iter().enumerate() {
        if (i == forced || rng.random_bool(odds)) && gene.values.len() > 1 {
            let others: Vec<u32> = gene
                .values
                .iter()
                .copied()
                .filter(|&v| v != child[i])
                .collect();
            child[i] = others[rng.random_range(0..others.len())];
        }
    }
    child
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(space: &Space, genome: &[u32], accuracy: f64, latency_ms: f64) -> Scored {
        Scored {
            candidate: Candidate::new(space, genome),
            accuracy,
            latency_ms,
        }
    }

    #[test]
    fn parents_are_the_most_accurate_not_the_fastest() {
        let space = Space::new(crate::nas::Family::Cnn, [1, 28, 28], 10, 0).unwrap();
        let all = vec![
            // Fast and weak: on the Pareto front, never a parent.
            scored(&space, &[1, 1, 8, 8, 8, 8], 0.60, 0.01),
            scored(&space, &[2, 1, 32, 64, 8, 8], 0.85, 0.20),
            scored(&space, &[1, 1, 16, 8, 8, 8], 0.70, 0.05),
            scored(&space, &[3, 2, 32, 64, 64, 8], 0.84, 0.40),
            scored(&space, &[2, 2, 16, 16, 8, 8], 0.75, 0.30),
            scored(&space, &[2, 1, 8, 16, 8, 8], 0.72, 0.10),
        ];
        assert_eq!(parents(&all), vec![1, 3]);
        assert_eq!(
            front(&all),
            vec![0, 1, 2, 5],
            "the front holds the fast, weak ones"
        );
        assert_eq!(parents(&all[..1]), vec![0]);
        // Seven trained: the best three.
        let mut seven = all.clone();
        seven.push(scored(&space, &[4, 1, 8, 8, 8, 8], 0.80, 0.15));
        assert_eq!(parents(&seven), vec![1, 3, 6]);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        for _ in 0..20 {
            let child = propose(&space, &all, &HashSet::new(), &mut rng);
            assert!(space.contains(&child));
        }
    }
}

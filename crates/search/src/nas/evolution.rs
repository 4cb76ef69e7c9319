//! Multi-objective evolution: parents come from the Pareto front of the candidates trained
//! so far (accuracy up, latency down), children are their uniform crossover with one or
//! more genes mutated. A child already seen is mutated again; after a few tries a fresh
//! sample takes its place.

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

/// Indices of the non-dominated members of `scored` (higher accuracy, lower latency).
pub fn front(scored: &[Scored]) -> Vec<usize> {
    let objectives =
        Objectives::new([("accuracy", Direction::Max), ("latency_ms", Direction::Min)]);
    let points: Vec<[f64; 2]> = scored.iter().map(|s| [s.accuracy, s.latency_ms]).collect();
    let points: Vec<&[f64]> = points.iter().map(|p| p.as_slice()).collect();
    objectives.front(&points)
}

/// A genome not in `seen` (candidate ids): a child of two parents from the front of
/// `scored`, or a fresh sample when there is no parent yet or no unseen child is found.
pub fn propose(
    space: &Space,
    scored: &[Scored],
    seen: &HashSet<String>,
    rng: &mut impl Rng,
) -> Genome {
    let parents = front(scored);
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

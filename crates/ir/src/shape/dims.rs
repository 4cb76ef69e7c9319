//! Dimension algebra: broadcasting, unification, products, sums and axis normalisation.

use std::collections::HashSet;

use crate::error::Result;

use super::bad;
use super::types::Dim;

/// Broadcasts two dimensions (numpy rules), or explains why they cannot be.
fn broadcast_dim(a: &Dim, b: &Dim) -> Result<Dim> {
    use Dim::*;
    Ok(match (a, b) {
        (Known(1), x) | (x, Known(1)) => x.clone(),
        (Known(x), Known(y)) if x != y => return bad(format!("cannot broadcast {x} with {y}")),
        (Known(x), _) | (_, Known(x)) => Known(*x),
        (Symbol(x), Symbol(y)) if x == y => a.clone(),
        _ => Unknown,
    })
}

/// Broadcasts two shapes (numpy rules).
pub(super) fn broadcast(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>> {
    let r = a.len().max(b.len());
    let one = Dim::Known(1);
    let at = |s: &[Dim], i: usize| -> Dim {
        (i + s.len())
            .checked_sub(r)
            .map_or(one.clone(), |j| s[j].clone())
    };
    (0..r)
        .map(|i| broadcast_dim(&at(a, i), &at(b, i)))
        .collect()
}

/// The common value of two dimensions that must be equal.
pub(super) fn unify(a: &Dim, b: &Dim, what: &str) -> Result<Dim> {
    use Dim::*;
    Ok(match (a, b) {
        (Known(x), Known(y)) if x != y => return bad(format!("{what}: {x} and {y} differ")),
        (Known(_), _) | (Symbol(_), Unknown) => a.clone(),
        _ => b.clone(),
    })
}

/// Product of dimensions (a lone symbol times ones stays that symbol).
pub(super) fn product(dims: &[Dim]) -> Dim {
    let mut n: usize = 1;
    let mut sym = None;
    for d in dims {
        match d {
            Dim::Known(k) => n = n.saturating_mul(*k),
            Dim::Symbol(s) if sym.is_none() => sym = Some(s),
            _ => return Dim::Unknown,
        }
    }
    match sym {
        None => Dim::Known(n),
        Some(s) if n == 1 => Dim::Symbol(s.clone()),
        Some(_) => Dim::Unknown,
    }
}

/// Sum of dimensions, known only when all are.
pub(super) fn sum(dims: &[&Dim]) -> Dim {
    match dims {
        [one] => (*one).clone(),
        _ => dims
            .iter()
            .try_fold(0usize, |acc, d| match d {
                Dim::Known(k) => acc.checked_add(*k),
                _ => None,
            })
            .map_or(Dim::Unknown, Dim::Known),
    }
}

/// `d + delta`, an error when negative; `delta == 0` keeps symbols.
pub(super) fn add_to_dim(d: &Dim, delta: i128) -> Result<Dim> {
    match d {
        _ if delta == 0 => Ok(d.clone()),
        Dim::Known(k) => match usize::try_from(*k as i128 + delta) {
            Ok(v) => Ok(Dim::Known(v)),
            Err(_) => bad(format!("size {k} changed by {delta} is out of range")),
        },
        _ => Ok(Dim::Unknown),
    }
}

/// Normalises a possibly negative axis against `rank`.
pub(super) fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        bad(format!("axis {axis} is out of range for rank {rank}"))
    }
}

/// Normalises distinct axes against `rank`.
pub(super) fn norm_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let out = axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<Result<Vec<_>>>()?;
    let unique: HashSet<usize> = out.iter().copied().collect();
    if unique.len() != out.len() {
        return bad(format!("axes {axes:?} repeat an axis"));
    }
    Ok(out)
}

/// `n * k` as a dimension; an error when negative or too large.
pub(super) fn mul_dim(n: usize, k: i64) -> Result<Dim> {
    match usize::try_from(k).ok().and_then(|k| n.checked_mul(k)) {
        Some(v) => Ok(Dim::Known(v)),
        None => bad(format!("size {n} times {k} is out of range")),
    }
}

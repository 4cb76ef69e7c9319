//! The one Pareto-front definition of whittle's searches: named objectives, each minimized
//! or maximized; dominance; the front of a set of points; feasibility against constraints
//! (a limit on an objective); and how far a point is from meeting them.
//!
//! A point is a slice of values in the order of [`Objectives::names`]. A value that is not
//! finite (a candidate that could not be measured) is worse than any finite value.

use serde::{Deserialize, Serialize};

/// Whether an objective is better small or large.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Smaller is better (latency, size, accuracy lost).
    Min,
    /// Larger is better (accuracy).
    Max,
}

/// One named objective.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objective {
    /// Its name ("latency_ms", "size_bytes", "accuracy").
    pub name: String,
    /// Which way is better.
    pub direction: Direction,
}

/// A limit on one objective: at most `limit` for a [`Direction::Min`] objective, at least
/// `limit` for a [`Direction::Max`] one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    /// The objective's name.
    pub objective: String,
    /// The limit, in the objective's unit.
    pub limit: f64,
}

/// How far one value is beyond its constraint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Excess {
    /// The objective's name.
    pub objective: String,
    /// The limit.
    pub limit: f64,
    /// The point's value.
    pub value: f64,
    /// How far past the limit, in the objective's unit (0 when met).
    pub by: f64,
    /// `by` as a fraction of the limit's magnitude (0 when met; infinite for a limit of 0
    /// that is missed or a value that is not finite).
    pub relative: f64,
}

/// Objectives and the constraints on them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Objectives {
    objectives: Vec<Objective>,
    constraints: Vec<Constraint>,
}

impl Objectives {
    /// Objectives `(name, direction)` in the order points list their values.
    pub fn new<'a>(objectives: impl IntoIterator<Item = (&'a str, Direction)>) -> Self {
        Objectives {
            objectives: objectives
                .into_iter()
                .map(|(name, direction)| Objective {
                    name: name.to_string(),
                    direction,
                })
                .collect(),
            constraints: Vec::new(),
        }
    }

    /// Adds a constraint on the objective `name` (an error naming it when there is no such
    /// objective or the limit is not finite).
    pub fn constrain(mut self, name: &str, limit: f64) -> Result<Self, String> {
        if self.index(name).is_none() {
            return Err(format!(
                "no objective '{name}' to constrain (objectives: {})",
                self.names().join(", ")
            ));
        }
        if !limit.is_finite() {
            return Err(format!("the limit on '{name}' must be finite, got {limit}"));
        }
        self.constraints.push(Constraint {
            objective: name.to_string(),
            limit,
        });
        Ok(self)
    }

    /// The objectives' names, in point order.
    pub fn names(&self) -> Vec<&str> {
        self.objectives.iter().map(|o| o.name.as_str()).collect()
    }

    /// The objectives.
    pub fn objectives(&self) -> &[Objective] {
        &self.objectives
    }

    /// The constraints, in the order added.
    pub fn constraints(&self) -> &[Constraint] {
        &self.constraints
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.objectives.iter().position(|o| o.name == name)
    }

    /// `value` of objective `i` turned so that smaller is better; not finite: +inf.
    fn cost(&self, i: usize, value: f64) -> f64 {
        if !value.is_finite() {
            return f64::INFINITY;
        }
        match self.objectives[i].direction {
            Direction::Min => value,
            Direction::Max => -value,
        }
    }

    /// Whether `a` dominates `b`: at least as good in every objective and better in one.
    pub fn dominates(&self, a: &[f64], b: &[f64]) -> bool {
        let mut better = false;
        for i in 0..self.objectives.len() {
            let (ca, cb) = (self.cost(i, a[i]), self.cost(i, b[i]));
            if ca > cb {
                return false;
            }
            better |= ca < cb;
        }
        better
    }

    /// The indices of the points no other point dominates (the Pareto front), in input
    /// order. Equal points are all on the front.
    pub fn front(&self, points: &[&[f64]]) -> Vec<usize> {
        (0..points.len())
            .filter(|&i| !points.iter().any(|p| self.dominates(p, points[i])))
            .collect()
    }

    /// How far `point` is from each constraint, in the order added.
    pub fn excess(&self, point: &[f64]) -> Vec<Excess> {
        self.constraints
            .iter()
            .map(|c| {
                let i = self.index(&c.objective).expect("checked by constrain");
                let value = point[i];
                let by = match self.objectives[i].direction {
                    Direction::Min => value - c.limit,
                    Direction::Max => c.limit - value,
                };
                let by = if value.is_finite() {
                    by.max(0.0)
                } else {
                    f64::INFINITY
                };
                let relative = if by == 0.0 {
                    0.0
                } else if c.limit != 0.0 {
                    by / c.limit.abs()
                } else {
                    f64::INFINITY
                };
                Excess {
                    objective: c.objective.clone(),
                    limit: c.limit,
                    value,
                    by,
                    relative,
                }
            })
            .collect()
    }

    /// Whether `point` meets every constraint.
    pub fn feasible(&self, point: &[f64]) -> bool {
        self.distance(point) == 0.0
    }

    /// The distance of `point` to the constraints: the sum of the relative excesses (0
    /// when every constraint is met), comparable across objectives of different units.
    pub fn distance(&self, point: &[f64]) -> f64 {
        self.excess(point).iter().map(|e| e.relative).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objectives() -> Objectives {
        Objectives::new([("latency_ms", Direction::Min), ("accuracy", Direction::Max)])
    }

    #[test]
    fn dominance_follows_each_direction() {
        let o = objectives();
        assert!(o.dominates(&[1.0, 0.9], &[2.0, 0.9]));
        assert!(o.dominates(&[1.0, 0.95], &[1.0, 0.9]));
        assert!(!o.dominates(&[1.0, 0.9], &[1.0, 0.9]));
        assert!(!o.dominates(&[1.0, 0.8], &[2.0, 0.9]));
        assert!(o.dominates(&[5.0, 0.1], &[f64::NAN, 0.1]));
        assert!(!o.dominates(&[f64::NAN, 0.9], &[5.0, 0.1]));
    }

    #[test]
    fn the_front_keeps_trade_offs_and_drops_dominated_points() {
        let o = objectives();
        let points: [&[f64]; 5] = [
            &[1.0, 0.80],
            &[2.0, 0.90],
            &[2.5, 0.85], // dominated by [2.0, 0.90]
            &[3.0, 0.95],
            &[1.0, 0.80], // equal to the first: both stay
        ];
        assert_eq!(o.front(&points), [0, 1, 3, 4]);
        assert!(o.front(&[]).is_empty());
    }

    #[test]
    fn constraints_measure_relative_excess() {
        let o = objectives()
            .constrain("latency_ms", 2.0)
            .unwrap()
            .constrain("accuracy", 0.9)
            .unwrap();
        assert!(o.feasible(&[2.0, 0.9]));
        assert_eq!(o.distance(&[1.0, 0.95]), 0.0);
        let e = o.excess(&[3.0, 0.81]);
        assert_eq!(e[0].by, 1.0);
        assert_eq!(e[0].relative, 0.5);
        assert!((e[1].by - 0.09).abs() < 1e-12);
        assert!((e[1].relative - 0.1).abs() < 1e-12);
        assert!((o.distance(&[3.0, 0.81]) - 0.6).abs() < 1e-12);
        assert!(!o.feasible(&[1.0, 0.89]));
        assert_eq!(o.distance(&[f64::NAN, 0.95]), f64::INFINITY);
    }

    #[test]
    fn constraining_an_unknown_objective_or_with_nan_is_refused() {
        let e = objectives().constrain("size_bytes", 1.0).unwrap_err();
        assert!(
            e.contains("'size_bytes'") && e.contains("latency_ms, accuracy"),
            "{e}"
        );
        let e = objectives().constrain("accuracy", f64::NAN).unwrap_err();
        assert!(e.contains("'accuracy'"), "{e}");
    }
}

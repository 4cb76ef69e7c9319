//! Lossless graph optimization: passes that shrink or simplify a model without changing
//! what it computes (up to float rounding of folded arithmetic).
//!
//! Each pass is one module implementing [`Pass`]; [`registry`] lists them by name,
//! [`Pipeline`] runs a list of them repeatedly until none changes anything, and
//! [`optimize`] does that and reports [`ModelStats`] before and after.

use whittle_ir::Model;

use crate::error::Result;

pub mod collapse_reshapes;
pub mod constant_folding;
pub mod dead_code;
pub mod dedupe_initializers;
pub mod eliminate_identity;
pub mod fold_batchnorm;
pub mod fuse_matmul_add;
pub mod util;
pub mod verify;

/// What one run of a pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Rewrites made (nodes folded, fused or removed, initializers merged, ...).
    pub changes: usize,
}

/// A model-to-model rewrite that keeps the model's outputs.
pub trait Pass {
    /// Name used on the command line (`--passes`).
    fn name(&self) -> &'static str;
    /// One line on what the pass does.
    fn description(&self) -> &'static str;
    /// Rewrites `model` in place.
    fn run(&self, model: &mut Model) -> Result<PassStats>;
}

/// Every pass, in the order the default pipeline runs them.
pub fn registry() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(eliminate_identity::EliminateIdentity),
        Box::new(constant_folding::ConstantFolding),
        Box::new(collapse_reshapes::CollapseReshapes),
        Box::new(fold_batchnorm::FoldBatchNorm),
        Box::new(fuse_matmul_add::FuseMatMulAdd),
        Box::new(dedupe_initializers::DedupeInitializers),
        Box::new(dead_code::DeadCode),
    ]
}

/// Names of every pass, in default pipeline order.
pub fn pass_names() -> Vec<&'static str> {
    registry().iter().map(|p| p.name()).collect()
}

/// The pass called `name`; an unknown name is an error listing the valid ones.
pub fn pass_by_name(name: &str) -> Result<Box<dyn Pass>> {
    match registry().into_iter().find(|p| p.name() == name) {
        Some(p) => Ok(p),
        None => crate::bail!(
            "unknown pass '{name}' (valid passes: {})",
            pass_names().join(", ")
        ),
    }
}

/// Total changes of one pass over a pipeline run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassReport {
    /// Pass name.
    pub name: &'static str,
    /// Changes summed over every round.
    pub changes: usize,
}

/// Passes run in order, round after round, until a round changes nothing.
pub struct Pipeline {
    passes: Vec<Box<dyn Pass>>,
}

/// A pipeline stops after this many rounds even if passes still report changes.
pub const MAX_ROUNDS: usize = 10;

impl Pipeline {
    /// Every registered pass, in the default order.
    pub fn default_passes() -> Self {
        Pipeline { passes: registry() }
    }

    /// The named passes, in the given order (duplicates allowed).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self> {
        if names.is_empty() {
            crate::bail!(
                "no passes given (valid passes: {})",
                pass_names().join(", ")
            );
        }
        let passes = names
            .iter()
            .map(|n| pass_by_name(n.as_ref().trim()))
            .collect::<Result<_>>()?;
        Ok(Pipeline { passes })
    }

    /// Runs the passes to a fixed point; `on_pass` is called after each pass run.
    pub fn run(&self, model: &mut Model, on_pass: &mut dyn FnMut(&str)) -> Result<Vec<PassReport>> {
        let mut reports: Vec<PassReport> = self
            .passes
            .iter()
            .map(|p| PassReport {
                name: p.name(),
                changes: 0,
            })
            .collect();
        for _ in 0..MAX_ROUNDS {
            let mut round = 0;
            for (pass, report) in self.passes.iter().zip(&mut reports) {
                let stats = pass.run(model)?;
                report.changes += stats.changes;
                round += stats.changes;
                on_pass(pass.name());
            }
            if round == 0 {
                break;
            }
        }
        Ok(merge_repeats(reports))
    }

    /// Number of passes in one round.
    pub fn len(&self) -> usize {
        self.passes.len()
    }

    /// True when the pipeline has no pass.
    pub fn is_empty(&self) -> bool {
        self.passes.is_empty()
    }
}

/// One report per pass name (a pass listed twice sums its changes).
fn merge_repeats(reports: Vec<PassReport>) -> Vec<PassReport> {
    let mut merged: Vec<PassReport> = Vec::new();
    for r in reports {
        match merged.iter_mut().find(|m| m.name == r.name) {
            Some(m) => m.changes += r.changes,
            None => merged.push(r),
        }
    }
    merged
}

/// Size figures of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelStats {
    /// Nodes of the main graph.
    pub nodes: usize,
    /// Elements of every initializer and `Constant` node value of the main graph.
    pub params: u64,
    /// Bytes of the serialised model.
    pub bytes: u64,
}

impl ModelStats {
    /// Measures `model`.
    pub fn of(model: &Model) -> Self {
        let graph = model.graph();
        ModelStats {
            nodes: graph.node.len(),
            params: whittle_ir::cost::parameter_count(graph),
            bytes: model.encoded_len() as u64,
        }
    }
}

/// What [`optimize`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptimizeReport {
    /// The model before.
    pub before: ModelStats,
    /// The model after.
    pub after: ModelStats,
    /// Changes per pass.
    pub passes: Vec<PassReport>,
}

/// Runs `pipeline` on `model` to a fixed point and returns the optimized model and report.
pub fn optimize(
    model: &Model,
    pipeline: &Pipeline,
    on_pass: &mut dyn FnMut(&str),
) -> Result<(Model, OptimizeReport)> {
    let before = ModelStats::of(model);
    let mut out = model.clone();
    let passes = pipeline.run(&mut out, on_pass)?;
    let after = ModelStats::of(&out);
    Ok((
        out,
        OptimizeReport {
            before,
            after,
            passes,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_pass_names_the_valid_ones() {
        let err = Pipeline::from_names(&["dead-code", "fold-bn"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unknown pass 'fold-bn'"), "{err}");
        assert!(err.contains("fold-batchnorm"), "{err}");
        assert!(err.contains("dedupe-initializers"), "{err}");
        assert_eq!(Pipeline::from_names(&["dead-code"]).unwrap().len(), 1);
    }

    #[test]
    fn every_pass_has_a_distinct_name() {
        let mut names = pass_names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), registry().len());
    }
}

//! Learned projections for feature distillation between tensors of different widths
//! (FitNets-style hint learning): a student feature `[N, Cs, ...]` is mapped to the
//! teacher's `[N, Ct, ...]` by a 1x1 convolution with weight `[Ct, Cs, 1, ...]`, and a
//! `[N, Ds]` feature to `[N, Dt]` by a `Gemm` with `transB = 1` and weight `[Dt, Ds]`.
//!
//! The projection is added to the training graph only: an initializer (trainable, since
//! it feeds a weight slot) and one node whose output becomes a graph output for the loss.
//! The exported student never contains it: export the trained weights into the original
//! student with [`whittle_exec::Executor::export`].

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use whittle_ir::attr::make;
use whittle_ir::graph::GraphEdit;
use whittle_ir::proto::NodeProto;
use whittle_ir::shape::TensorType;
use whittle_ir::{Model, TensorData};

use crate::bail;
use crate::error::Result;

/// A named tensor shape, to name both sides in errors.
pub(crate) struct Named {
    /// Which model and value (`teacher 'p1'`).
    pub label: String,
    /// The shape, batch axis first.
    pub dims: Vec<usize>,
}

/// The `[out, in]` shape of the projection from the student's feature width (axis 1) to
/// the teacher's, `None` when the shapes are equal; fails, naming both tensors, when the
/// batch or spatial sizes or the ranks differ, or a tensor has no feature axis.
pub(crate) fn projection_shape(teacher: &Named, student: &Named) -> Result<Option<[usize; 2]>> {
    let (t, s) = (&teacher.dims, &student.dims);
    if t == s {
        return Ok(None);
    }
    let mismatch = |what: &str| -> Result<Option<[usize; 2]>> {
        bail!(
            "{} has shape {t:?} but {} has {s:?}: {what}",
            teacher.label,
            student.label
        )
    };
    if t.len() != s.len() || t.len() < 2 {
        return mismatch("a projection needs two tensors of the same rank >= 2");
    }
    if t[0] != s[0] {
        return mismatch("the batch sizes differ");
    }
    if t[2..] != s[2..] {
        return mismatch("the spatial sizes must match (only the width, axis 1, may differ)");
    }
    Ok(Some([t[1], s[1]]))
}

/// Adds to `model` a projection of value `student` (of rank `rank`) with a fresh weight
/// of shape `[out, in]`, initialised uniformly in `±1/sqrt(in)` from `seed`, and exposes
/// its output as a graph output; returns the output's name.
pub(crate) fn add_projection(
    model: &mut Model,
    student: &str,
    rank: usize,
    [out, inp]: [usize; 2],
    seed: u64,
) -> Result<String> {
    let g = model.graph_mut();
    let base = format!("{student}.projection");
    let weight = g.fresh_name(&format!("{base}.weight"));
    let output = g.fresh_name(&base);
    let mut dims = vec![out, inp];
    let mut node = projection_node(student, &weight, &output);
    if rank == 2 {
        node.op_type = "Gemm".into();
        node.attribute.push(make::int("transB", 1));
    } else {
        dims.resize(rank, 1);
    }
    let bound = 1.0 / (inp.max(1) as f32).sqrt();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..out * inp)
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    g.initializer
        .push(TensorData::from_slice(dims, &values)?.to_proto(&weight));
    g.node.push(node);
    g.output.push(TensorType::default().to_value_info(&output));
    Ok(output)
}

/// A 1x1 `Conv(student, weight) -> output` named after its output.
fn projection_node(student: &str, weight: &str, output: &str) -> NodeProto {
    NodeProto {
        op_type: "Conv".into(),
        name: output.into(),
        input: vec![student.into(), weight.into()],
        output: vec![output.into()],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(label: &str, dims: &[usize]) -> String {
        let t = Named {
            label: "teacher 't'".into(),
            dims: vec![2, 32, 14, 14],
        };
        let s = Named {
            label: label.into(),
            dims: dims.to_vec(),
        };
        match projection_shape(&t, &s) {
            Ok(p) => format!("{p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn widths_may_differ_but_nothing_else() {
        assert_eq!(named("s", &[2, 32, 14, 14]), "None");
        assert_eq!(named("s", &[2, 8, 14, 14]), "Some([32, 8])");
        let spatial = named("student 's'", &[2, 8, 7, 7]);
        assert!(
            spatial.contains("teacher 't'")
                && spatial.contains("student 's'")
                && spatial.contains("[2, 8, 7, 7]")
                && spatial.contains("spatial"),
            "{spatial}"
        );
        assert!(named("s", &[2, 8]).contains("same rank"));
        assert!(named("s", &[3, 8, 14, 14]).contains("batch"));
    }
}

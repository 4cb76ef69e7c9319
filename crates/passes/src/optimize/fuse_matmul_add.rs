//! `fuse-matmul-add`: `Add(MatMul(A, B), C)` becomes `Gemm(A, B, C)` when `A` is known to
//! be 2-D, `B` is a constant 2-D `[K, N]` float weight, `C` is a constant bias that
//! broadcasts over rows (`[N]`, `[1, N]`, a scalar or `[1]`), and the MatMul's output is
//! read only by the Add and is not a graph output.

use whittle_ir::proto::NodeProto;
use whittle_ir::shape::TensorType;
use whittle_ir::{GraphEdit, Model};

use super::util::{
    constant, inferred_types, is_default_domain, is_foldable_float, single_use, take_over_output,
    use_counts,
};
use super::{Pass, PassStats};
use crate::error::Result;

/// The `fuse-matmul-add` pass.
pub struct FuseMatMulAdd;

impl Pass for FuseMatMulAdd {
    fn name(&self) -> &'static str {
        "fuse-matmul-add"
    }

    fn description(&self) -> &'static str {
        "turn MatMul + Add of a row bias into Gemm"
    }

    fn run(&self, model: &mut Model) -> Result<PassStats> {
        let types = inferred_types(model);
        let mut changes = 0;
        while let Some((matmul, add, bias)) = next_fusion(model, &types)? {
            let graph = model.graph_mut();
            let node = &mut graph.node[matmul];
            node.op_type = "Gemm".into();
            node.attribute.clear();
            node.input.push(bias);
            take_over_output(graph, matmul, add);
            changes += 1;
        }
        Ok(PassStats { changes })
    }
}

/// `(MatMul index, Add index, bias name)` of the first fusable pair.
fn next_fusion(
    model: &Model,
    types: &std::collections::HashMap<String, TensorType>,
) -> Result<Option<(usize, usize, String)>> {
    let graph = model.graph();
    let counts = use_counts(graph);
    let producers = graph.producers();
    for (add, node) in graph.node.iter().enumerate() {
        if node.op_type != "Add" || !is_default_domain(node) || node.input.len() != 2 {
            continue;
        }
        for (y, bias) in [(0, 1), (1, 0)] {
            let y = &node.input[y];
            let Some(&matmul) = producers.get(y) else {
                continue;
            };
            let mm = &graph.node[matmul];
            if mm.op_type == "MatMul"
                && is_default_domain(mm)
                && single_use(graph, &counts, y)
                && fusable(model, mm, &node.input[bias], types)?
            {
                return Ok(Some((matmul, add, node.input[bias].clone())));
            }
        }
    }
    Ok(None)
}

fn fusable(
    model: &Model,
    mm: &NodeProto,
    bias: &str,
    types: &std::collections::HashMap<String, TensorType>,
) -> Result<bool> {
    if types.get(&mm.input[0]).and_then(TensorType::rank) != Some(2) {
        return Ok(false);
    }
    let (Some(b), Some(c)) = (constant(model, &mm.input[1])?, constant(model, bias)?) else {
        return Ok(false);
    };
    let [_, n] = b.dims() else { return Ok(false) };
    let row_bias = match c.dims() {
        [] => true,
        [len] | [1, len] => *len == *n || *len == 1,
        _ => false,
    };
    Ok(row_bias && is_foldable_float(b.dtype()) && c.dtype() == b.dtype())
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::*;
    use super::*;

    #[test]
    fn matmul_plus_row_bias_becomes_gemm() {
        let mut m = model(
            vec![
                node("MatMul", &["x", "w"], &["h"]),
                node("Add", &["b", "h"], &["y"]),
                node("MatMul", &["x3", "w"], &["h3"]),
                node("Add", &["h3", "b"], &["y3"]),
            ],
            vec![value("x", &[2, 3]), value("x3", &[1, 2, 3])],
            vec![value("y", &[2, 4]), value("y3", &[1, 2, 4])],
            vec![weight("w", &[3, 4], 0.0), weight("b", &[4], 1.0)],
        );
        assert_eq!(FuseMatMulAdd.run(&mut m).unwrap().changes, 1);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ops(&m),
            vec![
                ("Gemm".into(), s(&["y"])),
                ("MatMul".into(), s(&["h3"])),
                ("Add".into(), s(&["y3"])),
            ],
            "a 3-D MatMul is not a Gemm"
        );
        assert_eq!(m.graph().node[0].input, s(&["x", "w", "b"]));
    }
}

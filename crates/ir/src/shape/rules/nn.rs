//! Dense layers and normalisation: `Gemm`, `MatMul` (float, integer, quantized),
//! batch and layer normalisation, `Dropout`.

use crate::attr::NodeAttrs;
use crate::dtype::DataType;
use crate::error::Result;

use super::Ctx;
use crate::shape::bad;
use crate::shape::dims::{broadcast, norm_axis, unify};
use crate::shape::types::Dim;
use crate::shape::values::Info;

/// `BatchNormalization`: input 0's type, then running statistics like input 3.
pub(super) fn batch_norm(c: &Ctx) -> Result<Vec<Info>> {
    let stats = c.shaped_like(3, c.dtype(3));
    let mut outs = vec![c.shaped_like(0, c.dtype(0))];
    outs.extend(std::iter::repeat_n(
        stats,
        c.node.output.len().saturating_sub(1),
    ));
    Ok(outs)
}

/// `LayerNormalization`: input 0's type, then mean and inverse std over the normalised axes.
pub(super) fn layer_norm(c: &Ctx) -> Result<Vec<Info>> {
    let stash = c.node.int_or("stash_type", 1)?;
    let stats_type = DataType::from_code(stash as i32);
    let x = c.dims(0);
    let stats = match x {
        Some(x) => {
            let axis = norm_axis(c.node.int_or("axis", -1)?, x.len())?;
            let mut d = x[..axis].to_vec();
            d.resize(x.len(), Dim::Known(1));
            Some(d)
        }
        None => None,
    };
    Ok(vec![
        c.shaped_like(0, c.dtype(0)),
        Info::new(stats_type, stats.clone()),
        Info::new(stats_type, stats),
    ])
}

/// A 2-D operand of Gemm as (rows, cols), optionally transposed.
fn matrix<'a>(dims: &'a [Dim], trans: bool, which: &str) -> Result<(&'a Dim, &'a Dim)> {
    match dims {
        [r, k] if trans => Ok((k, r)),
        [r, k] => Ok((r, k)),
        _ => bad(format!("{which} has rank {}, expected 2", dims.len())),
    }
}

/// `Gemm`: `[M, N]` from optionally transposed 2-D operands, checking C broadcasts.
pub(super) fn gemm(c: &Ctx) -> Result<Vec<Info>> {
    let (Some(a), Some(b)) = (c.dims(0), c.dims(1)) else {
        return Ok(vec![c.like(0, Some(vec![Dim::Unknown; 2]))]);
    };
    let (m, ka) = matrix(a, c.node.int_or("transA", 0)? != 0, "A")?;
    let (kb, n) = matrix(b, c.node.int_or("transB", 0)? != 0, "B")?;
    unify(ka, kb, "inner dimensions")?;
    let out = vec![m.clone(), n.clone()];
    if let Some(cd) = c.dims(2) {
        broadcast(&out, cd)?;
    }
    Ok(vec![c.like(0, Some(out))])
}

/// Output dims of a numpy-style matrix product.
fn matmul_dims(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>> {
    if a.is_empty() || b.is_empty() {
        return bad("MatMul operands must have rank 1 or more");
    }
    let (ra, rb) = (a.len(), b.len());
    let (m, ka) = if ra == 1 {
        (None, &a[0])
    } else {
        (Some(&a[ra - 2]), &a[ra - 1])
    };
    let (kb, n) = if rb == 1 {
        (&b[0], None)
    } else {
        (&b[rb - 2], Some(&b[rb - 1]))
    };
    unify(ka, kb, "inner dimensions")?;
    let mut out = broadcast(&a[..ra.saturating_sub(2)], &b[..rb.saturating_sub(2)])?;
    out.extend(m.cloned());
    out.extend(n.cloned());
    Ok(out)
}

/// MatMul, MatMulInteger and QLinearMatMul (second operand at input `bi`).
pub(super) fn matmul(c: &Ctx, bi: usize, dtype: Option<DataType>) -> Result<Vec<Info>> {
    let dims = match (c.dims(0), c.dims(bi)) {
        (Some(a), Some(b)) => Some(matmul_dims(a, b)?),
        _ => None,
    };
    Ok(vec![Info::new(dtype, dims)])
}

/// `com.microsoft` `MatMulNBits`: A's dims with the last one replaced by the `N`
/// attribute (output features), A's element type.
pub(super) fn matmul_nbits(c: &Ctx) -> Result<Vec<Info>> {
    let Some(n) = c.node.int("N")?.filter(|n| *n > 0) else {
        return bad("MatMulNBits needs a positive attribute N (output features)");
    };
    let dims = c.dims(0).filter(|a| !a.is_empty()).map(|a| {
        let mut dims = a.to_vec();
        *dims.last_mut().expect("not empty") = Dim::Known(n as usize);
        dims
    });
    Ok(vec![c.like(0, dims)])
}

/// `Dropout`: input 0 unchanged and a boolean mask of its shape.
pub(super) fn dropout(c: &Ctx) -> Result<Vec<Info>> {
    let x = c.info(0);
    let dims = x.ty.dims.clone();
    Ok(vec![x.clone(), Info::new(Some(DataType::Bool), dims)])
}

#[cfg(test)]
mod tests {
    use crate::attr::make;
    use crate::dtype::DataType::{Float, Uint8};
    use crate::shape::test_util::{error, expect, node, types, value};

    #[test]
    fn matmul_nbits_gives_n_output_features_to_the_next_layer() {
        let mut nbits = node(
            "MatMulNBits",
            &["x", "packed", "scales"],
            &["y"],
            vec![make::int("K", 64), make::int("N", 16), make::int("bits", 4)],
        );
        nbits.domain = "com.microsoft".into();
        let t = types(
            17,
            vec![
                value("x", Float, "B,64"),
                value("packed", Uint8, "16,2,16"),
                value("scales", Float, "32"),
                value("w", Float, "16,10"),
            ],
            vec![],
            vec![nbits.clone(), node("Gemm", &["y", "w"], &["z"], vec![])],
        );
        expect(&t, &[("y", "float[B,16]"), ("z", "float[B,10]")]);
        nbits.attribute.retain(|a| a.name != "N");
        let e = error(17, vec![value("x", Float, "B,64")], vec![], nbits);
        assert!(
            e.contains("MatMulNBits needs a positive attribute N"),
            "{e}"
        );
    }

    #[test]
    fn matrix_products_norms_and_activations() {
        let t = types(
            17,
            vec![
                value("a4", Float, "2,1,3,4"),
                value("b3", Float, "5,4,6"),
                value("v", Float, "4"),
                value("m", Float, "3,4"),
                value("bm", Float, "4,6"),
                value("h", Float, "B,S,384"),
                value("w", Float, "384,1536"),
                value("ga", Float, "4,3"),
                value("gb", Float, "5,4"),
                value("q", Uint8, "B,S,384"),
                value("qw", Uint8, "384,8"),
                value("s", Float, ""),
                value("zp", Uint8, ""),
            ],
            vec![],
            vec![
                node("MatMul", &["a4", "b3"], &["mm1"], vec![]),
                node("MatMul", &["v", "bm"], &["mm2"], vec![]),
                node("MatMul", &["m", "v"], &["mm3"], vec![]),
                node("MatMul", &["h", "w"], &["mm4"], vec![]),
                node(
                    "Gemm",
                    &["ga", "gb"],
                    &["gemm"],
                    vec![make::int("transA", 1), make::int("transB", 1)],
                ),
                node("MatMulInteger", &["q", "qw"], &["mmi"], vec![]),
                node(
                    "QLinearMatMul",
                    &["q", "s", "zp", "qw", "s", "zp", "s", "zp"],
                    &["qmm"],
                    vec![],
                ),
                node(
                    "LayerNormalization",
                    &["h", "v", "v"],
                    &["ln", "mean", "inv"],
                    vec![],
                ),
                node(
                    "BatchNormalization",
                    &["a4", "v", "v", "v", "v"],
                    &["bn"],
                    vec![],
                ),
                node(
                    "InstanceNormalization",
                    &["a4", "v", "v"],
                    &["inorm"],
                    vec![],
                ),
                node("Softmax", &["h"], &["sm"], vec![]),
                node("Dropout", &["h"], &["drop", "mask"], vec![]),
                node("Clip", &["h"], &["clip"], vec![]),
                node("Erf", &["h"], &["erf"], vec![]),
            ],
        );
        expect(
            &t,
            &[
                ("mm1", "float[2,5,3,6]"),
                ("mm2", "float[6]"),
                ("mm3", "float[3]"),
                ("mm4", "float[B,S,1536]"),
                ("gemm", "float[3,5]"),
                ("mmi", "int32[B,S,8]"),
                ("qmm", "uint8[B,S,8]"),
                ("ln", "float[B,S,384]"),
                ("mean", "float[B,S,1]"),
                ("bn", "float[2,1,3,4]"),
                ("inorm", "float[2,1,3,4]"),
                ("sm", "float[B,S,384]"),
                ("drop", "float[B,S,384]"),
                ("mask", "bool[B,S,384]"),
                ("clip", "float[B,S,384]"),
                ("erf", "float[B,S,384]"),
            ],
        );
        let err = error(
            17,
            vec![value("a", Float, "2,3"), value("b", Float, "4,5")],
            vec![],
            node("MatMul", &["a", "b"], &["y"], vec![]),
        );
        assert!(
            err.contains("n_y") && err.contains("3 and 4 differ"),
            "{err}"
        );
    }
}

//! Linear algebra: `Gemm`, `MatMul`, `Einsum`, `Det`.
//!
//! Float products run as candle matmuls on contiguous (or last-two-transposed) views,
//! without copying unless batch dims need a real broadcast. Integer products are exact
//! (wrapping i64) host loops.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use whittle_ir::{DataType, NodeAttrs};

use super::util::{broadcast_shape, broadcast_to, check_size, from_f64, require_float, same_dtype};
use super::{OpCtx, Registry};
use crate::bail;
use crate::error::Result;
use crate::value::Value;

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add("Gemm", gemm);
    r.add("MatMul", matmul);
    r.add("Einsum", einsum);
    r.add("Det", det);
}

fn gemm(c: &OpCtx) -> Result<Vec<Value>> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    let dt = same_dtype(a, b)?;
    if a.rank() != 2 || b.rank() != 2 {
        bail!(
            "A and B must be matrices, got {:?} and {:?}",
            a.shape(),
            b.shape()
        );
    }
    let alpha = c.node.float_or("alpha", 1.0)? as f64;
    let beta = c.node.float_or("beta", 1.0)? as f64;
    let ta = c.node.int_or("transA", 0)? != 0;
    let tb = c.node.int_or("transB", 0)? != 0;
    let at = if ta {
        a.tensor().t()?
    } else {
        a.tensor().clone()
    };
    let bt = if tb {
        b.tensor().t()?
    } else {
        b.tensor().clone()
    };
    let cv = c.opt_input(2);
    if !dt.is_float() {
        let p = Value::new(matmul_i64(&at, &bt)?, DataType::Int64)?.float_tensor()?;
        let bias = cv.map(Value::float_tensor).transpose()?;
        return Value::new(affine_bias(p, alpha, bias, beta)?, DataType::Double)?
            .cast(dt)
            .map(|v| vec![v]);
    }
    let p = float_matmul(&at, &bt)?;
    let bias = cv.map(|v| v.tensor().clone());
    Ok(vec![Value::new(affine_bias(p, alpha, bias, beta)?, dt)?])
}

/// `alpha * p + beta * bias` (bias broadcast), skipping multiplications by one.
fn affine_bias(p: Tensor, alpha: f64, bias: Option<Tensor>, beta: f64) -> Result<Tensor> {
    let p = if alpha == 1.0 { p } else { (p * alpha)? };
    Ok(match bias {
        Some(c) if beta != 0.0 => {
            let c = if beta == 1.0 { c } else { (c * beta)? };
            p.broadcast_add(&c.to_dtype(p.dtype())?)?
        }
        _ => p,
    })
}

fn matmul(c: &OpCtx) -> Result<Vec<Value>> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    let dt = same_dtype(a, b)?;
    let t = if dt.is_float() {
        numpy_matmul(a.tensor(), b.tensor(), float_matmul)?
    } else {
        let (ai, bi) = (
            a.tensor().to_dtype(DType::I64)?,
            b.tensor().to_dtype(DType::I64)?,
        );
        numpy_matmul(&ai, &bi, matmul_i64)?
    };
    Ok(vec![Value::new(t, dt)?])
}

/// Numpy `matmul`: 1-D operands are promoted to matrices (and the added dim removed
/// again); `mm` multiplies operands of rank >= 2 with batch broadcasting.
pub fn numpy_matmul(
    a: &Tensor,
    b: &Tensor,
    mm: fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if a.rank() == 0 || b.rank() == 0 {
        bail!("MatMul operands must have rank >= 1");
    }
    let a2 = if a.rank() == 1 {
        a.unsqueeze(0)?
    } else {
        a.clone()
    };
    let b2 = if b.rank() == 1 {
        b.unsqueeze(1)?
    } else {
        b.clone()
    };
    let mut y = mm(&a2, &b2)?;
    if a.rank() == 1 {
        y = y.squeeze(y.rank() - 2)?;
    }
    if b.rank() == 1 {
        y = y.squeeze(y.rank() - 1)?;
    }
    Ok(y)
}

fn split_batch(t: &Tensor) -> Result<(&[usize], usize, usize)> {
    let d = t.dims();
    if d.len() < 2 {
        bail!("matrix product operand has rank {}", d.len());
    }
    Ok((&d[..d.len() - 2], d[d.len() - 2], d[d.len() - 1]))
}

/// Float product of two tensors of rank >= 2 with broadcast batch dims (candle matmul;
/// bf16 computes in f32 since candle's CPU gemm lacks it).
pub fn float_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() == DType::BF16 {
        let y = float_matmul(&a.to_dtype(DType::F32)?, &b.to_dtype(DType::F32)?)?;
        return Ok(y.to_dtype(DType::BF16)?);
    }
    if a.rank() == 2 && b.rank() == 2 {
        return Ok(a.matmul(b)?);
    }
    let (ab, m, k) = split_batch(a)?;
    let (bb, k2, n) = split_batch(b)?;
    if k != k2 {
        bail!("cannot multiply {:?} by {:?}", a.dims(), b.dims());
    }
    let batch = broadcast_shape(ab, bb)?;
    let mut out_dims = batch.clone();
    out_dims.extend([m, n]);
    if b.rank() == 2 && a.is_contiguous() {
        // A shared weight matrix: fold the batch into the rows, one gemm.
        let rows = a.elem_count() / k.max(1);
        return Ok(a.reshape((rows, k))?.matmul(b)?.reshape(out_dims)?);
    }
    let y = batched(a, &batch)?.matmul(&batched(b, &batch)?)?;
    Ok(y.reshape(out_dims)?)
}

/// `t` as a 3-D `[prod(batch), rows, cols]` tensor, copying only for a partial broadcast.
fn batched(t: &Tensor, batch: &[usize]) -> Result<Tensor> {
    let (own, r, c) = split_batch(t)?;
    let total: usize = batch.iter().product();
    if own == batch {
        return flatten_batch(t, total, r, c);
    }
    if own.iter().product::<usize>() == 1 {
        // Stride-0 batch: candle's gemm reuses the one matrix without a copy.
        return Ok(flatten_batch(t, 1, r, c)?.broadcast_as((total, r, c))?);
    }
    let mut full = batch.to_vec();
    full.extend([r, c]);
    Ok(t.broadcast_as(full)?.contiguous()?.reshape((total, r, c))?)
}

/// Merges the batch dims; free for contiguous tensors and transposed matrices of them.
fn flatten_batch(t: &Tensor, n: usize, r: usize, c: usize) -> Result<Tensor> {
    let last = t.rank() - 1;
    if t.is_contiguous() {
        return Ok(t.reshape((n, r, c))?);
    }
    let tt = t.transpose(last - 1, last)?;
    if tt.is_contiguous() {
        return Ok(tt.reshape((n, c, r))?.transpose(1, 2)?);
    }
    Ok(t.contiguous()?.reshape((n, r, c))?)
}

/// Exact integer product (wrapping i64) of two I64 tensors of rank >= 2 with batch
/// broadcasting, computed on the host.
pub fn matmul_i64(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ab, m, k) = split_batch(a)?;
    let (bb, k2, n) = split_batch(b)?;
    if k != k2 {
        bail!("cannot multiply {:?} by {:?}", a.dims(), b.dims());
    }
    let batch = broadcast_shape(ab, bb)?;
    let nb: usize = batch.iter().product();
    let full = |r, c| -> Vec<usize> { batch.iter().copied().chain([r, c]).collect() };
    for dims in [full(m, k), full(k, n), full(m, n)] {
        check_size(&dims, DType::I64)?;
    }
    let av: Vec<i64> = broadcast_to(a, &full(m, k))?.flatten_all()?.to_vec1()?;
    let bv: Vec<i64> = broadcast_to(b, &full(k, n))?.flatten_all()?.to_vec1()?;
    let mut out = vec![0i64; nb * m * n];
    for (p, y) in out.chunks_mut((m * n).max(1)).enumerate().take(nb) {
        let (ap, bp) = (&av[p * m * k..], &bv[p * k * n..]);
        for i in 0..m {
            for l in 0..k {
                let x = ap[i * k + l];
                for j in 0..n {
                    y[i * n + j] = y[i * n + j].wrapping_add(x.wrapping_mul(bp[l * n + j]));
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, full(m, n), a.device())?)
}

fn einsum(c: &OpCtx) -> Result<Vec<Value>> {
    let eq = c.node.string_or("equation", "")?;
    let inputs = (0..c.num_inputs())
        .map(|i| c.input(i))
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = inputs.first() else {
        bail!("Einsum needs at least one input");
    };
    let dt = first.dtype();
    let tensors = inputs
        .iter()
        .map(|v| {
            same_dtype(first, v)?;
            v.float_tensor()
        })
        .collect::<Result<Vec<_>>>()?;
    let ranks: Vec<usize> = tensors.iter().map(Tensor::rank).collect();
    let spec = EinsumSpec::parse(&eq, &ranks)?;
    let y = spec.evaluate(tensors)?;
    let v = Value::from_float(y)?;
    Ok(vec![if dt.is_float() { v } else { v.cast(dt)? }])
}

/// Labels of einsum axes: letters by code point, ellipsis dims as `ELLIPSIS + i`
/// (right-aligned across operands).
type Label = u32;
const ELLIPSIS: Label = 1 << 20;

/// A parsed einsum equation: the labels of every operand and of the output.
#[derive(Debug, PartialEq)]
struct EinsumSpec {
    inputs: Vec<Vec<Label>>,
    output: Vec<Label>,
}

impl EinsumSpec {
    fn parse(eq: &str, ranks: &[usize]) -> Result<Self> {
        let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
        let (lhs, rhs) = match eq.split_once("->") {
            Some((l, r)) => (l, Some(r)),
            None => (eq.as_str(), None),
        };
        let terms: Vec<&str> = lhs.split(',').collect();
        if terms.len() != ranks.len() {
            bail!(
                "equation '{eq}' has {} operands, got {} inputs",
                terms.len(),
                ranks.len()
            );
        }
        let ell_ranks = terms
            .iter()
            .zip(ranks)
            .map(|(t, &r)| ellipsis_rank(t, r))
            .collect::<Result<Vec<_>>>()?;
        let ell = ell_ranks.iter().copied().max().unwrap_or(0);
        let inputs = terms
            .iter()
            .zip(&ell_ranks)
            .map(|(t, &e)| labels(t, e, ell))
            .collect::<Result<Vec<_>>>()?;
        let output = match rhs {
            Some(r) => labels(r, ell, ell)?,
            None => implicit_output(&inputs),
        };
        Ok(EinsumSpec { inputs, output })
    }

    fn evaluate(&self, tensors: Vec<Tensor>) -> Result<Tensor> {
        let mut ops: Vec<(Tensor, Vec<Label>)> = Vec::new();
        for (t, l) in tensors.into_iter().zip(&self.inputs) {
            ops.push(diagonals(t, l.clone())?);
        }
        let mut acc: Option<(Tensor, Vec<Label>)> = None;
        for i in 0..ops.len() {
            let keep: Vec<Label> = ops[i + 1..]
                .iter()
                .flat_map(|o| o.1.iter().copied())
                .chain(self.output.iter().copied())
                .collect();
            let (t, l) = ops[i].clone();
            let (t, l) = sum_unused(t, l, &keep, acc.as_ref().map(|a| a.1.as_slice()))?;
            acc = Some(match acc {
                None => (t, l),
                Some((at, al)) => {
                    let (at, al) = sum_unused(at, al, &keep, Some(&l))?;
                    contract(&at, &al, &t, &l, &keep)?
                }
            });
        }
        let Some((t, l)) = acc else {
            bail!("Einsum needs at least one input");
        };
        let (t, l) = sum_unused(t, l, &self.output, None)?;
        let perm = self
            .output
            .iter()
            .map(|o| match l.iter().position(|x| x == o) {
                Some(p) => Ok(p),
                None => bail!(
                    "output label {} does not appear in any input",
                    label_name(*o)
                ),
            })
            .collect::<Result<Vec<_>>>()?;
        if perm.is_empty() {
            return Ok(t);
        }
        Ok(t.permute(perm)?.contiguous()?)
    }
}

fn label_name(l: Label) -> String {
    char::from_u32(l).map_or("...".into(), String::from)
}

fn ellipsis_rank(term: &str, rank: usize) -> Result<usize> {
    let letters = term.replace("...", "").chars().count();
    match (term.contains("..."), rank.checked_sub(letters)) {
        (true, Some(e)) => Ok(e),
        (false, Some(0)) => Ok(0),
        _ => bail!("term '{term}' does not match an input of rank {rank}"),
    }
}

fn labels(term: &str, e: usize, ell: usize) -> Result<Vec<Label>> {
    let (pre, post) = term.split_once("...").unwrap_or((term, ""));
    let letters = |s: &str| -> Result<Vec<Label>> {
        s.chars()
            .map(|c| match c.is_ascii_alphabetic() {
                true => Ok(c as Label),
                false => bail!("invalid einsum label '{c}'"),
            })
            .collect()
    };
    let mut out = letters(pre)?;
    if term.contains("...") {
        out.extend((ell - e..ell).map(|i| ELLIPSIS + i as Label));
    }
    out.extend(letters(post)?);
    Ok(out)
}

/// Numpy's implicit output: ellipsis dims, then letters used exactly once, sorted.
fn implicit_output(inputs: &[Vec<Label>]) -> Vec<Label> {
    let mut count: BTreeMap<Label, usize> = BTreeMap::new();
    inputs
        .iter()
        .flatten()
        .for_each(|&l| *count.entry(l).or_default() += 1);
    let mut out: Vec<Label> = count.keys().copied().filter(|&l| l >= ELLIPSIS).collect();
    out.extend(
        count
            .iter()
            .filter(|(&l, &n)| l < ELLIPSIS && n == 1)
            .map(|(&l, _)| l),
    );
    out
}

/// Takes diagonals until every label of the operand is distinct.
fn diagonals(mut t: Tensor, mut l: Vec<Label>) -> Result<(Tensor, Vec<Label>)> {
    while let Some((p, q)) = first_repeat(&l) {
        let n = t.dims()[p];
        if t.dims()[q] != n {
            bail!("repeated einsum label with sizes {n} and {}", t.dims()[q]);
        }
        let mut perm: Vec<usize> = (0..l.len()).filter(|&i| i != p && i != q).collect();
        perm.extend([p, q]);
        let mut dims: Vec<usize> = perm[..perm.len() - 2]
            .iter()
            .map(|&i| t.dims()[i])
            .collect();
        dims.push(n * n);
        let idx: Vec<u32> = (0..n as u32).map(|i| i * (n as u32 + 1)).collect();
        let idx = Tensor::from_vec(idx, n, t.device())?;
        let flat = t.permute(perm.clone())?.contiguous()?.reshape(dims)?;
        t = flat.index_select(&idx, flat.rank() - 1)?;
        let label = l[p];
        l = perm[..perm.len() - 2].iter().map(|&i| l[i]).collect();
        l.push(label);
    }
    Ok((t, l))
}

fn first_repeat(l: &[Label]) -> Option<(usize, usize)> {
    (0..l.len()).find_map(|p| (p + 1..l.len()).find(|&q| l[q] == l[p]).map(|q| (p, q)))
}

/// Sums the axes whose labels are in neither `keep` nor `other`.
fn sum_unused(
    t: Tensor,
    l: Vec<Label>,
    keep: &[Label],
    other: Option<&[Label]>,
) -> Result<(Tensor, Vec<Label>)> {
    let used = |x: &Label| keep.contains(x) || other.is_some_and(|o| o.contains(x));
    let axes: Vec<usize> = (0..l.len()).filter(|&i| !used(&l[i])).collect();
    if axes.is_empty() {
        return Ok((t, l));
    }
    let t = t.sum(axes)?;
    Ok((t, l.into_iter().filter(|x| used(x)).collect()))
}

/// Product of two operands as one batched matmul: labels in both and still needed are
/// batch dims, labels in both and not needed are contracted.
fn contract(
    a: &Tensor,
    al: &[Label],
    b: &Tensor,
    bl: &[Label],
    keep: &[Label],
) -> Result<(Tensor, Vec<Label>)> {
    let both: Vec<Label> = al.iter().copied().filter(|x| bl.contains(x)).collect();
    let (batch, sum): (Vec<Label>, Vec<Label>) = both.iter().partition(|x| keep.contains(x));
    let only = |l: &[Label], o: &[Label]| -> Vec<Label> {
        l.iter().copied().filter(|x| !o.contains(x)).collect()
    };
    let (left, right) = (only(al, bl), only(bl, al));
    let size = |x: &Label| -> usize {
        let da = al.iter().position(|y| y == x).map_or(1, |p| a.dims()[p]);
        let db = bl.iter().position(|y| y == x).map_or(1, |p| b.dims()[p]);
        da.max(db)
    };
    let sizes = |ls: &[Label]| -> Vec<usize> { ls.iter().map(size).collect() };
    let prod = |ls: &[Label]| -> usize { sizes(ls).iter().product() };
    let arrange = |t: &Tensor, l: &[Label], groups: [&[Label]; 3]| -> Result<Tensor> {
        let order: Vec<Label> = groups.concat();
        let perm: Vec<usize> = order
            .iter()
            .map(|x| l.iter().position(|y| y == x).unwrap_or(0))
            .collect();
        let t = t.permute(perm)?.broadcast_as(sizes(&order))?.contiguous()?;
        Ok(t.reshape(groups.map(prod).to_vec())?)
    };
    let x = arrange(a, al, [&batch, &left, &sum])?;
    let y = arrange(b, bl, [&batch, &sum, &right])?;
    let out_labels: Vec<Label> = [&batch[..], &left, &right].concat();
    let z = float_matmul(&x, &y)?.reshape(sizes(&out_labels))?;
    Ok((z, out_labels))
}

fn det(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    require_float(x)?;
    let d = x.shape();
    let r = d.len();
    if r < 2 || d[r - 1] != d[r - 2] {
        bail!("Det expects square matrices, got {d:?}");
    }
    let n = d[r - 1];
    let v = x.to_f64_vec()?;
    let out: Vec<f64> = if n == 0 {
        vec![1.0; d[..r - 2].iter().product()]
    } else {
        v.chunks(n * n)
            .map(|m| determinant(m.to_vec(), n))
            .collect()
    };
    Ok(vec![from_f64(out, &d[..r - 2], x.dtype(), x)?])
}

/// Determinant of a row-major `n x n` matrix by LU decomposition with partial pivoting.
pub fn determinant(mut m: Vec<f64>, n: usize) -> f64 {
    let mut det = 1.0;
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| m[i * n + col].abs().total_cmp(&m[j * n + col].abs()))
            .unwrap_or(col);
        if m[pivot * n + col] == 0.0 {
            return 0.0;
        }
        if pivot != col {
            for j in 0..n {
                m.swap(pivot * n + j, col * n + j);
            }
            det = -det;
        }
        let p = m[col * n + col];
        det *= p;
        for i in col + 1..n {
            let f = m[i * n + col] / p;
            for j in col..n {
                m[i * n + j] -= f * m[col * n + j];
            }
        }
    }
    det
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn matmul_promotes_vectors_and_broadcasts_batches() {
        let a = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let v = t(&[1., 0., -1.], &[3]);
        let y = numpy_matmul(&a, &v, float_matmul).unwrap();
        assert_eq!(y.dims(), &[2]);
        assert_eq!(flat(&y), vec![-2., -2.]);
        let w = t(&[1., 2., 3., 4., 5., 6.], &[3, 2]);
        // Batched lhs with a shared rhs.
        let a3 = t(
            &[1., 2., 3., 4., 5., 6., 0., 0., 1., 0., 0., 0.],
            &[2, 2, 3],
        );
        let y = numpy_matmul(&a3, &w, float_matmul).unwrap();
        assert_eq!(flat(&y), vec![22., 28., 49., 64., 5., 6., 0., 0.]);
        // Transposed view and partial broadcast agree with the integer reference.
        let bt = t(&[1., 2., 3., 4., 5., 6.], &[1, 2, 3])
            .transpose(1, 2)
            .unwrap();
        let y = numpy_matmul(&a3.reshape((2, 1, 2, 3)).unwrap(), &bt, float_matmul).unwrap();
        let ai = a3
            .to_dtype(DType::I64)
            .unwrap()
            .reshape((2, 1, 2, 3))
            .unwrap();
        let bi = bt.to_dtype(DType::I64).unwrap();
        let yi = numpy_matmul(&ai, &bi, matmul_i64).unwrap();
        assert_eq!(y.dims(), &[2, 1, 2, 2]);
        assert_eq!(flat(&y), flat(&yi.to_dtype(DType::F32).unwrap()));
        assert_eq!(flat(&y)[..4], [14., 32., 32., 77.]);
    }

    #[test]
    fn integer_matmul_wraps() {
        let a = Tensor::from_slice(&[i64::MAX, 1], (1, 2), &Device::Cpu).unwrap();
        let b = Tensor::from_slice(&[2i64, 3], (2, 1), &Device::Cpu).unwrap();
        let y = matmul_i64(&a, &b).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<i64>().unwrap(), vec![1]);
    }

    fn einsum_of(eq: &str, xs: Vec<Tensor>) -> Tensor {
        let ranks: Vec<usize> = xs.iter().map(Tensor::rank).collect();
        EinsumSpec::parse(eq, &ranks).unwrap().evaluate(xs).unwrap()
    }

    #[test]
    fn einsum_handles_common_forms() {
        let x = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        assert_eq!(
            flat(&einsum_of("ij->ji", vec![x.clone()])),
            vec![1., 4., 2., 5., 3., 6.]
        );
        assert_eq!(flat(&einsum_of("ij->i", vec![x.clone()])), vec![6., 15.]);
        assert_eq!(flat(&einsum_of("ij", vec![x.clone()])), flat(&x));
        let v = t(&[1., 2., 3.], &[3]);
        assert_eq!(
            flat(&einsum_of("i,i", vec![v.clone(), v.clone()])),
            vec![14.]
        );
        assert_eq!(
            flat(&einsum_of("ij,j->i", vec![x.clone(), v])),
            vec![14., 32.]
        );
        let m = t(&[1., 2., 3., 4., 5., 6., 7., 8.], &[2, 2, 2]);
        assert_eq!(
            flat(&einsum_of("...ii->...i", vec![m.clone()])),
            vec![1., 4., 5., 8.]
        );
        assert_eq!(flat(&einsum_of("bii", vec![m.clone()])), vec![5., 13.]);
        let y = einsum_of("bij,bjk->bik", vec![m.clone(), m]);
        assert_eq!(flat(&y), vec![7., 10., 15., 22., 67., 78., 91., 106.]);
    }

    #[test]
    fn einsum_rejects_mismatched_terms() {
        assert!(EinsumSpec::parse("ij,jk->ik", &[2]).is_err());
        assert!(EinsumSpec::parse("ijk->i", &[2]).is_err());
        assert!(EinsumSpec::parse("i1->i", &[2]).is_err());
    }

    #[test]
    fn determinant_by_lu() {
        assert_eq!(determinant(vec![1., 2., 3., 4.], 2), -2.0);
        assert_eq!(determinant(vec![0., 1., 1., 0.], 2), -1.0);
        let d = determinant(vec![2., 0., 1., 1., 3., 2., 1., 1., 2.], 3);
        assert!((d - 6.0).abs() < 1e-12);
        assert_eq!(determinant(vec![1., 2., 2., 4.], 2), 0.0);
    }
}

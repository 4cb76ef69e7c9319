//! Indexing operators: gathers, scatters, one-hot encoding, selection by condition,
//! sequence reversal, `Unique` and `CumSum`.
//!
//! Index arithmetic (negative indices, bounds checks) runs on the host; the data moves
//! through candle ops (`index_select`, `gather`, `index_add`, `where_cond`) wherever the
//! result is a selection of input elements, so float paths stay differentiable.

use std::cmp::Ordering;

use candle_core::{DType, Tensor};
use whittle_ir::{DataType, NodeAttrs};

use super::util::{
    check_size, data_axis, from_f64, i64_value, index_tensor, same_type, strides, wrap_index,
};
use super::{OpCtx, Registry};
use crate::bail;
use crate::error::Result;
use crate::value::Value;

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add("Gather", gather);
    r.add("GatherElements", gather_elements);
    r.add("GatherND", gather_nd);
    r.add("ScatterElements", scatter_elements);
    r.add("Scatter", scatter_elements);
    r.add("ScatterND", scatter_nd);
    r.add("OneHot", one_hot);
    r.add("Compress", compress);
    r.add("NonZero", non_zero);
    r.add("ReverseSequence", reverse_sequence);
    r.add("Unique", unique);
    r.add("CumSum", cumsum);
}

/// Every index of `idx` normalised into `0..n`.
fn checked_ids(idx: &Value, n: usize) -> Result<Vec<i64>> {
    if idx.dtype().is_float() {
        bail!("indices must be integers, got {}", idx.dtype());
    }
    idx.to_i64_vec()?
        .into_iter()
        .map(|i| wrap_index(i, n).map(|i| i as i64))
        .collect()
}

fn gather(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, idx) = (c.input(0)?, c.input(1)?);
    let axis = data_axis(c.node.int_or("axis", 0)?, x.rank())?;
    let ids = index_tensor(checked_ids(idx, x.shape()[axis])?, x.tensor().device())?;
    let t = x.tensor().index_select(&ids, axis)?;
    let dims: Vec<usize> = [&x.shape()[..axis], idx.shape(), &x.shape()[axis + 1..]].concat();
    same_type(t.reshape(dims)?, x)
}

/// Checks the shared shape rules of `GatherElements` and `ScatterElements`.
fn check_elements(x: &Value, idx: &Value, axis: usize) -> Result<()> {
    let ok = idx.rank() == x.rank()
        && (0..x.rank()).all(|d| d == axis || idx.shape()[d] <= x.shape()[d]);
    if !ok {
        bail!(
            "indices shape {:?} does not fit data shape {:?}",
            idx.shape(),
            x.shape()
        );
    }
    Ok(())
}

fn gather_elements(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, idx) = (c.input(0)?, c.input(1)?);
    let axis = data_axis(c.node.int_or("axis", 0)?, x.rank())?;
    check_elements(x, idx, axis)?;
    let ids = checked_ids(idx, x.shape()[axis])?;
    let ids = Tensor::from_vec(ids, idx.shape(), x.tensor().device())?;
    same_type(x.tensor().contiguous()?.gather(&ids, axis)?, x)
}

/// Row numbers of `count` index tuples of length `dims.len()` (zero-length tuples all
/// address row 0, the whole table).
fn nd_rows(tuples: &[i64], count: usize, dims: &[usize]) -> Result<Vec<usize>> {
    if dims.is_empty() {
        return Ok(vec![0; count]);
    }
    tuple_rows(tuples, dims)
}

/// Row numbers of the index tuples (last axis of `idx`, length `dims.len()`) in a table
/// whose rows are the elements of `dims`, row-major.
fn tuple_rows(tuples: &[i64], dims: &[usize]) -> Result<Vec<usize>> {
    let st = strides(dims);
    tuples
        .chunks(dims.len().max(1))
        .map(|t| {
            t.iter()
                .zip(dims.iter().zip(&st))
                .try_fold(0, |acc, (&i, (&n, &s))| Ok(acc + wrap_index(i, n)? * s))
        })
        .collect()
}

/// Shape checks of `GatherND`/`ScatterND`: the tuple length `k` of `idx` over `data`
/// after `batch` leading batch axes.
fn nd_tuple_len(data: &Value, idx: &Value, batch: usize) -> Result<usize> {
    let (r, q) = (data.rank(), idx.rank());
    if q == 0 || batch >= q.min(r) {
        bail!("batch_dims {batch} does not fit ranks {r} and {q}");
    }
    if data.shape()[..batch] != idx.shape()[..batch] {
        bail!("batch dimensions of data and indices differ");
    }
    let k = idx.shape()[q - 1];
    if k + batch > r {
        bail!("index tuples of length {k} exceed data rank {r}");
    }
    if idx.dtype().is_float() {
        bail!("indices must be integers, got {}", idx.dtype());
    }
    Ok(k)
}

fn gather_nd(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, idx) = (c.input(0)?, c.input(1)?);
    let b = usize::try_from(c.node.int_or("batch_dims", 0)?).unwrap_or(usize::MAX);
    let k = nd_tuple_len(x, idx, b)?;
    let indexed = &x.shape()[b..b + k];
    let rows_per_batch: usize = indexed.iter().product();
    let slice = &x.shape()[b + k..];
    let batches: usize = x.shape()[..b].iter().product();
    let per_batch: usize = idx.shape()[b..idx.rank() - 1].iter().product();
    let tuples = idx.to_i64_vec()?;
    let mut rows = Vec::with_capacity(batches * per_batch);
    for bi in 0..batches {
        let local = if k == 0 {
            vec![0; per_batch]
        } else {
            tuple_rows(
                &tuples[bi * per_batch * k..(bi + 1) * per_batch * k],
                indexed,
            )?
        };
        rows.extend(local.into_iter().map(|r| (bi * rows_per_batch + r) as i64));
    }
    let table = x
        .tensor()
        .reshape((batches * rows_per_batch, slice.iter().product::<usize>()))?;
    let t = table.index_select(&index_tensor(rows, x.tensor().device())?, 0)?;
    let dims = [&idx.shape()[..idx.rank() - 1], slice].concat();
    same_type(t.reshape(dims)?, x)
}

/// How scattered updates combine with the existing element.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

impl Reduction {
    fn of(c: &OpCtx) -> Result<Self> {
        Ok(match c.node.string_or("reduction", "none")?.as_str() {
            "none" => Reduction::None,
            "add" => Reduction::Add,
            "mul" => Reduction::Mul,
            "max" => Reduction::Max,
            "min" => Reduction::Min,
            other => bail!("unknown reduction '{other}'"),
        })
    }

    fn f64(self, a: f64, b: f64) -> f64 {
        match self {
            Reduction::None => b,
            Reduction::Add => a + b,
            Reduction::Mul => a * b,
            Reduction::Max => a.max(b),
            Reduction::Min => a.min(b),
        }
    }

    fn i64(self, a: i64, b: i64) -> i64 {
        match self {
            Reduction::None => b,
            Reduction::Add => a.wrapping_add(b),
            Reduction::Mul => a.wrapping_mul(b),
            Reduction::Max => a.max(b),
            Reduction::Min => a.min(b),
        }
    }
}

/// Writes the rows of `updates` (`rows.len()` rows of `row_len` elements) into rows
/// `rows` of `data` (viewed as a table of `row_len`-element rows), combining by `red`.
fn scatter_rows(
    data: &Value,
    rows: &[usize],
    updates: &Value,
    row_len: usize,
    red: Reduction,
) -> Result<Value> {
    if updates.dtype() != data.dtype() || updates.numel() != rows.len() * row_len {
        bail!(
            "updates ({} {:?}) do not fit the indices",
            updates.dtype(),
            updates.shape()
        );
    }
    if row_len == 0 {
        return Ok(data.clone());
    }
    let n = data.numel() / row_len;
    let dev = data.tensor().device();
    let table = data.tensor().reshape((n, row_len))?;
    let upd = updates.tensor().reshape((rows.len(), row_len))?;
    let ids = |v: Vec<usize>| index_tensor(v.into_iter().map(|i| i as i64).collect(), dev);
    let t = match red {
        Reduction::None => {
            // Each output row reads either its data row or the last update aimed at it.
            let mut src: Vec<usize> = (0..n).collect();
            for (u, &r) in rows.iter().enumerate() {
                src[r] = n + u;
            }
            Tensor::cat(&[&table, &upd], 0)?.index_select(&ids(src)?, 0)?
        }
        Reduction::Add if data.dtype().is_float() => {
            table.index_add(&ids(rows.to_vec())?, &upd, 0)?
        }
        _ => return host_scatter(data, rows, updates, row_len, red),
    };
    Value::new(t.reshape(data.shape())?, data.dtype())
}

/// Host-side `scatter_rows` for reductions candle has no op for.
fn host_scatter(
    data: &Value,
    rows: &[usize],
    updates: &Value,
    row_len: usize,
    red: Reduction,
) -> Result<Value> {
    fn apply<T: Copy>(
        mut base: Vec<T>,
        rows: &[usize],
        upd: &[T],
        len: usize,
        f: impl Fn(T, T) -> T,
    ) -> Vec<T> {
        for (u, &r) in rows.iter().enumerate() {
            for j in 0..len {
                base[r * len + j] = f(base[r * len + j], upd[u * len + j]);
            }
        }
        base
    }
    if data.dtype().is_float() {
        let v = apply(
            data.to_f64_vec()?,
            rows,
            &updates.to_f64_vec()?,
            row_len,
            |a, b| red.f64(a, b),
        );
        return from_f64(v, data.shape(), data.dtype(), data);
    }
    let v = apply(
        data.to_i64_vec()?,
        rows,
        &updates.to_i64_vec()?,
        row_len,
        |a, b| red.i64(a, b),
    );
    let t = Tensor::from_vec(v, data.shape(), data.tensor().device())?;
    Value::new(t, DataType::Int64)?.cast(data.dtype())
}

fn scatter_elements(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, idx, upd) = (c.input(0)?, c.input(1)?, c.input(2)?);
    let axis = data_axis(c.node.int_or("axis", 0)?, x.rank())?;
    check_elements(x, idx, axis)?;
    if idx.shape() != upd.shape() {
        bail!(
            "indices shape {:?} differs from updates shape {:?}",
            idx.shape(),
            upd.shape()
        );
    }
    let ids = checked_ids(idx, x.shape()[axis])?;
    let (ist, xst) = (strides(idx.shape()), strides(x.shape()));
    let rows: Vec<usize> = ids
        .iter()
        .enumerate()
        .map(|(p, &i)| {
            (0..x.rank())
                .map(|d| {
                    let coord = if d == axis {
                        i as usize
                    } else {
                        p / ist[d] % idx.shape()[d]
                    };
                    coord * xst[d]
                })
                .sum()
        })
        .collect();
    Ok(vec![scatter_rows(x, &rows, upd, 1, Reduction::of(c)?)?])
}

fn scatter_nd(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, idx, upd) = (c.input(0)?, c.input(1)?, c.input(2)?);
    let k = nd_tuple_len(x, idx, 0)?;
    let want = [&idx.shape()[..idx.rank() - 1], &x.shape()[k..]].concat();
    if upd.shape() != want.as_slice() {
        bail!("updates shape {:?} should be {want:?}", upd.shape());
    }
    let count = idx.shape()[..idx.rank() - 1].iter().product();
    let rows = nd_rows(&idx.to_i64_vec()?, count, &x.shape()[..k])?;
    let row_len = x.shape()[k..].iter().product();
    Ok(vec![scatter_rows(
        x,
        &rows,
        upd,
        row_len,
        Reduction::of(c)?,
    )?])
}

fn one_hot(c: &OpCtx) -> Result<Vec<Value>> {
    let (idx, depth, values) = (c.input(0)?, c.input(1)?, c.input(2)?);
    let depth = match depth.to_i64_vec()?.as_slice() {
        &[d] if d > 0 => d as usize,
        d => bail!("depth must be one positive value, got {d:?}"),
    };
    if values.numel() != 2 {
        bail!("values must hold [off, on], got shape {:?}", values.shape());
    }
    let axis = c.axis(c.node.int_or("axis", -1)?, idx.rank() + 1)?;
    let dims = [&idx.shape()[..axis], &[depth], &idx.shape()[axis..]].concat();
    check_size(&dims, values.tensor().dtype())?;
    let inner: usize = idx.shape()[axis..].iter().product();
    let mut mask = vec![0u8; dims.iter().product()];
    for (p, i) in idx.to_i64_vec()?.into_iter().enumerate() {
        let i = if i < 0 { i + depth as i64 } else { i };
        if (0..depth as i64).contains(&i) {
            mask[((p / inner) * depth + i as usize) * inner + p % inner] = 1;
        }
    }
    let v = values.tensor().flatten_all()?;
    let pick = |j| {
        v.narrow(0, j, 1)?
            .reshape(())?
            .broadcast_as(dims.as_slice())
    };
    let mask = Tensor::from_vec(mask, dims.as_slice(), v.device())?;
    same_type(mask.where_cond(&pick(1)?, &pick(0)?)?, values)
}

fn compress(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, cond) = (c.input(0)?, c.input(1)?);
    let (t, axis) = match c.node.int("axis")? {
        Some(a) => (x.tensor().clone(), data_axis(a, x.rank())?),
        None => (x.tensor().flatten_all()?, 0),
    };
    let n = t.dims()[axis];
    let keep: Vec<i64> = cond
        .to_f64_vec()?
        .iter()
        .enumerate()
        .filter(|(_, &b)| b != 0.0)
        .map(|(i, _)| i as i64)
        .collect();
    if keep.last().is_some_and(|&i| i as usize >= n) {
        bail!("condition selects past the {n} elements of the axis");
    }
    same_type(t.index_select(&index_tensor(keep, t.device())?, axis)?, x)
}

fn non_zero(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let st = strides(x.shape());
    let hits: Vec<usize> = x
        .to_f64_vec()?
        .iter()
        .enumerate()
        .filter(|(_, &v)| v != 0.0)
        .map(|(p, _)| p)
        .collect();
    let coords: Vec<i64> = (0..x.rank())
        .flat_map(|d| {
            let (s, n) = (st[d], x.shape()[d]);
            hits.iter().map(move |&p| (p / s % n) as i64)
        })
        .collect();
    let t = Tensor::from_vec(coords, (x.rank(), hits.len()), x.tensor().device())?;
    Ok(vec![Value::new(t, DataType::Int64)?])
}

fn reverse_sequence(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, lens) = (c.input(0)?, c.input(1)?);
    let rank = x.rank();
    let ba = data_axis(c.node.int_or("batch_axis", 1)?, rank)?;
    let ta = data_axis(c.node.int_or("time_axis", 0)?, rank)?;
    if rank < 2 || ba == ta {
        bail!("needs rank >= 2 and distinct batch and time axes");
    }
    let (dims, st) = (x.shape(), strides(x.shape()));
    let lens = lens.to_i64_vec()?;
    if lens.len() != dims[ba] || lens.iter().any(|&l| l < 0 || l as usize > dims[ta]) {
        bail!("sequence_lens {lens:?} do not fit shape {dims:?}");
    }
    let src: Vec<i64> = (0..x.numel())
        .map(|p| {
            let (b, t) = (p / st[ba] % dims[ba], p / st[ta] % dims[ta]);
            let len = lens[b] as usize;
            let from = if t < len { len - 1 - t } else { t };
            (p + from * st[ta] - t * st[ta]) as i64
        })
        .collect();
    let t = x
        .tensor()
        .flatten_all()?
        .index_select(&index_tensor(src, x.tensor().device())?, 0)?;
    same_type(t.reshape(dims)?, x)
}

/// Groups equal rows (`len` elements each) of `v`: returns each group's members in
/// input order, groups ordered by sorted value when `sorted`, else by first occurrence.
fn group_rows<T: PartialOrd>(v: &[T], len: usize, sorted: bool) -> Vec<Vec<usize>> {
    let n = v.len().checked_div(len).unwrap_or(0);
    let row = |i: usize| &v[i * len..(i + 1) * len];
    let cmp = |a: &usize, b: &usize| {
        row(*a)
            .iter()
            .zip(row(*b))
            .map(|(x, y)| x.partial_cmp(y).unwrap_or(Ordering::Equal))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(cmp);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some(g) if cmp(&g[0], &i).is_eq() => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    if !sorted {
        groups.sort_by_key(|g| g[0]);
    }
    groups
}

fn unique(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let sorted = c.node.int_or("sorted", 1)? == 1;
    let (t, axis) = match c.node.int("axis")? {
        Some(a) => (x.tensor().clone(), data_axis(a, x.rank())?),
        None => (x.tensor().flatten_all()?, 0),
    };
    let n = t.dims()[axis];
    let rows = t.transpose(0, axis)?.contiguous()?.flatten_all()?;
    let len = rows.elem_count() / n.max(1);
    let groups = if x.dtype().is_float() {
        group_rows(&rows.to_dtype(DType::F64)?.to_vec1::<f64>()?, len, sorted)
    } else {
        group_rows(&rows.to_dtype(DType::I64)?.to_vec1::<i64>()?, len, sorted)
    };
    let first: Vec<i64> = groups.iter().map(|g| g[0] as i64).collect();
    let counts: Vec<i64> = groups.iter().map(|g| g.len() as i64).collect();
    let mut inverse = vec![0i64; n];
    for (k, g) in groups.iter().enumerate() {
        g.iter().for_each(|&i| inverse[i] = k as i64);
    }
    let y = t.index_select(&index_tensor(first.clone(), t.device())?, axis)?;
    Ok(vec![
        Value::new(y, x.dtype())?,
        i64_value(first, x)?,
        i64_value(inverse, x)?,
        i64_value(counts, x)?,
    ])
}

fn cumsum(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let axis = match c.input(1)?.to_i64_vec()?.as_slice() {
        &[a] => data_axis(a, x.rank())?,
        a => bail!("axis must be one value, got {a:?}"),
    };
    let reverse = c.node.int_or("reverse", 0)? == 1;
    let flip = |t: &Tensor| {
        if reverse {
            t.flip(&[axis])
        } else {
            Ok(t.clone())
        }
    };
    let t = flip(x.tensor())?;
    let n = t.dims()[axis];
    let mut sum = if x.dtype().is_float() {
        t.cumsum(axis)?
    } else {
        host_cumsum_i64(&t, axis)?
    };
    if c.node.int_or("exclusive", 0)? == 1 && n > 0 {
        let zero = sum.narrow(axis, 0, 1)?.zeros_like()?;
        sum = Tensor::cat(&[&zero, &sum.narrow(axis, 0, n - 1)?], axis)?;
    }
    same_type(flip(&sum)?, x)
}

/// Inclusive cumulative sum of an integer tensor along `axis`, wrapping on overflow.
fn host_cumsum_i64(t: &Tensor, axis: usize) -> Result<Tensor> {
    let dims = t.dims();
    let inner: usize = dims[axis + 1..].iter().product();
    let mut v = t.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
    let block = dims[axis] * inner;
    for chunk in v.chunks_mut(block.max(1)) {
        for j in inner..chunk.len() {
            chunk[j] = chunk[j].wrapping_add(chunk[j - inner]);
        }
    }
    Ok(Tensor::from_vec(v, dims, t.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_rows_wraps_negatives_and_checks_bounds() {
        assert_eq!(tuple_rows(&[1, 2, -1, 0], &[2, 3]).unwrap(), vec![5, 3]);
        assert!(tuple_rows(&[2, 0], &[2, 3]).is_err());
    }

    #[test]
    fn group_rows_orders_by_value_or_first_occurrence() {
        let v = [2i64, 1, 1, 3, 0, 3, 1];
        assert_eq!(
            group_rows(&v, 1, true),
            vec![vec![4], vec![1, 2, 6], vec![0], vec![3, 5]]
        );
        assert_eq!(
            group_rows(&v, 1, false),
            vec![vec![0], vec![1, 2, 6], vec![3, 5], vec![4]]
        );
        let rows = [1.0, 0.0, 1.0, 0.0, 0.5, 2.0];
        assert_eq!(group_rows(&rows, 2, true), vec![vec![2], vec![0, 1]]);
    }

    #[test]
    fn host_cumsum_runs_along_the_axis() {
        let t = Tensor::new(&[[1i64, 2, 3], [4, 5, 6]], &candle_core::Device::Cpu).unwrap();
        let s = host_cumsum_i64(&t, 1).unwrap().to_vec2::<i64>().unwrap();
        assert_eq!(s, vec![vec![1, 3, 6], vec![4, 9, 15]]);
        let s = host_cumsum_i64(&t, 0).unwrap().to_vec2::<i64>().unwrap();
        assert_eq!(s, vec![vec![1, 2, 3], vec![5, 7, 9]]);
    }
}

//! GEMM on faer's matmul with a fused bias + activation epilogue, pre-laid-out weights and
//! NumPy-broadcast batched matmul.

use super::activation::Activation;
use super::binary::{broadcast_shape, broadcast_strides};
use super::gemv;
use super::{check_len, error, Result};
use rayon::prelude::*;

/// A read-only matrix view: `rows x cols` elements of `data` at `r * row_stride + c *
/// col_stride`. Built only by [`MatRef::row_major`] (which checks the length) and
/// transposed by [`MatRef::t`], so every element it names lies in `data`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// `data` as a contiguous row-major `rows x cols` matrix; fails unless it holds exactly
    /// `rows * cols` elements.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        check_len("gemm", "matrix", rows * cols, data.len())?;
        Ok(MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        })
    }

    /// Rows `r0..r0 + count` of this matrix (a view into the same data; element (r, c) of
    /// the block is element (r0 + r, c) of this one, so it stays inside the slice).
    fn row_block(self, r0: usize, count: usize) -> Self {
        MatRef {
            data: &self.data[r0 * self.row_stride..],
            rows: count,
            ..self
        }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The elements the view reads from.
    pub(super) fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Distance between consecutive rows.
    pub(super) fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// Distance between consecutive columns.
    pub(super) fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// The element at row `r`, column `c`.
    pub fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.row_stride + c * self.col_stride]
    }
}

/// A bias added to the product before the activation.
#[derive(Clone, Copy, Debug)]
pub enum Bias<'a> {
    /// No bias.
    None,
    /// One value per row of C (`m` values): a convolution's per-output-channel bias.
    PerRow(&'a [f32]),
    /// One value per column of C (`n` values): a Gemm/MatMul+Add bias.
    PerCol(&'a [f32]),
}

/// What happens to C after the product: `C = act(C + bias)`.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    /// The bias.
    pub bias: Bias<'a>,
    /// The activation.
    pub activation: Activation,
}

impl Epilogue<'_> {
    /// No bias, no activation.
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: Bias::None,
        activation: Activation::None,
    };

    /// The epilogue of rows `r0..r0 + count` of C (a per-row bias sliced to them).
    fn rows(&self, r0: usize, count: usize) -> Self {
        let bias = match self.bias {
            Bias::PerRow(b) => Bias::PerRow(&b[r0..r0 + count]),
            other => other,
        };
        Epilogue {
            bias,
            activation: self.activation,
        }
    }

    /// The epilogue of columns `c0..c0 + count` of C (a per-column bias sliced to them).
    pub(super) fn cols(&self, c0: usize, count: usize) -> Self {
        let bias = match self.bias {
            Bias::PerCol(b) => Bias::PerCol(&b[c0..c0 + count]),
            other => other,
        };
        Epilogue {
            bias,
            activation: self.activation,
        }
    }

    /// Whether this epilogue changes anything.
    fn is_identity(&self) -> bool {
        matches!(self.bias, Bias::None) && self.activation == Activation::None
    }

    /// Checks the bias length against C's `m x n`.
    fn check(&self, m: usize, n: usize) -> Result<()> {
        match self.bias {
            Bias::None => Ok(()),
            Bias::PerRow(b) => check_len("gemm", "per-row bias", m, b.len()),
            Bias::PerCol(b) => check_len("gemm", "per-column bias", n, b.len()),
        }
    }

    /// Applies bias and activation to the row-major `rows x n` block `c` whose first row is
    /// row `row0` of C.
    pub(super) fn apply(&self, c: &mut [f32], n: usize, row0: usize) {
        if self.is_identity() || n == 0 {
            return;
        }
        let act = self.activation;
        if n < SHORT_ROW {
            // Short rows (a pointwise convolution on a 1x1 plane has one element per row):
            // the activation once over the block, not one call per row (with the bias, 12%
            // of mobilenetv3-small at batch 1).
            match self.bias {
                // One element per row: the per-row bias is a vector add.
                Bias::PerRow(b) if n == 1 => {
                    c.iter_mut().zip(&b[row0..]).for_each(|(x, v)| *x += v);
                }
                _ => c
                    .chunks_mut(n)
                    .enumerate()
                    .for_each(|(i, row)| self.add_bias(row, row0 + i)),
            }
            act.apply_slice(c);
            return;
        }
        for (i, row) in c.chunks_mut(n).enumerate() {
            self.add_bias(row, row0 + i);
            act.apply_slice(row);
        }
    }

    /// Adds the bias to row `r` of C.
    #[inline(always)]
    fn add_bias(&self, row: &mut [f32], r: usize) {
        match self.bias {
            Bias::None => {}
            Bias::PerRow(b) => {
                let v = b[r];
                row.iter_mut().for_each(|x| *x += v);
            }
            Bias::PerCol(b) => row.iter_mut().zip(b).for_each(|(x, v)| *x += v),
        }
    }
}

/// Rows of C shorter than this get the epilogue's activation in one pass over the block.
const SHORT_ROW: usize = 64;

/// How many threads one GEMM may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// One: the caller already runs many GEMMs as parallel tasks.
    One,
    /// The current rayon pool (small products still run on one thread).
    Pool,
}

impl Threads {
    /// [`Threads::Pool`] when the current pool has several threads, else [`Threads::One`].
    pub fn current() -> Self {
        if rayon::current_num_threads() > 1 {
            Threads::Pool
        } else {
            Threads::One
        }
    }
}

/// Multiply-adds below which a GEMM stays on one thread: faer's parallel split of a
/// 128x32x128 product ran 3x slower than its sequential one (benches/kernels.rs).
const PARALLEL_MIN_PRODUCT: usize = 1 << 21;

/// Rows of C below which a large GEMM runs on faer's parallel product rather than as row
/// blocks (each block re-packs all of B, which costs too much when blocks are short). A row
/// split needs no barrier between the threads (faer's spins on one at every packing step,
/// about 15% of a 2-thread vit-tiny training step's samples on a loaded machine).
const SPLIT_MIN_ROWS: usize = 96;

/// Elements of C per rayon task of the epilogue.
const EPILOGUE_CHUNK: usize = 32 * 1024;

/// `C = act(alpha * A·B + beta * C + bias)` with C a contiguous row-major `m x n` slice
/// (`m = a.rows()`, `n = b.cols()`). With `beta == 0` C's old contents are not read (NaNs in
/// it do not leak). Transposed operands are [`MatRef::t`] views.
pub fn gemm(
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    alpha: f32,
    beta: f32,
    epilogue: &Epilogue,
) -> Result<()> {
    gemm_with(Threads::current(), a, b, c, alpha, beta, epilogue)
}

/// [`gemm`] with the thread use chosen by the caller ([`Threads::One`] inside a task that is
/// already one of many parallel ones).
pub fn gemm_with(
    threads: Threads,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    alpha: f32,
    beta: f32,
    epilogue: &Epilogue,
) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        return Err(error(
            "gemm",
            format!("A is {m}x{k} but B is {}x{n}: inner sizes differ", b.rows),
        ));
    }
    check_len("gemm", "C", m * n, c.len())?;
    epilogue.check(m, n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    // One row or one column of C: a matrix-vector product of our own (AVX-512).
    if (m == 1 || n == 1) && gemv::run(threads, a, b, c, alpha, beta, epilogue) {
        return Ok(());
    }
    let large = threads == Threads::Pool && m * n * k >= PARALLEL_MIN_PRODUCT;
    if large && m >= 2 * SPLIT_MIN_ROWS {
        // Row blocks as rayon tasks, each a one-thread product with its epilogue.
        let rows = split_rows(m);
        return c
            .par_chunks_mut(rows * n)
            .enumerate()
            .try_for_each(|(i, block)| {
                let (r0, count) = (i * rows, block.len() / n);
                let epilogue = epilogue.rows(r0, count);
                gemm_with(
                    Threads::One,
                    a.row_block(r0, count),
                    b,
                    block,
                    alpha,
                    beta,
                    &epilogue,
                )
            });
    }
    if k == 0 && beta == 0.0 {
        c.fill(0.0);
    } else if beta != 0.0 && beta != 1.0 {
        c.iter_mut().for_each(|x| *x *= beta);
    }
    // Few rows: column blocks as rayon tasks of one-thread products (faer's own parallel
    // product spun on a barrier at every packing step: 41% of YOLOv8n's samples at 2 threads).
    let tasks = rayon::current_num_threads();
    let column_tasks = if large && n >= 32 * tasks { tasks } else { 1 };
    if k > 0 {
        let par = if large && column_tasks == 1 {
            faer::Par::rayon(0)
        } else {
            faer::Par::Seq
        };
        // SAFETY: `MatRef` only names elements inside its slice (see its constructors), so
        // these views with its sizes and strides stay in bounds.
        let (fa, fb) = unsafe {
            (
                faer::MatRef::from_raw_parts(
                    a.data.as_ptr(),
                    m,
                    k,
                    a.row_stride as isize,
                    a.col_stride as isize,
                ),
                faer::MatRef::from_raw_parts(
                    b.data.as_ptr(),
                    k,
                    n,
                    b.row_stride as isize,
                    b.col_stride as isize,
                ),
            )
        };
        let fc = faer::MatMut::from_row_major_slice_mut(c, m, n);
        // With beta == 0 the product overwrites C (no zero fill first, and NaNs in its old
        // contents do not leak); else it is added to C, scaled by beta above.
        let accum = if beta == 0.0 {
            faer::Accum::Replace
        } else {
            faer::Accum::Add
        };
        if column_tasks > 1 {
            // Each column block takes its epilogue while it is in cache, in the same task.
            let op = ColumnProduct {
                accum,
                alpha,
                epilogue,
            };
            op.run(fc, fa, fb, 0, column_tasks);
            return Ok(());
        }
        faer::linalg::matmul::matmul(fc, accum, fa, fb, alpha, par);
    }
    if threads == Threads::One {
        epilogue.apply(c, n, 0);
    } else {
        apply_epilogue(epilogue, c, n);
    }
    Ok(())
}

/// `C = epilogue(C (accum) alpha * A·B)` in faer, C's columns split into blocks run as rayon
/// tasks of one-thread products, each applying the epilogue to its block.
struct ColumnProduct<'e> {
    accum: faer::Accum,
    alpha: f32,
    epilogue: &'e Epilogue<'e>,
}

impl ColumnProduct<'_> {
    /// Columns `c0..` of C (`c`, the same columns of B in `b`) in `tasks` blocks of multiples
    /// of 16 columns, as near equal as that allows (100 columns: 48 + 52, not 64 + 36).
    fn run(
        &self,
        c: faer::MatMut<f32>,
        a: faer::MatRef<f32>,
        b: faer::MatRef<f32>,
        c0: usize,
        tasks: usize,
    ) {
        let n = c.ncols();
        let mid = (n * (tasks / 2) / tasks.max(1) + 8) / 16 * 16;
        if tasks < 2 || mid == 0 || mid >= n {
            self.block(c, a, b, c0);
            return;
        }
        let (cl, cr) = c.split_at_col_mut(mid);
        let (bl, br) = b.split_at_col(mid);
        rayon::join(
            || self.run(cl, a, bl, c0, tasks / 2),
            || self.run(cr, a, br, c0 + mid, tasks - tasks / 2),
        );
    }

    /// One block on this thread, then the epilogue over its rows.
    fn block(
        &self,
        mut c: faer::MatMut<f32>,
        a: faer::MatRef<f32>,
        b: faer::MatRef<f32>,
        c0: usize,
    ) {
        let n = c.ncols();
        faer::linalg::matmul::matmul(c.as_mut(), self.accum, a, b, self.alpha, faer::Par::Seq);
        let epilogue = self.epilogue.cols(c0, n);
        if epilogue.is_identity() {
            return;
        }
        for r in 0..c.nrows() {
            let row = c.as_mut().row_mut(r).try_as_row_major_mut();
            // C is a row-major slice: its rows are contiguous.
            let row = row.expect("C's rows are contiguous").as_slice_mut();
            epilogue.apply(row, n, r);
        }
    }
}

/// Rows per task of a GEMM split by rows: up to four tasks per thread (so a thread the
/// machine delays leaves its blocks to the others), each of at least about
/// [`SPLIT_MIN_ROWS`] rows, a multiple of the thread count of tasks where there are that
/// many (YOLOv8n's 256-row products on 10x10 planes were blocks of 96, 96 and 64 rows: one
/// thread ran two of them), rows a multiple of 16.
fn split_rows(m: usize) -> usize {
    let threads = rayon::current_num_threads();
    let mut tasks = (m / SPLIT_MIN_ROWS).clamp(1, 4 * threads);
    if tasks > threads {
        tasks -= tasks % threads;
    }
    m.div_ceil(tasks).next_multiple_of(16)
}

/// Runs the epilogue over the row-major `c` with rows of `n`, parallel over row blocks.
fn apply_epilogue(epilogue: &Epilogue, c: &mut [f32], n: usize) {
    if epilogue.is_identity() {
        return;
    }
    let rows_per_task = (EPILOGUE_CHUNK / n).max(1);
    if c.len() <= EPILOGUE_CHUNK || rayon::current_num_threads() == 1 {
        epilogue.apply(c, n, 0);
    } else {
        c.par_chunks_mut(rows_per_task * n)
            .enumerate()
            .for_each(|(i, block)| epilogue.apply(block, n, i * rows_per_task));
    }
}

/// A weight matrix copied once per model into the layout the GEMM reads fastest as its
/// right-hand operand: `op(W)` (`rows x cols`, as used in `A·op(W)`) contiguous row-major.
/// An ONNX `Gemm` with `transB = 1` (weights `[n, k]`) is transposed here once instead of
/// read through a strided view on every call: `benches/kernels.rs` measured the row-major
/// right operand 1-10% faster than the transposed view at MiniLM shapes and 35% faster at
/// LeNet5's 32x256x120 on one thread, and a column-major copy no faster than the view.
#[derive(Clone, Debug)]
pub struct PackedWeights {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl PackedWeights {
    /// Copies `w` (a view, transposed or not) into the packed layout.
    pub fn new(w: MatRef) -> Self {
        let (rows, cols) = (w.rows, w.cols);
        let mut data = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            data.extend((0..cols).map(|c| w.at(r, c)));
        }
        PackedWeights { data, rows, cols }
    }

    /// The packed matrix as a view for [`gemm`].
    pub fn as_ref(&self) -> MatRef<'_> {
        MatRef {
            data: &self.data,
            rows: self.rows,
            cols: self.cols,
            row_stride: self.cols,
            col_stride: 1,
        }
    }

    /// Rows of `op(W)` (the GEMM's `k`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of `op(W)` (the GEMM's `n`).
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// The output shape of NumPy `matmul` for operands of rank >= 2: the batch dimensions
/// broadcast, then `[.., m, k] x [.., k, n] -> [.., m, n]`.
pub fn matmul_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    if a.len() < 2 || b.len() < 2 {
        return Err(error(
            "matmul",
            format!("operands of shape {a:?} and {b:?}: both need rank 2 or more"),
        ));
    }
    let (ab, am) = a.split_at(a.len() - 2);
    let (bb, bm) = b.split_at(b.len() - 2);
    if am[1] != bm[0] {
        return Err(error(
            "matmul",
            format!(
                "shapes {a:?} and {b:?}: inner sizes {} and {} differ",
                am[1], bm[0]
            ),
        ));
    }
    let mut out = broadcast_shape(ab, bb)?;
    out.extend([am[0], bm[1]]);
    Ok(out)
}

/// Multiply-adds in one product below which the batches of [`batched_matmul`] run as parallel
/// tasks of single-threaded GEMMs rather than one after another with a parallel GEMM each.
const SMALL_PRODUCT: usize = 1 << 21;

/// NumPy `matmul` of row-major `a` (`a_shape`) and `b` (`b_shape`), both of rank >= 2, into
/// `out` of [`matmul_shape`]: batch dimensions broadcast (a size-1 or missing dimension
/// repeats). Many small products run in parallel, large ones one by one on a parallel GEMM.
pub fn batched_matmul(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out: &mut [f32],
) -> Result<()> {
    let out_shape = matmul_shape(a_shape, b_shape)?;
    check_len("matmul", "A", a_shape.iter().product(), a.len())?;
    check_len("matmul", "B", b_shape.iter().product(), b.len())?;
    check_len("matmul", "output", out_shape.iter().product(), out.len())?;
    let rank = out_shape.len();
    let (m, k, n) = (
        out_shape[rank - 2],
        a_shape[a_shape.len() - 1],
        out_shape[rank - 1],
    );
    if m * n == 0 {
        return Ok(());
    }
    let batch = &out_shape[..rank - 2];
    let a_strides = broadcast_strides(&a_shape[..a_shape.len() - 2], batch, m * k);
    let b_strides = broadcast_strides(&b_shape[..b_shape.len() - 2], batch, k * n);
    let product = |threads: Threads, i: usize, c: &mut [f32]| -> Result<()> {
        let (mut ao, mut bo, mut rest) = (0, 0, i);
        for d in (0..batch.len()).rev() {
            let idx = rest % batch[d];
            rest /= batch[d];
            ao += idx * a_strides[d];
            bo += idx * b_strides[d];
        }
        let a = MatRef::row_major(&a[ao..ao + m * k], m, k)?;
        let b = MatRef::row_major(&b[bo..bo + k * n], k, n)?;
        gemm_with(threads, a, b, c, 1.0, 0.0, &Epilogue::NONE)
    };
    let count = out.len() / (m * n);
    if count > 1 && m * n * k <= SMALL_PRODUCT && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(m * n)
            .enumerate()
            .try_for_each(|(i, c)| product(Threads::One, i, c))
    } else {
        out.chunks_mut(m * n)
            .enumerate()
            .try_for_each(|(i, c)| product(Threads::current(), i, c))
    }
}

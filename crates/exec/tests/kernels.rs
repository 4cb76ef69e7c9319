//! Every kernel of `whittle_exec::kernels` against a naive reference on random shapes,
//! including odd sizes, transposes, broadcasting corner cases, groups and padding; each under a
//! 1-thread and a 2-thread rayon pool (the kernels take different paths in each).

use proptest::prelude::*;
use whittle_exec::kernels::activation::{self, Activation, UnaryOp};
use whittle_exec::kernels::binary::{self, BinaryOp};
use whittle_exec::kernels::gemm::{self, Bias, Epilogue, MatRef, PackedWeights};
use whittle_exec::kernels::layout::{self, StridedView};
use whittle_ir::seed::SplitMix64;

/// Deterministic values in [-1, 1) from a seed (the workspace's one generator).
fn randn(len: usize, seed: u64) -> Vec<f32> {
    SplitMix64::new(seed)
        .uniform(len, -1.0, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

/// Asserts `got` and `want` agree to 1e-5 relative (plus 1e-6 absolute for values near 0).
fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_close_scaled(got, want, &vec![0.0; want.len()], what);
}

/// [`assert_close`] for sums: relative to `|want| + scale`, where `scale` is the root sum of
/// squares of the summed terms (f32 rounding of a sum grows with it, not with the result).
fn assert_close_scaled(got: &[f32], want: &[f64], scale: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        let tol = 1e-5 * (w.abs() + s) + 1e-6;
        assert!(
            (f64::from(g) - w).abs() <= tol || (g.is_nan() && w.is_nan()),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

/// Runs `f` in a rayon pool of 1 and of 2 threads.
fn with_pools(f: impl Fn() + Sync) {
    for threads in [1, 2] {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(&f);
    }
}

fn act_ref(act: Activation, x: f64) -> f64 {
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    match act {
        Activation::None => x,
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu(a) => {
            if x >= 0.0 {
                x
            } else {
                f64::from(a) * x
            }
        }
        Activation::Clip(lo, hi) => x.max(f64::from(lo)).min(f64::from(hi)),
        Activation::Sigmoid => sig(x),
        Activation::Silu => x * sig(x),
        Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt())),
        Activation::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::HardSigmoid { alpha, beta } => {
            (f64::from(alpha) * x + f64::from(beta)).clamp(0.0, 1.0)
        }
        Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        Activation::Tanh => x.tanh(),
    }
}

const ACTIVATIONS: [Activation; 11] = [
    Activation::None,
    Activation::Relu,
    Activation::LeakyRelu(0.1),
    Activation::Clip(-0.3, 0.6),
    Activation::Sigmoid,
    Activation::Silu,
    Activation::Gelu,
    Activation::GeluTanh,
    Activation::HardSigmoid {
        alpha: 0.2,
        beta: 0.5,
    },
    Activation::HardSwish,
    Activation::Tanh,
];

#[test]
fn zeros_and_fill_zero_clear_every_element() {
    // Below and above the length split into parallel chunks under 2 threads.
    for len in [0, 5, 100_003] {
        with_pools(|| {
            assert_eq!(whittle_exec::kernels::zeros(len), vec![0.0; len]);
            let mut v = randn(len, 3);
            whittle_exec::kernels::fill_zero(&mut v);
            assert!(
                v.iter().all(|&x| x == 0.0),
                "fill_zero left a value ({len})"
            );
        });
    }
}

#[test]
fn erf_exp_tanh_sigmoid_match_f64_over_their_range() {
    let xs: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 5e-5).collect();
    let mut worst_erf = 0f64;
    for &x in &xs {
        worst_erf =
            worst_erf.max((f64::from(activation::erf_f32(x)) - libm::erf(f64::from(x))).abs());
        let e = f64::from(x).exp();
        let got = f64::from(activation::exp_f32(x));
        assert!((got - e).abs() <= 3e-7 * e, "exp({x}) = {got}, want {e}");
        let t = f64::from(x).tanh();
        let got = f64::from(activation::tanh_f32(x));
        assert!(
            (got - t).abs() <= 3e-7 * t.abs() + 1e-9,
            "tanh({x}) = {got}, want {t}"
        );
        let s = 1.0 / (1.0 + (-f64::from(x)).exp());
        let got = f64::from(activation::sigmoid_f32(x));
        assert!(
            (got - s).abs() <= 3e-7 * s,
            "sigmoid({x}) = {got}, want {s}"
        );
    }
    assert!(worst_erf <= 1e-7, "erf off by {worst_erf}");
    // Tails: exp overflows and underflows like expf, erf and tanh saturate, NaN stays NaN.
    assert_eq!(activation::exp_f32(100.0), f32::INFINITY);
    assert_eq!(activation::exp_f32(-100.0), 0.0);
    assert!((activation::exp_f32(88.5) / 88.5f32.exp() - 1.0).abs() < 1e-6);
    assert_eq!(activation::erf_f32(-30.0), -1.0);
    assert_eq!(activation::tanh_f32(50.0), 1.0);
    assert_eq!(activation::sigmoid_f32(-200.0), 0.0);
    assert!(activation::exp_f32(f32::NAN).is_nan());
}

#[test]
fn unary_maps_and_chains_match_reference() {
    let x: Vec<f32> = randn(100_003, 7).iter().map(|v| v * 6.0).collect();
    with_pools(|| {
        for act in ACTIVATIONS {
            let mut y = vec![0.0; x.len()];
            activation::unary(UnaryOp::Act(act), &x, &mut y).unwrap();
            let want: Vec<f64> = x.iter().map(|&v| act_ref(act, f64::from(v))).collect();
            assert_close(&y, &want, &format!("{act:?}"));
        }
        // Exp then Neg then Erf in one pass.
        let mut y = vec![0.0; x.len()];
        let ops = [UnaryOp::Exp, UnaryOp::Neg, UnaryOp::Erf];
        activation::unary_chain(&ops, &x, &mut y).unwrap();
        let want: Vec<f64> = x.iter().map(|&v| libm::erf(-f64::from(v).exp())).collect();
        assert_close(&y, &want, "exp-neg-erf chain");
        let mut z = x.clone();
        activation::unary_in_place(UnaryOp::Abs, &mut z);
        assert!(z.iter().zip(&x).all(|(a, b)| *a == b.abs()));
    });
    let err = activation::unary(UnaryOp::Exp, &x, &mut [0.0; 3]).unwrap_err();
    assert!(err.to_string().contains("3 elements"), "{err}");
}

/// Naive `act(alpha * op(A)·op(B) + beta * C + bias)` in f64.
#[allow(clippy::too_many_arguments)]
fn gemm_ref(
    a: &[f32],
    ta: bool,
    b: &[f32],
    tb: bool,
    (m, k, n): (usize, usize, usize),
    c: &[f32],
    alpha: f32,
    beta: f32,
    bias: &Bias,
    act: Activation,
) -> (Vec<f64>, Vec<f64>) {
    let av = |i: usize, p: usize| f64::from(if ta { a[p * m + i] } else { a[i * k + p] });
    let bv = |p: usize, j: usize| f64::from(if tb { b[j * k + p] } else { b[p * n + j] });
    let mut out = vec![0.0; m * n];
    let mut scale = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k).map(|p| av(i, p) * bv(p, j)).sum();
            scale[i * n + j] = (0..k)
                .map(|p| (av(i, p) * bv(p, j)).powi(2))
                .sum::<f64>()
                .sqrt();
            let mut v = f64::from(alpha) * dot;
            if beta != 0.0 {
                v += f64::from(beta) * f64::from(c[i * n + j]);
            }
            v += match bias {
                Bias::None => 0.0,
                Bias::PerRow(b) => f64::from(b[i]),
                Bias::PerCol(b) => f64::from(b[j]),
            };
            out[i * n + j] = act_ref(act, v);
        }
    }
    (out, scale)
}

/// A view of `data` as op(X) with `rows x cols` logical size.
fn view(data: &[f32], rows: usize, cols: usize, trans: bool) -> MatRef<'_> {
    if trans {
        MatRef::row_major(data, cols, rows).unwrap().t()
    } else {
        MatRef::row_major(data, rows, cols).unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn gemm_matches_reference(
        m in 1usize..70, k in 0usize..70, n in 1usize..70,
        ta: bool, tb: bool, beta_on: bool, bias_kind in 0usize..3, act_i in 0usize..11,
        seed in 0u64..1000,
    ) {
        let a = randn(m * k, seed);
        let b = randn(k * n, seed + 1);
        // With beta 0 C starts as NaN: its old contents must not be read.
        let c0 = if beta_on { randn(m * n, seed + 2) } else { vec![f32::NAN; m * n] };
        let row_bias = randn(m, seed + 3);
        let col_bias = randn(n, seed + 4);
        let bias = match bias_kind {
            0 => Bias::None,
            1 => Bias::PerRow(&row_bias),
            _ => Bias::PerCol(&col_bias),
        };
        let act = ACTIVATIONS[act_i];
        let (alpha, beta) = (0.75, if beta_on { 0.5 } else { 0.0 });
        let (want, scale) = gemm_ref(&a, ta, &b, tb, (m, k, n), &c0, alpha, beta, &bias, act);
        with_pools(|| {
            let mut c = c0.clone();
            let ep = Epilogue { bias, activation: act };
            gemm::gemm(view(&a, m, k, ta), view(&b, k, n, tb), &mut c, alpha, beta, &ep).unwrap();
            assert_close_scaled(&c, &want, &scale, "gemm");
            // Pre-packed right operand gives the same numbers.
            let packed = PackedWeights::new(view(&b, k, n, tb));
            let mut c = c0.clone();
            gemm::gemm(view(&a, m, k, ta), packed.as_ref(), &mut c, alpha, beta, &ep).unwrap();
            assert_close_scaled(&c, &want, &scale, "gemm packed");
        });
    }
}

/// Products large enough to run in parallel: at 2 threads as row blocks (300 rows: three
/// full blocks and a short one), each with its slice of A (row-major or a transposed view), of
/// a per-row bias and of C; or, with fewer rows, as column blocks of multiples of 16 columns
/// that each apply the epilogue to their columns (203 columns: 96 + 107; 100 columns: 48 +
/// 52). With beta 0 C starts as NaN; with beta 0.5 its old values are scaled in.
#[test]
fn gemm_large_parallel_and_beta_zero_ignores_nan() {
    for (m, k, n) in [(300, 200, 257), (37, 300, 203), (150, 150, 100)] {
        let a = randn(m * k, 1);
        let b = randn(k * n, 2);
        let (row_bias, col_bias, c_old) = (randn(m, 3), randn(n, 4), randn(m * n, 5));
        let nan = vec![f32::NAN; m * n];
        let cases = [
            (Bias::PerCol(&col_bias), 0.0, &nan, false, Activation::Gelu),
            (Bias::PerRow(&row_bias), 0.0, &nan, true, Activation::Silu),
            (Bias::PerRow(&row_bias), 0.5, &c_old, true, Activation::Gelu),
            (Bias::None, 0.5, &c_old, false, Activation::None),
        ];
        for (bias, beta, c0, ta, activation) in cases {
            let (want, scale) = gemm_ref(
                &a,
                ta,
                &b,
                true,
                (m, k, n),
                c0,
                1.0,
                beta,
                &bias,
                activation,
            );
            with_pools(|| {
                let mut c = c0.clone();
                let ep = Epilogue { bias, activation };
                gemm::gemm(
                    view(&a, m, k, ta),
                    view(&b, k, n, true),
                    &mut c,
                    1.0,
                    beta,
                    &ep,
                )
                .unwrap();
                assert_close_scaled(&c, &want, &scale, &format!("gemm {m}x{k}x{n}"));
            });
        }
    }
}

/// Matrix-vector products (C one row or one column: the AVX-512 kernel of `kernels::gemv`),
/// both operands plain or transposed (so both of its layouts), odd sizes, an empty and a
/// one-element reduction, every bias kind, beta 0 (C starts as NaN) and 0.5, and matrices
/// above the size from which the work splits over 2 threads (1x700x200, 999x300x1, and
/// 1x3x30000 with fewer rows than parts).
#[test]
fn gemm_matrix_vector_matches_reference() {
    let shapes = [
        (1, 37, 200),
        (1, 40, 70),
        (1, 41, 17),
        (100, 9, 1),
        (1, 700, 200),
        (1, 3, 30000),
        (1, 5, 1),
        (1, 0, 9),
        (1, 1, 33),
        (203, 37, 1),
        (999, 300, 1),
        (7, 1, 1),
        (13, 0, 1),
    ];
    for (i, &(m, k, n)) in shapes.iter().enumerate() {
        let seed = 10 * i as u64;
        let (a, b) = (randn(m * k, seed), randn(k * n, seed + 1));
        let (row_bias, col_bias, c_old) = (randn(m, seed + 2), randn(n, seed + 3), randn(m * n, 4));
        let nan = vec![f32::NAN; m * n];
        for (case, (ta, tb)) in [(false, false), (false, true), (true, false), (true, true)]
            .into_iter()
            .enumerate()
        {
            let (bias, act) = match case {
                0 => (Bias::None, Activation::None),
                1 => (Bias::PerRow(&row_bias), Activation::Relu),
                2 => (Bias::PerCol(&col_bias), Activation::Gelu),
                _ => (Bias::PerCol(&col_bias), Activation::Clip(-0.5, 0.5)),
            };
            for (beta, c0) in [(0.0, &nan), (0.5, &c_old)] {
                let (want, scale) = gemm_ref(&a, ta, &b, tb, (m, k, n), c0, 0.75, beta, &bias, act);
                with_pools(|| {
                    let mut c = c0.clone();
                    let ep = Epilogue {
                        bias,
                        activation: act,
                    };
                    let (av, bv) = (view(&a, m, k, ta), view(&b, k, n, tb));
                    gemm::gemm(av, bv, &mut c, 0.75, beta, &ep).unwrap();
                    let what = format!("gemv {m}x{k}x{n} ta {ta} tb {tb} beta {beta}");
                    assert_close_scaled(&c, &want, &scale, &what);
                });
            }
        }
    }
}

#[test]
fn gemm_refuses_mismatched_shapes() {
    let a = vec![0.0; 6];
    let b = vec![0.0; 6];
    let mut c = vec![0.0; 4];
    let err = gemm::gemm(
        view(&a, 2, 3, false),
        view(&b, 2, 3, false),
        &mut c,
        1.0,
        0.0,
        &Epilogue::NONE,
    )
    .unwrap_err();
    assert!(err.to_string().contains("inner sizes differ"), "{err}");
    let err = gemm::gemm(
        view(&a, 2, 3, false),
        view(&b, 3, 2, false),
        &mut c[..3],
        1.0,
        0.0,
        &Epilogue::NONE,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("C has 3 elements, the shape needs 4"),
        "{err}"
    );
    let bias = [1.0; 3];
    let ep = Epilogue {
        bias: Bias::PerCol(&bias),
        activation: Activation::None,
    };
    let err = gemm::gemm(
        view(&a, 2, 3, false),
        view(&b, 3, 2, false),
        &mut c,
        1.0,
        0.0,
        &ep,
    )
    .unwrap_err();
    assert!(err.to_string().contains("per-column bias"), "{err}");
    assert!(MatRef::row_major(&a, 4, 2).is_err());
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Index into an operand of `shape` for the output multi-index `idx` (right-aligned broadcast).
fn bcast_index(shape: &[usize], idx: &[usize]) -> usize {
    let off = idx.len() - shape.len();
    let st = strides(shape);
    (0..shape.len())
        .map(|j| {
            if shape[j] == 1 {
                0
            } else {
                idx[off + j] * st[j]
            }
        })
        .sum()
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

#[test]
fn batched_matmul_broadcasts_batch_dims() {
    for (sa, sb) in [
        (vec![2, 3, 5, 4], vec![4, 6]),
        (vec![5, 4], vec![3, 1, 4, 7]),
        (vec![2, 1, 3, 4], vec![1, 3, 4, 2]),
        (vec![12, 64, 32], vec![12, 32, 64]),
        (vec![1, 1, 1], vec![1, 1, 1]),
        (vec![2, 0, 3], vec![2, 3, 4]),
    ] {
        let out_shape = gemm::matmul_shape(&sa, &sb).unwrap();
        let a = randn(sa.iter().product(), 5);
        let b = randn(sb.iter().product(), 6);
        let k = sa[sa.len() - 1];
        let terms = |o: usize| -> Vec<f64> {
            let idx = unravel(o, &out_shape);
            let r = idx.len();
            (0..k)
                .map(|p| {
                    let mut ia = idx.clone();
                    ia[r - 1] = p;
                    let mut ib = idx.clone();
                    ib[r - 2] = p;
                    f64::from(a[bcast_index(&sa, &ia)]) * f64::from(b[bcast_index(&sb, &ib)])
                })
                .collect()
        };
        let count: usize = out_shape.iter().product();
        let want: Vec<f64> = (0..count).map(|o| terms(o).iter().sum()).collect();
        let scale: Vec<f64> = (0..count)
            .map(|o| terms(o).iter().map(|t| t * t).sum::<f64>().sqrt())
            .collect();
        with_pools(|| {
            let mut out = vec![0.0; want.len()];
            gemm::batched_matmul(&a, &sa, &b, &sb, &mut out).unwrap();
            assert_close_scaled(&out, &want, &scale, &format!("matmul {sa:?} x {sb:?}"));
        });
    }
    let err = gemm::matmul_shape(&[2, 3, 4], &[3, 4, 6]).unwrap_err();
    assert!(err.to_string().contains("do not broadcast"), "{err}");
    let err = gemm::matmul_shape(&[3, 4], &[5, 6]).unwrap_err();
    assert!(
        err.to_string().contains("inner sizes 4 and 5 differ"),
        "{err}"
    );
}

fn binary_ref(op: BinaryOp, x: f64, y: f64) -> f64 {
    match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Max => x.max(y),
        BinaryOp::Min => x.min(y),
    }
}

const BINARY_OPS: [BinaryOp; 6] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Max,
    BinaryOp::Min,
];

fn check_binary(sa: &[usize], sb: &[usize], seed: u64) {
    let out_shape = binary::broadcast_shape(sa, sb).unwrap();
    let a = randn(sa.iter().product(), seed);
    let b: Vec<f32> = randn(sb.iter().product(), seed + 1)
        .iter()
        .map(|v| v + 2.5)
        .collect();
    for op in BINARY_OPS {
        let want: Vec<f64> = (0..out_shape.iter().product())
            .map(|o| {
                let idx = unravel(o, &out_shape);
                binary_ref(
                    op,
                    f64::from(a[bcast_index(sa, &idx)]),
                    f64::from(b[bcast_index(sb, &idx)]),
                )
            })
            .collect();
        with_pools(|| {
            let mut out = vec![0.0; want.len()];
            binary::binary(op, &a, sa, &b, sb, &mut out).unwrap();
            assert_close(&out, &want, &format!("{op:?} {sa:?} {sb:?}"));
        });
    }
}

#[test]
fn binary_fast_paths_and_corners() {
    for (sa, sb) in [
        (vec![2, 16, 40, 41], vec![2, 16, 40, 41]), // same shape, parallel
        (vec![3, 5, 7], vec![]),                    // scalar right
        (vec![1], vec![4, 3]),                      // scalar left
        (vec![2, 16, 40, 41], vec![1, 16, 1, 1]),   // per-channel bias
        (vec![16, 1, 1], vec![2, 16, 40, 41]),      // per-channel, left, lower rank
        (vec![3, 7, 2, 2], vec![3, 7, 1, 1]),       // per-plane scale (one outer dimension)
        (vec![16, 50, 1, 1], vec![16, 50, 5, 5]),   // the same, left, parallel
        (vec![128, 384], vec![384]),                // last-axis row
        (vec![4, 1, 6], vec![1, 5, 1]),             // outer product
        (vec![3, 1], vec![1, 1]),
        (vec![2, 0, 3], vec![3]), // empty
        (vec![1, 1], vec![1]),
    ] {
        check_binary(&sa, &sb, sa.len() as u64);
    }
    let err = binary::broadcast_shape(&[2, 3], &[4, 3]).unwrap_err();
    assert!(
        err.to_string().contains("do not broadcast (sizes 2 and 4)"),
        "{err}"
    );
    let err = binary::binary(
        BinaryOp::Add,
        &[1.0; 5],
        &[2, 3],
        &[1.0],
        &[1],
        &mut [0.0; 6],
    )
    .unwrap_err();
    assert!(err.to_string().contains("A has 5 elements"), "{err}");
    // NaN propagates through Max and Min as in ONNX.
    let mut out = [0.0; 2];
    binary::binary(BinaryOp::Max, &[f32::NAN, 1.0], &[2], &[0.0], &[], &mut out).unwrap();
    assert!(out[0].is_nan() && out[1] == 1.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn binary_broadcasts_random_shapes(
        dims in proptest::collection::vec((1usize..6, 0usize..3), 0..5), seed in 0u64..100,
    ) {
        // Each output dimension: both sides full, A repeats (1), or B repeats (1); then drop
        // a random number of leading dimensions from one side.
        let sa: Vec<usize> = dims.iter().map(|&(d, k)| if k == 1 { 1 } else { d }).collect();
        let sb: Vec<usize> = dims.iter().map(|&(d, k)| if k == 2 { 1 } else { d }).collect();
        let cut = (seed as usize) % (dims.len() + 1);
        let sb = if seed % 2 == 0 { sb[cut..].to_vec() } else { sb };
        check_binary(&sa, &sb, seed);
    }
}

use whittle_exec::kernels::conv::{self, Conv2dShape};
use whittle_exec::kernels::norm;
use whittle_exec::kernels::pool::{self, Pool2dShape};

/// Naive convolution in f64 with its per-output scale (root sum of squared terms).
fn conv_ref(s: &Conv2dShape, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> (Vec<f64>, Vec<f64>) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let (cg, mg) = (s.c_in / s.groups, s.c_out / s.groups);
    let mut out = Vec::new();
    let mut scale = Vec::new();
    for n in 0..s.n {
        for co in 0..s.c_out {
            let g = co / mg;
            for r in 0..oh {
                for q in 0..ow {
                    let (mut acc, mut sq) = (bias.map_or(0.0, |b| f64::from(b[co])), 0.0);
                    for ci in 0..cg {
                        for i in 0..s.kh {
                            for j in 0..s.kw {
                                let ih = (r * s.stride[0] + i * s.dilation[0]) as isize
                                    - s.pads[0] as isize;
                                let iw = (q * s.stride[1] + j * s.dilation[1]) as isize
                                    - s.pads[1] as isize;
                                if ih < 0 || iw < 0 || ih >= s.h as isize || iw >= s.w as isize {
                                    continue;
                                }
                                let xv = x[((n * s.c_in + g * cg + ci) * s.h + ih as usize) * s.w
                                    + iw as usize];
                                let wv = w[((co * cg + ci) * s.kh + i) * s.kw + j];
                                let t = f64::from(xv) * f64::from(wv);
                                acc += t;
                                sq += t * t;
                            }
                        }
                    }
                    out.push(acc);
                    scale.push(sq.sqrt());
                }
            }
        }
    }
    (out, scale)
}

/// Convolution shapes covering the three paths (pointwise, depthwise, im2col) with odd sizes,
/// groups, asymmetric padding, strides and dilations.
fn conv_cases() -> Vec<Conv2dShape> {
    let base = Conv2dShape {
        n: 2,
        c_in: 3,
        h: 9,
        w: 11,
        c_out: 4,
        kh: 3,
        kw: 3,
        stride: [1, 1],
        pads: [1, 1, 1, 1],
        dilation: [1, 1],
        groups: 1,
    };
    vec![
        base,
        Conv2dShape {
            kh: 1,
            kw: 1,
            pads: [0; 4],
            c_in: 16,
            c_out: 8,
            ..base
        },
        Conv2dShape {
            kh: 1,
            kw: 1,
            pads: [0; 4],
            stride: [2, 2],
            ..base
        },
        Conv2dShape {
            c_in: 6,
            c_out: 6,
            groups: 6,
            ..base
        },
        Conv2dShape {
            c_in: 5,
            c_out: 5,
            groups: 5,
            stride: [2, 2],
            pads: [0, 1, 2, 0],
            ..base
        },
        Conv2dShape {
            c_in: 4,
            c_out: 4,
            groups: 4,
            kh: 5,
            kw: 5,
            pads: [2; 4],
            n: 1,
            h: 40,
            w: 40,
            ..base
        },
        Conv2dShape {
            c_in: 4,
            c_out: 6,
            groups: 2,
            stride: [2, 1],
            pads: [0, 2, 1, 0],
            ..base
        },
        Conv2dShape {
            dilation: [2, 3],
            pads: [2, 3, 0, 1],
            kh: 2,
            kw: 3,
            ..base
        },
        Conv2dShape {
            n: 3,
            c_in: 1,
            c_out: 6,
            kh: 5,
            kw: 5,
            pads: [0; 4],
            h: 28,
            w: 28,
            ..base
        },
        Conv2dShape {
            n: 1,
            c_in: 16,
            c_out: 32,
            stride: [2, 2],
            h: 40,
            w: 40,
            ..base
        },
        // MobileNetV3's late depthwise convolutions: planes smaller than the padded kernel,
        // where some taps read only padding.
        Conv2dShape {
            c_in: 4,
            c_out: 4,
            groups: 4,
            kh: 5,
            kw: 5,
            pads: [2; 4],
            h: 1,
            w: 1,
            ..base
        },
        Conv2dShape {
            c_in: 4,
            c_out: 4,
            groups: 4,
            kh: 5,
            kw: 5,
            pads: [2; 4],
            stride: [2, 2],
            h: 2,
            w: 2,
            ..base
        },
        Conv2dShape {
            c_in: 4,
            c_out: 4,
            groups: 4,
            h: 1,
            w: 1,
            ..base
        },
        Conv2dShape {
            c_in: 3,
            c_out: 2,
            kh: 5,
            kw: 5,
            pads: [2; 4],
            h: 1,
            w: 2,
            ..base
        },
        // The direct kernel (dense, stride 1): c_in = 1 with a channel count that is not a
        // multiple of its 4-channel tile over an odd batch; 5x5 with padding larger at the
        // bottom than at the top; unpadded 3x3 at odd widths; 1x3 and 3x1 kernels; one image
        // whose channels split over threads, with more than one chunk of positions.
        Conv2dShape {
            n: 5,
            c_in: 1,
            c_out: 7,
            h: 13,
            w: 11,
            ..base
        },
        Conv2dShape {
            n: 3,
            c_in: 5,
            c_out: 6,
            kh: 5,
            kw: 5,
            pads: [0, 1, 2, 2],
            h: 9,
            w: 7,
            ..base
        },
        Conv2dShape {
            c_in: 3,
            c_out: 5,
            pads: [0; 4],
            h: 10,
            w: 13,
            ..base
        },
        Conv2dShape {
            c_out: 9,
            kh: 1,
            pads: [0, 1, 0, 1],
            ..base
        },
        Conv2dShape {
            n: 4,
            c_out: 2,
            kw: 1,
            pads: [2, 0, 1, 0],
            ..base
        },
        Conv2dShape {
            n: 1,
            c_in: 2,
            c_out: 10,
            h: 21,
            w: 20,
            ..base
        },
        // The direct kernel's dense stacks (stride 1, `kh - 1` rows of padding, at least 16
        // taps a kernel row: no zero rows between images): padding all on one side; 5x5 over
        // a batch that leaves a short last group; unpadded columns (rows narrower than the
        // input); planes smaller than the padding; zoo:cnn's 7x7 layer in miniature over an
        // odd batch.
        Conv2dShape {
            n: 3,
            c_in: 6,
            c_out: 5,
            pads: [0, 2, 2, 0],
            h: 7,
            w: 6,
            ..base
        },
        Conv2dShape {
            n: 6,
            c_in: 4,
            c_out: 9,
            kh: 5,
            kw: 5,
            pads: [2; 4],
            h: 7,
            w: 7,
            ..base
        },
        Conv2dShape {
            n: 3,
            c_in: 6,
            c_out: 6,
            pads: [1, 0, 1, 0],
            h: 8,
            w: 9,
            ..base
        },
        Conv2dShape {
            n: 4,
            c_in: 4,
            c_out: 5,
            kh: 5,
            kw: 5,
            pads: [2; 4],
            h: 2,
            w: 2,
            ..base
        },
        Conv2dShape {
            n: 9,
            c_in: 8,
            c_out: 20,
            h: 7,
            w: 7,
            ..base
        },
        // Strides of 2 on the direct kernel: odd planes, uneven padding, one axis at a time.
        Conv2dShape {
            n: 3,
            c_out: 5,
            stride: [2, 2],
            h: 11,
            w: 9,
            ..base
        },
        Conv2dShape {
            c_in: 2,
            c_out: 6,
            kh: 5,
            kw: 5,
            stride: [2, 1],
            pads: [2, 1, 1, 2],
            h: 12,
            w: 7,
            ..base
        },
        Conv2dShape {
            c_out: 3,
            stride: [1, 2],
            pads: [0; 4],
            ..base
        },
        // One image whose copies are large enough to be made in parallel at 2 threads, then
        // its channels (not a multiple of the 4-channel tile) split: stride 2 with
        // asymmetric padding at odd sizes, and stride 1 at odd widths.
        Conv2dShape {
            n: 1,
            c_in: 25,
            c_out: 7,
            stride: [2, 2],
            pads: [1, 0, 0, 1],
            h: 31,
            w: 29,
            ..base
        },
        Conv2dShape {
            n: 1,
            c_in: 24,
            c_out: 6,
            h: 21,
            w: 23,
            ..base
        },
        // A depthwise batch large enough to split over threads, with a height dilation.
        Conv2dShape {
            n: 4,
            c_in: 64,
            c_out: 64,
            groups: 64,
            dilation: [2, 1],
            pads: [2, 1, 2, 1],
            h: 8,
            w: 8,
            ..base
        },
        // Channel counts that are no multiple of a vector, large enough to split over two
        // threads: by runs of images (nine images, stride 2 with asymmetric padding), and by
        // blocks of one image's channels (one image of 347 channels).
        Conv2dShape {
            n: 9,
            c_in: 45,
            c_out: 45,
            groups: 45,
            stride: [2, 2],
            pads: [1, 0, 0, 1],
            h: 14,
            w: 13,
            ..base
        },
        Conv2dShape {
            n: 1,
            c_in: 347,
            c_out: 347,
            groups: 347,
            stride: [2, 2],
            h: 13,
            w: 13,
            ..base
        },
    ]
}

#[test]
fn conv2d_matches_reference_on_every_path() {
    for (case, s) in conv_cases().into_iter().enumerate() {
        let x = randn(s.n * s.c_in * s.h * s.w, case as u64);
        let w = randn(s.c_out * s.c_in / s.groups * s.kh * s.kw, case as u64 + 50);
        let bias = randn(s.c_out, case as u64 + 99);
        let (want, scale) = conv_ref(&s, &x, &w, Some(&bias));
        with_pools(|| {
            for act in [
                Activation::None,
                Activation::Relu,
                Activation::Clip(-0.5, 0.25),
                Activation::Sigmoid,
            ] {
                let want: Vec<f64> = want.iter().map(|&v| act_ref(act, v)).collect();
                let mut y = vec![f32::NAN; want.len()];
                conv::conv2d(&s, &x, &w, Some(&bias), act, &mut y).unwrap();
                assert_close_scaled(&y, &want, &scale, &format!("conv {act:?} {s:?}"));
            }
        });
    }
}

#[test]
fn conv2d_refuses_bad_geometry_and_lengths() {
    let s = conv_cases()[0];
    let x = vec![0.0; s.n * s.c_in * s.h * s.w];
    let w = vec![0.0; 4 * 3 * 9];
    let mut y = vec![0.0; s.n * 4 * s.out_h() * s.out_w()];
    let bad = Conv2dShape { groups: 2, ..s };
    let err = conv::conv2d(&bad, &x, &w, None, Activation::None, &mut y).unwrap_err();
    assert!(
        err.to_string().contains("do not divide into 2 groups"),
        "{err}"
    );
    let bad = Conv2dShape {
        h: 1,
        pads: [0; 4],
        ..s
    };
    let err =
        conv::conv2d(&bad, &x[..s.n * 3 * 11], &w, None, Activation::None, &mut y).unwrap_err();
    assert!(err.to_string().contains("larger than the padded"), "{err}");
    let err = conv::conv2d(&s, &x, &w[1..], None, Activation::None, &mut y).unwrap_err();
    assert!(
        err.to_string().contains("weights has 107 elements"),
        "{err}"
    );
    let err = conv::conv2d(&s, &x, &w, Some(&[0.0; 3]), Activation::None, &mut y).unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
}

/// Input, weight and bias gradients (and ConvTranspose) against direct accumulation over
/// every (output, tap) pair, on every convolution case.
#[test]
fn conv2d_backward_matches_reference() {
    for (case, s) in conv_cases().into_iter().enumerate() {
        let cg = s.c_in / s.groups;
        let mg = s.c_out / s.groups;
        let x = randn(s.n * s.c_in * s.h * s.w, case as u64 + 7);
        let w = randn(s.c_out * cg * s.kh * s.kw, case as u64 + 8);
        let (oh, ow) = (s.out_h(), s.out_w());
        let dy = randn(s.n * s.c_out * oh * ow, case as u64 + 9);
        // Reference gradients by direct accumulation over every (output, tap).
        let mut dx_ref = vec![0f64; x.len()];
        let mut dw_ref = vec![0f64; w.len()];
        let mut db_ref = vec![0f64; s.c_out];
        for n in 0..s.n {
            for co in 0..s.c_out {
                let g = co / mg;
                for r in 0..oh {
                    for q in 0..ow {
                        let gy = f64::from(dy[((n * s.c_out + co) * oh + r) * ow + q]);
                        db_ref[co] += gy;
                        for ci in 0..cg {
                            for i in 0..s.kh {
                                for j in 0..s.kw {
                                    let ih = (r * s.stride[0] + i * s.dilation[0]) as isize
                                        - s.pads[0] as isize;
                                    let iw = (q * s.stride[1] + j * s.dilation[1]) as isize
                                        - s.pads[1] as isize;
                                    if ih < 0 || iw < 0 || ih >= s.h as isize || iw >= s.w as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((n * s.c_in + g * cg + ci) * s.h + ih as usize) * s.w
                                        + iw as usize;
                                    let wi = ((co * cg + ci) * s.kh + i) * s.kw + j;
                                    dx_ref[xi] += gy * f64::from(w[wi]);
                                    dw_ref[wi] += gy * f64::from(x[xi]);
                                }
                            }
                        }
                    }
                }
            }
        }
        // Sums of up to a few hundred terms in [-1, 1]: an absolute scale of 1 is generous
        // to rounding and far below any wrong term.
        let ones = |n: usize| vec![1.0; n];
        with_pools(|| {
            let mut dx = vec![f32::NAN; x.len()];
            conv::conv2d_backward_input(&s, &dy, &w, &mut dx).unwrap();
            assert_close_scaled(&dx, &dx_ref, &ones(dx.len()), &format!("dx {s:?}"));
            let mut dw = vec![f32::NAN; w.len()];
            let mut db = vec![f32::NAN; s.c_out];
            conv::conv2d_backward_weight(&s, &x, &dy, &mut dw, Some(&mut db)).unwrap();
            assert_close_scaled(&dw, &dw_ref, &ones(dw.len()), &format!("dw {s:?}"));
            assert_close_scaled(&db, &db_ref, &ones(db.len()), &format!("db {s:?}"));
            // ConvTranspose is the input gradient plus a bias per channel.
            let bias = randn(s.c_in, 3);
            let mut y = vec![0.0; x.len()];
            conv::conv_transpose2d(&s, &dy, &w, Some(&bias), &mut y).unwrap();
            let want: Vec<f64> = dx_ref
                .iter()
                .enumerate()
                .map(|(i, v)| v + f64::from(bias[(i / (s.h * s.w)) % s.c_in]))
                .collect();
            assert_close_scaled(&y, &want, &ones(y.len()), &format!("conv_transpose {s:?}"));
        });
    }
}

#[test]
fn im2col_then_col2im_counts_each_input_once_per_covering_tap() {
    let s = Conv2dShape {
        n: 1,
        c_in: 2,
        h: 5,
        w: 6,
        c_out: 1,
        kh: 3,
        kw: 2,
        stride: [2, 1],
        pads: [1, 0, 1, 1],
        dilation: [1, 2],
        groups: 1,
    };
    let x = vec![1.0; 2 * 5 * 6];
    let mut col = vec![f32::NAN; 2 * 3 * 2 * s.out_h() * s.out_w()];
    conv::im2col(&s, &x, &mut col);
    // Every column entry is 1 (inside) or 0 (padding), never left unwritten.
    assert!(col.iter().all(|&v| v == 0.0 || v == 1.0));
    let mut back = vec![0.0; x.len()];
    conv::col2im(&s, &col, &mut back);
    // col2im(im2col(1)) counts how many windows cover each input position.
    let mut count = vec![0.0f32; x.len()];
    for c in 0..2 {
        for r in 0..s.out_h() {
            for q in 0..s.out_w() {
                for i in 0..3 {
                    for j in 0..2 {
                        let ih = (r * 2 + i) as isize - 1;
                        let iw = (q + 2 * j) as isize;
                        if (0..5).contains(&ih) && iw < 6 {
                            count[(c * 5 + ih as usize) * 6 + iw as usize] += 1.0;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(back, count);
}

/// Naive pooling: max (with first-max index) or average over each window.
fn pool_ref(s: &Pool2dShape, x: &[f32], include_pad: bool) -> (Vec<f32>, Vec<i64>, Vec<f64>) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let (mut mx, mut idx, mut avg) = (vec![], vec![], vec![]);
    for p in 0..s.n * s.c {
        for r in 0..oh {
            for q in 0..ow {
                let (mut best, mut bi, mut sum, mut count) =
                    (f32::NEG_INFINITY, -1i64, 0f64, 0usize);
                for i in 0..s.kh {
                    for j in 0..s.kw {
                        let ih =
                            (r * s.stride[0] + i * s.dilation[0]) as isize - s.pads[0] as isize;
                        let iw =
                            (q * s.stride[1] + j * s.dilation[1]) as isize - s.pads[1] as isize;
                        let in_padded =
                            ih < (s.h + s.pads[2]) as isize && iw < (s.w + s.pads[3]) as isize;
                        if ih < 0 || iw < 0 || ih >= s.h as isize || iw >= s.w as isize {
                            if include_pad && in_padded {
                                count += 1;
                            }
                            continue;
                        }
                        let k = p * s.h * s.w + ih as usize * s.w + iw as usize;
                        if x[k] > best || bi < 0 {
                            best = x[k];
                            bi = k as i64;
                        }
                        sum += f64::from(x[k]);
                        count += 1;
                    }
                }
                mx.push(best);
                idx.push(bi);
                avg.push(sum / count.max(1) as f64);
            }
        }
    }
    (mx, idx, avg)
}

fn pool_cases() -> Vec<Pool2dShape> {
    let base = Pool2dShape {
        n: 2,
        c: 3,
        h: 12,
        w: 12,
        kh: 2,
        kw: 2,
        stride: [2, 2],
        pads: [0; 4],
        dilation: [1, 1],
        ceil_mode: false,
    };
    vec![
        base,
        Pool2dShape {
            h: 11,
            w: 13,
            ceil_mode: true,
            ..base
        },
        Pool2dShape {
            kh: 3,
            kw: 3,
            stride: [2, 2],
            pads: [1, 1, 1, 1],
            h: 9,
            w: 10,
            ceil_mode: true,
            ..base
        },
        Pool2dShape {
            kh: 5,
            kw: 5,
            stride: [1, 1],
            pads: [2; 4],
            n: 1,
            c: 64,
            h: 10,
            w: 10,
            ..base
        },
        Pool2dShape {
            kh: 3,
            kw: 2,
            stride: [1, 3],
            pads: [0, 1, 2, 0],
            dilation: [2, 1],
            h: 7,
            w: 8,
            ..base
        },
        // Whole 2x2 blocks (their own loops): odd sizes drop the last row and column, rows
        // of 35 outputs (two whole vectors of 16 and a part), and one large enough for the
        // parallel path under 2 threads.
        Pool2dShape {
            h: 11,
            w: 13,
            ..base
        },
        Pool2dShape {
            n: 1,
            h: 5,
            w: 71,
            ..base
        },
        Pool2dShape {
            n: 2,
            c: 16,
            h: 32,
            w: 34,
            ..base
        },
    ]
}

#[test]
fn pools_match_reference_with_padding_ceil_mode_and_dilation() {
    for s in pool_cases() {
        let x = randn(s.n * s.c * s.h * s.w, s.h as u64);
        let (mx, idx, _) = pool_ref(&s, &x, false);
        let dy = randn(mx.len(), 77);
        with_pools(|| {
            let mut y = vec![0.0; mx.len()];
            pool::max_pool2d(&s, &x, &mut y, None).unwrap();
            assert_eq!(y, mx, "max {s:?}");
            let mut y = vec![0.0; mx.len()];
            let mut ind = vec![0; mx.len()];
            pool::max_pool2d(&s, &x, &mut y, Some(&mut ind)).unwrap();
            assert_eq!((&y, &ind), (&mx, &idx), "max with indices {s:?}");
            let mut dx = vec![0.0; x.len()];
            pool::max_pool2d_backward(&s, &dy, &ind, &mut dx).unwrap();
            let mut want = vec![0f64; x.len()];
            for (g, &i) in dy.iter().zip(&idx) {
                want[i as usize] += f64::from(*g);
            }
            assert_close(&dx, &want, &format!("max backward {s:?}"));
            // An index into another plane is refused, naming the output.
            let last = ind.len() - 1;
            ind[last] = 0;
            let err = pool::max_pool2d_backward(&s, &dy, &ind, &mut dx).unwrap_err();
            let want = format!("index 0 of output {last} lies outside its own input plane");
            assert!(err.to_string().contains(&want), "{err}");
            for include_pad in [false, true] {
                let (_, _, avg) = pool_ref(&s, &x, include_pad);
                let mut y = vec![0.0; avg.len()];
                pool::avg_pool2d(&s, include_pad, &x, &mut y).unwrap();
                assert_close(&y, &avg, &format!("avg include_pad={include_pad} {s:?}"));
                // Backward is the adjoint: <avg(x), dy> = <x, avg_backward(dy)>.
                let mut dx = vec![0.0; x.len()];
                pool::avg_pool2d_backward(&s, include_pad, &dy, &mut dx).unwrap();
                let lhs: f64 = avg.iter().zip(&dy).map(|(a, g)| a * f64::from(*g)).sum();
                let rhs: f64 = x
                    .iter()
                    .zip(&dx)
                    .map(|(a, g)| f64::from(*a) * f64::from(*g))
                    .sum();
                assert!(
                    (lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()),
                    "avg backward {s:?}: {lhs} vs {rhs}"
                );
            }
        });
    }
    // Ties go to the first tap in row-major order, on the 2x2 block loops and the tap walk.
    for s in [pool_cases()[0], pool_cases()[1]] {
        let x = vec![1.0; s.n * s.c * s.h * s.w];
        let (mx, idx, _) = pool_ref(&s, &x, false);
        let (mut y, mut ind) = (vec![0.0; mx.len()], vec![0; mx.len()]);
        pool::max_pool2d(&s, &x, &mut y, Some(&mut ind)).unwrap();
        assert_eq!((&y, &ind), (&mx, &idx), "ties {s:?}");
    }
    // ONNX ceil_mode: 13 wide, window 2 stride 2 gives 7 outputs (6 with floor).
    assert_eq!(pool_cases()[1].out_w(), 7);
    assert_eq!(
        Pool2dShape {
            ceil_mode: false,
            ..pool_cases()[1]
        }
        .out_w(),
        6
    );
    let s = pool_cases()[0];
    let err = pool::max_pool2d(&s, &[0.0; 10], &mut [0.0; 72], None).unwrap_err();
    assert!(err.to_string().contains("input has 10 elements"), "{err}");
}

#[test]
fn global_avg_pool_is_the_plane_mean() {
    // Planes of 2x2 (squeeze-and-excitation) and 7 elements in numbers that split into
    // blocks of planes, the last one short, on the parallel path.
    for (planes, plane) in [(6, 49), (64 * 240, 4), (3000, 7)] {
        let x = randn(planes * plane, 3);
        let want: Vec<f64> = x
            .chunks(plane)
            .map(|p| p.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64)
            .collect();
        with_pools(|| {
            let mut y = vec![0.0; planes];
            pool::global_avg_pool(planes, plane, &x, &mut y).unwrap();
            assert_close(&y, &want, "global average pool");
        });
    }
}

#[test]
fn softmax_log_softmax_layer_norm_match_reference() {
    for (rows, cols) in [(1, 1), (3, 7), (128, 384), (40, 1000), (5, 17)] {
        // Large logits: a softmax without the max subtraction overflows.
        let x: Vec<f32> = randn(rows * cols, cols as u64)
            .iter()
            .map(|v| v * 50.0 + 60.0)
            .collect();
        let scale = randn(cols, 1);
        let bias = randn(cols, 2);
        let mut sm = Vec::new();
        let mut lsm = Vec::new();
        let mut ln = Vec::new();
        let (mut means, mut invs) = (Vec::new(), Vec::new());
        for row in x.chunks(cols) {
            let r: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
            let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = r.iter().map(|v| (v - m).exp()).sum();
            sm.extend(r.iter().map(|v| (v - m).exp() / sum));
            lsm.extend(r.iter().map(|v| v - m - sum.ln()));
            let mean = r.iter().sum::<f64>() / cols as f64;
            let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cols as f64;
            let inv = 1.0 / (var + 1e-5).sqrt();
            ln.extend(
                r.iter()
                    .enumerate()
                    .map(|(j, v)| (v - mean) * inv * f64::from(scale[j]) + f64::from(bias[j])),
            );
            means.push(mean);
            invs.push(inv);
        }
        with_pools(|| {
            let mut y = vec![0.0; x.len()];
            norm::softmax(&x, cols, &mut y).unwrap();
            assert_close(&y, &sm, "softmax");
            norm::log_softmax(&x, cols, &mut y).unwrap();
            // log-softmax values reach -5000 here; relative to that scale.
            assert_close_scaled(&y, &lsm, &vec![1.0; lsm.len()], "log_softmax");
            let (mut m, mut i) = (vec![0.0; rows], vec![0.0; rows]);
            norm::layer_norm(
                &x,
                cols,
                &scale,
                Some(&bias),
                1e-5,
                &mut y,
                Some((&mut m, &mut i)),
            )
            .unwrap();
            assert_close_scaled(&y, &ln, &vec![1.0; ln.len()], "layer_norm");
            assert_close(&m, &means, "layer_norm mean");
            assert_close(&i, &invs, "layer_norm inv_std");
        });
    }
    let err = norm::softmax(&[0.0; 7], 3, &mut [0.0; 7]).unwrap_err();
    assert!(err.to_string().contains("not whole rows of 3"), "{err}");
}

/// `x` (row-major, `shape`) read at the input index `map(output index)` for every output
/// index of `out_shape`.
fn gather_ref(
    x: &[f32],
    shape: &[usize],
    out_shape: &[usize],
    map: impl Fn(&[usize]) -> Vec<usize>,
) -> Vec<f64> {
    let st = strides(shape);
    (0..out_shape.iter().product())
        .map(|i| {
            let src = map(&unravel(i, out_shape));
            f64::from(x[src.iter().zip(&st).map(|(a, b)| a * b).sum::<usize>()])
        })
        .collect()
}

fn run_gather(view: &StridedView, x: &[f32], want: &[f64], what: &str) {
    with_pools(|| {
        let mut y = vec![f32::NAN; view.numel()];
        layout::gather(view, x, &mut y).unwrap();
        assert_close(&y, want, what);
    });
}

#[test]
fn gather_transposes_slices_and_repeats_like_the_reference() {
    // Large enough (>= 16K elements) for the parallel path under 2 threads, and small.
    for shape in [vec![2, 3, 4, 5], vec![1, 16, 4, 2100], vec![3, 1, 64, 97]] {
        let x = randn(shape.iter().product(), shape[3] as u64);
        let whole = StridedView::contiguous(&shape);
        for perm in [[0, 2, 1, 3], [3, 2, 1, 0], [1, 0, 3, 2], [0, 1, 2, 3]] {
            let view = whole.permute(&perm).unwrap();
            let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let want = gather_ref(&x, &shape, &out, |i| {
                let mut src = vec![0; 4];
                for (d, &p) in perm.iter().enumerate() {
                    src[p] = i[d];
                }
                src
            });
            run_gather(
                &view,
                &x,
                &want,
                &format!("transpose {shape:?} by {perm:?}"),
            );
        }
        // Slices: a forward step of 2 on the last axis, a backward one on axis 2, empty.
        let (w, h) = (shape[3], shape[2]);
        let view = whole
            .narrow(3, 1, (w - 1).div_ceil(2), 2)
            .unwrap()
            .narrow(2, h - 1, h.div_ceil(3), -3)
            .unwrap();
        let want = gather_ref(&x, &shape, &view.dims, |i| {
            vec![i[0], i[1], h - 1 - 3 * i[2], 1 + 2 * i[3]]
        });
        run_gather(&view, &x, &want, &format!("slice of {shape:?}"));
        assert_eq!(whole.narrow(1, 0, 0, 1).unwrap().numel(), 0);
        // Nearest upsampling by 2 (rows) and 3 (columns).
        let view = whole.repeat(3, 3).unwrap().repeat(2, 2).unwrap();
        let out = [shape[0], shape[1], 2 * h, 3 * w];
        let want = gather_ref(&x, &shape, &out, |i| vec![i[0], i[1], i[2] / 2, i[3] / 3]);
        run_gather(&view, &x, &want, &format!("repeat of {shape:?}"));
    }
}

#[test]
fn gather_refuses_views_outside_the_input() {
    let whole = StridedView::contiguous(&[2, 3]);
    assert!(whole.narrow(1, 2, 2, 1).is_none(), "past the end");
    assert!(whole.narrow(1, 0, 2, -1).is_none(), "before the start");
    assert!(whole.permute(&[0, 0]).is_none(), "not a permutation");
    let err = layout::gather(&whole, &[0.0; 5], &mut [0.0; 6]).unwrap_err();
    assert!(err.to_string().contains("reads elements 0..=5"), "{err}");
    let err = layout::gather(&whole, &[0.0; 6], &mut [0.0; 5]).unwrap_err();
    assert!(err.to_string().contains("output has 5 elements"), "{err}");
}

/// im2col against its definition, element by element (NaN-initialised output, so every entry
/// must be written), on shapes that take the stride-1 "same width" path (a tap's valid rows as
/// one shifted copy: asymmetric and wide padding, height dilation, a one-row image, padding
/// wider than the image) and on ones that do not.
#[test]
fn im2col_matches_its_definition() {
    let base = Conv2dShape {
        n: 1,
        c_in: 2,
        h: 6,
        w: 7,
        c_out: 1,
        kh: 3,
        kw: 3,
        stride: [1, 1],
        pads: [1, 1, 1, 1],
        dilation: [1, 1],
        groups: 1,
    };
    let cases = [
        base,
        Conv2dShape {
            pads: [0, 2, 2, 0],
            ..base
        },
        Conv2dShape {
            pads: [2, 0, 0, 2],
            dilation: [2, 1],
            ..base
        },
        Conv2dShape {
            h: 1,
            pads: [1, 1, 1, 1],
            ..base
        },
        Conv2dShape {
            kh: 5,
            kw: 5,
            h: 2,
            w: 3,
            pads: [2, 2, 2, 2],
            ..base
        },
        Conv2dShape {
            kw: 1,
            pads: [0, 0, 0, 0],
            ..base
        },
        Conv2dShape {
            stride: [2, 1],
            ..base
        },
        Conv2dShape {
            pads: [1, 0, 1, 0],
            ..base
        },
    ];
    for s in cases {
        let (oh, ow) = (s.out_h(), s.out_w());
        let x: Vec<f32> = (0..s.c_in * s.h * s.w).map(|v| v as f32 + 1.0).collect();
        let mut col = vec![f32::NAN; s.c_in * s.kh * s.kw * oh * ow];
        conv::im2col(&s, &x, &mut col);
        for c in 0..s.c_in {
            for i in 0..s.kh {
                for j in 0..s.kw {
                    for r in 0..oh {
                        for q in 0..ow {
                            let ih =
                                (r * s.stride[0] + i * s.dilation[0]) as isize - s.pads[0] as isize;
                            let iw =
                                (q * s.stride[1] + j * s.dilation[1]) as isize - s.pads[1] as isize;
                            let want = if (0..s.h as isize).contains(&ih)
                                && (0..s.w as isize).contains(&iw)
                            {
                                x[(c * s.h + ih as usize) * s.w + iw as usize]
                            } else {
                                0.0
                            };
                            let got = col[(((c * s.kh + i) * s.kw + j) * oh + r) * ow + q];
                            assert_eq!(got, want, "{s:?}: c {c} tap ({i}, {j}) at ({r}, {q})");
                        }
                    }
                }
            }
        }
    }
}

/// `summed` adds one, two or three terms in order, below and above the parallel size, under
/// 1 and 2 threads (`copied` is one term), and refuses terms of different lengths.
#[test]
fn summed_adds_terms_elementwise_and_refuses_other_lengths() {
    use whittle_exec::kernels::{copied, summed};
    with_pools(|| {
        for len in [0, 5, 70_001, 200_000] {
            let terms: Vec<Vec<f32>> = (0..3)
                .map(|t| {
                    (0..len)
                        .map(|i| ((i * 7 + t * 13) % 101) as f32 - 50.0)
                        .collect()
                })
                .collect();
            for count in 1..=3 {
                let refs: Vec<&[f32]> = terms[..count].iter().map(Vec::as_slice).collect();
                let got = summed(&refs).unwrap();
                assert_eq!(got.len(), len);
                for (i, g) in got.iter().enumerate() {
                    let want: f32 = terms[..count].iter().map(|t| t[i]).sum();
                    assert_eq!(*g, want, "{count} terms of {len}: element {i}");
                }
            }
            assert_eq!(copied(&terms[2]), terms[2]);
        }
    });
    let err = summed(&[&[1.0, 2.0], &[1.0]]).unwrap_err();
    assert!(err.message.contains("1 elements"), "{err}");
}

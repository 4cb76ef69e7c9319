//! Micro-benchmark of the planned executor's GEMM and convolution kernels against candle's
//! `matmul` and `conv2d` (the operators' current path) at LeNet5, MiniLM-L3 and YOLOv8n-320
//! shapes, and faer (the GEMM backend) against the `gemm` crate. Thread count:
//! `RAYON_NUM_THREADS` (candle reads it too). Prints one Markdown row per shape: median
//! GFLOP/s of candle, the gemm crate, the kernel with a row-major right operand, with a
//! transposed view (ONNX `transB = 1`) and with `PackedWeights`, then the kernel's speed-up
//! over candle. After a blank line, a second table: elementwise and row kernels against
//! candle's, in millions of elements per second. Run through `bench/kernels.sh`.

use candle_core::{Device, Tensor};
use std::time::{Duration, Instant};
use whittle_exec::kernels::activation::{unary, Activation, UnaryOp};
use whittle_exec::kernels::conv::{conv2d, Conv2dShape};
use whittle_exec::kernels::gemm::{gemm, Epilogue, MatRef, PackedWeights};
use whittle_exec::kernels::norm::{layer_norm, softmax};

/// Median seconds per call of `f` over repeats filling about `budget` (at least 5), after
/// warm-up calls.
fn median_secs(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 5 || (start.elapsed() < budget && times.len() < 2000) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                / (1 << 24) as f32
                - 0.5
        })
        .collect()
}

fn gflops(flops: f64, secs: f64) -> String {
    format!("{:.1}", flops / secs / 1e9)
}

fn bench_gemm(name: &str, m: usize, k: usize, n: usize, budget: Duration) {
    let a = values(m * k, 1);
    let b = values(k * n, 2);
    let mut c = vec![0.0; m * n];
    let flops = 2.0 * (m * n * k) as f64;
    let ta = Tensor::from_slice(&a, (m, k), &Device::Cpu).unwrap();
    let tb = Tensor::from_slice(&b, (k, n), &Device::Cpu).unwrap();
    let candle = median_secs(budget, || {
        std::hint::black_box(ta.matmul(&tb).unwrap());
    });
    // The gemm crate (sarah-ek) on the same operands: the backend measured against faer.
    let par = if rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let gemm_crate = median_secs(budget, || {
        // SAFETY: a is m x k, b is k x n, c is m x n, all row-major and distinct.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        }
    });
    let am = MatRef::row_major(&a, m, k).unwrap();
    let bm = MatRef::row_major(&b, k, n).unwrap();
    let plain = median_secs(budget, || {
        gemm(am, bm, &mut c, 1.0, 0.0, &Epilogue::NONE).unwrap();
    });
    // ONNX Gemm with transB = 1: weights stored [n, k].
    let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
    let btm = MatRef::row_major(&bt, n, k).unwrap().t();
    let trans = median_secs(budget, || {
        gemm(am, btm, &mut c, 1.0, 0.0, &Epilogue::NONE).unwrap();
    });
    // The same weights pre-packed once from the transposed storage.
    let packed = PackedWeights::new(btm);
    let pk = median_secs(budget, || {
        gemm(am, packed.as_ref(), &mut c, 1.0, 0.0, &Epilogue::NONE).unwrap();
    });
    println!(
        "| {name} | GEMM {m}x{k}x{n} | {} | {} | {} | {} | {} | {:.2}x |",
        gflops(flops, candle),
        gflops(flops, gemm_crate),
        gflops(flops, plain),
        gflops(flops, trans),
        gflops(flops, pk),
        candle / plain.min(pk)
    );
}

fn bench_conv(name: &str, s: Conv2dShape, budget: Duration) {
    let cg = s.c_in / s.groups;
    let x = values(s.n * s.c_in * s.h * s.w, 3);
    let w = values(s.c_out * cg * s.kh * s.kw, 4);
    let bias = values(s.c_out, 5);
    let mut y = vec![0.0; s.n * s.c_out * s.out_h() * s.out_w()];
    let flops = 2.0 * (s.n * s.c_out * s.out_h() * s.out_w() * cg * s.kh * s.kw) as f64;
    let tx = Tensor::from_slice(&x, (s.n, s.c_in, s.h, s.w), &Device::Cpu).unwrap();
    let tw = Tensor::from_slice(&w, (s.c_out, cg, s.kh, s.kw), &Device::Cpu).unwrap();
    let tb = Tensor::from_slice(&bias, (1, s.c_out, 1, 1), &Device::Cpu).unwrap();
    // candle's conv2d then the bias add, as the operator does today.
    let candle = median_secs(budget, || {
        let y = tx
            .conv2d(&tw, s.pads[0], s.stride[0], s.dilation[0], s.groups)
            .unwrap();
        std::hint::black_box(y.broadcast_add(&tb).unwrap());
    });
    let ours = median_secs(budget, || {
        conv2d(&s, &x, &w, Some(&bias), Activation::None, &mut y).unwrap();
    });
    println!(
        "| {name} | conv {}x{}x{}x{} -> {} k{}x{} s{} g{} | {} | | {} | | | {:.2}x |",
        s.n,
        s.c_in,
        s.h,
        s.w,
        s.c_out,
        s.kh,
        s.kw,
        s.stride[0],
        s.groups,
        gflops(flops, candle),
        gflops(flops, ours),
        candle / ours
    );
}

/// candle's version of a unary kernel.
type CandleUnary = fn(&Tensor) -> Tensor;

/// Elementwise and row kernels against candle's equivalents (where candle has one) on
/// MiniLM-sized tensors: millions of elements per second.
fn bench_elementwise(budget: Duration) {
    let (rows, cols) = (128, 1536);
    let x = values(rows * cols, 6);
    let mut y = vec![0.0; x.len()];
    let tx = Tensor::from_slice(&x, (rows, cols), &Device::Cpu).unwrap();
    let melems = |secs: f64| format!("{:.0}", x.len() as f64 / secs / 1e6);
    let cases: [(&str, UnaryOp, CandleUnary); 4] = [
        ("GELU (erf)", UnaryOp::Act(Activation::Gelu), |t| {
            t.gelu_erf().unwrap()
        }),
        ("SiLU", UnaryOp::Act(Activation::Silu), |t| {
            t.silu().unwrap()
        }),
        ("Tanh", UnaryOp::Act(Activation::Tanh), |t| {
            t.tanh().unwrap()
        }),
        ("Exp", UnaryOp::Exp, |t| t.exp().unwrap()),
    ];
    for (name, op, candle_op) in cases {
        let candle = median_secs(budget, || {
            std::hint::black_box(candle_op(&tx));
        });
        let ours = median_secs(budget, || unary(op, &x, &mut y).unwrap());
        println!(
            "| {name} | {rows}x{cols} | {} | {} | {:.2}x |",
            melems(candle),
            melems(ours),
            candle / ours
        );
    }
    // Softmax over rows of 128 (attention scores) as candle's composed max/exp/sum/div.
    let candle = median_secs(budget, || {
        let t = tx.reshape((rows * cols / 128, 128)).unwrap();
        let e = t
            .broadcast_sub(&t.max_keepdim(1).unwrap())
            .unwrap()
            .exp()
            .unwrap();
        std::hint::black_box(e.broadcast_div(&e.sum_keepdim(1).unwrap()).unwrap());
    });
    let ours = median_secs(budget, || softmax(&x, 128, &mut y).unwrap());
    println!(
        "| Softmax (rows of 128) | {rows}x{cols} | {} | {} | {:.2}x |",
        melems(candle),
        melems(ours),
        candle / ours
    );
    let scale = values(cols, 7);
    let ours = median_secs(budget, || {
        layer_norm(&x, cols, &scale, Some(&scale), 1e-5, &mut y, None).unwrap()
    });
    println!("| LayerNorm | {rows}x{cols} | | {} | |", melems(ours));
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("KERNELS_BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(400),
    );
    let conv = |n, c_in, hw, c_out, k, stride, groups| Conv2dShape {
        n,
        c_in,
        h: hw,
        w: hw,
        c_out,
        kh: k,
        kw: k,
        stride: [stride; 2],
        pads: [k / 2; 4],
        dilation: [1, 1],
        groups,
    };
    let lenet = |n, c_in, hw, c_out| Conv2dShape {
        pads: [0; 4],
        ..conv(n, c_in, hw, c_out, 5, 1, 1)
    };
    bench_conv("LeNet5 b1", lenet(1, 1, 28, 6), budget);
    bench_conv("LeNet5 b32", lenet(32, 1, 28, 6), budget);
    bench_conv("LeNet5 b32", lenet(32, 6, 12, 16), budget);
    bench_gemm("LeNet5 b32", 32, 256, 120, budget);
    bench_gemm("MiniLM seq 128", 128, 384, 384, budget);
    bench_gemm("MiniLM seq 128", 128, 384, 1536, budget);
    bench_gemm("MiniLM seq 128", 128, 1536, 384, budget);
    bench_gemm("MiniLM attention", 128, 32, 128, budget);
    bench_conv("YOLOv8n-320", conv(1, 3, 320, 16, 3, 2, 1), budget);
    bench_conv("YOLOv8n-320", conv(1, 16, 160, 32, 3, 2, 1), budget);
    bench_conv("YOLOv8n-320", conv(1, 32, 80, 32, 1, 1, 1), budget);
    bench_conv("YOLOv8n-320", conv(1, 16, 80, 16, 3, 1, 1), budget);
    bench_conv("YOLOv8n-320", conv(1, 64, 40, 64, 3, 1, 1), budget);
    bench_conv("YOLOv8n-320", conv(1, 128, 20, 256, 3, 2, 1), budget);
    bench_conv("YOLOv8n-320", conv(1, 256, 10, 256, 1, 1, 1), budget);
    bench_conv("depthwise 3x3", conv(1, 64, 40, 64, 3, 1, 64), budget);
    // A blank line, then the second table's rows.
    println!();
    bench_elementwise(budget);
}

//! Developer benchmark used by `bench/executor_vs_ort.py`: median latency of whittle's executor.
//!
//! usage: latency MODEL BATCH SEQ WARMUP RUNS [THREADS]
//! THREADS sizes the rayon pool the kernels run in (default: rayon's, all cores).
//! Symbolic dims: the first becomes BATCH, others SEQ. Float inputs get values in [0,1);
//! integer inputs named `*mask*` get 1, other integer inputs token ids 1000..1999.
//! Prints one JSON object: {"median_ms":..,"mean_ms":..,"min_ms":..}.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use whittle_exec::{Executor, Value};
use whittle_ir::{DataType, Model};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, batch, seq, warmup, runs, threads) = match args.as_slice() {
        [m, b, s, w, r] => (m, b, s, w, r, None),
        [m, b, s, w, r, t] => (m, b, s, w, r, Some(t)),
        _ => {
            eprintln!("usage: latency MODEL BATCH SEQ WARMUP RUNS [THREADS]");
            std::process::exit(2);
        }
    };
    let parse = |s: &String| s.parse::<usize>().expect("a number");
    let (batch, seq, warmup, runs) = (parse(batch), parse(seq), parse(warmup), parse(runs));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.map_or(0, parse))
        .build()
        .expect("a thread pool");
    pool.install(|| measure(model, batch, seq, warmup, runs));
}

/// Times `runs` runs of `model` after `warmup` and prints the JSON line.
fn measure(model: &str, batch: usize, seq: usize, warmup: usize, runs: usize) {
    let model = Model::load(model).expect("load the model");
    let exec = Executor::new(&model).expect("prepare the model");
    let mut feed = HashMap::new();
    for spec in exec.inputs() {
        let dims: Vec<usize> = spec
            .dims
            .clone()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, d)| d.unwrap_or(if i == 0 { batch } else { seq }))
            .collect();
        let n: usize = dims.iter().product();
        let value = match spec.dtype {
            Some(DataType::Int64) => {
                let mask = spec.name.contains("mask");
                let v: Vec<i64> = (0..n)
                    .map(|i| {
                        if mask {
                            1
                        } else {
                            1000 + (i as i64 * 7919) % 1000
                        }
                    })
                    .collect();
                Value::new(
                    Tensor::from_vec(v, dims, &Device::Cpu).unwrap(),
                    DataType::Int64,
                )
            }
            _ => {
                let v: Vec<f32> = (0..n)
                    .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0)
                    .collect();
                Value::f32(Tensor::from_vec(v, dims, &Device::Cpu).unwrap())
            }
        };
        feed.insert(spec.name.clone(), value.unwrap());
    }
    for _ in 0..warmup {
        exec.run(feed.clone()).expect("run");
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            exec.run(feed.clone()).expect("run");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "{{\"median_ms\":{:.4},\"mean_ms\":{:.4},\"min_ms\":{:.4}}}",
        times[times.len() / 2],
        mean,
        times[0]
    );
}

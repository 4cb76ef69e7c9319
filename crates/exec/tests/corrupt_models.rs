//! Bad input never panics: flipped and truncated bytes of a real model end in Ok or a clean Err
//! at every stage (decode, validate, prepare, run).

mod common;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use candle_core::{Device, Tensor};
use whittle_exec::{Executor, Value};
use whittle_ir::Model;

/// Deterministic xorshift64 so every run tries the same mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Loads, validates, prepares and runs; returns whether every stage succeeded.
fn attempt(bytes: &[u8], input: &Value) -> bool {
    let Ok(model) = Model::from_bytes(bytes, None) else {
        return false;
    };
    if whittle_ir::validate(&model).is_err() {
        return false;
    }
    let Ok(exec) = Executor::new(&model) else {
        return false;
    };
    let Some(name) = exec.inputs().first().map(|s| s.name.clone()) else {
        return false;
    };
    exec.run(HashMap::from([(name, input.clone())])).is_ok()
}

#[test]
fn flipped_and_truncated_lenet5_never_panics() {
    let original = std::fs::read(common::model_path("mnist_lenet5.onnx")).unwrap();
    let input =
        Value::f32(Tensor::ones((1, 1, 28, 28), candle_core::DType::F32, &Device::Cpu).unwrap())
            .unwrap();
    assert!(attempt(&original, &input), "the unmodified model must run");

    // The weights are most of the file: aim half the flips at the graph structure (its head
    // and tail), where a flip changes attributes, names and dims rather than a weight value.
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let structural = 4096.min(original.len());
    let mut cases = Vec::new();
    for i in 0..1200 {
        let mut bytes = original.clone();
        match i % 4 {
            0 => bytes.truncate(rng.below(original.len())),
            1 => {
                let at = rng.below(structural);
                bytes[at] ^= 1 << rng.below(8);
            }
            2 => {
                let at = original.len() - 1 - rng.below(structural);
                bytes[at] ^= 1 << rng.below(8);
            }
            _ => {
                for _ in 0..4 {
                    let at = rng.below(original.len());
                    bytes[at] = rng.next() as u8;
                }
            }
        }
        cases.push(bytes);
    }
    let mut ok = 0;
    for (i, bytes) in cases.iter().enumerate() {
        match catch_unwind(AssertUnwindSafe(|| attempt(bytes, &input))) {
            Ok(true) => ok += 1,
            Ok(false) => {}
            Err(_) => panic!("mutation #{i} made whittle panic"),
        }
    }
    // Both outcomes must occur, or the mutations did not exercise anything.
    assert!(
        ok > 0 && ok < cases.len(),
        "{ok} of {} mutated models ran",
        cases.len()
    );
}

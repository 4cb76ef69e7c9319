//! What to say when a quantized model runs slower than its input in ONNX Runtime (dynamic
//! INT8 of a convolutional model runs `ConvInteger`, which ORT's CPU provider executes far
//! slower than float `Conv`): the operators to blame and a faster alternative. The
//! measurement itself is [`whittle_bench::latency`].

use std::collections::BTreeMap;

use whittle_bench::latency::LatencyComparison;
use whittle_ir::Model;

use super::plan::QUANTIZED_OPS;

/// The operator types a conversion adds that can run slower than the float operators
/// they replace: integer and dequantizing operators, and casts.
fn added_ops(before: &Model, after: &Model) -> Vec<(String, usize)> {
    let count = |m: &Model| {
        let mut c: BTreeMap<String, usize> = BTreeMap::new();
        for n in &m.graph().node {
            *c.entry(n.op_type.clone()).or_default() += 1;
        }
        c
    };
    let (old, new) = (count(before), count(after));
    let suspect = |op: &str| {
        QUANTIZED_OPS.contains(&op) || matches!(op, "MatMulNBits" | "GatherBlockQuantized" | "Cast")
    };
    let mut added: Vec<(String, usize)> = new
        .into_iter()
        .filter(|(op, n)| suspect(op) && *n > old.get(op).copied().unwrap_or(0))
        .collect();
    // ConvInteger first: ORT's CPU kernel for it is the usual culprit.
    added.sort_by_key(|(op, n)| (op != "ConvInteger", std::cmp::Reverse(*n)));
    added
}

/// What to try instead of a `mode` result that runs slower (`uses_conv_integer`: the
/// result runs convolutions as ConvInteger).
fn alternative(mode: &str, uses_conv_integer: bool) -> &'static str {
    match mode {
        "dynamic" if uses_conv_integer => {
            "static INT8 (`mode` static with `calib_data`), whose convolutions run as fused \
             integer kernels, or dynamic INT8 of the MatMul/Gemm layers only (`op_types` MatMul,Gemm)"
        }
        "dynamic" => "static INT8 (`mode` static with `calib_data`)",
        "static" => {
            "the other layout (`format` qdq or qoperator), or fewer quantized layers \
             (`exclude`, `op_types`); the float model where neither helps"
        }
        "int4" => "dynamic INT8 (`mode` dynamic)",
        _ => "the float model on this CPU (FP16 pays off where the hardware computes in float16)",
    }
}

/// A warning when `latency` says the `mode` result (`after`, from `before`) is slower:
/// the figures, the operators the conversion added and what to try instead.
pub fn slowdown_warning(
    mode: &str,
    before: &Model,
    after: &Model,
    latency: &LatencyComparison,
) -> Option<String> {
    if !latency.is_slower() {
        return None;
    }
    let added = added_ops(before, after);
    let ops: Vec<String> = added.iter().map(|(op, n)| format!("{op} x{n}")).collect();
    let blame = if ops.is_empty() {
        String::new()
    } else {
        format!("; operators it adds: {}", ops.join(", "))
    };
    let conv_integer = added.iter().any(|(op, _)| op == "ConvInteger");
    Some(format!(
        "the {mode} model runs {:.2}x slower than the input in ONNX Runtime ({:.3} ms vs {:.3} ms \
         at batch 1, {} thread(s)){blame}; faster: {}",
        latency.ratio(),
        latency.after,
        latency.before,
        latency.threads,
        alternative(mode, conv_integer)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::util::testing::{model, node, value};

    fn comparison(before: f64, after: f64) -> LatencyComparison {
        LatencyComparison {
            before,
            after,
            batch: 1,
            threads: 1,
            runs: 15,
        }
    }

    #[test]
    fn slower_dynamic_convolutions_name_conv_integer_and_static_mode() {
        let float = model(
            vec![node("Conv", &["x", "w"], &["y"])],
            vec![value("x", &[1, 1, 4, 4])],
            vec![value("y", &[1, 1, 4, 4])],
            vec![],
        );
        let dynamic = model(
            vec![
                node("DynamicQuantizeLinear", &["x"], &["q", "s", "z"]),
                node("ConvInteger", &["q", "w", "z"], &["i"]),
                node("Cast", &["i"], &["f"]),
                node("Mul", &["f", "s"], &["y"]),
            ],
            vec![value("x", &[1, 1, 4, 4])],
            vec![value("y", &[1, 1, 4, 4])],
            vec![],
        );
        let slow = comparison(0.5, 2.3);
        let warning = slowdown_warning("dynamic", &float, &dynamic, &slow).unwrap();
        assert!(
            warning.contains("4.60x slower")
                && warning.contains(
                    "operators it adds: ConvInteger x1, Cast x1, DynamicQuantizeLinear x1"
                )
                && warning.contains("`mode` static"),
            "{warning}"
        );
        // Within the margin, or faster: no warning.
        for after in [0.52, 0.3] {
            assert!(
                slowdown_warning("dynamic", &float, &dynamic, &comparison(0.5, after)).is_none()
            );
        }
    }
}

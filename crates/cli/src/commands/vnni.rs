//! ONNX Runtime's x86 int8 kernels multiply uint8 activations by int8 weights with
//! `vpmaddubsw`, whose 16-bit pair sums saturate unless the CPU has VNNI. Full-range int8
//! weights then lose accuracy in ORT on that CPU (measured: `zoo:mobilenetv3-small` 85.70%
//! float, 83.69% static INT8, 85.75% with 7-bit weights); `--reduce-range` avoids it.

use whittle_passes::quantize::{QuantConfig, QuantType};

/// A note for the report when `cfg` writes full-range int8 weights and this CPU has no
/// VNNI.
pub(crate) fn reduce_range_note(cfg: &QuantConfig) -> Option<String> {
    (cfg.weight_type == QuantType::Int8 && !cfg.reduce_range && !has_vnni()).then(|| {
        "this CPU has no VNNI: ONNX Runtime's int8 kernels can saturate with full-range \
         int8 weights on it and lose accuracy; --reduce-range (7-bit weights) avoids that"
            .to_string()
    })
}

/// Whether this CPU multiplies int8 without saturating (VNNI on x86; other architectures
/// use other kernels and are not flagged).
fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

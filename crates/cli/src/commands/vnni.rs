//! The note on ONNX Runtime's int8 kernels on CPUs without VNNI (see
//! `whittle_pipeline::step::quantize::reduce_range_note`), worded with the CLI's flags.

use whittle_passes::quantize::QuantConfig;

use super::quantize::flag_words;

/// A note for the report when `cfg` writes full-range int8 weights and this CPU has no
/// VNNI.
pub(crate) fn reduce_range_note(cfg: &QuantConfig) -> Option<String> {
    whittle_pipeline::step::quantize::reduce_range_note(cfg).map(|n| flag_words(&n))
}

//! Output helpers shared by commands: JSON printing and human-readable sizes and counts
//! (shared with whittle-pipeline's reports).

use serde::Serialize;

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub use whittle_ir::memory::human_bytes;
pub use whittle_pipeline::report::human_count;

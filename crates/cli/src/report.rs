//! Output helpers shared by commands: JSON printing and human-readable sizes (the latter
//! shared with whittle-bench's renderers).

use serde::Serialize;

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub use whittle_bench::render::{human_bytes, human_count};

//! Memory bounds: a size asked for by a model, a dataset or an option is checked in bytes
//! against the memory the machine has available before anything is allocated.

use crate::error::{IrError, Result};

/// Environment variable that caps the memory whittle plans to use, in bytes (for tests and
/// for sharing a machine): the smaller of it and the available memory applies.
pub const LIMIT_ENV: &str = "WHITTLE_MEMORY_LIMIT";

/// Bytes whittle may allocate now: `MemAvailable` from `/proc/meminfo` (where readable),
/// capped by [`LIMIT_ENV`]. `None` when neither is known.
pub fn available_bytes() -> Option<u64> {
    let from_os = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_mem_available(&text));
    let from_env = std::env::var(LIMIT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    match (from_os, from_env) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Fails, naming `what`, when `bytes` exceeds the memory available (see
/// [`available_bytes`]). `bytes` is `None` when the size overflowed while being computed.
pub fn ensure_fits(bytes: Option<u128>, what: &str) -> Result<()> {
    let available = available_bytes();
    match (bytes, available) {
        (None, _) => Err(IrError::invalid(format!(
            "{what} is too large (its size overflows)"
        ))),
        (Some(b), Some(avail)) if b > avail as u128 => Err(IrError::invalid(format!(
            "{what} needs {} but only {} of memory is available",
            human_bytes(b),
            human_bytes(avail as u128)
        ))),
        _ => Ok(()),
    }
}

/// Bytes of `elements` values of `element_bytes` each, `None` on overflow.
pub fn tensor_bytes(dims: &[usize], element_bytes: usize) -> Option<u128> {
    dims.iter()
        .try_fold(element_bytes as u128, |acc, &d| acc.checked_mul(d as u128))
}

/// A byte count as B / KiB / MiB / ... with one decimal: `1536` -> `"1.5 KiB"`.
pub fn human_bytes(bytes: impl Into<u128>) -> String {
    let bytes: u128 = bytes.into();
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_available_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(text), Some(2048 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn refuses_more_than_the_machine_has_and_names_what() {
        let err = ensure_fits(Some(u128::MAX / 2), "the output 'y'").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("the output 'y' needs"), "{msg}");
        assert!(ensure_fits(None, "x")
            .unwrap_err()
            .to_string()
            .contains("overflows"));
        ensure_fits(Some(1024), "a small tensor").unwrap();
    }

    #[test]
    fn tensor_bytes_multiplies_and_detects_overflow() {
        assert_eq!(tensor_bytes(&[2, 3], 4), Some(24));
        assert_eq!(tensor_bytes(&[], 4), Some(4));
        assert_eq!(tensor_bytes(&[usize::MAX, usize::MAX, usize::MAX], 8), None);
    }

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(512u32), "512 B");
        assert_eq!(human_bytes(1536u32), "1.5 KiB");
        assert_eq!(human_bytes(3u64 << 30), "3.0 GiB");
    }
}

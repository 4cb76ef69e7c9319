//! TODO

use super::Registry;

/// Registers this family.
pub fn register(_r: &mut Registry) {}

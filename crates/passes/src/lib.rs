//! Passes: each compression or optimization technique is one module that turns a
//! [`whittle_ir::Model`] into another, using the executor where it needs data.

#![warn(missing_docs)]

pub mod error;
pub mod factorize;
pub mod fp16;
pub mod int4;
pub mod lora;
pub mod optimize;
pub mod prune;
pub mod qat;
pub mod quantize;

pub use error::{PassError, Result};

//! Helpers of the pipeline's integration tests. Include with `mod support;`.

pub mod page;

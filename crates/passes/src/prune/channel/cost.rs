//! Static shapes of a model with unknown or symbolic input sizes set to 1.

use std::collections::HashMap;

use whittle_ir::shape::{self, Dim, TensorType};
use whittle_ir::{GraphEdit, Model};

use crate::Result;

/// Inferred types of every value, with unknown or symbolic input sizes set to 1.
pub fn static_shapes(model: &Model) -> Result<HashMap<String, TensorType>> {
    let graph = model.graph();
    let runtime: Vec<&str> = graph.runtime_inputs();
    let overrides = (graph.input.iter())
        .filter(|v| runtime.contains(&v.name.as_str()))
        .filter_map(|v| {
            let dims = TensorType::from_value_info(v).dims?;
            let fixed = dims.iter().map(|d| match d {
                Dim::Known(n) => *n,
                _ => 1,
            });
            Some((v.name.clone(), fixed.collect()))
        })
        .collect();
    Ok(shape::infer(model, &overrides)?)
}

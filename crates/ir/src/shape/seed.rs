//! Seeding inference: graph inputs (with shape overrides and bound symbols) and initializers.

use std::collections::{HashMap, HashSet};

use crate::dtype::DataType;
use crate::error::{IrError, Result};
use crate::graph::GraphEdit;
use crate::proto::{GraphProto, TensorProto};
use crate::tensor::{checked_numel, TensorData};

use super::types::{fixed, Dim, TensorType};
use super::values::{Info, Val};
use super::MAX_TRACKED;

/// Values of the symbols that `overrides` fix in the graph inputs.
pub(super) fn bind_symbols(
    graph: &GraphProto,
    overrides: &HashMap<String, Vec<usize>>,
) -> Result<HashMap<String, usize>> {
    let runtime: HashSet<&str> = graph.runtime_inputs().into_iter().collect();
    let mut bindings = HashMap::new();
    for (name, shape) in overrides {
        if !runtime.contains(name.as_str()) {
            return Err(IrError::invalid(format!(
                "shape override for '{name}', which is not a graph input"
            )));
        }
        let vi = graph.input.iter().find(|v| &v.name == name);
        let declared = vi.map(TensorType::from_value_info).and_then(|t| t.dims);
        let Some(declared) = declared else { continue };
        if declared.len() != shape.len() {
            return Err(IrError::invalid(format!(
                "shape override {shape:?} for input '{name}' has rank {}, the input has rank {}",
                shape.len(),
                declared.len()
            )));
        }
        for (d, &v) in declared.iter().zip(shape) {
            match d {
                Dim::Known(k) if *k != v => {
                    return Err(IrError::invalid(format!(
                        "shape override {shape:?} for input '{name}' contradicts its fixed size {k}"
                    )))
                }
                Dim::Symbol(s) => {
                    if let Some(old) = bindings.insert(s.clone(), v).filter(|&o| o != v) {
                        return Err(IrError::invalid(format!(
                            "shape overrides give symbol '{s}' two values, {old} and {v}"
                        )));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(bindings)
}

/// Replaces bound symbols by their values.
pub(super) fn substitute(mut ty: TensorType, bindings: &HashMap<String, usize>) -> TensorType {
    for d in ty.dims.iter_mut().flatten() {
        if let Dim::Symbol(s) = d {
            if let Some(&v) = bindings.get(s.as_str()) {
                *d = Dim::Known(v);
            }
        }
    }
    ty
}

/// Infos of the graph inputs and initializers.
pub(super) fn seed(
    graph: &GraphProto,
    overrides: &HashMap<String, Vec<usize>>,
    bindings: &HashMap<String, usize>,
) -> Result<HashMap<String, Info>> {
    let mut infos = HashMap::new();
    for vi in &graph.input {
        let mut ty = substitute(TensorType::from_value_info(vi), bindings);
        if let Some(shape) = overrides.get(&vi.name) {
            ty.dims = Some(fixed(shape));
        }
        infos.insert(vi.name.clone(), Info { ty, data: None });
    }
    for t in &graph.initializer {
        infos.insert(t.name.clone(), initializer_info(t)?);
    }
    Ok(infos)
}

/// The info of an initializer, decoding its values only when it is small.
fn initializer_info(t: &TensorProto) -> Result<Info> {
    let bad = |r: String| IrError::bad_tensor(&t.name, r);
    let dtype = DataType::from_code(t.data_type)
        .ok_or_else(|| bad(format!("unknown data_type {}", t.data_type)))?;
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}"))))
        .collect::<Result<Vec<_>>>()?;
    if checked_numel(&dims).is_some_and(|n| n <= MAX_TRACKED) {
        return proto_info(t);
    }
    Ok(Info::new(Some(dtype), Some(fixed(&dims))))
}

/// The info of a tensor proto, decoding its values.
pub(super) fn proto_info(t: &TensorProto) -> Result<Info> {
    Ok(tensor_info(&TensorData::from_proto(t, None)?))
}

/// The info of a host tensor, with its values when small and numeric.
pub(super) fn tensor_info(t: &TensorData) -> Info {
    let info = Info::new(Some(t.dtype()), Some(fixed(t.dims())));
    let data = if t.numel() > MAX_TRACKED {
        None
    } else if t.dtype().is_float() {
        t.to_f64_vec()
            .ok()
            .map(|v| v.into_iter().map(Val::Float).collect())
    } else {
        t.to_i64_vec()
            .ok()
            .map(|v| v.into_iter().map(Val::Int).collect())
    };
    info.with_data(data)
}

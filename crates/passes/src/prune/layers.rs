//! Which weights are prunable: the float32 weight initializers (rank >= 2) of Conv, Gemm
//! and MatMul nodes, with the axis of their output channels and of their reduction.

use std::collections::HashSet;

use whittle_ir::attr::NodeAttrs;
use whittle_ir::proto::NodeProto;
use whittle_ir::{DataType, GraphEdit, Model, TensorData};

use crate::{bail, Result};

/// One prunable weight tensor and the node that uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrunableLayer {
    /// The node's name, or the weight's name when the node has none.
    pub name: String,
    /// The node's operator (`Conv`, `Gemm`, `MatMul`).
    pub op_type: String,
    /// Name of the weight initializer.
    pub weight: String,
    /// Shape of the weight.
    pub dims: Vec<usize>,
    /// Axis indexing output channels (Conv 0, Gemm N, MatMul last).
    pub out_axis: usize,
    /// Axis summed over (Conv input channels, Gemm/MatMul K).
    pub reduce_axis: usize,
}

/// A prunable layer with the current values of its weight.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// The layer.
    pub layer: PrunableLayer,
    /// Its weight, row-major.
    pub values: Vec<f32>,
}

/// The prunable layers of `model`'s main graph, in node order (a weight shared by several
/// nodes counts once). `exclude` lists node or weight names to leave dense; a name that
/// matches no prunable layer is an error.
pub fn prunable_layers(model: &Model, exclude: &[String]) -> Result<Vec<PrunableLayer>> {
    let graph = model.graph();
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    for node in &graph.node {
        if let Some(layer) = layer_of(model, node)? {
            if seen.insert(layer.weight.clone()) {
                all.push(layer);
            }
        }
    }
    for name in exclude {
        if !all.iter().any(|l| &l.name == name || &l.weight == name) {
            let names: Vec<&str> = all.iter().map(|l| l.name.as_str()).collect();
            bail!(
                "`exclude` {name}: no prunable layer (Conv/Gemm/MatMul node or weight) has this name; prunable layers: {}",
                names.join(", ")
            );
        }
    }
    all.retain(|l| !exclude.iter().any(|e| e == &l.name || e == &l.weight));
    Ok(all)
}

/// The prunable weight of `node`, if it has one.
fn layer_of(model: &Model, node: &NodeProto) -> Result<Option<PrunableLayer>> {
    let Some(weight) = node.input.get(1).filter(|w| !w.is_empty()) else {
        return Ok(None);
    };
    let Some(init) = model.graph().initializer(weight) else {
        return Ok(None);
    };
    let rank = init.dims.len();
    if init.data_type != DataType::Float.code() || rank < 2 {
        return Ok(None);
    }
    let (out_axis, reduce_axis) = match node.op_type.as_str() {
        "Conv" if node.domain.is_empty() => (0, 1),
        "Gemm" if node.domain.is_empty() => match node.int_or("transB", 0)? {
            0 => (1, 0),
            _ => (0, 1),
        },
        "MatMul" if node.domain.is_empty() => (rank - 1, rank - 2),
        _ => return Ok(None),
    };
    let dims = init
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| crate::PassError::Invalid(format!("weight {weight} has a negative dim")))?;
    let name = if node.name.is_empty() {
        weight.clone()
    } else {
        node.name.clone()
    };
    Ok(Some(PrunableLayer {
        name,
        op_type: node.op_type.clone(),
        weight: weight.clone(),
        dims,
        out_axis,
        reduce_axis,
    }))
}

/// The current weights of `layers` in `model`.
pub fn read_weights(model: &Model, layers: &[PrunableLayer]) -> Result<Vec<LayerWeights>> {
    layers
        .iter()
        .map(|layer| {
            let Some(init) = model.graph().initializer(&layer.weight) else {
                bail!(
                    "weight {} of {} is not an initializer",
                    layer.weight,
                    layer.name
                );
            };
            let values = TensorData::from_proto(init, None)?.to_vec::<f32>()?;
            Ok(LayerWeights {
                layer: layer.clone(),
                values,
            })
        })
        .collect()
}

impl PrunableLayer {
    /// Number of weights.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// Elements between consecutive indices of `axis`.
    pub fn stride(&self, axis: usize) -> usize {
        self.dims[axis + 1..].iter().product()
    }

    /// The output channel of flat element `index`.
    pub fn out_channel(&self, index: usize) -> usize {
        (index / self.stride(self.out_axis)) % self.dims[self.out_axis]
    }
}

//! QDQ export: QuantizeLinear/DequantizeLinear pairs on activations, int8 weights and
//! int32 biases behind DequantizeLinear, node outputs re-quantized (ONNX Runtime layout)
//! except a MatMul's that no quantized node reads.

use std::collections::{HashMap, HashSet};

use whittle_ir::attr::make;
use whittle_ir::graph::GraphEdit;
use whittle_ir::proto::GraphProto;
use whittle_ir::Model;

use super::build::Builder;
use super::config::QuantConfig;
use super::plan::{Target, SHARED_SCALE_OPS};
use super::scheme::{int_tensor, param_tensor, quantize_bias, QParams, QuantizedWeight};
use super::weights::{initializer, range_params, target_weights};
use crate::Result;

/// Rewrites `model` so every target reads dequantized inputs and weights and its output
/// passes through a Q/DQ pair. `ranges` holds each activation's clipping range; `out` is
/// the copy to rewrite ([`super::build::Draft::model`]), weights read from `model`.
pub fn export(
    model: &Model,
    mut out: Model,
    cfg: &QuantConfig,
    targets: &[Target],
    ranges: &HashMap<String, (f32, f32)>,
) -> Result<Model> {
    let relu_ranges = relu_output_ranges(model, cfg, ranges);
    let read_quantized = targets
        .iter()
        .flat_map(|t| t.activations.iter().cloned())
        .collect();
    let mut q = Qdq {
        src: model.graph(),
        b: Builder::new(out.graph_mut()),
        cfg,
        ranges,
        relu_ranges,
        read_quantized,
        params: HashMap::new(),
        dq_of: HashMap::new(),
    };
    // The weights of as many targets as there are threads are quantized at a time, in
    // parallel: faster than one by one, and they are not all held at once.
    let order = in_topological_order(model, targets)?;
    for some in order.chunks(rayon::current_num_threads().max(1)) {
        let mut weights = target_weights(model.graph(), some, cfg, false)?;
        for t in some {
            q.target(t, weights.remove(&t.node))?;
        }
    }
    q.b.prune();
    out.graph_mut().sort_topologically()?;
    Ok(out)
}

/// Targets ordered so producers come before consumers.
pub fn in_topological_order<'t>(model: &Model, targets: &'t [Target]) -> Result<Vec<&'t Target>> {
    let order = model.graph().topological_order()?;
    let pos: HashMap<usize, usize> = order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let mut sorted: Vec<&Target> = targets.iter().collect();
    sorted.sort_by_key(|t| pos.get(&t.node).copied().unwrap_or(usize::MAX));
    Ok(sorted)
}

/// For outputs read only by a Relu, the Relu's output range (an asymmetric scheme with a
/// range starting at 0 clamps negatives exactly like the Relu).
pub fn relu_output_ranges(
    model: &Model,
    cfg: &QuantConfig,
    ranges: &HashMap<String, (f32, f32)>,
) -> HashMap<String, (f32, f32)> {
    relu_aliases(model, cfg)
        .into_iter()
        .filter_map(|(x, y)| Some((x, *ranges.get(&y)?)))
        .collect()
}

/// The tensors quantized with the range of the Relu reading them: input -> Relu output,
/// for inputs read only by that Relu and not graph outputs (asymmetric schemes only).
pub fn relu_aliases(model: &Model, cfg: &QuantConfig) -> HashMap<String, String> {
    if cfg.activation_scheme().symmetric {
        return HashMap::new();
    }
    let g = model.graph();
    let consumers = g.consumers();
    let mut out = HashMap::new();
    for node in g.node.iter().filter(|n| n.op_type == "Relu") {
        let (Some(x), Some(y)) = (node.input.first(), node.output.first()) else {
            continue;
        };
        let single = consumers.get(x).is_some_and(|c| c.len() == 1);
        let is_output = g.output.iter().any(|o| &o.name == x);
        if single && !is_output {
            out.insert(x.clone(), y.clone());
        }
    }
    out
}

struct Qdq<'a, 'g> {
    /// The float graph, whose weights are read.
    src: &'a GraphProto,
    b: Builder<'g>,
    cfg: &'a QuantConfig,
    ranges: &'a HashMap<String, (f32, f32)>,
    relu_ranges: HashMap<String, (f32, f32)>,
    /// The activations quantized targets read.
    read_quantized: HashSet<String>,
    /// Params of every tensor that already went through Q/DQ.
    params: HashMap<String, QParams>,
    /// The dequantized stand-in of each quantized float tensor.
    dq_of: HashMap<String, String>,
}

impl Qdq<'_, '_> {
    /// Rewrites target `t`, its weight quantized as `weight` (see [`target_weights`]).
    fn target(&mut self, t: &Target, weight: Option<QuantizedWeight>) -> Result<()> {
        for x in &t.activations {
            let dq = self.input_dq(x)?;
            replace_input(&mut self.b.graph.node[t.node].input, x, &dq);
        }
        let x_scale = match t.activations.first() {
            Some(x) => self.params_of(x)?.scale,
            None => 1.0,
        };
        if let Some(w) = weight {
            self.weight(t, &w, x_scale)?;
        }
        let Some(y) = self.b.graph.node[t.node].output.first().cloned() else {
            return Ok(());
        };
        let p = if SHARED_SCALE_OPS.contains(&t.op_type.as_str()) {
            self.params_of(&t.activations[0])?
        } else {
            self.output_params(&y)?
        };
        // After a Relu whose range clamps at the zero point, quantize the Relu's output:
        // `op -> Relu -> Q -> DQ` is the pattern ONNX Runtime fuses into one integer op.
        let (node, y) = match self.relu_after(&y, p) {
            Some((relu, r)) => (relu, r),
            None => (t.node, y),
        };
        // A MatMul output that no quantized node reads stays float: ONNX Runtime runs
        // DequantizeLinear -> MatMul as one MatMulIntegerToFloat (only QLinearMatMul needs
        // the pair), and the model has one rounding and one Q/DQ pair fewer.
        if t.op_type == "MatMul" && !self.read_quantized.contains(&y) {
            return Ok(());
        }
        let pre = self.b.fresh(&format!("{y}_float"));
        self.b.graph.node[node].output[0] = pre.clone();
        self.qdq(&pre, &y, p)?;
        self.params.insert(y.clone(), p);
        self.dq_of.insert(y.clone(), y);
        Ok(())
    }

    /// The Relu reading `y` alone (index and output), when `y` is quantized with the
    /// Relu's range and that range starts at the zero point (so Q clamps as Relu does).
    fn relu_after(&self, y: &str, p: QParams) -> Option<(usize, String)> {
        if !self.relu_ranges.contains_key(y) {
            return None;
        }
        if p.zero_point != self.cfg.activation_scheme().qrange().0 {
            return None;
        }
        let g = &self.b.graph;
        let i = g
            .node
            .iter()
            .position(|n| n.op_type == "Relu" && n.input.first().is_some_and(|x| x == y))?;
        Some((i, g.node[i].output.first()?.clone()))
    }

    fn params_of(&self, x: &str) -> Result<QParams> {
        match self.params.get(x) {
            Some(p) => Ok(*p),
            None => range_params(self.ranges, x, &self.cfg.activation_scheme()),
        }
    }

    fn output_params(&self, y: &str) -> Result<QParams> {
        match self.relu_ranges.get(y) {
            Some((lo, hi)) => Ok(self.cfg.activation_scheme().params(*lo, *hi)),
            None => self.params_of(y),
        }
    }

    /// The dequantized version of `x`, adding its Q/DQ pair the first time.
    fn input_dq(&mut self, x: &str) -> Result<String> {
        if let Some(dq) = self.dq_of.get(x) {
            return Ok(dq.clone());
        }
        let p = self.params_of(x)?;
        let dq = self.b.fresh(&format!("{x}_dequantized"));
        self.qdq(x, &dq, p)?;
        self.params.insert(x.to_string(), p);
        self.dq_of.insert(x.to_string(), dq.clone());
        Ok(dq)
    }

    /// Adds `from -> QuantizeLinear -> DequantizeLinear -> to`.
    fn qdq(&mut self, from: &str, to: &str, p: QParams) -> Result<()> {
        let scheme = self.cfg.activation_scheme();
        let (s, z) = self.b.qparams(from, p, &scheme)?;
        let q = self.b.fresh(&format!("{from}_quantized"));
        self.b.node(
            "QuantizeLinear",
            vec![from.into(), s.clone(), z.clone()],
            vec![q.clone()],
            vec![],
        );
        self.b
            .node("DequantizeLinear", vec![q, s, z], vec![to.into()], vec![]);
        Ok(())
    }

    /// Int8 weight and int32 bias initializers, each behind a DequantizeLinear.
    fn weight(&mut self, t: &Target, w: &QuantizedWeight, x_scale: f32) -> Result<()> {
        let Some((name, _)) = &t.weight else {
            return Ok(());
        };
        let axis: Vec<_> = w
            .axis
            .iter()
            .map(|&a| make::int("axis", a as i64))
            .collect();
        let wq = self.b.constant(&format!("{name}_quantized"), &w.data);
        let ws = self
            .b
            .constant(&format!("{name}_scale"), &w.scale_tensor()?);
        let wz = self
            .b
            .constant(&format!("{name}_zero_point"), &w.zero_point_tensor()?);
        let dq = self.b.fresh(&format!("{name}_dequantized"));
        self.b.node(
            "DequantizeLinear",
            vec![wq, ws, wz],
            vec![dq.clone()],
            axis.clone(),
        );
        replace_input(&mut self.b.graph.node[t.node].input, name, &dq);
        let Some(bias) = &t.bias else {
            return Ok(());
        };
        let (bq, scales) = quantize_bias(bias, &initializer(self.src, bias)?, x_scale, w)?;
        let bq = self.b.constant(&format!("{bias}_quantized"), &bq);
        let bs = self.b.constant(
            &format!("{bias}_scale"),
            &param_tensor(&scales, w.axis.is_some())?,
        );
        let bz = int_tensor(
            whittle_ir::DataType::Int32,
            bias_zp_dims(&scales, w),
            &vec![0; scales.len()],
        )?;
        let bz = self.b.constant(&format!("{bias}_zero_point"), &bz);
        let bdq = self.b.fresh(&format!("{bias}_dequantized"));
        let axis: Vec<_> = w.axis.iter().map(|_| make::int("axis", 0)).collect();
        self.b.node(
            "DequantizeLinear",
            vec![bq, bs, bz],
            vec![bdq.clone()],
            axis,
        );
        replace_input(&mut self.b.graph.node[t.node].input, bias, &bdq);
        Ok(())
    }
}

fn bias_zp_dims(scales: &[f32], w: &QuantizedWeight) -> Vec<usize> {
    if w.axis.is_some() {
        vec![scales.len()]
    } else {
        vec![]
    }
}

/// Points every input equal to `from` at `to`.
pub fn replace_input(inputs: &mut [String], from: &str, to: &str) {
    for i in inputs.iter_mut().filter(|i| *i == from) {
        *i = to.to_string();
    }
}

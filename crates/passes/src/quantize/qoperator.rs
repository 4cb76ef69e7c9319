//! QOperator export: QLinearConv and QLinearMatMul on integer tensors (activations
//! quantized once and shared), Gemm as MatMulInteger with a float rescale.

use std::collections::HashMap;

use whittle_ir::proto::GraphProto;
use whittle_ir::Model;

use super::build::Builder;
use super::config::QuantConfig;
use super::integer::{integer_product, QuantizedInput};
use super::plan::Target;
use super::qdq::{in_topological_order, relu_output_ranges};
use super::scheme::{quantize_bias, QParams, QuantizedWeight};
use super::weights::{initializer, range_params, target_weight};
use crate::Result;

/// Rewrites every target into integer operators (see the module doc): `out` is the copy
/// to rewrite ([`super::build::Draft::model`]), weights read from `model`.
pub fn export(
    model: &Model,
    mut out: Model,
    cfg: &QuantConfig,
    targets: &[Target],
    ranges: &HashMap<String, (f32, f32)>,
) -> Result<Model> {
    let mut ranges = ranges.clone();
    ranges.extend(relu_output_ranges(model, cfg, &ranges));
    let mut q = QOp {
        src: model.graph(),
        b: Builder::new(out.graph_mut()),
        cfg,
        ranges: &ranges,
        quantized: HashMap::new(),
    };
    for t in in_topological_order(model, targets)? {
        q.target(t)?;
    }
    q.b.prune();
    whittle_ir::GraphEdit::sort_topologically(out.graph_mut())?;
    Ok(out)
}

struct QOp<'a, 'g> {
    /// The float graph, whose weights are read.
    src: &'a GraphProto,
    b: Builder<'g>,
    cfg: &'a QuantConfig,
    ranges: &'a HashMap<String, (f32, f32)>,
    /// Integer form of each float tensor quantized so far, with its params.
    quantized: HashMap<String, (QuantizedInput, QParams)>,
}

impl QOp<'_, '_> {
    fn target(&mut self, t: &Target) -> Result<()> {
        let (x, xp) = self.input(&t.activations[0])?;
        if t.op_type == "Gemm" {
            let w = self.weight(t, true)?;
            return integer_product(self.src, &mut self.b, t, &x, &w);
        }
        let node = self.b.graph.node[t.node].clone();
        let y = node.output[0].clone();
        let yp = range_params(self.ranges, &y, &self.cfg.activation_scheme())?;
        let yq = self.b.fresh(&format!("{y}_quantized"));
        let (ys, yz) = self.b.qparams(&y, yp, &self.cfg.activation_scheme())?;
        let mut inputs = vec![x.data, x.scale, x.zero_point];
        let bias = match t.activations.get(1) {
            Some(b_act) => {
                let (bq, _) = self.input(b_act)?;
                inputs.extend([bq.data, bq.scale, bq.zero_point]);
                None
            }
            None => {
                let w = self.weight(t, false)?;
                inputs.extend(self.weight_inputs(t, &w)?);
                self.bias(t, xp, &w)?
            }
        };
        inputs.extend([ys.clone(), yz.clone()]);
        inputs.extend(bias);
        let (op, attrs) = match t.op_type.as_str() {
            "Conv" => ("QLinearConv", node.attribute.clone()),
            _ => ("QLinearMatMul", vec![]),
        };
        self.b.node(op, inputs, vec![yq.clone()], attrs);
        self.b.node(
            "DequantizeLinear",
            vec![yq.clone(), ys.clone(), yz.clone()],
            vec![y.clone()],
            vec![],
        );
        self.b.drop_node(t.node);
        let qi = QuantizedInput {
            data: yq,
            scale: ys,
            zero_point: yz,
        };
        self.quantized.insert(y, (qi, yp));
        Ok(())
    }

    fn weight(&self, t: &Target, as_kn: bool) -> Result<QuantizedWeight> {
        let w = target_weight(self.src, t, self.cfg, as_kn)?;
        w.ok_or_else(|| crate::PassError::Invalid(format!("node '{}' has no weight", t.name)))
    }

    /// The integer form of activation `x`, adding its QuantizeLinear the first time.
    fn input(&mut self, x: &str) -> Result<(QuantizedInput, QParams)> {
        if let Some(q) = self.quantized.get(x) {
            return Ok(q.clone());
        }
        let scheme = self.cfg.activation_scheme();
        let p = range_params(self.ranges, x, &scheme)?;
        let (s, z) = self.b.qparams(x, p, &scheme)?;
        let data = self.b.fresh(&format!("{x}_quantized"));
        self.b.node(
            "QuantizeLinear",
            vec![x.into(), s.clone(), z.clone()],
            vec![data.clone()],
            vec![],
        );
        let q = (
            QuantizedInput {
                data,
                scale: s,
                zero_point: z,
            },
            p,
        );
        self.quantized.insert(x.to_string(), q.clone());
        Ok(q)
    }

    /// Weight, scale and zero-point initializers.
    fn weight_inputs(&mut self, t: &Target, w: &QuantizedWeight) -> Result<[String; 3]> {
        let name = t
            .weight
            .as_ref()
            .map_or("weight", |(n, _)| n.as_str())
            .to_string();
        Ok([
            self.b.constant(&format!("{name}_quantized"), &w.data),
            self.b
                .constant(&format!("{name}_scale"), &w.scale_tensor()?),
            self.b
                .constant(&format!("{name}_zero_point"), &w.zero_point_tensor()?),
        ])
    }

    /// The int32 bias of a QLinearConv (scale `x_scale * w_scale`, zero point 0).
    fn bias(&mut self, t: &Target, xp: QParams, w: &QuantizedWeight) -> Result<Option<String>> {
        let Some(bias) = &t.bias else {
            return Ok(None);
        };
        let (bq, _) = quantize_bias(bias, &initializer(self.src, bias)?, xp.scale, w)?;
        Ok(Some(self.b.constant(&format!("{bias}_quantized"), &bq)))
    }
}

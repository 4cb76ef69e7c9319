//! A small graph builder for quantization rewrites: fresh names, constant initializers,
//! new nodes, and the clean-up of what the rewrite left unused.

use std::collections::HashSet;

use whittle_ir::graph::{node_inputs, GraphEdit};
use whittle_ir::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use whittle_ir::{Model, TensorData};

use super::plan::Target;
use super::scheme::{int_tensor, param_tensor, QParams, Scheme};
use crate::Result;

/// The starting point of a quantized model: a copy of the float model in which the
/// initializers the rewrite replaces (the targets' weights and biases, the embedding
/// tables) hold no data, so the float weights are not copied only to be dropped. The
/// exporters read those from the float model. Emptied initializers keep their name, type
/// and place; [`Draft::finish`] refills those a node still reads (a weight shared with a
/// node left in float), so the result equals a rewrite of a full copy.
pub struct Draft<'m> {
    source: &'m Model,
    replaced: HashSet<String>,
}

impl<'m> Draft<'m> {
    /// The draft of `source` for `targets` and the embedding `tables`.
    pub fn new(source: &'m Model, targets: &[Target], tables: &[String]) -> Self {
        let replaced = targets
            .iter()
            .flat_map(|t| t.weight.iter().map(|(w, _)| w).chain(&t.bias))
            .chain(tables)
            .cloned()
            .collect();
        Draft { source, replaced }
    }

    /// The copy to rewrite.
    pub fn model(&self) -> Model {
        let (p, g) = (&self.source.proto, self.source.graph());
        let initializer = g
            .initializer
            .iter()
            .map(|t| match self.replaced.contains(&t.name) {
                true => TensorProto {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    data_type: t.data_type,
                    ..Default::default()
                },
                false => t.clone(),
            })
            .collect();
        let graph = GraphProto {
            node: g.node.clone(),
            name: g.name.clone(),
            initializer,
            sparse_initializer: g.sparse_initializer.clone(),
            doc_string: g.doc_string.clone(),
            input: g.input.clone(),
            output: g.output.clone(),
            value_info: g.value_info.clone(),
            quantization_annotation: g.quantization_annotation.clone(),
            metadata_props: g.metadata_props.clone(),
        };
        Model::new(ModelProto {
            ir_version: p.ir_version,
            opset_import: p.opset_import.clone(),
            producer_name: p.producer_name.clone(),
            producer_version: p.producer_version.clone(),
            domain: p.domain.clone(),
            model_version: p.model_version,
            doc_string: p.doc_string.clone(),
            graph: Some(graph),
            metadata_props: p.metadata_props.clone(),
            training_info: p.training_info.clone(),
            functions: p.functions.clone(),
        })
    }

    /// Refills the emptied initializers still in `out` from the float model.
    pub fn finish(&self, out: &mut Model) {
        let source = self.source.graph();
        for t in &mut out.graph_mut().initializer {
            if self.replaced.contains(&t.name) {
                if let Some(full) = source.initializer(&t.name) {
                    *t = full.clone();
                }
            }
        }
    }
}

/// Adds nodes and initializers to a graph under names it has not used.
pub struct Builder<'g> {
    /// The graph being edited.
    pub graph: &'g mut GraphProto,
    used: HashSet<String>,
}

impl<'g> Builder<'g> {
    /// Starts editing `graph`.
    pub fn new(graph: &'g mut GraphProto) -> Self {
        let mut used: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
        used.extend(graph.input.iter().map(|v| v.name.clone()));
        for n in &graph.node {
            used.extend(n.output.iter().cloned());
            used.extend(n.input.iter().cloned());
            used.insert(n.name.clone());
        }
        Builder { graph, used }
    }

    /// A name starting with `base` not used yet (and now reserved).
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.used.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.used.insert(name.clone());
        name
    }

    /// Adds `data` as an initializer named after `base`; returns its name.
    pub fn constant(&mut self, base: &str, data: &TensorData) -> String {
        let name = self.fresh(base);
        self.graph.initializer.push(data.to_proto(&name));
        name
    }

    /// Appends a node (the graph is re-sorted at the end of the rewrite).
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) {
        let name = self.fresh(&format!("{}_{op_type}", outputs[0]));
        self.graph.node.push(NodeProto {
            name,
            op_type: op_type.into(),
            input: inputs,
            output: outputs,
            attribute,
            ..Default::default()
        });
    }

    /// Scale and zero-point initializers of a per-tensor activation quantization.
    pub fn qparams(&mut self, base: &str, p: QParams, scheme: &Scheme) -> Result<(String, String)> {
        let s = self.constant(&format!("{base}_scale"), &param_tensor(&[p.scale], false)?);
        let zp = int_tensor(scheme.qtype.dtype(), vec![], &[p.zero_point])?;
        let z = self.constant(&format!("{base}_zero_point"), &zp);
        Ok((s, z))
    }

    /// Marks node `i` as replaced: it loses its outputs and [`Builder::prune`] removes it
    /// (indices of other nodes stay valid until then).
    pub fn drop_node(&mut self, i: usize) {
        self.graph.node[i].output.clear();
    }

    /// Removes initializers no node reads and no graph output names, and nodes whose
    /// outputs nobody reads (dangling dequantizations), until nothing changes.
    pub fn prune(&mut self) {
        loop {
            let mut read: HashSet<String> =
                self.graph.output.iter().map(|o| o.name.clone()).collect();
            for n in &self.graph.node {
                read.extend(node_inputs(n));
            }
            let before = self.graph.node.len();
            self.graph
                .node
                .retain(|n| n.output.iter().any(|o| !o.is_empty() && read.contains(o)));
            if self.graph.node.len() == before {
                let unused: HashSet<String> = self
                    .graph
                    .initializer
                    .iter()
                    .filter(|t| !read.contains(&t.name))
                    .map(|t| t.name.clone())
                    .collect();
                self.graph.initializer.retain(|t| !unused.contains(&t.name));
                self.graph.input.retain(|v| !unused.contains(&v.name));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use whittle_exec::{Executor, Value};
    use whittle_ir::graph::GraphEdit;
    use whittle_ir::Model;

    use crate::optimize::util::testing::{model, node, value, weight};
    use crate::quantize::{dynamic_int8, static_int8, Format, QuantConfig};

    /// Four samples of eight features.
    fn feed() -> HashMap<String, Value> {
        let x: Vec<f32> = (0..32).map(|i| (i % 9) as f32 * 0.2 - 0.8).collect();
        let x = whittle_ir::TensorData::from_slice(vec![4, 8], &x).unwrap();
        HashMap::from([("x".to_string(), Value::try_from(&x).unwrap())])
    }

    fn run(m: &Model, output: &str) -> Vec<f32> {
        let out = Executor::new(m).unwrap().run(feed()).unwrap();
        out[output].to_f32_vec().unwrap()
    }

    #[test]
    fn integer_exports_read_the_bias_from_the_float_model() {
        // A Gemm with a bias: dynamic and QOperator rescale the integer product and add
        // the float bias, which the draft emptied.
        let m = model(
            vec![node("Gemm", &["x", "w", "c"], &["y"])],
            vec![value("x", &[4, 8])],
            vec![value("y", &[4, 8])],
            vec![weight("w", &[8, 8], 0.1), weight("c", &[8], 3.0)],
        );
        let qoperator = QuantConfig {
            format: Format::QOperator,
            ..Default::default()
        };
        let (dynamic, _) = dynamic_int8(&m, &QuantConfig::default()).unwrap();
        let (integer, _) = static_int8(&m, &qoperator, [feed()]).unwrap();
        let float = run(&m, "y");
        for q in [dynamic, integer] {
            let worst = whittle_ir::numeric::max_abs_diff(float.iter().copied(), run(&q, "y"));
            assert!(worst < 0.05, "{worst}");
        }
    }

    #[test]
    fn a_weight_shared_with_a_float_node_keeps_its_values() {
        // `w` feeds a quantized MatMul and an excluded one, which stays float: the draft
        // empties `w` (a target's weight) and must give its data back.
        let m = model(
            vec![
                node("MatMul", &["x", "w"], &["a"]),
                node("MatMul", &["x", "w"], &["b"]),
            ],
            vec![value("x", &[4, 8])],
            vec![value("a", &[4, 8]), value("b", &[4, 8])],
            vec![weight("w", &[8, 8], 0.1)],
        );
        let cfg = QuantConfig {
            exclude: vec!["MatMul_b".into()],
            ..Default::default()
        };
        let (q, report) = static_int8(&m, &cfg, [feed()]).unwrap();
        assert_eq!(report.quantized_nodes.len(), 1);
        assert_eq!(q.graph().initializer("w"), m.graph().initializer("w"));
        assert!(q.graph().initializer("w_quantized").is_some());
        assert_eq!(run(&m, "b"), run(&q, "b"));
    }
}

//! `dedupe-initializers`: initializers with identical element type, shape and bytes are
//! merged into the first of them; readers of the others read it instead. Initializers
//! that are graph inputs (overridable) or graph outputs are left alone.

use std::collections::HashMap;

use whittle_ir::proto::TensorProto;
use whittle_ir::{DataType, GraphEdit, Model, TensorData};

use super::util::{constant_initializers, graph_outputs};
use super::{Pass, PassStats};
use crate::error::Result;

/// The `dedupe-initializers` pass.
pub struct DedupeInitializers;

/// What makes two initializers interchangeable.
type Content = (Option<DataType>, Vec<usize>, Vec<u8>);

fn content(t: &TensorProto) -> Result<Content> {
    let data = TensorData::from_proto(t, None)?;
    let bytes = match data.bytes() {
        Some(b) => b.to_vec(),
        // Strings: length-prefixed, so different splits of the same bytes differ.
        None => t
            .string_data
            .iter()
            .flat_map(|s| (s.len() as u64).to_le_bytes().into_iter().chain(s.clone()))
            .collect(),
    };
    Ok((Some(data.dtype()), data.dims().to_vec(), bytes))
}

impl Pass for DedupeInitializers {
    fn name(&self) -> &'static str {
        "dedupe-initializers"
    }

    fn description(&self) -> &'static str {
        "share initializers that hold identical tensors"
    }

    fn run(&self, model: &mut Model) -> Result<PassStats> {
        let graph = model.graph_mut();
        let outputs = graph_outputs(graph);
        let candidates = constant_initializers(graph);
        let mut first: HashMap<Content, String> = HashMap::new();
        let mut duplicates: Vec<(String, String)> = Vec::new();
        for t in &graph.initializer {
            if !candidates.contains_key(&t.name) || outputs.contains(&t.name) {
                continue;
            }
            let key = content(t)?;
            match first.get(&key) {
                Some(keep) => duplicates.push((t.name.clone(), keep.clone())),
                None => {
                    first.insert(key, t.name.clone());
                }
            }
        }
        for (dup, keep) in &duplicates {
            graph.initializer.retain(|t| &t.name != dup);
            graph.value_info.retain(|v| &v.name != dup);
            graph.rename_value(dup, keep);
        }
        Ok(PassStats {
            changes: duplicates.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::*;
    use super::*;

    #[test]
    fn identical_initializers_are_shared() {
        let mut m = model(
            vec![
                node("Add", &["x", "w1"], &["a"]),
                node("Mul", &["a", "w2"], &["b"]),
                node("Sub", &["b", "w3"], &["y"]),
            ],
            vec![value("x", &[4])],
            vec![value("y", &[4])],
            vec![
                weight("w1", &[4], 0.0),
                weight("w2", &[4], 0.0),
                weight("w3", &[2, 2], 0.0),
            ],
        );
        let stats = DedupeInitializers.run(&mut m).unwrap();
        assert_eq!(stats.changes, 1, "same bytes but another shape stay apart");
        let g = m.graph();
        let names: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["w1", "w3"]);
        assert_eq!(g.node[1].input, ["a", "w1"]);
        assert_eq!(g.node[2].input, ["b", "w3"]);
    }
}

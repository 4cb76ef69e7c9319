//! Which initializers train: float tensors feeding a differentiable operand of a node
//! (weights, biases, normalisation scale and shift) — not shape constants, BatchNormalization
//! running statistics, quantization parameters or scalar constants — minus frozen patterns.

use regex::Regex;
use whittle_ir::proto::GraphProto;
use whittle_ir::{DataType, Model};

use crate::bail;
use crate::error::Result;

/// Operand slots of an operator that are learnable parameters when fed by an initializer.
fn parameter_slots(op: &str) -> &'static [usize] {
    match op {
        "Conv"
        | "ConvTranspose"
        | "BatchNormalization"
        | "LayerNormalization"
        | "InstanceNormalization"
        | "GroupNormalization"
        | "SkipLayerNormalization" => &[1, 2],
        "Gemm" => &[0, 1, 2],
        "MatMul" | "Add" | "Sub" | "Mul" | "Div" | "Sum" | "Concat" | "Einsum" => &[0, 1, 2, 3],
        "PRelu" => &[1],
        "Gather" => &[0],
        "Where" => &[1, 2],
        // QAT training graphs: the weight a fake quantization reads, and a learned `[1]`
        // step size (fixed step sizes are scalars, which are never parameters).
        "FakeQuantize" => &[0, 1],
        // A learned positive quantity held as its logarithm (an LSQ step size, a logit
        // temperature).
        "Exp" => &[0],
        _ => &[],
    }
}

/// Initializers of `graph` that can train: float, rank >= 1, and read at a parameter slot.
pub fn trainable_initializers(graph: &GraphProto) -> Vec<String> {
    let mut names: Vec<String> = graph
        .initializer
        .iter()
        .filter(|t| DataType::from_code(t.data_type).is_some_and(|d| d.is_float()))
        .filter(|t| !t.dims.is_empty())
        .filter(|t| {
            graph.node.iter().any(|n| {
                parameter_slots(&n.op_type)
                    .iter()
                    .any(|&i| n.input.get(i) == Some(&t.name))
            })
        })
        .map(|t| t.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A name pattern: a glob (`*`, `?`) or, prefixed with `re:`, a regular expression.
#[derive(Clone, Debug)]
pub struct NamePattern {
    text: String,
    regex: Regex,
}

impl NamePattern {
    /// Parses `pattern`; globs match whole names, regexes anywhere unless anchored.
    pub fn new(pattern: &str) -> Result<Self> {
        let source = match pattern.strip_prefix("re:") {
            Some(re) => re.to_string(),
            None => glob_to_regex(pattern),
        };
        let regex = Regex::new(&source)
            .map_err(|e| crate::TrainError::Invalid(format!("pattern '{pattern}': {e}")))?;
        Ok(NamePattern {
            text: pattern.to_string(),
            regex,
        })
    }

    /// True when `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

/// A pattern matching exactly `name`: the name itself as a glob unless it holds a glob
/// character (or starts with `re:`), else an anchored, escaped regular expression.
pub fn exact_pattern(name: &str) -> String {
    if name.contains(['*', '?']) || name.starts_with("re:") {
        format!("re:^{}$", regex::escape(name))
    } else {
        name.to_string()
    }
}

fn glob_to_regex(glob: &str) -> String {
    let mut re = String::from("^");
    for ch in glob.chars() {
        match ch {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    re
}

/// The trainable initializers of `model` minus those matching a `freeze` pattern; fails
/// when a pattern matches no trainable initializer (a typo) or nothing is left to train.
pub fn select_trainable(model: &Model, freeze: &[NamePattern]) -> Result<Vec<String>> {
    let all = trainable_initializers(model.graph());
    for p in freeze {
        if !all.iter().any(|n| p.matches(n)) {
            bail!(
                "`freeze` '{}' matches none of the trainable parameters ({})",
                p.text,
                all.join(", ")
            );
        }
    }
    let kept: Vec<String> = all
        .into_iter()
        .filter(|n| !freeze.iter().any(|p| p.matches(n)))
        .collect();
    if kept.is_empty() {
        bail!("the model has nothing to train: no float initializer feeds a weight, bias or normalisation parameter (or all are frozen)");
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_regexes_match_names() {
        let g = NamePattern::new("conv*.weight").unwrap();
        assert!(g.matches("conv1.weight"));
        assert!(!g.matches("conv1.bias"));
        assert!(!g.matches("xconv1.weight"));
        let r = NamePattern::new("re:^linear[12]\\.").unwrap();
        assert!(r.matches("linear2.bias"));
        assert!(!r.matches("linear3.bias"));
        assert!(NamePattern::new("re:(").is_err());
    }

    #[test]
    fn exact_patterns_match_only_their_name() {
        for name in ["fc1.weight", "w*", "re:x", "a?b"] {
            let p = NamePattern::new(&exact_pattern(name)).unwrap();
            assert!(p.matches(name), "{name}");
            assert!(!p.matches(&format!("{name}x")), "{name}");
        }
        assert_eq!(exact_pattern("fc1.weight"), "fc1.weight");
        assert!(!NamePattern::new(&exact_pattern("w*"))
            .unwrap()
            .matches("wx"));
    }
}

//! Builds a [`Plan`] from the graph, the run order and one recorded run.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use whittle_ir::proto::{GraphProto, NodeProto};
use whittle_ir::DataType;

use super::{fuse, memory, Home, Plan, PlanKey, PlanStep, PlannedValue, StepOp, ValueId};
use crate::ops::OpFn;
use crate::value::Value;

/// Operators whose outputs change from run to run with the same inputs: never folded.
const RANDOM: [&str; 7] = [
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
];

/// Operators that only change the shape of their first input.
const VIEWS: [&str; 5] = ["Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"];

/// What a recorded run saw: every value's type and shape, and the values of nodes the
/// plan folds.
#[derive(Default)]
pub struct Recording {
    fold: HashSet<String>,
    types: HashMap<String, (DataType, Vec<usize>)>,
    folded: HashMap<String, Value>,
}

impl Recording {
    /// A recording that keeps the values of the nodes [`foldable`] names.
    pub fn new(fold: HashSet<String>) -> Self {
        Recording {
            fold,
            ..Default::default()
        }
    }

    /// A recording made without a run: every value's type and shape, and the folded
    /// values ([`super::infer`]).
    pub fn from_parts(
        fold: HashSet<String>,
        types: HashMap<String, (DataType, Vec<usize>)>,
        folded: HashMap<String, Value>,
    ) -> Self {
        Recording {
            fold,
            types,
            folded,
        }
    }

    /// Records one produced value (the executor's hook calls it).
    pub fn see(&mut self, name: &str, value: &Value) {
        self.types
            .insert(name.to_string(), (value.dtype(), value.shape().to_vec()));
        if self.fold.contains(name) {
            self.folded.insert(name.to_string(), value.clone());
        }
    }
}

/// Names of the outputs of nodes whose values are known once the input shapes are:
/// `Shape`/`Size`, and deterministic nodes (without subgraphs) whose inputs are all
/// constants or such outputs. `is_const` says whether a name is an initializer.
pub fn foldable(
    graph: &GraphProto,
    order: &[usize],
    is_const: impl Fn(&str) -> bool,
) -> HashSet<String> {
    let mut known = HashSet::new();
    for &i in order {
        let node = &graph.node[i];
        let shape_only = matches!(node.op_type.as_str(), "Shape" | "Size");
        let inputs_known = node
            .input
            .iter()
            .all(|n| n.is_empty() || known.contains(n) || is_const(n));
        let fold = node.domain.is_empty()
            && !RANDOM.contains(&node.op_type.as_str())
            && !has_subgraph(node)
            && (shape_only || inputs_known);
        if fold {
            known.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
        }
    }
    known
}

fn has_subgraph(node: &NodeProto) -> bool {
    node.attribute
        .iter()
        .any(|a| a.g.is_some() || !a.graphs.is_empty())
}

/// Whether a graph can be planned at all: no node with a subgraph (If/Loop/Scan bodies see
/// the enclosing scope by name, which the plan does not keep).
pub fn plannable(graph: &GraphProto) -> bool {
    !graph.node.iter().any(has_subgraph)
}

/// Everything the planner reads from the executor.
pub struct Source<'a> {
    /// The graph.
    pub graph: &'a GraphProto,
    /// The run order: node index and its candle operator.
    pub order: Vec<(usize, OpFn)>,
    /// Initializers by name.
    pub constants: &'a HashMap<String, Value>,
    /// Graph outputs.
    pub outputs: Vec<String>,
    /// Opset of the default domain.
    pub opset: i64,
}

/// Compiles the plan for `key` from a recorded run (`inferred`: from a recording made by
/// [`super::infer`]). `None` when the recording misses a value the plan needs (a node
/// produced fewer outputs than it names).
pub fn build(src: &Source, key: &PlanKey, rec: Recording, inferred: bool) -> Option<Plan> {
    let mut b = Builder {
        values: Vec::new(),
        ids: HashMap::new(),
    };
    let mut inputs = Vec::new();
    for (name, dtype, shape) in &key.inputs {
        let id = b.add(name, *dtype, shape.clone(), Home::Input);
        inputs.push((name.clone(), id));
    }
    let mut steps = Vec::new();
    for (pos, &(node_index, op)) in src.order.iter().enumerate() {
        let node = &src.graph.node[node_index];
        let mut ins = Vec::with_capacity(node.input.len());
        for name in &node.input {
            ins.push(match name.as_str() {
                "" => None,
                n => Some(b.input(n, src.constants)?),
            });
        }
        let folded = node
            .output
            .iter()
            .all(|o| o.is_empty() || rec.folded.contains_key(o));
        let view = is_view(node, &ins, &b.values);
        let mut outs = Vec::with_capacity(node.output.len());
        for name in &node.output {
            if name.is_empty() {
                outs.push(None);
                continue;
            }
            let (dtype, shape) = rec.types.get(name)?.clone();
            let home = match rec.folded.get(name) {
                // Contiguous, so kernels can borrow it.
                Some(v) if folded => {
                    Home::Const(v.with_tensor(v.tensor().contiguous().ok()?).ok()?)
                }
                _ => Home::Host,
            };
            outs.push(Some(b.add(name, dtype, shape, home)));
        }
        let op = if folded {
            StepOp::Folded
        } else if view {
            StepOp::View
        } else {
            StepOp::Fallback(op)
        };
        steps.push(PlanStep {
            node: node_index,
            pos,
            op,
            inputs: ins,
            outputs: outs,
            frees: Vec::new(),
        });
    }
    let mut outputs: Vec<ValueId> = Vec::new();
    for name in src.outputs.iter().chain(&key.keep) {
        let id = *b.ids.get(name)?;
        if !outputs.contains(&id) {
            outputs.push(id);
        }
    }
    let mut plan = Plan {
        values: b.values,
        steps,
        slots: Vec::new(),
        inputs,
        outputs,
        inferred,
        arena: Mutex::new(Vec::new()),
    };
    if !key.observe {
        fuse::fold_batch_norms(&mut plan, src.graph);
    }
    fuse::select_kernels(&mut plan, src.graph, src.opset, !key.observe);
    memory::assign(&mut plan);
    Some(plan)
}

/// A view: one of [`VIEWS`] (or inference Dropout without a mask output) whose shape
/// operand, if any, is a constant.
fn is_view(node: &NodeProto, ins: &[Option<ValueId>], values: &[PlannedValue]) -> bool {
    let op = node.op_type.as_str();
    let dropout = op == "Dropout" && node.output.iter().skip(1).all(String::is_empty);
    if !(node.domain.is_empty() && (VIEWS.contains(&op) || dropout)) {
        return false;
    }
    let Some(Some(_)) = ins.first() else {
        return false;
    };
    if dropout {
        // ratio and training_mode inputs: training_mode must be a constant false.
        return match ins.get(2) {
            Some(Some(t)) => matches!(&values[*t].home, Home::Const(v)
                if v.to_i64_vec().is_ok_and(|v| v.iter().all(|&x| x == 0))),
            _ => true,
        };
    }
    ins.iter()
        .skip(1)
        .flatten()
        .all(|&i| matches!(values[i].home, Home::Const(_)))
}

struct Builder {
    values: Vec<PlannedValue>,
    ids: HashMap<String, ValueId>,
}

impl Builder {
    fn add(&mut self, name: &str, dtype: DataType, shape: Vec<usize>, home: Home) -> ValueId {
        let id = self.values.len();
        self.values.push(PlannedValue {
            name: name.to_string(),
            dtype,
            shape,
            home,
        });
        self.ids.insert(name.to_string(), id);
        id
    }

    /// The id of input `name`: a value already produced, or an initializer added now.
    fn input(&mut self, name: &str, constants: &HashMap<String, Value>) -> Option<ValueId> {
        if let Some(&id) = self.ids.get(name) {
            return Some(id);
        }
        let v = constants.get(name)?;
        let (dtype, shape) = (v.dtype(), v.shape().to_vec());
        Some(self.add(name, dtype, shape, Home::Const(v.clone())))
    }
}

//! A graph-level backward: gradients of the trainable initializers derived once from the
//! forward graph, one vector-Jacobian rule per ONNX operator (as ONNX Runtime Training's
//! gradient builder and JAX do), instead of candle's per-operation tape.
//!
//! [`GraphBackward::new`] walks the graph once: which values depend on a trainable
//! parameter ("active"), which node needs which rule, and which forward values the rules
//! read (only those are kept). [`GraphBackward::forward`] runs the graph in training mode on
//! detached parameters (no tape is recorded) and keeps those values;
//! [`GraphBackward::backward`] walks the nodes in reverse from the gradients of the graph
//! outputs, accumulating each value's gradient in place in one buffer, freed as soon as its
//! producer has consumed it. Conv, MaxPool and BatchNormalization run forward on the kernels
//! the rules use ([`forward`]); MaxPool keeps its arg-max instead of its input,
//! BatchNormalization its batch statistics. On a pool of several threads, a pass of a graph
//! whose nodes keep the batch's items apart runs in parts of the batch side by side, the
//! parts meeting at each BatchNormalization (module `parts`).
//!
//! A `GraphBackward` holds no values: derive it once per executor (and set of trainable
//! parameters) and reuse it for every pass.

mod buffers;
mod forward;
mod parts;
mod rules;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use candle_core::Tensor;
use whittle_ir::proto::NodeProto;

use crate::error::{ExecError, Result};
use crate::executor::{node_seed, Executor, RunOptions};
use crate::kernels::norm::BatchMoments;
use crate::kernels::summed;
use crate::pool::on_pool;
use crate::value::Value;

/// Operators whose outputs carry no gradient (shapes, indices, comparisons): a node of these
/// stops the backward walk instead of needing a rule.
const NO_GRADIENT: &[&str] = &[
    "Shape",
    "Size",
    "ArgMax",
    "ArgMin",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "IsNaN",
    "IsInf",
    "NonZero",
];

/// The backward of one graph for one set of trainable parameters.
pub struct GraphBackward {
    /// Run-order positions of the nodes with an active input, with their rules.
    steps: Vec<(usize, rules::Rule)>,
    /// Values that depend on a trainable parameter.
    active: HashSet<String>,
    /// Forward values some rule reads.
    saved: HashSet<String>,
    /// Gradient buffers kept from one pass to the next.
    buffers: buffers::Buffers,
    /// How a pass splits its batch into parts that threads run side by side, where the
    /// graph's nodes keep batch items apart (module `parts`).
    parts: Option<parts::BatchParts>,
}

/// What a training forward keeps for backward.
#[derive(Default)]
pub struct Recording {
    /// The graph outputs.
    pub outputs: HashMap<String, Value>,
    /// The values the rules read, by name.
    saved: HashMap<String, Value>,
    /// The shape of every value the run produced or was fed.
    shapes: HashMap<String, Vec<usize>>,
    /// The run's seed (Dropout masks are recomputed from it).
    seed: u64,
    /// Arg-max of each MaxPool run on its kernel, by the name of the pooled output.
    argmax: HashMap<String, Vec<i64>>,
    /// Batch statistics of each BatchNormalization run on its kernel, by the name of its
    /// output `Y`.
    moments: HashMap<String, BatchMoments>,
    /// The recordings of the batch's parts when the pass ran in parts (module `parts`): the
    /// fields above then hold only the outputs, the parts' joined.
    parts: Vec<Recording>,
}

/// A training forward under way: the values still live and the recording so far.
struct Forward {
    env: HashMap<String, Value>,
    rec: Recording,
}

impl GraphBackward {
    /// Derives the backward of `exec`'s graph for its trainable parameters
    /// ([`Executor::params`]). Fails with [`ExecError::Unsupported`] naming the first node on
    /// a parameter's path that has no rule, and refuses parameters that are not float32.
    pub fn new(exec: &Executor) -> Result<Self> {
        for (name, var) in exec.params() {
            if var.dtype() != candle_core::DType::F32 {
                return Err(ExecError::UnsupportedType {
                    what: format!(
                        "graph-level gradient of parameter '{name}' of type {:?}",
                        var.dtype()
                    ),
                });
            }
        }
        let mut active: HashSet<String> = exec.params().keys().cloned().collect();
        let mut saved = HashSet::new();
        let mut steps = Vec::new();
        for (pos, node) in exec.run_order().into_iter().enumerate() {
            if !node.input.iter().any(|i| active.contains(i)) {
                continue;
            }
            if NO_GRADIENT.contains(&node.op_type.as_str()) && node.domain.is_empty() {
                continue;
            }
            let def = rules::lookup(&node.domain, &node.op_type).ok_or_else(|| {
                ExecError::Unsupported {
                    node: label(node),
                    op: format!("{} (no gradient rule)", node.op_type),
                    domain: node.domain.clone(),
                }
            })?;
            let pick = |names: &[String], slots: &[usize]| {
                slots
                    .iter()
                    .filter_map(|&s| names.get(s).filter(|n| !n.is_empty()).cloned())
                    .collect::<Vec<_>>()
            };
            // A MaxPool on its forward kernel keeps its arg-max: its input is not needed.
            let inputs = match node.op_type.as_str() {
                "MaxPool" if forward::covers_max_pool(node)? => &[],
                _ => def.inputs,
            };
            saved.extend(pick(&node.input, inputs));
            saved.extend(pick(&node.output, def.outputs));
            active.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
            steps.push((pos, def.rule));
        }
        Ok(GraphBackward {
            steps,
            active,
            saved,
            buffers: Default::default(),
            parts: parts::BatchParts::of(exec),
        })
    }

    /// Runs `inputs` through the graph in training mode with Dropout seeded by `seed`,
    /// recording BatchNormalization running statistics into `running_stats` (as
    /// [`RunOptions::running_stats`]) and keeping what [`GraphBackward::backward`] reads.
    /// Conv and MaxPool run on the kernels ([`RunOptions::replace`]).
    ///
    /// The pass runs on a worker of rayon's pool ([`on_pool`]), as does
    /// [`GraphBackward::backward`]; on a pool of several threads it runs in parts of the
    /// batch side by side where the graph allows it (module `parts`).
    pub fn forward(
        &self,
        exec: &Executor,
        inputs: HashMap<String, Value>,
        seed: u64,
        running_stats: Option<&mut HashMap<String, Value>>,
    ) -> Result<Recording> {
        on_pool(|| {
            match self
                .parts
                .as_ref()
                .and_then(|p| Some((p, p.ranges(&inputs)?)))
            {
                Some((parts, ranges)) => {
                    parts::forward(self, parts, exec, inputs, seed, running_stats, &ranges)
                }
                None => {
                    let mut pass = self.start(exec, inputs, seed)?;
                    let all = 0..exec.run_order().len();
                    self.run_nodes(exec, &mut pass, all, running_stats, None)?;
                    self.finish(exec, pass)
                }
            }
        })
    }

    /// A forward of `inputs` with Dropout seeded by `seed`, before its first node.
    fn start(&self, exec: &Executor, inputs: HashMap<String, Value>, seed: u64) -> Result<Forward> {
        let mut rec = Recording {
            seed,
            ..Default::default()
        };
        let mut env = HashMap::new();
        for (name, v) in inputs {
            rec.shapes.insert(name.clone(), v.shape().to_vec());
            if self.saved.contains(&name) {
                rec.saved.insert(name.clone(), v.clone());
            }
            env.insert(name, v);
        }
        // Detached parameters: the forward records no tape.
        for (name, var) in exec.params() {
            let v = Value::from_float(var.as_tensor().detach())?;
            rec.shapes.insert(name.clone(), v.shape().to_vec());
            env.insert(name.clone(), v);
        }
        Ok(Forward { env, rec })
    }

    /// Runs the nodes at run-order positions `range` of `pass`, recording BatchNormalization
    /// running statistics into `running_stats`; a BatchNormalization first in `range`
    /// normalizes with `batch` when given (the statistics of the whole batch `pass` is a
    /// part of).
    fn run_nodes(
        &self,
        exec: &Executor,
        pass: &mut Forward,
        range: std::ops::Range<usize>,
        running_stats: Option<&mut HashMap<String, Value>>,
        batch: Option<&BatchMoments>,
    ) -> Result<()> {
        let (first, seed) = (range.start, pass.rec.seed);
        let Recording {
            saved,
            shapes,
            argmax,
            moments,
            ..
        } = &mut pass.rec;
        // Shared by the hook (values as produced) and the kernels (a MaxPool left to its
        // operator keeps its input after all).
        let kept = RefCell::new(std::mem::take(saved));
        let mut hook = |name: &str, _: &NodeProto, v: &Value| -> Result<()> {
            shapes.insert(name.to_string(), v.shape().to_vec());
            if self.saved.contains(name) {
                kept.borrow_mut().insert(name.to_string(), v.clone());
            }
            Ok(())
        };
        let device = exec.device();
        let mut kernels = |pos: usize, node: &NodeProto, ins: &[Option<Value>]| {
            let given = batch.filter(|_| pos == first);
            let Some(run) = forward::run(node, ins, device, given)? else {
                if given.is_some() {
                    return Err(ExecError::Node {
                        node: label(node),
                        op: node.op_type.clone(),
                        message: "a pass in parts of the batch needs this node on its kernel"
                            .into(),
                    });
                }
                if node.op_type == "MaxPool" {
                    if let (Some(name), Some(Some(x))) = (node.input.first(), ins.first()) {
                        kept.borrow_mut().insert(name.clone(), x.clone());
                    }
                }
                return Ok(None);
            };
            if let Some(out) = node.output.first().filter(|o| self.active.contains(*o)) {
                if let Some(a) = run.argmax {
                    argmax.insert(out.clone(), a);
                }
                if let Some(m) = run.moments {
                    moments.insert(out.clone(), m);
                }
            }
            Ok(Some(run.outputs))
        };
        let opts = RunOptions {
            training: true,
            seed: Some(seed),
            running_stats,
            hook: Some(&mut hook),
            replace: Some(&mut kernels),
            ..Default::default()
        };
        pass.env = exec.run_range(range, std::mem::take(&mut pass.env), opts)?;
        pass.rec.saved = kept.into_inner();
        Ok(())
    }

    /// The recording of a forward that ran every node: its outputs taken from the live
    /// values, and the shapes of the initializers the rules read.
    fn finish(&self, exec: &Executor, pass: Forward) -> Result<Recording> {
        let Forward { mut env, mut rec } = pass;
        let order = exec.run_order();
        // Initializers the rules read are no run's values: their shapes come from the executor.
        for &(pos, _) in &self.steps {
            for name in &order[pos].input {
                if !name.is_empty() && !rec.shapes.contains_key(name) {
                    if let Some(v) = exec.initializer(name) {
                        rec.shapes.insert(name.clone(), v.shape().to_vec());
                    }
                }
            }
        }
        rec.outputs = exec
            .output_names()
            .into_iter()
            .map(|n| match env.remove(&n) {
                Some(v) => Ok((n, v)),
                None => Err(ExecError::msg(format!("output '{n}' was not computed"))),
            })
            .collect::<Result<_>>()?;
        Ok(rec)
    }

    /// Gradients of the trainable parameters the seeds reach, from `seeds`: the gradient of
    /// the loss for graph outputs (float32, each shaped like its output).
    pub fn backward(
        &self,
        exec: &Executor,
        rec: &Recording,
        seeds: HashMap<String, Tensor>,
    ) -> Result<HashMap<String, Tensor>> {
        on_pool(|| {
            if !rec.parts.is_empty() {
                return parts::backward(self, exec, rec, seeds);
            }
            let mut grads = HashMap::new();
            for (name, g) in seeds {
                self.accumulate(&mut grads, &name, seed_values(rec, &name, &g)?);
            }
            let order = exec.run_order();
            for &(pos, rule) in self.steps.iter().rev() {
                self.apply_rule(exec, rec, &mut grads, (pos, order[pos]), rule)?;
            }
            self.parameter_gradients(exec, vec![grads])
        })
    }

    /// Runs the rule of `node` (at run-order position `pos`) on the gradients of its outputs
    /// in `grads` (taken out), adding its inputs' gradients into `grads`.
    fn apply_rule(
        &self,
        exec: &Executor,
        rec: &Recording,
        grads: &mut HashMap<String, Vec<f32>>,
        (pos, node): (usize, &NodeProto),
        rule: rules::Rule,
    ) -> Result<()> {
        let dys: Vec<Option<Vec<f32>>> = node.output.iter().map(|o| grads.remove(o)).collect();
        if dys.iter().all(Option::is_none) {
            return Ok(());
        }
        let mut ctx = rules::RuleCtx {
            node,
            opset: exec.opset(&node.domain),
            seed: node_seed(rec.seed, pos),
            exec,
            rec,
            dys,
            wants: node.input.iter().map(|i| self.active.contains(i)).collect(),
            buffers: &self.buffers,
        };
        let dxs = rule(&mut ctx).map_err(on_node(node))?;
        // Output gradients the rule did not take are done with.
        for dy in std::mem::take(&mut ctx.dys).into_iter().flatten() {
            self.buffers.give(dy);
        }
        for (i, dx) in dxs.into_iter().enumerate() {
            let Some(dx) = dx else {
                continue;
            };
            let Some(name) = node.input.get(i).filter(|_| ctx.wants[i]) else {
                self.buffers.give(dx);
                continue;
            };
            let expected: usize = rec.shape(name)?.iter().product();
            if dx.len() != expected {
                return Err(node_error(
                    node,
                    format!(
                        "input '{name}' got a gradient of {} elements for {expected}",
                        dx.len()
                    ),
                ));
            }
            self.accumulate(grads, name, dx);
        }
        Ok(())
    }

    /// The trainable parameters' gradients: each the sum of its entries in `parts` (one map
    /// per part of the batch, in order), as tensors shaped like the parameters.
    fn parameter_gradients(
        &self,
        exec: &Executor,
        mut parts: Vec<HashMap<String, Vec<f32>>>,
    ) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (name, var) in exec.params() {
            let found: Vec<Vec<f32>> = parts.iter_mut().filter_map(|g| g.remove(name)).collect();
            if found.is_empty() {
                continue;
            }
            let terms: Vec<&[f32]> = found.iter().map(Vec::as_slice).collect();
            let dims = var.as_tensor().dims();
            let sum = Tensor::from_vec(rules::kern(summed(&terms))?, dims, exec.device())?;
            out.insert(name.clone(), sum);
            found.into_iter().for_each(|g| self.buffers.give(g));
        }
        Ok(out)
    }

    /// Gradient buffers allocated so far because none was free: after the first pass at
    /// given shapes, later passes at the same shapes allocate none.
    pub fn fresh_buffers(&self) -> usize {
        self.buffers.fresh()
    }

    /// Adds `g` into the gradient of `name` (the first contribution is moved in, no copy; a
    /// later one is added in parallel chunks and recycled).
    fn accumulate(&self, grads: &mut HashMap<String, Vec<f32>>, name: &str, g: Vec<f32>) {
        match grads.get_mut(name) {
            Some(sum) => {
                rules::zip_apply(
                    sum,
                    &g,
                    #[inline(always)]
                    |s, v| s + v,
                );
                self.buffers.give(g);
            }
            None => {
                grads.insert(name.to_string(), g);
            }
        }
    }
}

impl Recording {
    /// Names of the forward values kept for the backward (beyond the outputs).
    pub fn kept(&self) -> impl Iterator<Item = &str> {
        // A pass in parts keeps the same names in every part.
        self.parts
            .first()
            .unwrap_or(self)
            .saved
            .keys()
            .map(String::as_str)
    }

    /// How many parts of the batch the pass ran in side by side (1: the whole batch at
    /// once).
    pub fn parts(&self) -> usize {
        self.parts.len().max(1)
    }

    /// The batch statistics of the BatchNormalization whose output `Y` is `name`, when it
    /// ran on its kernel.
    pub(crate) fn batch_moments(&self, name: &str) -> Option<&BatchMoments> {
        self.moments.get(name)
    }

    /// The shape of value `name` in this run.
    fn shape(&self, name: &str) -> Result<&[usize]> {
        self.shapes
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| ExecError::msg(format!("no shape was recorded for '{name}'")))
    }

    /// The forward value `name`: kept by the run, a parameter or an initializer.
    fn value(&self, exec: &Executor, name: &str) -> Result<Value> {
        if let Some(v) = self.saved.get(name) {
            return Ok(v.clone());
        }
        if let Some(var) = exec.params().get(name) {
            return Value::from_float(var.as_tensor().detach());
        }
        exec.initializer(name)
            .ok_or_else(|| ExecError::msg(format!("the forward value '{name}' was not kept")))
    }
}

/// The values of `g`, the gradient given for output `name` of `rec`, checked against the
/// output's size.
fn seed_values(rec: &Recording, name: &str, g: &Tensor) -> Result<Vec<f32>> {
    let data = g
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?;
    let expected = rec.shape(name).map(|s| s.iter().product::<usize>()).ok();
    if Some(data.len()) != expected {
        return Err(ExecError::msg(format!(
            "the gradient given for output '{name}' has {} elements, the output {:?}",
            data.len(),
            rec.shapes.get(name)
        )));
    }
    Ok(data)
}

/// An error of `node`'s gradient.
fn node_error(node: &NodeProto, message: String) -> ExecError {
    ExecError::Node {
        node: label(node),
        op: format!("{} gradient", node.op_type),
        message,
    }
}

/// Names `node` (as [`node_error`]) in a plain message error; other errors pass unchanged.
fn on_node(node: &NodeProto) -> impl Fn(ExecError) -> ExecError + '_ {
    move |e| match e {
        ExecError::Msg(m) => node_error(node, m),
        other => other,
    }
}

/// A node's name for messages, or the value it produces when it has none.
fn label(node: &NodeProto) -> String {
    match (node.name.is_empty(), node.output.first()) {
        (true, Some(out)) => format!("(unnamed, producing '{out}')"),
        _ => node.name.clone(),
    }
}

//! One forward and backward pass. Graphs whose every node on a parameter's path has a
//! gradient rule run on the graph-level backward ([`whittle_exec::backward`]): the forward
//! keeps only what the rules read, the loss is a small candle computation on the outputs
//! (leaf variables), and its output gradients seed the graph's backward. Other graphs, and
//! gradient checkpointing, run on candle's tape: plain (candle keeps every activation) or
//! checkpointed (only segment boundaries are kept; each segment is re-run in backward with
//! its boundary values as fresh variables). `WHITTLE_BACKWARD=tape` forces the tape.

use std::cell::OnceCell;
use std::collections::HashMap;

use candle_core::{Tensor, Var};
use serde::Serialize;
use whittle_exec::backward::GraphBackward;
use whittle_exec::{Executor, RunOptions, Value};

use crate::error::Result;

/// What a loss function sees: the graph outputs of a training-mode run (differentiable),
/// the batch inputs by input name, and the batch labels.
pub struct LossInput<'a> {
    /// Graph outputs by name.
    pub outputs: &'a HashMap<String, Value>,
    /// The batch fed to the graph, by input name (a teacher can run on it).
    pub inputs: &'a HashMap<String, Value>,
    /// The labels of the batch.
    pub labels: &'a [i64],
}

/// A loss: a scalar tensor from one batch's outputs (cross-entropy, distillation, ...).
pub type LossFn = Box<dyn FnMut(&LossInput) -> Result<Tensor>>;

/// How one pass runs.
pub struct PassOptions<'a> {
    /// Seed of the random operators (Dropout) of this pass.
    pub seed: u64,
    /// Segment boundaries (step indices `0 = b0 < b1 < ... = steps`) for gradient
    /// checkpointing; `None` runs the graph in one piece.
    pub segments: Option<&'a [usize]>,
    /// Receives BatchNormalization running statistics (`None`: not recorded).
    pub running_stats: Option<&'a mut HashMap<String, Value>>,
}

/// Result of one pass.
pub struct PassResult {
    /// The loss value.
    pub loss: f64,
    /// The graph outputs, detached.
    pub outputs: HashMap<String, Value>,
    /// Gradients of the parameters the loss reaches.
    pub grads: HashMap<String, Tensor>,
    /// Which backward computed the gradients.
    pub path: GradientPath,
}

/// Which backward a pass used. Serialized as `{"kind": "graph"}` or
/// `{"kind": "tape", "why": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "why", rename_all = "snake_case")]
pub enum GradientPath {
    /// The graph-level backward.
    Graph,
    /// candle's tape, and why the graph-level backward was not used.
    Tape(String),
}

impl std::fmt::Display for GradientPath {
    /// `graph backward`, or `tape (why)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GradientPath::Graph => write!(f, "graph backward"),
            GradientPath::Tape(why) => write!(f, "tape ({why})"),
        }
    }
}

/// Runs `inputs` forward in training mode, evaluates `loss`, and back-propagates (deriving
/// the graph-level backward for this pass only; a training loop keeps a [`Backward`]).
pub fn forward_backward(
    exec: &Executor,
    inputs: HashMap<String, Value>,
    labels: &[i64],
    loss: &mut LossFn,
    opts: PassOptions,
) -> Result<PassResult> {
    Backward::default().pass(exec, inputs, labels, loss, opts)
}

/// The passes of one executor with a fixed set of trainable parameters: the graph-level
/// backward is derived on the first pass (or found unusable, with the reason) and reused by
/// every later one.
#[derive(Default)]
pub struct Backward {
    derived: OnceCell<std::result::Result<GraphBackward, String>>,
}

impl Backward {
    /// The path [`Backward::pass`] takes on `exec` with checkpointing `segments`, without
    /// running anything (the graph-level backward is derived here if it was not yet).
    pub fn path(&self, exec: &Executor, segments: Option<&[usize]>) -> GradientPath {
        match self.graph(exec, segments) {
            Ok(_) => GradientPath::Graph,
            Err(why) => GradientPath::Tape(why),
        }
    }

    /// [`forward_backward`] on the backward derived for `exec` by the first pass. `exec`
    /// must be the executor of the first pass, with the same trainable parameters.
    pub fn pass(
        &self,
        exec: &Executor,
        inputs: HashMap<String, Value>,
        labels: &[i64],
        loss: &mut LossFn,
        opts: PassOptions,
    ) -> Result<PassResult> {
        match self.graph(exec, opts.segments) {
            Ok(graph) => graph_pass(exec, graph, inputs, labels, loss, opts),
            Err(why) => tape_pass(exec, inputs, labels, loss, opts, why),
        }
    }

    /// The graph-level backward of `exec`, or why the tape runs instead.
    fn graph(
        &self,
        exec: &Executor,
        segments: Option<&[usize]>,
    ) -> std::result::Result<&GraphBackward, String> {
        match (segments, std::env::var("WHITTLE_BACKWARD").as_deref()) {
            (Some(_), _) => Err("gradient checkpointing recomputes segments on the tape".into()),
            (None, Ok("tape")) => Err("WHITTLE_BACKWARD=tape".into()),
            (None, _) => self
                .derived
                .get_or_init(|| GraphBackward::new(exec).map_err(|e| e.to_string()))
                .as_ref()
                .map_err(Clone::clone),
        }
    }
}

/// One pass on the graph-level backward: the loss's gradients for the outputs (leaf
/// variables) seed the graph's backward.
fn graph_pass(
    exec: &Executor,
    graph: &GraphBackward,
    inputs: HashMap<String, Value>,
    labels: &[i64],
    loss: &mut LossFn,
    opts: PassOptions,
) -> Result<PassResult> {
    let rec = graph.forward(exec, inputs.clone(), opts.seed, opts.running_stats)?;
    let (outputs, vars) = as_variables(&rec.outputs)?;
    let value = loss(&LossInput {
        outputs: &outputs,
        inputs: &inputs,
        labels,
    })?;
    let seeds = gradients_of(&value.backward()?, &vars);
    let grads = graph.backward(exec, &rec, seeds)?;
    Ok(PassResult {
        loss: scalar(&value)?,
        outputs: rec.outputs,
        grads,
        path: GradientPath::Graph,
    })
}

/// One pass on candle's tape (checkpointed when `opts.segments` is given), used because
/// of `why`.
fn tape_pass(
    exec: &Executor,
    inputs: HashMap<String, Value>,
    labels: &[i64],
    loss: &mut LossFn,
    opts: PassOptions,
    why: String,
) -> Result<PassResult> {
    if let Some(bounds) = opts.segments {
        return checkpointed(exec, inputs, labels, loss, bounds, opts, why);
    }
    let run = RunOptions {
        training: true,
        seed: Some(opts.seed),
        running_stats: opts.running_stats,
        ..Default::default()
    };
    let outputs = exec.run_with(inputs.clone(), run)?;
    let value = loss(&LossInput {
        outputs: &outputs,
        inputs: &inputs,
        labels,
    })?;
    let store = value.backward()?;
    let grads = exec
        .params()
        .iter()
        .filter_map(|(n, v)| store.get(v.as_tensor()).map(|g| (n.clone(), g.clone())))
        .collect();
    Ok(PassResult {
        loss: scalar(&value)?,
        outputs: detach_all(&outputs)?,
        grads,
        path: GradientPath::Tape(why),
    })
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
}

/// Copies of `env` cut from the autograd graph.
fn detach_all(env: &HashMap<String, Value>) -> Result<HashMap<String, Value>> {
    env.iter()
        .map(|(n, v)| Ok((n.clone(), v.with_tensor(v.tensor().detach())?)))
        .collect()
}

/// Values of a segment boundary, and the fresh variables standing for their float entries.
type VariableEnv = (HashMap<String, Value>, Vec<(String, Var)>);

/// `env` with every float value replaced by a fresh variable (returned beside it).
fn as_variables(env: &HashMap<String, Value>) -> Result<VariableEnv> {
    let mut vars = Vec::new();
    let mut out = HashMap::new();
    for (name, v) in env {
        if v.dtype().is_float() {
            let var = Var::from_tensor(&v.tensor().detach())?;
            out.insert(name.clone(), v.with_tensor(var.as_tensor().clone())?);
            vars.push((name.clone(), var));
        } else {
            out.insert(name.clone(), v.clone());
        }
    }
    Ok((out, vars))
}

fn checkpointed(
    exec: &Executor,
    inputs: HashMap<String, Value>,
    labels: &[i64],
    loss: &mut LossFn,
    bounds: &[usize],
    mut opts: PassOptions,
    why: String,
) -> Result<PassResult> {
    let seed = opts.seed;
    // Forward: keep only the values live at each boundary.
    let mut envs = vec![detach_all(&inputs)?];
    for w in bounds.windows(2) {
        let stats = opts.running_stats.as_deref_mut();
        let next = exec.run_range(
            w[0]..w[1],
            envs[envs.len() - 1].clone(),
            training(seed, stats),
        )?;
        envs.push(detach_all(&next)?);
    }
    let last = envs.pop().unwrap_or_default();
    let (out_env, out_vars) = as_variables(&last)?;
    let outputs: HashMap<String, Value> = exec
        .output_names()
        .into_iter()
        .filter_map(|n| out_env.get(&n).map(|v| (n, v.clone())))
        .collect();
    let value = loss(&LossInput {
        outputs: &outputs,
        inputs: &inputs,
        labels,
    })?;
    let store = value.backward()?;
    let mut carried = gradients_of(&store, &out_vars);
    let mut grads: HashMap<String, Tensor> = HashMap::new();
    // Backward: re-run each segment from its boundary and pull the carried gradients through.
    for (k, w) in bounds.windows(2).enumerate().rev() {
        let (env, vars) = as_variables(&envs[k])?;
        let out = exec.run_range(w[0]..w[1], env, training(seed, None))?;
        let mut surrogate: Option<Tensor> = None;
        for (name, g) in &carried {
            if let Some(v) = out.get(name) {
                let term = (v.tensor() * g)?.sum_all()?;
                surrogate = Some(match surrogate {
                    Some(s) => (s + term)?,
                    None => term,
                });
            }
        }
        let Some(surrogate) = surrogate else {
            carried.clear();
            continue;
        };
        let store = surrogate.backward()?;
        for (name, var) in exec.params() {
            if let Some(g) = store.get(var.as_tensor()) {
                let sum = match grads.remove(name) {
                    Some(old) => (old + g)?,
                    None => g.clone(),
                };
                grads.insert(name.clone(), sum);
            }
        }
        carried = gradients_of(&store, &vars);
    }
    Ok(PassResult {
        loss: scalar(&value)?,
        outputs: detach_all(&outputs)?,
        grads,
        path: GradientPath::Tape(why),
    })
}

/// Training-mode options with a dropout seed and optional statistics sink.
fn training(seed: u64, running_stats: Option<&mut HashMap<String, Value>>) -> RunOptions<'_> {
    RunOptions {
        training: true,
        seed: Some(seed),
        running_stats,
        ..Default::default()
    }
}

fn gradients_of(
    store: &candle_core::backprop::GradStore,
    vars: &[(String, Var)],
) -> HashMap<String, Tensor> {
    vars.iter()
        .filter_map(|(n, v)| store.get(v.as_tensor()).map(|g| (n.clone(), g.detach())))
        .collect()
}

/// Boundaries cutting `steps` graph steps into `segments` nearly equal runs.
pub fn segment_bounds(steps: usize, segments: usize) -> Vec<usize> {
    let k = segments.clamp(1, steps.max(1));
    let mut b: Vec<usize> = (0..=k).map(|i| i * steps / k).collect();
    b.dedup();
    b
}

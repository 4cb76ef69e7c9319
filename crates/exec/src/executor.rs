//! Runs a graph: forward (inference or training mode), capture hooks, and gradients of
//! trainable initializers through candle's autograd.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use whittle_ir::graph::{node_inputs, GraphEdit};
use whittle_ir::proto::{type_proto, GraphProto, NodeProto, ValueInfoProto};
use whittle_ir::{DataType, Model, TensorData};

use crate::error::{ExecError, Result};
use crate::ops::{OpCtx, OpFn, Registry};
use crate::plan::build::{self, Recording};
use crate::plan::run::Outcome;
use crate::plan::{PlanCache, PlanKey};
use crate::value::Value;

/// Declared type of a graph input: element type and dimensions (`None` = symbolic/unknown).
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    /// Input name.
    pub name: String,
    /// Declared element type, when declared.
    pub dtype: Option<DataType>,
    /// Declared dimensions, when the rank is declared.
    pub dims: Option<Vec<Option<usize>>>,
}

/// Called with each value as soon as a node produces it: `(value name, producing node, value)`.
pub type Hook<'h> = &'h mut dyn FnMut(&str, &NodeProto, &Value) -> Result<()>;

/// Called in planned runs, in place of the [`Hook`], with each float value that lives in
/// the plan's own buffers, borrowed: `(value name, producing node, shape, values)`.
/// Handing the hook a [`Value`] copies such a value into a fresh tensor.
pub type BorrowedHook<'h> = &'h mut dyn FnMut(&str, &NodeProto, &[usize], &[f32]) -> Result<()>;

/// Runs a node in place of its operator when it returns outputs: `(run-order position,
/// node, inputs)`; `None` leaves the node to its operator.
pub type Replace<'h> =
    &'h mut dyn FnMut(usize, &NodeProto, &[Option<Value>]) -> Result<Option<Vec<Value>>>;

/// Options of one run.
#[derive(Default)]
pub struct RunOptions<'h> {
    /// Training mode: Dropout drops, BatchNormalization uses batch statistics.
    pub training: bool,
    /// Intermediate values to return beside the graph outputs.
    pub keep: Vec<String>,
    /// Called for every produced value (calibration observers, debugging).
    pub hook: Option<Hook<'h>>,
    /// With a `hook`: takes the values a planned run computes in its own buffers instead
    /// of the hook, without copying them (the hook still sees every other value).
    pub borrowed: Option<BorrowedHook<'h>>,
    /// Seed of this run's random operators (Dropout without a `seed` attribute): each node
    /// draws from its own generator seeded from this and its position. `None`: candle's RNG.
    pub seed: Option<u64>,
    /// Training mode: receives the updated BatchNormalization running statistics, detached,
    /// by the name of the `input_mean` / `input_var` value they replace (apply them with
    /// [`Executor::set_initializer`]).
    pub running_stats: Option<&'h mut HashMap<String, Value>>,
    /// Node-by-node runs: nodes run by this instead of their operator where it returns
    /// outputs (the graph-level backward's training kernels).
    pub replace: Option<Replace<'h>>,
    /// With a `hook`: only floating-point values reach it (and `borrowed`). A planned run
    /// keeps quantized integers in its float buffers and would otherwise convert each one
    /// into a fresh tensor of its type for the hook (every QuantizeLinear output of a
    /// quantized model's verification, which observes floats only).
    pub floats_only: bool,
}

/// Whether a hook is handed a value of type `dtype` under [`RunOptions::floats_only`] (a
/// function of the field, so that it can be read while the hook is borrowed).
pub(crate) fn hook_sees(floats_only: bool, dtype: DataType) -> bool {
    !floats_only || dtype.is_float()
}

/// A prepared graph: operators resolved, initializers decoded once.
pub struct Executor {
    graph: GraphProto,
    opsets: HashMap<String, i64>,
    constants: HashMap<String, Value>,
    params: HashMap<String, Var>,
    plan: Plan,
    device: Device,
    /// Inference plans by input shapes ([`crate::plan`]); `plannable` says whether the
    /// graph can be planned at all (no subgraphs).
    plans: PlanCache,
    plannable: bool,
    /// The model static shape inference reads ([`crate::plan::infer::shape_model`]);
    /// `None` where the graph cannot be planned.
    shapes: Option<Model>,
}

/// The order to run a graph's nodes in, and what can be freed after each.
struct Plan {
    steps: Vec<Step>,
}

struct Step {
    node: usize,
    op: OpFn,
    /// Values read for the last time by this node.
    last_reads: Vec<String>,
}

impl Plan {
    fn new(graph: &GraphProto) -> Result<Self> {
        let order = graph.topological_order()?;
        let mut last_use: HashMap<String, usize> = HashMap::new();
        for (pos, &i) in order.iter().enumerate() {
            for name in node_inputs(&graph.node[i]) {
                last_use.insert(name, pos);
            }
        }
        let mut steps: Vec<Step> = order
            .iter()
            .map(|&i| {
                let node = &graph.node[i];
                let op = Registry::standard()
                    .get(&node.domain, &node.op_type)
                    .ok_or_else(|| unsupported(node))?;
                Ok(Step {
                    node: i,
                    op,
                    last_reads: Vec::new(),
                })
            })
            .collect::<Result<_>>()?;
        for (name, pos) in last_use {
            steps[pos].last_reads.push(name);
        }
        Ok(Plan { steps })
    }
}

impl Executor {
    /// Prepares `model` on the CPU.
    pub fn new(model: &Model) -> Result<Self> {
        Self::with_device(model, Device::Cpu)
    }

    /// Prepares `model` on `device`. Fails, naming the node, if an operator is unsupported.
    pub fn with_device(model: &Model, device: Device) -> Result<Self> {
        let src = model.graph();
        // Everything but the dense initializers, which become `constants` below: cloning
        // them too would copy every weight once more.
        let graph = GraphProto {
            node: src.node.clone(),
            name: src.name.clone(),
            initializer: Vec::new(),
            sparse_initializer: src.sparse_initializer.clone(),
            doc_string: src.doc_string.clone(),
            input: src.input.clone(),
            output: src.output.clone(),
            value_info: src.value_info.clone(),
            quantization_annotation: src.quantization_annotation.clone(),
            metadata_props: src.metadata_props.clone(),
        };
        let opsets = model
            .proto
            .opset_import
            .iter()
            .map(|o| {
                let d = if o.domain == "ai.onnx" { "" } else { &o.domain };
                (d.to_string(), o.version)
            })
            .collect();
        whittle_ir::validate::check_opsets(model)?;
        check_supported(&graph)?;
        check_tensor_values(&graph)?;
        let mut constants = HashMap::new();
        for init in &src.initializer {
            let data = TensorData::from_proto(init, None)?;
            constants.insert(init.name.clone(), Value::from_data(&data, &device)?);
        }
        let plan = Plan::new(&graph)?;
        let plannable = device.is_cpu() && build::plannable(&graph);
        let shapes = plannable.then(|| crate::plan::infer::shape_model(model));
        Ok(Executor {
            graph,
            opsets,
            constants,
            params: HashMap::new(),
            plan,
            device,
            plans: PlanCache::default(),
            plannable,
            shapes,
        })
    }

    /// The opset version the model imports for `domain` (`""` is the default domain).
    pub fn opset(&self, domain: &str) -> i64 {
        let domain = if domain == "ai.onnx" { "" } else { domain };
        self.opsets.get(domain).copied().unwrap_or(1)
    }

    /// The device values live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The graph's runtime inputs (those that are not initializers) with declared types.
    pub fn inputs(&self) -> Vec<InputSpec> {
        self.graph
            .input
            .iter()
            .filter(|v| !self.constants.contains_key(&v.name) && !self.params.contains_key(&v.name))
            .map(input_spec)
            .collect()
    }

    /// Names of the graph outputs.
    pub fn output_names(&self) -> Vec<String> {
        self.graph.output.iter().map(|v| v.name.clone()).collect()
    }

    /// Turns float initializers into trainable parameters (candle `Var`s).
    pub fn set_trainable(&mut self, names: &[String]) -> Result<()> {
        self.plans.clear();
        for name in names {
            let value = self.constants.remove(name).ok_or_else(|| {
                ExecError::msg(format!("'{name}' is not an initializer of the graph"))
            })?;
            if !value.dtype().is_float() {
                let dtype = value.dtype();
                self.constants.insert(name.clone(), value);
                return Err(ExecError::msg(format!(
                    "initializer '{name}' is {dtype}, only float tensors can be trained"
                )));
            }
            self.params
                .insert(name.clone(), Var::from_tensor(value.tensor())?);
        }
        Ok(())
    }

    /// The trainable parameters, by initializer name.
    pub fn params(&self) -> &HashMap<String, Var> {
        &self.params
    }

    /// Gradients of `loss` (a scalar from a training-mode run) for every trainable parameter.
    pub fn gradients(&self, loss: &Tensor) -> Result<HashMap<String, Tensor>> {
        let store = loss.backward()?;
        let mut grads = HashMap::new();
        for (name, var) in &self.params {
            let g = match store.get(var.as_tensor()) {
                Some(g) => g.clone(),
                None => var.as_tensor().zeros_like()?,
            };
            grads.insert(name.clone(), g);
        }
        Ok(grads)
    }

    /// The current value of an initializer or trainable parameter.
    pub fn initializer(&self, name: &str) -> Option<Value> {
        if let Some(var) = self.params.get(name) {
            return Value::from_float(var.as_tensor().clone()).ok();
        }
        self.constants.get(name).cloned()
    }

    /// Replaces the value of a non-trainable initializer (e.g. BatchNormalization statistics).
    pub fn set_initializer(&mut self, name: &str, value: Value) -> Result<()> {
        self.plans.clear();
        match self.constants.get_mut(name) {
            Some(v) => {
                if let Some(shapes) = self.shapes.as_mut() {
                    crate::plan::infer::set_initializer(shapes, name, &value);
                }
                *v = value;
                Ok(())
            }
            None => Err(ExecError::msg(format!("'{name}' is not an initializer"))),
        }
    }

    /// Writes current parameter and initializer values into a copy of `model`.
    pub fn export(&self, model: &Model) -> Result<Model> {
        let mut out = model.clone();
        for init in &mut out.graph_mut().initializer {
            if let Some(v) = self.initializer(&init.name) {
                let data = v.to_data()?;
                *init = data.to_proto(&init.name);
            }
        }
        Ok(out)
    }

    /// Runs the graph in inference mode and returns its outputs by name.
    pub fn run(&self, inputs: HashMap<String, Value>) -> Result<HashMap<String, Value>> {
        self.run_with(inputs, RunOptions::default())
    }

    /// Runs the graph with options (training mode, kept intermediates, a hook).
    ///
    /// In inference mode on the CPU, runs at a set of input shapes run a
    /// [`crate::plan::Plan`] built for them: from static shape inference where it knows
    /// every value's type and shape, else recorded by a first run that goes node by node.
    pub fn run_with(
        &self,
        inputs: HashMap<String, Value>,
        mut opts: RunOptions,
    ) -> Result<HashMap<String, Value>> {
        self.check_inputs(&inputs)?;
        let mut wanted: HashSet<String> = self.output_names().into_iter().collect();
        wanted.extend(opts.keep.iter().cloned());
        let all = 0..self.plan.steps.len();
        if !self.plannable || opts.training || !self.params.is_empty() {
            let env = self.evaluate(&self.graph, &self.plan, all, inputs, &wanted, &mut opts)?;
            return collect(env, wanted);
        }
        let key = PlanKey::new(&inputs, &opts.keep, opts.hook.is_some());
        let cached = match self.plans.get(&key) {
            Some(cached) => cached,
            None => match self.infer_plan(&key) {
                Some(plan) => {
                    self.plans.insert(key.clone(), Some(plan));
                    self.plans.get(&key).flatten()
                }
                None => return self.record_plan(key, inputs, wanted, &mut opts),
            },
        };
        let env = match cached {
            None => self.evaluate(&self.graph, &self.plan, all, inputs, &wanted, &mut opts)?,
            Some(plan) => match self.run_plan(&plan, &inputs, &mut opts)? {
                Outcome::Done(out) => return Ok(out),
                Outcome::Mismatch { next, env } => {
                    // Shapes depend on data (or inference was wrong: the next run
                    // records): go on (a hook has seen the values so far) or start over
                    // node by node, and stop planning these shapes.
                    match plan.inferred {
                        true => self.plans.distrust(&key),
                        false => self.plans.insert(key, None),
                    }
                    let (range, env) = match opts.hook.is_some() {
                        true => (next..all.end, env),
                        false => (all, inputs),
                    };
                    self.evaluate(&self.graph, &self.plan, range, env, &wanted, &mut opts)?
                }
            },
        };
        collect(env, wanted)
    }

    /// Runs `plan` on `inputs`: without hooks, on a worker of rayon's pool
    /// ([`crate::pool::on_worker`]). Hooks are not `Send`, so runs with them stay on the
    /// calling thread, as do runs on a one-thread pool (nothing to fork; the move itself would
    /// cost one hand-off).
    fn run_plan(
        &self,
        plan: &crate::plan::Plan,
        inputs: &HashMap<String, Value>,
        opts: &mut RunOptions,
    ) -> Result<Outcome> {
        let hooked = opts.hook.is_some() || opts.borrowed.is_some();
        if hooked || rayon::current_num_threads() == 1 {
            return plan.run(self, inputs, opts);
        }
        // `Plan::run` reads only the hooks of its options (and `floats_only`, which only
        // matters with one), both `None` here.
        crate::pool::on_worker(|| plan.run(self, inputs, &mut RunOptions::default()))
    }

    /// Runs node by node, recording every value's type and the values the plan folds, then
    /// builds and caches the plan for `key`.
    fn record_plan(
        &self,
        key: PlanKey,
        inputs: HashMap<String, Value>,
        wanted: HashSet<String>,
        opts: &mut RunOptions,
    ) -> Result<HashMap<String, Value>> {
        let order: Vec<usize> = self.plan.steps.iter().map(|s| s.node).collect();
        let fold = build::foldable(&self.graph, &order, |n| self.constants.contains_key(n));
        let mut rec = Recording::new(fold);
        let (mut user_hook, floats_only) = (opts.hook.take(), opts.floats_only);
        let mut hook = |name: &str, node: &NodeProto, v: &Value| {
            rec.see(name, v);
            match user_hook.as_mut() {
                Some(h) if hook_sees(floats_only, v.dtype()) => h(name, node, v),
                _ => Ok(()),
            }
        };
        let mut rec_opts = RunOptions {
            hook: Some(&mut hook),
            seed: opts.seed,
            ..Default::default()
        };
        let all = 0..self.plan.steps.len();
        let env = self.evaluate(&self.graph, &self.plan, all, inputs, &wanted, &mut rec_opts)?;
        drop(rec_opts);
        let source = build::Source {
            graph: &self.graph,
            order: self.plan.steps.iter().map(|s| (s.node, s.op)).collect(),
            constants: &self.constants,
            outputs: self.output_names(),
            opset: self.opset(""),
        };
        self.plans
            .insert(key.clone(), build::build(&source, &key, rec, false));
        collect(env, wanted)
    }

    /// The plan for `key` from static shape inference, without a run; `None` where
    /// inference leaves a value's type or shape unknown (or was contradicted at `key`).
    fn infer_plan(&self, key: &PlanKey) -> Option<crate::plan::Plan> {
        let shapes = self.shapes.as_ref()?;
        if !self.plans.trusts(key) {
            return None;
        }
        let order: Vec<(usize, OpFn)> = self.plan.steps.iter().map(|s| (s.node, s.op)).collect();
        let nodes: Vec<usize> = order.iter().map(|s| s.0).collect();
        let fold = build::foldable(&self.graph, &nodes, |n| self.constants.contains_key(n));
        let rec = crate::plan::infer::recording(self, shapes, key, &order, fold)?;
        let source = build::Source {
            graph: &self.graph,
            order,
            constants: &self.constants,
            outputs: self.output_names(),
            opset: self.opset(""),
        };
        let plan = build::build(&source, key, rec, true)?;
        // Buffers that do not fit in memory: the run goes node by node and fails naming
        // the node whose output does not fit.
        let bytes = plan.slots.iter().sum::<usize>() as u128 * 4;
        whittle_ir::memory::ensure_fits(Some(bytes), "the plan's buffers").ok()?;
        Some(plan)
    }

    /// An initializer's value (not a trainable parameter's).
    pub(crate) fn constant(&self, name: &str) -> Option<&Value> {
        self.constants.get(name)
    }

    /// The inference plan a run with `inputs` uses (`keep` and `observe`, whether a hook is
    /// set, as in that run's [`RunOptions`]), once a first run at those shapes recorded it;
    /// `None` before, or where those shapes cannot be planned.
    pub fn plan_for(
        &self,
        inputs: &HashMap<String, Value>,
        keep: &[String],
        observe: bool,
    ) -> Option<Arc<crate::plan::Plan>> {
        self.plans
            .get(&PlanKey::new(inputs, keep, observe))
            .flatten()
    }

    /// The graph's nodes in the order a run executes them (the steps of [`Executor::run_range`]).
    pub fn run_order(&self) -> Vec<&NodeProto> {
        self.plan
            .steps
            .iter()
            .map(|s| &self.graph.node[s.node])
            .collect()
    }

    /// Runs only the steps `range` of [`Executor::run_order`] with `env` holding every value
    /// they read (graph inputs and values computed by earlier steps), and returns the values
    /// still live afterwards: those later steps read, plus graph outputs. Chaining ranges
    /// gives the same values as one run; gradient checkpointing re-runs a range in backward.
    pub fn run_range(
        &self,
        range: Range<usize>,
        env: HashMap<String, Value>,
        mut opts: RunOptions,
    ) -> Result<HashMap<String, Value>> {
        if range.end > self.plan.steps.len() || range.start > range.end {
            return Err(ExecError::msg(format!(
                "step range {range:?} is outside the plan's {} steps",
                self.plan.steps.len()
            )));
        }
        let wanted: HashSet<String> = self.output_names().into_iter().collect();
        self.evaluate(&self.graph, &self.plan, range, env, &wanted, &mut opts)
    }

    /// Runs a subgraph (If/Loop/Scan body) with `inputs` bound to its formal inputs.
    pub fn run_subgraph(
        &self,
        graph: &GraphProto,
        inputs: Vec<Value>,
        scope: &HashMap<String, Value>,
        training: bool,
    ) -> Result<Vec<Value>> {
        let mut env: HashMap<String, Value> = graph
            .input
            .iter()
            .map(|v| v.name.clone())
            .zip(inputs)
            .collect();
        for init in &graph.initializer {
            let data = TensorData::from_proto(init, None)?;
            env.insert(init.name.clone(), Value::from_data(&data, &self.device)?);
        }
        let plan = Plan::new(graph)?;
        let wanted: HashSet<String> = graph.output.iter().map(|v| v.name.clone()).collect();
        let mut opts = RunOptions {
            training,
            ..Default::default()
        };
        let mut scoped = scope.clone();
        scoped.extend(env);
        let all = 0..plan.steps.len();
        let env = self.evaluate(graph, &plan, all, scoped, &wanted, &mut opts)?;
        graph
            .output
            .iter()
            .map(|o| {
                env.get(&o.name)
                    .or_else(|| scope.get(&o.name))
                    .cloned()
                    .ok_or_else(|| ExecError::msg(format!("subgraph output '{}' missing", o.name)))
            })
            .collect()
    }

    fn evaluate(
        &self,
        graph: &GraphProto,
        plan: &Plan,
        range: Range<usize>,
        mut env: HashMap<String, Value>,
        wanted: &HashSet<String>,
        opts: &mut RunOptions,
    ) -> Result<HashMap<String, Value>> {
        for (pos, step) in plan
            .steps
            .iter()
            .enumerate()
            .take(range.end)
            .skip(range.start)
        {
            let node = &graph.node[step.node];
            let fail = |message: String| ExecError::Node {
                node: node.name.clone(),
                op: node.op_type.clone(),
                message,
            };
            let inputs = node
                .input
                .iter()
                .map(|name| self.lookup(name, &env).map_err(fail))
                .collect::<Result<Vec<_>>>()?;
            let replaced = match opts.replace.as_mut() {
                Some(replace) => replace(pos, node, &inputs)?,
                None => None,
            };
            let outputs = match replaced {
                Some(outputs) => outputs,
                None => self.call_node(node, step.op, pos, inputs, opts, &env)?,
            };
            if opts.training && node.op_type == "BatchNormalization" {
                record_running_stats(node, &outputs, opts)?;
            }
            for (name, value) in node.output.iter().zip(outputs) {
                if name.is_empty() {
                    continue;
                }
                if let Some(h) = opts.hook.as_mut() {
                    if hook_sees(opts.floats_only, value.dtype()) {
                        h(name, node, &value)?;
                    }
                }
                env.insert(name.clone(), value);
            }
            for name in &step.last_reads {
                if !wanted.contains(name) {
                    env.remove(name);
                }
            }
        }
        Ok(env)
    }

    /// Runs `node` with operator `op` at run-order position `pos` on `inputs`, with `scope`
    /// visible to its subgraphs; errors name the node.
    pub(crate) fn call_node(
        &self,
        node: &NodeProto,
        op: OpFn,
        pos: usize,
        inputs: Vec<Option<Value>>,
        opts: &RunOptions,
        scope: &HashMap<String, Value>,
    ) -> Result<Vec<Value>> {
        let fail = |message: String| ExecError::Node {
            node: node.name.clone(),
            op: node.op_type.clone(),
            message,
        };
        let ctx = OpCtx {
            node,
            opset: self.opset(&node.domain),
            training: opts.training,
            seed: opts.seed.map(|s| node_seed(s, pos)),
            inputs,
            exec: self,
            scope,
        };
        let outputs = op(&ctx).map_err(|e| match e {
            ExecError::Msg(m) => fail(m),
            ExecError::Ir(e) => fail(e.to_string()),
            ExecError::UnsupportedType { what } => ExecError::Unsupported {
                node: node.name.clone(),
                op: format!("{} on {what}", node.op_type),
                domain: node.domain.clone(),
            },
            other => other,
        })?;
        if outputs.len() < node.output.iter().filter(|o| !o.is_empty()).count() {
            return Err(fail(format!(
                "produced {} outputs, the node names {}",
                outputs.len(),
                node.output.len()
            )));
        }
        Ok(outputs)
    }

    /// Node `i` of the graph.
    pub(crate) fn node(&self, i: usize) -> &NodeProto {
        &self.graph.node[i]
    }

    /// The value of `name`: computed, trainable parameter, or initializer.
    fn lookup(
        &self,
        name: &str,
        env: &HashMap<String, Value>,
    ) -> std::result::Result<Option<Value>, String> {
        if name.is_empty() {
            return Ok(None);
        }
        if let Some(v) = env.get(name) {
            return Ok(Some(v.clone()));
        }
        if let Some(var) = self.params.get(name) {
            let v = Value::from_float(var.as_tensor().clone()).map_err(|e| e.to_string())?;
            return Ok(Some(v));
        }
        match self.constants.get(name) {
            Some(v) => Ok(Some(v.clone())),
            None => Err(format!("input '{name}' has no value")),
        }
    }

    fn check_inputs(&self, inputs: &HashMap<String, Value>) -> Result<()> {
        let specs = self.inputs();
        for spec in &specs {
            let value = inputs.get(&spec.name).ok_or_else(|| ExecError::Input {
                name: spec.name.clone(),
                reason: "not given".into(),
            })?;
            check_input(spec, value)?;
        }
        for name in inputs.keys() {
            if !specs.iter().any(|s| &s.name == name) {
                return Err(ExecError::Input {
                    name: name.clone(),
                    reason: format!(
                        "the model has no such input (inputs: {})",
                        specs
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The seed of the random draws of step `pos` of a run seeded with `seed` (what the
/// operator sees as [`OpCtx::seed`]; a graph-level backward recomputes Dropout masks with it).
pub fn node_seed(seed: u64, pos: usize) -> u64 {
    whittle_ir::seed::derive(seed, pos as u64)
}

/// The `wanted` values of a finished run.
fn collect(env: HashMap<String, Value>, wanted: HashSet<String>) -> Result<HashMap<String, Value>> {
    wanted
        .into_iter()
        .map(|name| match env.get(&name) {
            Some(v) => Ok((name, v.clone())),
            None => Err(ExecError::msg(format!("value '{name}' was not computed"))),
        })
        .collect()
}

/// Stores a training-mode BatchNormalization's updated running mean and variance (its
/// outputs 1 and 2) under the names of its `input_mean` and `input_var`.
fn record_running_stats(node: &NodeProto, outputs: &[Value], opts: &mut RunOptions) -> Result<()> {
    let Some(stats) = opts.running_stats.as_mut() else {
        return Ok(());
    };
    for (slot, value) in [(3, outputs.get(1)), (4, outputs.get(2))] {
        if let (Some(name), Some(value)) = (node.input.get(slot), value) {
            stats.insert(name.clone(), value.with_tensor(value.tensor().detach())?);
        }
    }
    Ok(())
}

/// Checks a value against an input's declared type and shape.
pub fn check_input(spec: &InputSpec, value: &Value) -> Result<()> {
    let err = |reason: String| ExecError::Input {
        name: spec.name.clone(),
        reason,
    };
    if let Some(dt) = spec.dtype {
        if dt != value.dtype() {
            return Err(err(format!("expected {dt}, got {}", value.dtype())));
        }
    }
    if let Some(dims) = &spec.dims {
        let shape = value.shape();
        let fits = dims.len() == shape.len()
            && dims
                .iter()
                .zip(shape)
                .all(|(d, s)| d.is_none_or(|d| d == *s));
        if !fits {
            let want: Vec<String> = dims
                .iter()
                .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
                .collect();
            return Err(err(format!(
                "expected shape [{}], got {:?}",
                want.join(","),
                shape
            )));
        }
    }
    Ok(())
}

/// Samples in one run's inputs: the first axis of its (first) array, 1 for a scalar, 0
/// for an empty feed.
pub fn feed_samples(feed: &HashMap<String, Value>) -> usize {
    feed.values()
        .next()
        .map_or(0, |v| v.shape().first().copied().unwrap_or(1))
}

/// The inputs a run of `model` must be fed: its graph inputs that no initializer provides
/// (what [`Executor::inputs`] returns, without preparing an executor).
pub fn model_inputs(model: &Model) -> Vec<InputSpec> {
    let g = model.graph();
    let provided: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    g.input
        .iter()
        .filter(|v| !provided.contains(v.name.as_str()))
        .map(input_spec)
        .collect()
}

fn input_spec(v: &ValueInfoProto) -> InputSpec {
    let tensor = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => Some(t),
        _ => None,
    };
    InputSpec {
        name: v.name.clone(),
        dtype: tensor.and_then(|t| DataType::from_code(t.elem_type)),
        dims: tensor.and_then(|t| t.shape.as_ref()).map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(whittle_ir::proto::tensor_shape_proto::dimension::Value::DimValue(v))
                        if v >= 0 =>
                    {
                        Some(v as usize)
                    }
                    _ => None,
                })
                .collect()
        }),
    }
}

fn unsupported(node: &NodeProto) -> ExecError {
    ExecError::Unsupported {
        node: node.name.clone(),
        op: node.op_type.clone(),
        domain: node.domain.clone(),
    }
}

/// Graph inputs and outputs must be tensors: the executor holds no sequence, map, optional
/// or sparse value.
fn check_tensor_values(graph: &GraphProto) -> Result<()> {
    for (role, v) in
        (graph.input.iter().map(|v| ("input", v))).chain(graph.output.iter().map(|v| ("output", v)))
    {
        let kind = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            None | Some(type_proto::Value::TensorType(_)) => continue,
            Some(type_proto::Value::SequenceType(_)) => "sequence",
            Some(type_proto::Value::MapType(_)) => "map",
            Some(type_proto::Value::OptionalType(_)) => "optional",
            Some(type_proto::Value::SparseTensorType(_)) => "sparse tensor",
        };
        return Err(ExecError::UnsupportedType {
            what: format!("graph {role} '{}' of {kind} type", v.name),
        });
    }
    Ok(())
}

fn check_supported(graph: &GraphProto) -> Result<()> {
    for node in &graph.node {
        if Registry::standard()
            .get(&node.domain, &node.op_type)
            .is_none()
        {
            return Err(unsupported(node));
        }
        for attr in &node.attribute {
            for g in attr.g.iter().chain(attr.graphs.iter()) {
                check_supported(g)?;
            }
        }
    }
    Ok(())
}

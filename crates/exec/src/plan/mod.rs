//! Planned inference: a model compiled once per set of input shapes, then run many times.
//!
//! A [`Plan`] is built from the shape and element type of every value at those shapes:
//! from static shape inference where it knows them all ([`infer`]), else from one
//! recorded run of the node-by-node (candle) path. From them the planner
//! - folds everything known at plan time (initializers, `Constant`, `Shape`/`Size` of values
//!   whose shapes are fixed, and any deterministic node whose inputs are all constants, such
//!   as the `Shape -> Gather -> Concat -> Reshape` chains of exported transformers), so
//!   those nodes cost nothing per run;
//! - folds inference `BatchNormalization` into the `Conv` before it and fuses
//!   `Conv`/`Gemm`/`MatMul` with a following bias `Add` and activation ([`fuse`]);
//! - turns `Reshape`, `Flatten`, `Squeeze`, `Unsqueeze`, `Identity` and inference `Dropout`
//!   into views of their input (no copy);
//! - runs the operators it has kernels for on f32 buffers of an arena whose slots are
//!   shared by values with disjoint lifetimes ([`memory`]), and every other node through
//!   its candle operator ([`crate::ops::Registry`]), converting at that boundary.
//!
//! The data structures are public so that other passes over the schedule (the graph-level
//! backward) can read the order, shapes and lifetimes: [`Plan::steps`] is the schedule,
//! [`Plan::values`] says where each value lives, [`Plan::slots`] sizes the arena.
//!
//! Safety net: a node run through its candle operator whose output shape or type differs
//! from the recorded one (data-dependent shapes such as `NonZero`) stops the planned run;
//! the executor then reruns on the node-by-node path and stops planning for those shapes.

pub mod build;
pub mod fuse;
pub mod infer;
pub mod kernel;
pub mod lower;
pub mod memory;
pub mod run;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use whittle_ir::DataType;

use crate::ops::OpFn;
use crate::value::Value;

pub use kernel::Kernel;

/// Index of a value in [`Plan::values`].
pub type ValueId = usize;

/// A model compiled for one set of input shapes.
pub struct Plan {
    /// Every value a run sees: graph inputs, constants, node outputs.
    pub values: Vec<PlannedValue>,
    /// The schedule: steps in execution order.
    pub steps: Vec<PlanStep>,
    /// Size in f32 elements of each arena slot ([`Home::Slot`]).
    pub slots: Vec<usize>,
    /// Graph inputs: feed name and the value it binds.
    pub inputs: Vec<(String, ValueId)>,
    /// Values a run returns (graph outputs and kept intermediates).
    pub outputs: Vec<ValueId>,
    /// Built from static shape inference ([`infer`]) rather than a recorded run.
    pub inferred: bool,
    /// Arena buffers kept between runs (taken by a run, returned after it).
    arena: Mutex<Vec<Vec<f32>>>,
}

/// One value of a plan: its name, recorded type and where it lives.
pub struct PlannedValue {
    /// The value's name in the graph (or a derived name for folded weights).
    pub name: String,
    /// Element type.
    pub dtype: DataType,
    /// Dimensions, fixed for this plan.
    pub shape: Vec<usize>,
    /// Where a run keeps it.
    pub home: Home,
}

impl PlannedValue {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Where a planned value lives during a run.
#[derive(Clone)]
pub enum Home {
    /// A graph input, bound from the caller's feed.
    Input,
    /// Known at plan time: initializer, `Constant`, folded shape arithmetic, folded weights.
    Const(Value),
    /// A candle value, held from the step producing it to the last step reading it.
    Host,
    /// An f32 buffer: slot `0` of the arena; views share their source's slot.
    Slot(usize),
}

/// One step of the schedule.
pub struct PlanStep {
    /// The graph node it runs (for fused steps, the first node of the chain): errors and
    /// hooks name it.
    pub node: usize,
    /// The node's position in [`crate::Executor::run_order`] (seeds random operators as
    /// the node-by-node path does).
    pub pos: usize,
    /// What the step does.
    pub op: StepOp,
    /// Values read, in the operator's input order (`None`: an omitted optional input).
    pub inputs: Vec<Option<ValueId>>,
    /// Values written (`None`: an omitted optional output).
    pub outputs: Vec<Option<ValueId>>,
    /// Host values read for the last time by this step (dropped after it).
    pub frees: Vec<ValueId>,
}

/// What a step does.
pub enum StepOp {
    /// Its outputs were computed at plan time; it runs only to show them to a hook.
    Folded,
    /// Output 0 is input 0 with the output's shape (no copy).
    View,
    /// The node's candle operator, with conversion of arena inputs and outputs.
    Fallback(OpFn),
    /// A native f32 kernel on arena buffers.
    Kernel(Kernel),
}

impl StepOp {
    /// A short name of the step kind (`"folded"`, `"view"`, `"fallback"`, or the kernel's).
    pub fn kind(&self) -> &'static str {
        match self {
            StepOp::Folded => "folded",
            StepOp::View => "view",
            StepOp::Fallback(_) => "fallback",
            StepOp::Kernel(k) => k.name(),
        }
    }
}

/// What a plan is compiled for: input types and shapes, and what a run must observe.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlanKey {
    /// Inputs by name (sorted): element type and shape.
    pub inputs: Vec<(String, DataType, Vec<usize>)>,
    /// Intermediate values the run returns (sorted): never fused away.
    pub keep: Vec<String>,
    /// A hook observes every value: no fusion, every intermediate is produced.
    pub observe: bool,
}

impl PlanKey {
    /// The key of a run with `feed`, `keep` and (`observe`) a hook.
    pub fn new(feed: &HashMap<String, Value>, keep: &[String], observe: bool) -> Self {
        let mut inputs: Vec<_> = feed
            .iter()
            .map(|(n, v)| (n.clone(), v.dtype(), v.shape().to_vec()))
            .collect();
        inputs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut keep = keep.to_vec();
        keep.sort();
        keep.dedup();
        PlanKey {
            inputs,
            keep,
            observe,
        }
    }
}

/// Plans most recently built, by key. `None` marks shapes the plan cannot serve.
#[derive(Default)]
pub struct PlanCache {
    plans: Mutex<HashMap<PlanKey, Option<Arc<Plan>>>>,
    /// Keys whose plan from inference met another shape or type than inferred: their
    /// next plan is recorded.
    distrusted: Mutex<std::collections::HashSet<PlanKey>>,
}

/// Plans held at once (each keeps its arena between runs); a model fed ever new shapes
/// starts over past this.
const MAX_PLANS: usize = 8;

impl PlanCache {
    /// The entry for `key`: `None` when never planned, `Some(None)` when not plannable.
    pub fn get(&self, key: &PlanKey) -> Option<Option<Arc<Plan>>> {
        self.lock().get(key).cloned()
    }

    /// Stores the plan (or `None`: not plannable) for `key`.
    pub fn insert(&self, key: PlanKey, plan: Option<Plan>) {
        let mut plans = self.lock();
        if plans.len() >= MAX_PLANS {
            plans.clear();
        }
        plans.insert(key, plan.map(Arc::new));
    }

    /// Forgets every plan (weights or initializers changed).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Forgets the plan of `key`, built from inference that a run contradicted: the next
    /// run at `key` records one.
    pub fn distrust(&self, key: &PlanKey) {
        self.lock().remove(key);
        self.distrusted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
    }

    /// Whether a plan from inference may be built for `key`.
    pub fn trusts(&self, key: &PlanKey) -> bool {
        !self
            .distrusted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PlanKey, Option<Arc<Plan>>>> {
        self.plans.lock().unwrap_or_else(|e| e.into_inner())
    }
}

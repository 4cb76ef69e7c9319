//! Per-node profile of a model in whittle's executor: time, MACs, FLOPs, parameters and
//! activation bytes per node and per operator type, bottlenecks and peak activation memory.
//!
//! Timing: the executor's hook fires as each node's first output is ready; a node's time
//! is the wall time since the previous node's hook (so it includes fetching its inputs and
//! freeing values whose last reader ran before it). Shapes come from
//! [`whittle_ir::shape::infer`] at the resolved input shapes, and from the values the run
//! produced where inference leaves a dimension open. See [`crate::analysis`] for the MAC,
//! FLOP and memory conventions.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use whittle_exec::{Executor, RunOptions, Value};
use whittle_ir::cost::node_macs;
use whittle_ir::graph::node_display_name;
use whittle_ir::proto::NodeProto;
use whittle_ir::{DataType, GraphEdit, Model, TensorType};

use crate::analysis::{ensure_run_fits, flops, node_params, peak_activation_bytes, value_bytes};
use crate::error::{bail, Result};
use crate::inputs::{batch_note, random_inputs, resolve_inputs, shape_map, ShapeRequest};

/// What to profile and how.
#[derive(Clone, Debug)]
pub struct ProfileOptions {
    /// Input shapes (`--batch`, `--shape`).
    pub shapes: ShapeRequest,
    /// Timed runs (at least 1).
    pub runs: usize,
    /// Untimed runs first.
    pub warmup: usize,
    /// Nodes taking more than this share of the time are bottlenecks.
    pub threshold: f64,
    /// Seed of the random inputs.
    pub seed: u64,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions {
            shapes: ShapeRequest::default(),
            runs: 10,
            warmup: 2,
            threshold: 0.05,
            seed: 0,
        }
    }
}

/// Figures of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeProfile {
    /// Node name (`OpType#index` when the node has none).
    pub name: String,
    /// Operator type (`domain:Op` outside the default domain).
    pub op_type: String,
    /// Shape of the node's first output.
    pub output_shape: Vec<usize>,
    /// Mean time per run, milliseconds.
    pub time_ms: f64,
    /// Share of the summed node time (0..1).
    pub share: f64,
    /// Multiply-accumulates.
    pub macs: u64,
    /// Floating-point operations (2·MACs).
    pub flops: u64,
    /// Initializer elements the node reads.
    pub params: u64,
    /// Bytes of the node's outputs.
    pub activation_bytes: u64,
}

/// Figures of all nodes of one operator type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpTypeProfile {
    /// Operator type.
    pub op_type: String,
    /// Number of nodes.
    pub count: usize,
    /// Summed mean time, milliseconds.
    pub time_ms: f64,
    /// Share of the summed node time.
    pub share: f64,
    /// Summed MACs.
    pub macs: u64,
    /// Summed FLOPs.
    pub flops: u64,
    /// Summed parameters read (shared initializers count once per reader).
    pub params: u64,
    /// Summed output bytes.
    pub activation_bytes: u64,
}

/// A whole profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Input shapes used.
    pub input_shapes: BTreeMap<String, Vec<usize>>,
    /// Timed runs.
    pub runs: usize,
    /// Warm-up runs.
    pub warmup: usize,
    /// Bottleneck threshold (share of time).
    pub threshold: f64,
    /// Mean wall time of a whole run, milliseconds.
    pub run_time_ms: f64,
    /// Sum of the nodes' mean times, milliseconds.
    pub total_time_ms: f64,
    /// MACs of one run.
    pub total_macs: u64,
    /// FLOPs of one run.
    pub total_flops: u64,
    /// Elements of the distinct initializers the graph reads.
    pub total_params: u64,
    /// Peak bytes of live activations (liveness over the execution order).
    pub peak_activation_bytes: u64,
    /// Every node, in execution order.
    pub nodes: Vec<NodeProfile>,
    /// Per operator type, slowest first.
    pub by_op_type: Vec<OpTypeProfile>,
    /// Nodes above the threshold, slowest first.
    pub bottlenecks: Vec<NodeProfile>,
    /// Remarks for the reader (e.g. a dynamic batch dimension taken as 1).
    pub notes: Vec<String>,
}

/// Element type and shape of every value a run produced.
type Observed = HashMap<String, (DataType, Vec<usize>)>;

/// Profiles `model`: `warmup` untimed runs, then `runs` timed ones on seeded random
/// inputs. `tick` is called after every run (progress).
pub fn profile(model: &Model, opts: &ProfileOptions, tick: &mut dyn FnMut()) -> Result<Profile> {
    if opts.runs == 0 {
        bail!("`runs` must be at least 1");
    }
    if !(0.0..=1.0).contains(&opts.threshold) {
        bail!(
            "`threshold` {} must be a share between 0 and 1",
            opts.threshold
        );
    }
    let inputs = resolve_inputs(model, &opts.shapes)?;
    let inferred = ensure_run_fits(model, &inputs)?;
    let exec = Executor::new(model)?;
    let feed: HashMap<String, Value> = random_inputs(&inputs, opts.seed)?
        .iter()
        .map(|(n, d)| Ok((n.clone(), Value::from_data(d, exec.device())?)))
        .collect::<Result<_>>()?;
    let graph = model.graph();
    let order = graph.topological_order()?;
    let mut timer = NodeTimer::new(&graph.node);
    let mut run_time = 0.0;
    for run in 0..opts.warmup + opts.runs {
        let timed = run >= opts.warmup;
        let seconds = timer.run(&exec, &feed, timed)?;
        if timed {
            run_time += seconds;
        }
        tick();
    }
    let shapes = Shapes {
        inferred: &inferred,
        observed: &timer.observed,
    };
    let nodes = node_profiles(model, &shapes, &timer.seconds, opts.runs)?;
    let by_op_type = group_by_op_type(&nodes);
    let mut bottlenecks: Vec<NodeProfile> = nodes
        .iter()
        .filter(|n| n.share > opts.threshold)
        .cloned()
        .collect();
    bottlenecks.sort_by(|a, b| b.time_ms.total_cmp(&a.time_ms));
    let total_macs = nodes.iter().map(|n| n.macs).sum();
    Ok(Profile {
        input_shapes: shape_map(&inputs),
        runs: opts.runs,
        warmup: opts.warmup,
        threshold: opts.threshold,
        run_time_ms: run_time * 1e3 / opts.runs as f64,
        total_time_ms: nodes.iter().map(|n| n.time_ms).sum(),
        total_macs,
        total_flops: flops(total_macs),
        total_params: whittle_ir::cost::parameter_count(graph),
        peak_activation_bytes: peak_activation_bytes(graph, &order, &|n| shapes.bytes(n)),
        nodes,
        by_op_type,
        bottlenecks,
        notes: batch_note(&inputs).into_iter().collect(),
    })
}

/// Sums the wall time between consecutive node outputs over runs and records what
/// every value looked like.
struct NodeTimer {
    /// Node index by the name of its first output.
    first_output: HashMap<String, usize>,
    /// Summed seconds per node over timed runs.
    seconds: Vec<f64>,
    observed: Observed,
}

impl NodeTimer {
    fn new(nodes: &[NodeProto]) -> Self {
        let first_output = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                n.output
                    .iter()
                    .find(|o| !o.is_empty())
                    .map(|o| (o.clone(), i))
            })
            .collect();
        NodeTimer {
            first_output,
            seconds: vec![0.0; nodes.len()],
            observed: HashMap::new(),
        }
    }

    /// One run; returns its wall time in seconds.
    fn run(&mut self, exec: &Executor, feed: &HashMap<String, Value>, timed: bool) -> Result<f64> {
        let record = self.observed.is_empty();
        let NodeTimer {
            first_output,
            seconds,
            observed,
        } = self;
        let start = Instant::now();
        let mut last = start;
        let mut hook = |name: &str, _node: &NodeProto, value: &Value| {
            if let Some(&i) = first_output.get(name) {
                let now = Instant::now();
                if timed {
                    seconds[i] += (now - last).as_secs_f64();
                }
                last = now;
            }
            if record {
                observed.insert(name.to_string(), (value.dtype(), value.shape().to_vec()));
            }
            Ok(())
        };
        let opts = RunOptions {
            hook: Some(&mut hook),
            ..Default::default()
        };
        exec.run_with(feed.clone(), opts)?;
        Ok(start.elapsed().as_secs_f64())
    }
}

/// Shapes and sizes of values: inferred where known, else as produced by the run.
struct Shapes<'a> {
    inferred: &'a HashMap<String, TensorType>,
    observed: &'a Observed,
}

impl Shapes<'_> {
    fn dims(&self, name: &str) -> Option<Vec<usize>> {
        self.inferred
            .get(name)
            .and_then(TensorType::known_dims)
            .or_else(|| self.observed.get(name).map(|(_, d)| d.clone()))
    }

    fn bytes(&self, name: &str) -> u64 {
        let dtype = self
            .inferred
            .get(name)
            .and_then(|t| t.dtype)
            .or_else(|| self.observed.get(name).map(|(d, _)| *d));
        match (dtype, self.dims(name)) {
            (Some(t), Some(d)) => value_bytes(t, &d),
            _ => 0,
        }
    }
}

fn node_profiles(
    model: &Model,
    shapes: &Shapes,
    seconds: &[f64],
    runs: usize,
) -> Result<Vec<NodeProfile>> {
    let graph = model.graph();
    let total: f64 = seconds.iter().sum();
    graph
        .node
        .iter()
        .zip(seconds)
        .enumerate()
        .map(|(i, (node, &s))| {
            let Some(macs) = node_macs(node, &|n| shapes.dims(n)) else {
                bail!(
                    "node '{}' ({}): input shapes unknown, cannot count its MACs",
                    node.name,
                    node.op_type
                );
            };
            let outputs = node.output.iter().filter(|o| !o.is_empty());
            Ok(NodeProfile {
                name: node_display_name(node, i),
                op_type: op_label(node),
                output_shape: node
                    .output
                    .first()
                    .and_then(|o| shapes.dims(o))
                    .unwrap_or_default(),
                time_ms: s * 1e3 / runs as f64,
                share: if total > 0.0 { s / total } else { 0.0 },
                macs,
                flops: flops(macs),
                params: node_params(graph, node),
                activation_bytes: outputs.map(|o| shapes.bytes(o)).sum(),
            })
        })
        .collect()
}

fn op_label(node: &NodeProto) -> String {
    if node.domain.is_empty() || node.domain == "ai.onnx" {
        node.op_type.clone()
    } else {
        format!("{}:{}", node.domain, node.op_type)
    }
}

fn group_by_op_type(nodes: &[NodeProfile]) -> Vec<OpTypeProfile> {
    let mut groups: BTreeMap<&str, OpTypeProfile> = BTreeMap::new();
    for n in nodes {
        let g = groups.entry(&n.op_type).or_insert_with(|| OpTypeProfile {
            op_type: n.op_type.clone(),
            count: 0,
            time_ms: 0.0,
            share: 0.0,
            macs: 0,
            flops: 0,
            params: 0,
            activation_bytes: 0,
        });
        g.count += 1;
        g.time_ms += n.time_ms;
        g.share += n.share;
        g.macs += n.macs;
        g.flops += n.flops;
        g.params += n.params;
        g.activation_bytes += n.activation_bytes;
    }
    let mut out: Vec<OpTypeProfile> = groups.into_values().collect();
    out.sort_by(|a, b| b.time_ms.total_cmp(&a.time_ms));
    out
}

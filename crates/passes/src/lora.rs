//! LoRA adapters (Hu et al., 2021): a trainable low-rank branch beside a frozen weight.
//!
//! [`add_adapters`] gives each targeted layer `y = x·W` (a Gemm, respecting `transA`,
//! `transB` and `alpha`; a MatMul with a constant 2-D weight; a 1x1 Conv) a branch
//! `x -> A (in x r) -> B (r x out)` scaled by `alpha / r` and added to its output:
//! `y = x·W + (alpha / r)·x·A·B`. `A` starts small and random (seeded), `B` at zero, so
//! the model computes exactly what it did. The adapters are initializers named after the
//! weight (`<weight>.lora_a`, `<weight>.lora_b`, the constant `<weight>.lora_scale`), so
//! training selects them by name: [`adapter_freeze`] lists what to freeze so that only the
//! adapters (and, say, the classifier head of [`head_parameters`]) train.
//! [`merge_adapters`] folds `W + (alpha / r)·A·B` back into each weight and removes the
//! branches, leaving plain ONNX that every other pass applies to.

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use whittle_ir::attr::{make, NodeAttrs};
use whittle_ir::proto::{GraphProto, NodeProto};
use whittle_ir::{DataType, GraphEdit, Model, TensorData};

use whittle_train::params::{exact_pattern, trainable_initializers};

use crate::factorize::layer_name;
use crate::optimize::{util, ModelStats};
use crate::{bail, PassError, Result};

/// Suffix of the down-projection `A` of a weight's adapter.
pub const A_SUFFIX: &str = ".lora_a";
/// Suffix of the up-projection `B` of a weight's adapter.
pub const B_SUFFIX: &str = ".lora_b";
/// Suffix of the constant scale `alpha / r` of a MatMul or Conv adapter.
pub const SCALE_SUFFIX: &str = ".lora_scale";

/// Options of [`add_adapters`].
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of every adapter, 1..=min(in, out) of each adapted layer.
    pub rank: usize,
    /// The branch is scaled by `alpha / rank`.
    pub alpha: f64,
    /// Layers to adapt (node names; unnamed nodes go by their first output). Empty: every
    /// Gemm, MatMul with a constant weight and 1x1 Conv.
    pub targets: Vec<String>,
    /// With empty `targets`, leave the head (the last weighted layer) without an adapter,
    /// for runs that train the head itself.
    pub exclude_head: bool,
    /// Seed of `A`'s initialisation.
    pub seed: u64,
}

impl LoraConfig {
    /// Adapters of rank `rank` on every eligible layer, scale 1 (`alpha = rank`), seed 0.
    pub fn new(rank: usize) -> Self {
        LoraConfig {
            rank,
            alpha: rank as f64,
            targets: Vec::new(),
            exclude_head: false,
            seed: 0,
        }
    }
}

/// One adapted layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdapterReport {
    /// The layer's name.
    pub layer: String,
    /// Its operator (Gemm, MatMul, Conv).
    pub op: String,
    /// Its weight's name (the adapters are `<weight>.lora_a` / `.lora_b`).
    pub weight: String,
    /// Input features.
    #[serde(rename = "in")]
    pub inputs: usize,
    /// Output features.
    #[serde(rename = "out")]
    pub outputs: usize,
    /// Parameters of the adapter: `rank · (in + out)`.
    pub parameters: u64,
}

/// Result of [`add_adapters`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoraReport {
    /// Adapter rank.
    pub rank: usize,
    /// The branch scale `alpha / rank`.
    pub scale: f64,
    /// Every adapted layer.
    pub layers: Vec<AdapterReport>,
    /// Parameters of all adapters: what trains besides any unfrozen layer.
    pub adapter_parameters: u64,
    /// Parameters of the model before adapters were added.
    pub model_parameters: u64,
}

/// How a layer multiplies by its weight.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Gemm: `weight_out_major` when `transB` stores the weight as [out, in].
    Gemm {
        trans_b: bool,
    },
    MatMul,
    Conv,
}

/// A layer that can take an adapter.
#[derive(Clone, Debug)]
struct Layer {
    index: usize,
    name: String,
    kind: Kind,
    weight: String,
    inputs: usize,
    outputs: usize,
}

impl Layer {
    /// True when the weight is stored [out, in] (Gemm with transB, Conv), else [in, out].
    fn out_major(&self) -> bool {
        matches!(self.kind, Kind::Gemm { trans_b: true } | Kind::Conv)
    }
}

/// Adds an adapter of `cfg.rank` to every targeted layer; the outputs are unchanged.
pub fn add_adapters(model: &Model, cfg: &LoraConfig) -> Result<(Model, LoraReport)> {
    if cfg.rank == 0 {
        bail!("LoRA `rank` must be at least 1, got 0");
    }
    if !(cfg.alpha.is_finite() && cfg.alpha > 0.0) {
        bail!("LoRA `alpha` must be a positive number, got {}", cfg.alpha);
    }
    let scale = cfg.alpha / cfg.rank as f64;
    let layers = targets(model, cfg)?;
    for layer in &layers {
        let smallest = layer.inputs.min(layer.outputs);
        if cfg.rank > smallest {
            bail!(
                "LoRA `rank` {} exceeds layer '{}' ({} -> {} features): at most {smallest}",
                cfg.rank,
                layer.name,
                layer.inputs,
                layer.outputs
            );
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut out = model.clone();
    let mut reports = Vec::new();
    // From the last node back, so that inserting nodes keeps earlier indices valid.
    for layer in layers.iter().rev() {
        insert_branch(&mut out, layer, cfg.rank, scale, &mut rng)?;
        reports.push(AdapterReport {
            layer: layer.name.clone(),
            op: node_op(layer.kind).to_string(),
            weight: layer.weight.clone(),
            inputs: layer.inputs,
            outputs: layer.outputs,
            parameters: (cfg.rank * (layer.inputs + layer.outputs)) as u64,
        });
    }
    reports.reverse();
    out.graph_mut().sort_topologically()?;
    let report = LoraReport {
        rank: cfg.rank,
        scale,
        adapter_parameters: reports.iter().map(|r| r.parameters).sum(),
        layers: reports,
        model_parameters: ModelStats::of(model).params,
    };
    Ok((out, report))
}

fn node_op(kind: Kind) -> &'static str {
    match kind {
        Kind::Gemm { .. } => "Gemm",
        Kind::MatMul => "MatMul",
        Kind::Conv => "Conv",
    }
}

/// The layers `cfg` targets, in graph order; errors name a target that cannot be adapted.
fn targets(model: &Model, cfg: &LoraConfig) -> Result<Vec<Layer>> {
    let graph = model.graph();
    let mut eligible = Vec::new();
    let mut refused = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        match layer_at(model, index)? {
            Some(Ok(layer)) => eligible.push(layer),
            Some(Err(reason)) => refused.push((layer_name(node), reason)),
            None => {}
        }
    }
    let names = |layers: &[Layer]| {
        let list: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    };
    if cfg.targets.is_empty() {
        if cfg.exclude_head {
            let head = head_layer(model)?;
            eligible.retain(|l| Some(&l.name) != head.as_ref());
        }
        if eligible.is_empty() {
            let why: Vec<String> = refused.iter().map(|(n, r)| format!("'{n}': {r}")).collect();
            bail!(
                "LoRA found no layer to adapt: it needs a Gemm, a MatMul with a constant 2-D weight or a 1x1 Conv{}{}",
                if cfg.exclude_head { " besides the head" } else { "" },
                if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
            );
        }
        return Ok(eligible);
    }
    let mut chosen = Vec::new();
    for target in &cfg.targets {
        if let Some(layer) = eligible.iter().find(|l| &l.name == target) {
            chosen.push(layer.clone());
        } else if let Some((_, reason)) = refused.iter().find(|(n, _)| n == target) {
            bail!("LoRA `targets`: layer '{target}' cannot take an adapter: {reason}");
        } else {
            bail!(
                "LoRA `targets`: no layer '{target}' in the model (layers that can take an adapter: {})",
                names(&eligible)
            );
        }
    }
    chosen.sort_by_key(|l| l.index);
    chosen.dedup_by_key(|l| l.index);
    Ok(chosen)
}

/// Node `index` as an adaptable layer: `None` when it has no weight operand at all,
/// `Some(Err(why))` when it is a Gemm/MatMul/Conv that cannot take an adapter.
fn layer_at(model: &Model, index: usize) -> Result<Option<std::result::Result<Layer, String>>> {
    let graph = model.graph();
    let node = &graph.node[index];
    let kind = match node.op_type.as_str() {
        "Gemm" => Kind::Gemm {
            trans_b: node.int_or("transB", 0)? != 0,
        },
        "MatMul" => Kind::MatMul,
        "Conv" => Kind::Conv,
        _ => return Ok(None),
    };
    if !util::is_default_domain(node) {
        return Ok(None);
    }
    let Some(weight) = node.input.get(1).filter(|w| !w.is_empty()) else {
        return Ok(Some(Err("it has no weight input".into())));
    };
    let refuse = |reason: String| Ok(Some(Err(reason)));
    let Some(proto) = graph.initializer(weight) else {
        return refuse(format!("its weight '{weight}' is not an initializer"));
    };
    if graph.input.iter().any(|v| &v.name == weight) {
        return refuse(format!(
            "its weight '{weight}' is also a graph input (overridable)"
        ));
    }
    if DataType::from_code(proto.data_type) != Some(DataType::Float) {
        return refuse(format!("its weight '{weight}' is not float32"));
    }
    if graph.initializer(&format!("{weight}{A_SUFFIX}")).is_some() {
        return refuse(format!(
            "its weight '{weight}' already has an adapter (merge it first)"
        ));
    }
    let users = (graph.node.iter())
        .filter(|n| n.input.iter().any(|i| i == weight))
        .count();
    if users > 1 {
        return refuse(format!("its weight '{weight}' is shared by {users} nodes"));
    }
    let dims: Vec<usize> = proto.dims.iter().map(|&d| d as usize).collect();
    let (inputs, outputs) = match kind {
        Kind::Gemm { .. } if node.float_or("alpha", 1.0)? == 0.0 => {
            return refuse("Gemm with alpha 0".into())
        }
        Kind::Gemm { trans_b: true } if dims.len() == 2 => (dims[1], dims[0]),
        Kind::Gemm { .. } | Kind::MatMul if dims.len() == 2 => (dims[0], dims[1]),
        Kind::Conv if node.int_or("group", 1)? != 1 => return refuse("grouped convolution".into()),
        Kind::Conv if dims.len() >= 3 && dims[2..].iter().all(|&k| k == 1) => (dims[1], dims[0]),
        Kind::Conv => {
            return refuse(format!(
                "kernel {:?} is not 1x1",
                &dims[2.min(dims.len())..]
            ))
        }
        _ => return refuse(format!("weight of shape {dims:?} is not a matrix")),
    };
    Ok(Some(Ok(Layer {
        index,
        name: layer_name(node),
        kind,
        weight: weight.clone(),
        inputs,
        outputs,
    })))
}

/// The name of the last Gemm/MatMul/Conv with a constant weight in execution order: the
/// classifier head of a typical network. `None` when there is none.
pub fn head_layer(model: &Model) -> Result<Option<String>> {
    let graph = model.graph();
    for &index in graph.topological_order()?.iter().rev() {
        let node = &graph.node[index];
        let weighted = matches!(node.op_type.as_str(), "Gemm" | "MatMul" | "Conv")
            && node
                .input
                .get(1)
                .is_some_and(|w| graph.initializer(w).is_some());
        if weighted {
            return Ok(Some(layer_name(node)));
        }
    }
    Ok(None)
}

/// The initializers of the head (see [`head_layer`]): its weight, its bias, and the
/// constant operand of an `Add` right after a MatMul head (its bias). Errors when the model
/// has no head.
pub fn head_parameters(model: &Model) -> Result<Vec<String>> {
    let Some(head) = head_layer(model)? else {
        bail!("the model has no Gemm, MatMul or Conv with a constant weight to serve as its head");
    };
    let graph = model.graph();
    let Some(node) = graph.node.iter().find(|n| layer_name(n) == head) else {
        bail!("head layer '{head}' not found");
    };
    let mut names: Vec<String> = node.input[1..].to_vec();
    if node.op_type == "MatMul" {
        let bias_add = (graph.node.iter())
            .find(|n| n.op_type == "Add" && n.input.iter().any(|i| i == &node.output[0]));
        names.extend(bias_add.into_iter().flat_map(|n| n.input.clone()));
    }
    names.retain(|n| graph.initializer(n).is_some());
    names.dedup();
    Ok(names)
}

/// Inserts the branch of `layer` after its node.
fn insert_branch(
    model: &mut Model,
    layer: &Layer,
    rank: usize,
    scale: f64,
    rng: &mut ChaCha8Rng,
) -> Result<()> {
    let graph = model.graph_mut();
    let node = graph.node[layer.index].clone();
    let w = &layer.weight;
    let (a_name, b_name) = (format!("{w}{A_SUFFIX}"), format!("{w}{B_SUFFIX}"));
    for name in [&a_name, &b_name] {
        if graph.fresh_name(name) != *name {
            bail!("layer '{}': the name '{name}' is already taken", layer.name);
        }
    }
    // A as PyTorch's nn.Linear initialises a layer of `in` inputs (what PEFT uses): U(±1/√in).
    let bound = 1.0 / (layer.inputs as f64).sqrt();
    let a_values: Vec<f32> = (0..layer.inputs * rank)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect();
    let b_values = vec![0.0f32; rank * layer.outputs];
    let spatial = vec![
        1;
        if layer.kind == Kind::Conv {
            graph_rank(graph, w) - 2
        } else {
            0
        }
    ];
    let (a_dims, b_dims) = match layer.kind {
        Kind::Conv => (
            [vec![rank, layer.inputs], spatial.clone()].concat(),
            [vec![layer.outputs, rank], spatial].concat(),
        ),
        _ => (vec![layer.inputs, rank], vec![rank, layer.outputs]),
    };
    // Conv stores A as [r, in], the transpose of the [in, r] values drawn: same distribution.
    graph.initializer.extend([
        TensorData::from_slice(a_dims, &a_values)?.to_proto(&a_name),
        TensorData::from_slice(b_dims, &b_values)?.to_proto(&b_name),
    ]);
    let y = node.output[0].clone();
    let base = graph.fresh_name(&format!("{y}.base"));
    let hidden = graph.fresh_name(&format!("{}.lora_hidden", layer.name));
    let delta = graph.fresh_name(&format!("{}.lora_delta", layer.name));
    let name = |part: &str| format!("{}.lora_{part}", layer.name);
    let mut nodes = Vec::new();
    let mut first = plain(
        node_op(layer.kind),
        &name("a"),
        &[&node.input[0], &a_name],
        &hidden,
    );
    let mut second = plain(node_op(layer.kind), &name("b"), &[&hidden, &b_name], &delta);
    let added = match layer.kind {
        Kind::Gemm { .. } => {
            let gemm_alpha = node.float_or("alpha", 1.0)? as f64;
            first.attribute = vec![make::int("transA", node.int_or("transA", 0)?)];
            second.attribute = vec![make::float("alpha", (gemm_alpha * scale) as f32)];
            delta.clone()
        }
        Kind::MatMul | Kind::Conv => {
            if layer.kind == Kind::Conv {
                first.attribute = (node.attribute.iter())
                    .filter(|a| a.name != "kernel_shape")
                    .cloned()
                    .collect();
            }
            let scale_name = format!("{w}{SCALE_SUFFIX}");
            graph
                .initializer
                .push(TensorData::scalar(scale as f32).to_proto(&scale_name));
            let scaled = graph.fresh_name(&format!("{}.lora_scaled", layer.name));
            nodes.push(plain(
                "Mul",
                &name("scale"),
                &[&delta, &scale_name],
                &scaled,
            ));
            scaled
        }
    };
    nodes.insert(0, second);
    nodes.insert(0, first);
    nodes.push(plain("Add", &name("add"), &[&base, &added], &y));
    graph.node[layer.index].output[0] = base;
    for (k, n) in nodes.into_iter().enumerate() {
        graph.insert_node(layer.index + 1 + k, n);
    }
    Ok(())
}

/// The rank of initializer `name` (known to exist).
fn graph_rank(graph: &GraphProto, name: &str) -> usize {
    graph.initializer(name).map_or(0, |t| t.dims.len())
}

/// A default-domain node without attributes.
fn plain(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        name: name.to_string(),
        op_type: op.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        ..Default::default()
    }
}

/// The branch of one adapter as found in a graph.
struct Branch {
    /// The adapted layer's node.
    layer: usize,
    /// The branch's nodes (down, up, optional scale, add).
    nodes: Vec<usize>,
    /// `alpha / r` times the layer's Gemm `alpha` ratio: what `A·B` is multiplied by.
    scale: f64,
    /// The value the add produces (the layer's output before adapters were added).
    output: String,
}

/// Folds every adapter into its weight (`W + (alpha / r)·A·B`) and removes the branches:
/// the result is the same function as plain ONNX. Errors name an adapter whose branch was
/// edited out of shape.
pub fn merge_adapters(model: &Model) -> Result<Model> {
    let mut out = model.clone();
    let weights: Vec<String> = (model.graph().initializer.iter())
        .filter_map(|t| t.name.strip_suffix(A_SUFFIX).map(str::to_string))
        .collect();
    if weights.is_empty() {
        bail!("the model has no LoRA adapters to merge (no initializer named '*{A_SUFFIX}')");
    }
    let mut removed = HashSet::new();
    for weight in &weights {
        let branch = find_branch(&out, weight)?;
        fold(&mut out, weight, &branch)?;
        let graph = out.graph_mut();
        for &i in &branch.nodes {
            removed.extend(graph.node[i].output.clone());
        }
        graph.node[branch.layer].output[0] = branch.output.clone();
        let mut doomed = branch.nodes.clone();
        doomed.sort_unstable();
        for &i in doomed.iter().rev() {
            graph.remove_node(i);
        }
        let drop: Vec<String> = [A_SUFFIX, B_SUFFIX, SCALE_SUFFIX]
            .iter()
            .map(|s| format!("{weight}{s}"))
            .collect();
        graph.initializer.retain(|t| !drop.contains(&t.name));
    }
    let graph = out.graph_mut();
    graph.value_info.retain(|v| !removed.contains(&v.name));
    Ok(out)
}

/// Follows the branch of `weight`'s adapter: down, up, [scale], add.
fn find_branch(model: &Model, weight: &str) -> Result<Branch> {
    let graph = model.graph();
    let consumers = graph.consumers();
    let broken = |what: &str| {
        PassError::Invalid(format!(
            "LoRA adapter '{weight}{A_SUFFIX}': {what}; the branch was edited, cannot merge"
        ))
    };
    let only = |value: &str, what: &str| -> Result<usize> {
        match consumers.get(value).map(Vec::as_slice) {
            Some([i]) => Ok(*i),
            _ => Err(broken(&format!(
                "{what} '{value}' is not read by exactly one node"
            ))),
        }
    };
    let down = only(&format!("{weight}{A_SUFFIX}"), "the down-projection")?;
    let up = only(&graph.node[down].output[0], "the hidden value")?;
    if graph.node[up].input.get(1) != Some(&format!("{weight}{B_SUFFIX}")) {
        return Err(broken(&format!(
            "node '{}' after the down-projection does not read '{weight}{B_SUFFIX}'",
            graph.node[up].name
        )));
    }
    let mut nodes = vec![down, up];
    let mut last = up;
    let mut scale = 1.0;
    let scale_name = format!("{weight}{SCALE_SUFFIX}");
    if let Some(t) = graph.initializer(&scale_name) {
        let mul = only(&graph.node[up].output[0], "the up-projection's output")?;
        if graph.node[mul].op_type != "Mul" || !graph.node[mul].input.contains(&scale_name) {
            return Err(broken(&format!("no Mul by '{scale_name}'")));
        }
        scale = TensorData::from_proto(t, None)?.to_f64_vec()?[0];
        nodes.push(mul);
        last = mul;
    }
    let add = only(&graph.node[last].output[0], "the branch's output")?;
    let add_node = &graph.node[add];
    let base = (add_node.input.iter()).find(|i| **i != graph.node[last].output[0]);
    let producers = graph.producers();
    let layer = (add_node.op_type == "Add")
        .then_some(base)
        .flatten()
        .and_then(|b| producers.get(b).copied())
        .filter(|&l| graph.node[l].input.get(1).map(String::as_str) == Some(weight));
    let Some(layer) = layer else {
        return Err(broken(&format!(
            "node '{}' does not add the branch to the output of the layer reading '{weight}'",
            add_node.name
        )));
    };
    if graph.node[layer].op_type == "Gemm" {
        let of = |n: &NodeProto| n.float_or("alpha", 1.0).map(f64::from);
        scale = of(&graph.node[up])? / of(&graph.node[layer])?;
    }
    nodes.push(add);
    Ok(Branch {
        layer,
        nodes,
        scale,
        output: add_node.output[0].clone(),
    })
}

/// Adds `scale · A·B` to `weight` in its own layout.
fn fold(model: &mut Model, weight: &str, branch: &Branch) -> Result<()> {
    let layer = match layer_at_unchecked(model, branch.layer)? {
        Some(layer) => layer,
        None => bail!("LoRA adapter of '{weight}': its layer is not a Gemm, MatMul or Conv"),
    };
    let read = |name: String| -> Result<Vec<f64>> {
        let proto = model.graph().initializer(&name).ok_or_else(|| {
            PassError::Invalid(format!("LoRA adapter: initializer '{name}' is missing"))
        })?;
        Ok(TensorData::from_proto(proto, None)?.to_f64_vec()?)
    };
    let a = read(format!("{weight}{A_SUFFIX}"))?;
    let b = read(format!("{weight}{B_SUFFIX}"))?;
    let w_proto =
        model.graph().initializer(weight).cloned().ok_or_else(|| {
            PassError::Invalid(format!("LoRA adapter: weight '{weight}' is missing"))
        })?;
    let w_data = TensorData::from_proto(&w_proto, None)?;
    let mut w = w_data.to_f64_vec()?;
    let (n_in, n_out) = (layer.inputs, layer.outputs);
    let rank = a.len() / n_in.max(1);
    if rank == 0 || a.len() != n_in * rank || b.len() != rank * n_out {
        bail!(
            "LoRA adapter of '{weight}': shapes of A ({} values) and B ({} values) do not fit a {n_in} -> {n_out} layer",
            a.len(),
            b.len()
        );
    }
    // A is [in, r] (Conv: [r, in]) and B is [r, out] (Conv: [out, r]).
    let conv = layer.kind == Kind::Conv;
    let a_at = |i: usize, k: usize| {
        if conv {
            a[k * n_in + i]
        } else {
            a[i * rank + k]
        }
    };
    let b_at = |k: usize, o: usize| {
        if conv {
            b[o * rank + k]
        } else {
            b[k * n_out + o]
        }
    };
    for i in 0..n_in {
        for o in 0..n_out {
            let delta: f64 = (0..rank).map(|k| a_at(i, k) * b_at(k, o)).sum();
            let at = if layer.out_major() {
                o * n_in + i
            } else {
                i * n_out + o
            };
            w[at] += branch.scale * delta;
        }
    }
    let values: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let merged = TensorData::from_slice(w_data.dims().to_vec(), &values)?.to_proto(weight);
    let graph = model.graph_mut();
    let slot = (graph.initializer.iter())
        .position(|t| t.name == weight)
        .expect("the weight was read above");
    graph.initializer[slot] = merged;
    Ok(())
}

/// [`layer_at`] for a node known to carry an adapter (its weight has `.lora_a`).
fn layer_at_unchecked(model: &Model, index: usize) -> Result<Option<Layer>> {
    let mut plain_model = model.clone();
    let graph = plain_model.graph_mut();
    let weight = graph.node[index].input[1].clone();
    graph
        .initializer
        .retain(|t| t.name != format!("{weight}{A_SUFFIX}"));
    Ok(layer_at(&plain_model, index)?.and_then(|r| r.ok()))
}

/// The `TrainConfig::freeze` patterns that leave only the adapters and `also_train` (e.g.
/// [`head_parameters`]) trainable in `model`. Errors name an `also_train` entry that is not
/// a trainable parameter, and a model without adapters.
pub fn adapter_freeze(model: &Model, also_train: &[String]) -> Result<Vec<String>> {
    let trainable = trainable_initializers(model.graph());
    if !trainable.iter().any(|n| is_adapter(n)) {
        bail!("the model has no LoRA adapters to train (add them first)");
    }
    for name in also_train {
        if !trainable.contains(name) {
            bail!("'{name}' is not a trainable parameter of the model, cannot train it beside the adapters");
        }
    }
    Ok(trainable
        .into_iter()
        .filter(|n| !is_adapter(n) && !also_train.contains(n))
        .map(|n| exact_pattern(&n))
        .collect())
}

/// True for an adapter's trainable tensors (`<weight>.lora_a`, `<weight>.lora_b`).
pub fn is_adapter(name: &str) -> bool {
    name.ends_with(A_SUFFIX) || name.ends_with(B_SUFFIX)
}

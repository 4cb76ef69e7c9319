//! Per-channel importance of a group, summed over its coupled tensors.

use std::collections::{HashMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use whittle_exec::{Executor, RunOptions, Value};
use whittle_ir::{GraphEdit, Model, TensorData};

use super::groups::{Group, Role, Slice};
use super::{Criterion, TaylorData};
use crate::{bail, PassError, Result};

/// Initializers as `(dims, values)`, loaded once.
pub type Tensors = HashMap<String, (Vec<usize>, Vec<f64>)>;

/// Loads every initializer the groups slice.
pub fn load_tensors<'a>(model: &Model, groups: impl Iterator<Item = &'a Group>) -> Result<Tensors> {
    let mut out = Tensors::new();
    for slice in groups.flat_map(|g| &g.slices) {
        if out.contains_key(&slice.tensor) {
            continue;
        }
        let Some(t) = model.graph().initializer(&slice.tensor) else {
            bail!("initializer '{}' not found", slice.tensor);
        };
        let data = TensorData::from_proto(t, None)?;
        out.insert(
            slice.tensor.clone(),
            (data.dims().to_vec(), data.to_f64_vec()?),
        );
    }
    Ok(out)
}

/// Flat indices of channel `k` of `slice` in a tensor of `dims`.
pub fn channel_indices(dims: &[usize], slice: &Slice, k: usize) -> Vec<usize> {
    let inner: usize = dims[slice.axis + 1..].iter().product();
    let outer: usize = dims[..slice.axis].iter().product();
    let rows = outer / slice.blocks().max(1);
    let extent = dims[slice.axis];
    let mut idx = Vec::with_capacity(rows * slice.expand * inner);
    for (block, a) in slice.positions(k) {
        for o in block * rows..(block + 1) * rows {
            let base = (o * extent + a) * inner;
            idx.extend(base..base + inner);
        }
    }
    idx
}

/// Importance of each channel of `group`, and the criterion actually used (BN γ falls
/// back to L1 on groups without a BatchNormalization).
pub fn score_group(
    group: &Group,
    id: usize,
    criterion: &Criterion,
    tensors: &Tensors,
    grads: Option<&Tensors>,
) -> Result<(Vec<f64>, String)> {
    let has_scale = group.slices.iter().any(|s| s.role == Role::Scale);
    let (roles, label): (&[Role], String) = match criterion {
        Criterion::Random { seed } => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(id as u64));
            let scores = (0..group.width).map(|_| rng.random::<f64>()).collect();
            return Ok((scores, "random".into()));
        }
        Criterion::BnGamma if has_scale => (&[Role::Scale], "bn-gamma".into()),
        Criterion::BnGamma => (&WEIGHT_ROLES, "l1 (no BatchNormalization)".into()),
        Criterion::L1 => (&WEIGHT_ROLES, "l1".into()),
        Criterion::L2 => (&WEIGHT_ROLES, "l2".into()),
        Criterion::Taylor => (&TAYLOR_ROLES, "taylor".into()),
    };
    let mut scores = vec![0.0; group.width];
    for slice in (group.slices.iter()).filter(|s| roles.contains(&plain(s.role))) {
        let (dims, w) = &tensors[&slice.tensor];
        let g = match (criterion, grads) {
            (Criterion::Taylor, Some(grads)) => Some(&grads[&slice.tensor].1),
            (Criterion::Taylor, None) => bail!("the Taylor criterion needs data"),
            _ => None,
        };
        for (k, score) in scores.iter_mut().enumerate() {
            let idx = channel_indices(dims, slice, k);
            *score += match (criterion, g) {
                (_, Some(g)) => idx.iter().map(|&i| w[i] * g[i]).sum::<f64>().abs(),
                (Criterion::L2, _) => idx.iter().map(|&i| w[i] * w[i]).sum::<f64>(),
                _ => idx.iter().map(|&i| w[i].abs()).sum::<f64>(),
            };
        }
    }
    if matches!(criterion, Criterion::L2) {
        scores.iter_mut().for_each(|s| *s = s.sqrt());
    }
    Ok((scores, label))
}

/// `role` with a grouped Conv's input side counted as any consumer's.
fn plain(role: Role) -> Role {
    match role {
        Role::GroupedConsumer { .. } => Role::Consumer,
        other => other,
    }
}

/// Tensors scored by L1/L2: what produces the channel (weights, biases, BN γ and β).
const WEIGHT_ROLES: [Role; 3] = [Role::Producer, Role::PerChannel, Role::Scale];

/// Tensors scored by Taylor: every trained tensor of the group.
const TAYLOR_ROLES: [Role; 4] = [
    Role::Producer,
    Role::PerChannel,
    Role::Scale,
    Role::Consumer,
];

/// Gradients of the cross-entropy of the model's first output, summed over `data`'s
/// batches, for the initializers `names` (inference mode: BN uses its running statistics,
/// so the scores describe the deployed function).
pub fn taylor_gradients(
    model: &Model,
    data: &TaylorData,
    names: &HashSet<String>,
) -> Result<Tensors> {
    let mut exec = Executor::new(model)?;
    let names: Vec<String> = names.iter().cloned().collect();
    exec.set_trainable(&names)?;
    let Some(input) = exec.inputs().first().map(|s| s.name.clone()) else {
        bail!("the model has no input to feed Taylor data to");
    };
    let output = exec.output_names().into_iter().next().unwrap_or_default();
    let mut sums: Tensors = Tensors::new();
    for (x, labels) in &data.batches {
        let feed = HashMap::from([(input.clone(), Value::try_from(x)?)]);
        let outs = exec.run_with(feed, RunOptions::default())?;
        let Some(logits) = outs.get(&output) else {
            bail!("output '{output}' was not computed");
        };
        let loss = whittle_train::loss::cross_entropy(logits.tensor(), labels, 0.0)
            .map_err(|e| PassError::Invalid(format!("Taylor importance: {e}")))?;
        for (name, grad) in exec.gradients(&loss)? {
            let data = Value::f32(grad)?.to_data()?;
            let entry = sums
                .entry(name)
                .or_insert_with(|| (data.dims().to_vec(), vec![0.0; data.numel()]));
            for (s, g) in entry.1.iter_mut().zip(data.to_f64_vec()?) {
                *s += g;
            }
        }
    }
    if sums.len() < names.len() {
        bail!("Taylor importance: no data batches, or gradients missing");
    }
    Ok(sums)
}

//! Optimizers over the executor's trainable parameters: SGD (momentum, Nesterov, weight
//! decay), Adam and AdamW, with state that checkpoints save and restore exactly.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use whittle_exec::kernels::{copied, dispatch};
use whittle_exec::Value;

use crate::bail;
use crate::error::Result;

/// Elements of one parameter updated by one parallel task: a large parameter (a classifier's
/// weight can be a third of a model) is shared out instead of being one thread's work.
const UPDATE_BLOCK: usize = 16 * 1024;

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Stochastic gradient descent (PyTorch semantics: no dampening, L2 weight decay).
    Sgd,
    /// Adam with L2 weight decay added to the gradient.
    Adam,
    /// Adam with decoupled weight decay.
    AdamW,
}

/// Optimizer settings (the learning rate comes from the schedule at each step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimizerConfig {
    /// Update rule.
    pub kind: OptimizerKind,
    /// SGD momentum in `[0, 1)`.
    pub momentum: f64,
    /// SGD Nesterov momentum (needs `momentum > 0`).
    pub nesterov: bool,
    /// Weight decay (L2 for SGD/Adam, decoupled for AdamW).
    pub weight_decay: f64,
    /// Adam's first-moment decay.
    pub beta1: f64,
    /// Adam's second-moment decay.
    pub beta2: f64,
    /// Adam's denominator epsilon.
    pub eps: f64,
}

impl Default for OptimizerConfig {
    /// AdamW with PyTorch's betas and eps and no weight decay.
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::AdamW,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

impl OptimizerConfig {
    /// Checks the settings; the error names the one at fault.
    pub fn validate(&self) -> Result<()> {
        let unit = |what: &str, v: f64| {
            if !(0.0..1.0).contains(&v) {
                bail!("{what} {v} must be in [0, 1)");
            }
            Ok(())
        };
        unit("`momentum`", self.momentum)?;
        unit("`beta1`", self.beta1)?;
        unit("`beta2`", self.beta2)?;
        if self.nesterov && (self.kind != OptimizerKind::Sgd || self.momentum == 0.0) {
            bail!("Nesterov momentum needs `optimizer` sgd and a positive `momentum`");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            bail!("`weight_decay` {} must be non-negative", self.weight_decay);
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            bail!("optimizer eps {} must be positive", self.eps);
        }
        Ok(())
    }
}

impl std::fmt::Display for OptimizerConfig {
    /// The update rule and the settings it uses, e.g. `sgd (momentum 0.9, weight decay 0)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self;
        match c.kind {
            OptimizerKind::Sgd => {
                let nesterov = if c.nesterov { ", nesterov" } else { "" };
                write!(f, "sgd (momentum {}{nesterov}", c.momentum)?;
            }
            OptimizerKind::Adam | OptimizerKind::AdamW => {
                let name = if c.kind == OptimizerKind::Adam {
                    "adam"
                } else {
                    "adamw"
                };
                write!(f, "{name} (betas {}/{}, eps {:e}", c.beta1, c.beta2, c.eps)?;
            }
        }
        write!(f, ", weight decay {})", c.weight_decay)
    }
}

/// An optimizer and its per-parameter state.
pub struct Optimizer {
    config: OptimizerConfig,
    /// Steps taken (Adam's bias correction).
    steps: u64,
    /// Per parameter: its state, kept on the host between steps.
    state: BTreeMap<String, Slot>,
}

/// One parameter's state: the momentum buffer (SGD) or the first and second moments (Adam)
/// in float32, with the parameter's dims and type for checkpoints.
struct Slot {
    dims: Vec<usize>,
    dtype: DType,
    buffers: Vec<Vec<f32>>,
}

impl Optimizer {
    /// A fresh optimizer; fails on invalid settings.
    pub fn new(config: OptimizerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Optimizer {
            config,
            steps: 0,
            state: BTreeMap::new(),
        })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Updates every parameter that has a gradient with learning rate `lr`. The update runs
    /// element by element on the host in float32 (one pass per parameter instead of a dozen
    /// candle operations, each a round on candle's spinning thread pool), the parameters in
    /// parallel (each one's arithmetic is the same at any thread count), and the state stays
    /// on the host between steps.
    pub fn step(
        &mut self,
        params: &HashMap<String, Var>,
        grads: &HashMap<String, Tensor>,
        lr: f64,
    ) -> Result<()> {
        let mut names: Vec<&String> = grads.keys().collect();
        names.sort();
        if let Some(name) = names.iter().find(|n| !params.contains_key(**n)) {
            bail!("gradient for '{name}', which is not a trainable parameter");
        }
        self.steps += 1;
        let work: Vec<_> = names
            .into_iter()
            .map(|name| (name, self.state.remove(name)))
            .collect();
        let this = &*self;
        let updated = work
            .into_par_iter()
            .map(|(name, slot)| {
                let var = &params[name];
                let p = var.as_tensor();
                let mut values = host(p)?;
                let mut state = slot.map_or_else(Vec::new, |s| s.buffers);
                // The gradient is read where it lies (no copy).
                Value::from_float(grads[name].clone())?.with_f32(|g| {
                    if g.len() != values.len() {
                        bail!(
                            "the gradient of '{name}' has {} values for its {} parameters",
                            g.len(),
                            values.len()
                        );
                    }
                    match this.config.kind {
                        OptimizerKind::Sgd => this.sgd(&mut values, g, &mut state, lr),
                        OptimizerKind::Adam | OptimizerKind::AdamW => {
                            this.adam(&mut values, g, &mut state, lr)
                        }
                    }
                    Ok(())
                })??;
                let (dims, dtype) = (p.dims().to_vec(), p.dtype());
                var.set(&Tensor::from_vec(values, dims.clone(), p.device())?.to_dtype(dtype)?)?;
                let slot = Slot {
                    dims,
                    dtype,
                    buffers: state,
                };
                Ok((name.clone(), slot))
            })
            .collect::<Result<Vec<_>>>()?;
        self.state.extend(updated);
        Ok(())
    }

    /// SGD on `p` with gradient `g`; `state` is the momentum buffer (empty before the first
    /// step, and without momentum).
    fn sgd(&self, p: &mut [f32], g: &[f32], state: &mut Vec<Vec<f32>>, lr: f64) {
        let c = &self.config;
        let mut g = g.to_vec();
        let (wd, mu, lr) = (c.weight_decay as f32, c.momentum as f32, lr as f32);
        // Compiled for the CPU's vector width (the workspace's baseline is SSE2).
        dispatch(
            #[inline(always)]
            || {
                if c.weight_decay > 0.0 {
                    g.iter_mut().zip(p.iter()).for_each(|(g, p)| *g += p * wd);
                }
                if c.momentum > 0.0 {
                    let buf = match state.pop() {
                        Some(mut b) => {
                            b.iter_mut().zip(&g).for_each(|(b, g)| *b = *b * mu + g);
                            b
                        }
                        None => g.clone(),
                    };
                    if c.nesterov {
                        g.iter_mut().zip(&buf).for_each(|(g, b)| *g += b * mu);
                    } else {
                        g.copy_from_slice(&buf);
                    }
                    *state = vec![buf];
                }
                p.iter_mut().zip(&g).for_each(|(p, g)| *p -= g * lr);
            },
        );
    }

    /// Adam or AdamW on `p` with gradient `g`; `state` is the first and second moments
    /// (empty before the first step). One pass over the four arrays in parallel blocks of
    /// [`UPDATE_BLOCK`] elements compiled for the CPU's vector width, with the arithmetic of
    /// one serial loop per element (as an SSE2 loop with its square root and division, the
    /// update was about 10% of a zoo:mobilenetv3-small step at 2 threads).
    fn adam(&self, p: &mut [f32], g: &[f32], state: &mut Vec<Vec<f32>>, lr: f64) {
        let c = &self.config;
        if state.len() != 2 {
            *state = vec![vec![0.0; g.len()]; 2];
        }
        let t = self.steps as i32;
        let k = AdamStep {
            // AdamW's decoupled decay scales the parameter, Adam's L2 decay adds to the
            // gradient.
            keep: match c.kind {
                OptimizerKind::AdamW => Some((1.0 - lr * c.weight_decay) as f32),
                _ => None,
            },
            wd: (c.kind != OptimizerKind::AdamW && c.weight_decay > 0.0)
                .then_some(c.weight_decay as f32),
            b1: c.beta1 as f32,
            b2: c.beta2 as f32,
            keep1: (1.0 - c.beta1) as f32,
            keep2: (1.0 - c.beta2) as f32,
            unbias1: (1.0 / (1.0 - c.beta1.powi(t))) as f32,
            unbias2: (1.0 / (1.0 - c.beta2.powi(t))) as f32,
            eps: c.eps as f32,
            lr: lr as f32,
        };
        let [m, v] = state.as_mut_slice() else {
            return;
        };
        p.par_chunks_mut(UPDATE_BLOCK)
            .zip(g.par_chunks(UPDATE_BLOCK))
            .zip(m.par_chunks_mut(UPDATE_BLOCK))
            .zip(v.par_chunks_mut(UPDATE_BLOCK))
            .for_each(|(((p, g), m), v)| {
                dispatch(
                    #[inline(always)]
                    || k.update(p, g, m, v),
                )
            });
    }

    /// The state as named tensors (`<param>/0`, `<param>/1`, shaped and typed like the
    /// parameter) for a checkpoint.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (name, slot) in &self.state {
            for (i, b) in slot.buffers.iter().enumerate() {
                let t = Tensor::from_slice(b, slot.dims.as_slice(), &Device::Cpu)?;
                out.insert(format!("{name}/{i}"), t.to_dtype(slot.dtype)?);
            }
        }
        Ok(out)
    }

    /// Restores the state saved by [`Optimizer::state_tensors`] after `steps` steps.
    pub fn load_state(&mut self, tensors: HashMap<String, Tensor>, steps: u64) -> Result<()> {
        let mut state: BTreeMap<String, Vec<(usize, Tensor)>> = BTreeMap::new();
        for (key, t) in tensors {
            let parsed = key
                .rsplit_once('/')
                .and_then(|(n, i)| i.parse::<usize>().ok().map(|i| (n.to_string(), i)));
            let Some((name, i)) = parsed else {
                bail!("optimizer state tensor '{key}' is not named <parameter>/<index>");
            };
            state.entry(name).or_default().push((i, t));
        }
        self.state = state
            .into_iter()
            .map(|(name, mut ts)| {
                ts.sort_by_key(|(i, _)| *i);
                let (dims, dtype) = (ts[0].1.dims().to_vec(), ts[0].1.dtype());
                let buffers = ts.iter().map(|(_, t)| host(t)).collect::<Result<_>>()?;
                let slot = Slot {
                    dims,
                    dtype,
                    buffers,
                };
                Ok((name, slot))
            })
            .collect::<Result<_>>()?;
        self.steps = steps;
        Ok(())
    }
}

/// The constants of one Adam step.
struct AdamStep {
    /// AdamW's parameter decay factor.
    keep: Option<f32>,
    /// Adam's L2 weight decay.
    wd: Option<f32>,
    b1: f32,
    b2: f32,
    keep1: f32,
    keep2: f32,
    unbias1: f32,
    unbias2: f32,
    eps: f32,
    lr: f32,
}

impl AdamStep {
    /// Updates the parameters `p` and moments `m`, `v` with gradient `g`, element by element.
    #[inline(always)]
    fn update(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let k = self;
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
            let g = match k.wd {
                Some(wd) => g + *p * wd,
                None => g,
            };
            if let Some(keep) = k.keep {
                *p *= keep;
            }
            *m = *m * k.b1 + g * k.keep1;
            *v = *v * k.b2 + g * g * k.keep2;
            *p -= (*m * k.unbias1) / ((*v * k.unbias2).sqrt() + k.eps) * k.lr;
        }
    }
}

/// The values of float tensor `t` as float32 on the host, in row-major order.
fn host(t: &Tensor) -> Result<Vec<f32>> {
    if t.dtype() == DType::F32 {
        // Copied in parallel chunks where large (the optimizer's largest parameter is often
        // a third of the model).
        return Ok(Value::from_float(t.clone())?.with_f32(copied)?);
    }
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `steps` updates of a one-element parameter starting at 1.0 with gradient 2p.
    fn trajectory(config: OptimizerConfig, lr: f64, steps: usize) -> Vec<f32> {
        let var = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let params = HashMap::from([("w".to_string(), var.clone())]);
        let mut opt = Optimizer::new(config).unwrap();
        (0..steps)
            .map(|_| {
                let g = (var.as_tensor() * 2.0).unwrap();
                opt.step(&params, &HashMap::from([("w".to_string(), g)]), lr)
                    .unwrap();
                var.as_tensor().to_vec1::<f32>().unwrap()[0]
            })
            .collect()
    }

    fn close(got: &[f32], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn sgd_momentum_nesterov_and_weight_decay_follow_pytorch() {
        let sgd = |momentum, nesterov, weight_decay| OptimizerConfig {
            kind: OptimizerKind::Sgd,
            momentum,
            nesterov,
            weight_decay,
            ..Default::default()
        };
        // Plain: p -= 0.1 * 2p.
        close(&trajectory(sgd(0.0, false, 0.0), 0.1, 2), &[0.8, 0.64]);
        // Momentum 0.9: buf1 = 2, p1 = 0.8; buf2 = 1.8 + 1.6 = 3.4, p2 = 0.46.
        close(&trajectory(sgd(0.9, false, 0.0), 0.1, 2), &[0.8, 0.46]);
        // Nesterov: step uses g + 0.9 buf: 2 + 1.8 = 3.8, p1 = 0.62.
        close(&trajectory(sgd(0.9, true, 0.0), 0.1, 1), &[0.62]);
        // Weight decay 0.5 adds 0.5p: g = 2.5, p1 = 0.75.
        close(&trajectory(sgd(0.0, false, 0.5), 0.1, 1), &[0.75]);
    }

    #[test]
    fn adam_and_adamw_first_steps() {
        let adam = |kind, weight_decay| OptimizerConfig {
            kind,
            weight_decay,
            ..Default::default()
        };
        // The first Adam step moves by lr * g / (|g| + eps) ~ lr.
        close(&trajectory(adam(OptimizerKind::Adam, 0.0), 0.1, 1), &[0.9]);
        // AdamW decays first: 1 * (1 - 0.1 * 0.5) = 0.95, then -0.1.
        close(
            &trajectory(adam(OptimizerKind::AdamW, 0.5), 0.1, 1),
            &[0.85],
        );
    }

    #[test]
    fn saved_state_continues_the_same_trajectory() {
        let config = OptimizerConfig {
            kind: OptimizerKind::Adam,
            ..Default::default()
        };
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let params = HashMap::from([("w".to_string(), var.clone())]);
        let grad = || HashMap::from([("w".to_string(), var.as_tensor().sqr().unwrap())]);
        let mut a = Optimizer::new(config.clone()).unwrap();
        a.step(&params, &grad(), 0.01).unwrap();
        let mut b = Optimizer::new(config).unwrap();
        b.load_state(a.state_tensors().unwrap(), a.steps()).unwrap();
        let start = var.as_tensor().copy().unwrap();
        a.step(&params, &grad(), 0.01).unwrap();
        let after_a = var.as_tensor().to_vec1::<f32>().unwrap();
        var.set(&start).unwrap();
        b.step(&params, &grad(), 0.01).unwrap();
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), after_a);
        assert!(OptimizerConfig {
            nesterov: true,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}

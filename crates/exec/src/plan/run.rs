//! Runs a [`Plan`]: arena buffers for kernel steps, candle values for the rest.

use std::collections::HashMap;

use candle_core::{Device, Storage, Tensor};
use whittle_ir::DataType;

use super::{Home, Plan, PlanStep, StepOp, ValueId};
use crate::error::{ExecError, Result};
use crate::executor::{Executor, RunOptions};
use crate::value::Value;

/// How a planned run ended.
pub enum Outcome {
    /// The run's outputs (graph outputs and kept values) by name.
    Done(HashMap<String, Value>),
    /// A node run through its candle operator produced another shape or type than the
    /// plan recorded (a data-dependent shape). Every step before it ran, the hook saw their
    /// values; `env` holds the values computed so far (with the node's own outputs) and
    /// `next` is the run-order position to go on from on the node-by-node path.
    Mismatch {
        /// Run-order position after the mismatching node.
        next: usize,
        /// Values computed so far, by name.
        env: HashMap<String, Value>,
    },
}

/// The values of one run.
struct State {
    cells: Vec<Option<Value>>,
    arena: Vec<Vec<f32>>,
    /// Arena values written so far.
    written: Vec<bool>,
}

impl Plan {
    /// Runs the plan on `feed` (whose types and shapes are the plan's key), calling the
    /// hook of `opts` with every value a step produces.
    pub fn run(
        &self,
        exec: &Executor,
        feed: &HashMap<String, Value>,
        opts: &mut RunOptions,
    ) -> Result<Outcome> {
        let mut st = State {
            cells: vec![None; self.values.len()],
            arena: self.take_arena()?,
            written: vec![false; self.values.len()],
        };
        for (name, id) in &self.inputs {
            let v = feed
                .get(name)
                .ok_or_else(|| ExecError::msg(format!("input '{name}' is not fed")))?;
            st.cells[*id] = Some(contiguous(v.clone())?);
        }
        let result = self.steps(exec, &mut st, opts);
        let outcome = match result {
            Ok(None) => Outcome::Done(
                self.outputs
                    .iter()
                    .map(|&id| Ok((self.values[id].name.clone(), self.value(&st, id)?)))
                    .collect::<Result<_>>()?,
            ),
            Ok(Some(next)) => Outcome::Mismatch {
                next,
                env: self.env(&st)?,
            },
            Err(e) => Err(e)?,
        };
        self.return_arena(st.arena);
        Ok(outcome)
    }

    /// Runs every step; `Some(position)` stops at a shape mismatch.
    fn steps(
        &self,
        exec: &Executor,
        st: &mut State,
        opts: &mut RunOptions,
    ) -> Result<Option<usize>> {
        for step in &self.steps {
            let node = exec.node(step.node);
            let mismatch = match &step.op {
                StepOp::Folded => false,
                StepOp::View => {
                    self.view(st, step)?;
                    false
                }
                StepOp::Fallback(op) => {
                    let inputs = step
                        .inputs
                        .iter()
                        .map(|id| id.map(|id| self.value(st, id)).transpose())
                        .collect::<Result<Vec<_>>>()?;
                    let outputs =
                        exec.call_node(node, *op, step.pos, inputs, opts, &HashMap::new())?;
                    let mut mismatch = false;
                    for (id, v) in step.outputs.iter().zip(outputs) {
                        if let Some(id) = *id {
                            let want = &self.values[id];
                            mismatch |= v.dtype() != want.dtype || v.shape() != want.shape;
                            st.cells[id] = Some(contiguous(v)?);
                        }
                    }
                    mismatch
                }
                StepOp::Kernel(k) => {
                    self.kernel(st, step, k).map_err(|m| ExecError::Node {
                        node: node.name.clone(),
                        op: node.op_type.clone(),
                        message: m,
                    })?;
                    false
                }
            };
            if let Some(hook) = opts.hook.as_mut() {
                for &id in step.outputs.iter().flatten() {
                    let pv = &self.values[id];
                    if !crate::executor::hook_sees(opts.floats_only, pv.dtype) {
                        continue;
                    }
                    match (&pv.home, opts.borrowed.as_mut()) {
                        (Home::Slot(s), Some(borrowed)) if pv.dtype == DataType::Float => {
                            borrowed(&pv.name, node, &pv.shape, &st.arena[*s][..pv.numel()])?
                        }
                        _ => hook(&pv.name, node, &self.value(st, id)?)?,
                    }
                }
            }
            if mismatch {
                return Ok(Some(step.pos + 1));
            }
            for &id in &step.frees {
                st.cells[id] = None;
            }
        }
        Ok(None)
    }

    /// A view step: a host output is the input reshaped; an arena output already shares
    /// its input's slot.
    fn view(&self, st: &mut State, step: &PlanStep) -> Result<()> {
        let (Some(Some(i)), Some(Some(o))) = (step.inputs.first(), step.outputs.first()) else {
            return Ok(());
        };
        if matches!(self.values[*o].home, Home::Slot(_)) {
            st.written[*o] = true;
        } else {
            let v = self.value(st, *i)?;
            let t = v.tensor().reshape(self.values[*o].shape.as_slice())?;
            st.cells[*o] = Some(v.with_tensor(t)?);
        }
        Ok(())
    }

    /// A kernel step: inputs borrowed from the arena or from candle storage, the output
    /// written into its slot (in place when the plan says so).
    fn kernel(
        &self,
        st: &mut State,
        step: &PlanStep,
        k: &super::Kernel,
    ) -> std::result::Result<(), String> {
        let Some(Some(o)) = step.outputs.first().copied() else {
            return Ok(());
        };
        let Home::Slot(slot) = self.values[o].home else {
            return Err("kernel output has no arena slot".into());
        };
        let n = self.values[o].numel();
        let mut out = std::mem::take(&mut st.arena[slot]);
        let in_place = step
            .inputs
            .first()
            .copied()
            .flatten()
            .is_some_and(|i| matches!(self.values[i].home, Home::Slot(s) if s == slot));
        let result = if in_place {
            k.run_in_place(&mut out[..n]);
            Ok(())
        } else {
            self.run_kernel(st, step, k, &mut out[..n])
        };
        st.arena[slot] = out;
        st.written[o] = true;
        result
    }

    fn run_kernel(
        &self,
        st: &State,
        step: &PlanStep,
        k: &super::Kernel,
        out: &mut [f32],
    ) -> std::result::Result<(), String> {
        let ids: Vec<ValueId> = step.inputs.iter().flatten().copied().collect();
        if let super::Kernel::QuantizeWith {
            quantize,
            dtype,
            axis,
            block,
            ..
        } = k
        {
            // Parameters computed at run time: laid out now, then the constant kernel.
            let p = self
                .runtime_params(st, step, *dtype, *axis, *block)
                .map_err(|e| e.to_string())?;
            let k = match quantize {
                true => super::Kernel::Quantize(p),
                false => super::Kernel::Dequantize(p),
            };
            let x = PlanStep {
                node: step.node,
                pos: step.pos,
                op: super::StepOp::Folded,
                inputs: step.inputs[..1].to_vec(),
                outputs: Vec::new(),
                frees: Vec::new(),
            };
            return self.run_kernel(st, &x, &k, out);
        }
        if let (super::Kernel::Dequantize(p), [x]) = (k, &ids[..]) {
            if self.values[*x].dtype != DataType::Float
                && !matches!(self.values[*x].home, Home::Slot(_))
            {
                return self.dequantize_value(st, *x, p, out);
            }
        }
        let guards: Vec<_> = ids
            .iter()
            .map(|&id| match &self.values[id].home {
                Home::Slot(_) => Ok(None),
                Home::Const(v) => Ok(Some(v.tensor().storage_and_layout())),
                Home::Host | Home::Input => match &st.cells[id] {
                    Some(v) => Ok(Some(v.tensor().storage_and_layout())),
                    None => Err(format!("value '{}' is not computed", self.values[id].name)),
                },
            })
            .collect::<std::result::Result<_, String>>()?;
        let mut slices: Vec<&[f32]> = Vec::with_capacity(ids.len());
        for (&id, guard) in ids.iter().zip(&guards) {
            let n = self.values[id].numel();
            let s = match (&self.values[id].home, guard) {
                (Home::Slot(s), _) => &st.arena[*s][..n],
                (_, Some((storage, layout))) => match (&**storage, layout.contiguous_offsets()) {
                    (Storage::Cpu(cpu), Some((a, b))) if b - a == n => {
                        &cpu.as_slice::<f32>().map_err(|e| e.to_string())?[a..b]
                    }
                    _ => {
                        return Err(format!(
                            "value '{}' is not a contiguous f32 CPU tensor",
                            self.values[id].name
                        ))
                    }
                },
                (_, None) => return Err("missing input".into()),
            };
            slices.push(s);
        }
        k.run(&slices, out).map_err(|e| e.to_string())
    }

    /// The scales and zero points of a [`super::Kernel::QuantizeWith`] step (its inputs 1
    /// and 2) laid out against its input 0, as the candle operators check them.
    fn runtime_params(
        &self,
        st: &State,
        step: &PlanStep,
        dtype: DataType,
        axis: i64,
        block: i64,
    ) -> Result<crate::kernels::quant::QuantParams> {
        let input = |i: usize| {
            step.inputs
                .get(i)
                .copied()
                .flatten()
                .map(|id| self.value(st, id))
                .transpose()
        };
        let (Some(x), Some(scale)) = (step.inputs[0], input(1)?) else {
            return Err(ExecError::msg("quantization step without input or scale"));
        };
        let layout =
            crate::ops::quant::ParamLayout::new(&self.values[x].shape, scale.shape(), axis, block)?;
        let scales = scale.to_f32_vec()?;
        let zero_points = match input(2)? {
            Some(z) => z.to_i64_vec()?,
            None => vec![0; scales.len()],
        };
        crate::kernels::quant::QuantParams::new(layout, scales, zero_points, dtype)
            .map_err(|e| ExecError::msg(e.to_string()))
    }

    /// A DequantizeLinear of an integer candle value (a constant, a graph input, or the
    /// output of a candle step such as a Gather from a quantized table), from its storage.
    fn dequantize_value(
        &self,
        st: &State,
        id: ValueId,
        p: &crate::kernels::quant::QuantParams,
        out: &mut [f32],
    ) -> std::result::Result<(), String> {
        use crate::kernels::quant::{dequantize, Quantized};
        let v = match &self.values[id].home {
            Home::Const(v) => v,
            _ => st.cells[id]
                .as_ref()
                .ok_or_else(|| format!("value '{}' is not computed", self.values[id].name))?,
        };
        let err = |e: crate::error::ExecError| e.to_string();
        let done = match v.tensor().dtype() {
            candle_core::DType::U8 => v.with_slice(|q: &[u8]| dequantize(Quantized::U8(q), p, out)),
            candle_core::DType::I64 => {
                v.with_slice(|q: &[i64]| dequantize(Quantized::I64(q), p, out))
            }
            other => return Err(format!("cannot dequantize {other:?} storage")),
        };
        done.map_err(err)?.map_err(|e| e.to_string())
    }

    /// Value `id` as a candle value (arena values are copied out).
    fn value(&self, st: &State, id: ValueId) -> Result<Value> {
        let pv = &self.values[id];
        match &pv.home {
            Home::Const(v) => Ok(v.clone()),
            Home::Slot(s) => {
                let data = &st.arena[*s][..pv.numel()];
                let t = Tensor::from_slice(data, pv.shape.as_slice(), &Device::Cpu)?;
                // Quantized values are exact integers in f32: converted to their type.
                Value::new(t, pv.dtype)
            }
            Home::Host | Home::Input => st.cells[id]
                .clone()
                .ok_or_else(|| ExecError::msg(format!("value '{}' was not computed", pv.name))),
        }
    }

    /// Every value available now, by name (to go on without the plan).
    fn env(&self, st: &State) -> Result<HashMap<String, Value>> {
        let mut env = HashMap::new();
        for (id, pv) in self.values.iter().enumerate() {
            let present = match pv.home {
                Home::Host | Home::Input => st.cells[id].is_some(),
                Home::Slot(_) => st.written[id],
                Home::Const(_) => true,
            };
            if present {
                env.insert(pv.name.clone(), self.value(st, id)?);
            }
        }
        Ok(env)
    }

    /// The arena of the last run, or new buffers (checked against available memory).
    fn take_arena(&self) -> Result<Vec<Vec<f32>>> {
        if let Ok(mut kept) = self.arena.try_lock() {
            if kept.len() == self.slots.len() {
                return Ok(std::mem::take(&mut *kept));
            }
        }
        let total: usize = self.slots.iter().sum();
        whittle_ir::memory::ensure_fits(Some(total as u128 * 4), "the plan's buffers")?;
        Ok(self.slots.iter().map(|&n| vec![0.0; n]).collect())
    }

    fn return_arena(&self, arena: Vec<Vec<f32>>) {
        if let Ok(mut kept) = self.arena.try_lock() {
            *kept = arena;
        }
    }
}

/// `v` with contiguous storage (f32 values a kernel may borrow).
fn contiguous(v: Value) -> Result<Value> {
    if v.tensor().is_contiguous() {
        Ok(v)
    } else {
        let t = v.tensor().contiguous()?;
        v.with_tensor(t)
    }
}

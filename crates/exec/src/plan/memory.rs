//! Where values live in a run: arena slots shared by f32 values with disjoint lifetimes,
//! in-place kernels writing over their dying input, and host values freed after their last
//! reader.

use super::{Home, Plan, StepOp, ValueId};

/// Places every value of `plan`: outputs of kernel steps (and views of them) get arena
/// slots, assigned greedily in schedule order, the smallest free slot that fits first
/// (grown when none does); other values stay host values, each freed by its last reader.
pub fn assign(plan: &mut Plan) {
    let n = plan.values.len();
    // The value whose storage each value shares (views), or itself.
    let mut root: Vec<ValueId> = (0..n).collect();
    let mut arena = vec![false; n];
    for step in &plan.steps {
        let out = step.outputs.first().copied().flatten();
        match (&step.op, out) {
            (StepOp::Kernel(_), Some(o)) => arena[o] = true,
            (StepOp::View, Some(o)) => {
                if let Some(Some(i)) = step.inputs.first() {
                    if arena[*i] {
                        arena[o] = true;
                        root[o] = root[*i];
                    }
                }
            }
            _ => {}
        }
    }
    // Last step reading each root (returned values live to the end).
    let mut last = vec![None::<usize>; n];
    for (s, step) in plan.steps.iter().enumerate() {
        for &i in step.inputs.iter().flatten() {
            last[root[i]] = Some(s);
        }
    }
    for &o in &plan.outputs {
        last[root[o]] = Some(usize::MAX);
    }
    let mut slot_of = vec![None::<usize>; n];
    let mut free: Vec<usize> = Vec::new();
    for s in 0..plan.steps.len() {
        let step = &plan.steps[s];
        if let (StepOp::Kernel(k), Some(Some(o))) = (&step.op, step.outputs.first()) {
            let o = *o;
            let need = plan.values[o].numel();
            let dying = step.inputs.first().copied().flatten().filter(|&i| {
                arena[i] && last[root[i]] == Some(s) && plan.values[i].numel() == need
            });
            slot_of[o] = match dying {
                // In place: the output takes over the input's slot.
                Some(i) if k.in_place() => {
                    last[root[i]] = None;
                    slot_of[root[i]]
                }
                _ => Some(take_slot(&mut plan.slots, &mut free, need)),
            };
        }
        if let (StepOp::View, Some(Some(o))) = (&step.op, step.outputs.first()) {
            slot_of[*o] = slot_of[root[*o]];
        }
        // Slots whose values die here return to the free list (after the outputs took
        // theirs, so no step writes over an input it still reads).
        let step = &plan.steps[s];
        for &i in step.inputs.iter().flatten() {
            let r = root[i];
            if arena[r] && last[r] == Some(s) {
                if let Some(slot) = slot_of[r] {
                    if !free.contains(&slot) {
                        free.push(slot);
                    }
                }
            }
        }
    }
    for (v, slot) in slot_of.iter().enumerate() {
        if let Some(slot) = slot {
            plan.values[v].home = Home::Slot(*slot);
        }
    }
    free_host_values(plan);
}

/// The smallest free slot holding `need` elements, else the largest free one grown to
/// `need`, else a new slot.
fn take_slot(slots: &mut Vec<usize>, free: &mut Vec<usize>, need: usize) -> usize {
    let fits = free
        .iter()
        .enumerate()
        .filter(|(_, &s)| slots[s] >= need)
        .min_by_key(|(_, &s)| slots[s])
        .map(|(i, _)| i);
    let pick = fits.or_else(|| {
        free.iter()
            .enumerate()
            .max_by_key(|(_, &s)| slots[s])
            .map(|(i, _)| i)
    });
    match pick {
        Some(i) => {
            let s = free.swap_remove(i);
            slots[s] = slots[s].max(need);
            s
        }
        None => {
            slots.push(need);
            slots.len() - 1
        }
    }
}

/// Lists each host value (not returned by the run) under the last step reading it.
fn free_host_values(plan: &mut Plan) {
    let mut last = vec![None::<usize>; plan.values.len()];
    for (s, step) in plan.steps.iter().enumerate() {
        for &i in step.inputs.iter().flatten() {
            last[i] = Some(s);
        }
    }
    for step in &mut plan.steps {
        step.frees.clear();
    }
    for (v, at) in last.into_iter().enumerate() {
        let host = matches!(plan.values[v].home, Home::Host | Home::Input);
        if let (Some(s), true) = (at, host && !plan.outputs.contains(&v)) {
            plan.steps[s].frees.push(v);
        }
    }
}

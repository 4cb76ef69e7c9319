//! Elastic weight consolidation: after each task, the diagonal of the empirical Fisher
//! information (mean squared per-sample gradient of the log-likelihood) is added up, and
//! later steps are pulled back towards the weights the task ended with by the penalty
//! `lambda / 2 * sum F (theta - theta*)^2`, whose gradient is added to each step's.

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use whittle_data::Dataset;
use whittle_exec::{Executor, Value};

use super::objective::{loss, task_mask, Term};
use crate::error::Result;
use crate::step::{Backward, PassOptions};

/// The summed Fisher diagonals and the weights of the last task's end.
pub struct Ewc {
    lambda: f64,
    fisher: HashMap<String, Tensor>,
    anchor: HashMap<String, Tensor>,
}

impl Ewc {
    /// A penalty of strength `lambda`, empty until the first [`Ewc::consolidate`].
    pub fn new(lambda: f64) -> Self {
        Ewc {
            lambda,
            fisher: HashMap::new(),
            anchor: HashMap::new(),
        }
    }

    /// Adds the Fisher diagonal of the executor's trainable parameters estimated on the
    /// first `samples` of `data` (one sample per pass; `task_of_class` masks task-IL
    /// scores), and anchors the penalty at the current weights.
    pub fn consolidate(
        &mut self,
        exec: &Executor,
        data: &Dataset,
        samples: usize,
        task_of_class: Option<&[Option<usize>]>,
    ) -> Result<()> {
        let input = exec
            .inputs()
            .first()
            .map(|i| i.name.clone())
            .unwrap_or_default();
        let output = exec.output_names().first().cloned().unwrap_or_default();
        let backward = Backward::default();
        let n = samples.clamp(1, data.len());
        let mut sum: HashMap<String, Tensor> = HashMap::new();
        for row in 0..n {
            let (images, labels) = data.batch(row, row + 1)?;
            let mask = task_of_class.map(|t| task_mask(labels, t)).transpose()?;
            let terms = vec![Term::CrossEntropy {
                rows: 0..1,
                weight: 1.0,
                mask: None,
            }];
            let mut ce = loss(output.clone(), terms, mask);
            let feed = HashMap::from([(input.clone(), Value::try_from(&images)?)]);
            let pass = backward.pass(
                exec,
                feed,
                labels,
                &mut ce,
                PassOptions {
                    seed: row as u64,
                    segments: None,
                    running_stats: None,
                },
            )?;
            for (name, g) in pass.grads {
                let sq = g.sqr()?;
                let total = match sum.remove(&name) {
                    Some(s) => (s + sq)?,
                    None => sq,
                };
                sum.insert(name, total);
            }
        }
        for (name, s) in sum {
            let f = (s / n as f64)?;
            let total = match self.fisher.remove(&name) {
                Some(old) => (old + f)?,
                None => f,
            };
            self.fisher.insert(name, total);
        }
        // A copy: a detached view would share the parameter's storage, which the optimizer
        // updates in place, and the penalty would vanish.
        self.anchor = exec
            .params()
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// Adds the penalty's gradient `lambda F (theta - theta*)` to `grads` for every
    /// parameter of `params` with a Fisher diagonal.
    pub fn add_gradient(
        &self,
        params: &HashMap<String, Var>,
        grads: &mut HashMap<String, Tensor>,
    ) -> Result<()> {
        for (name, f) in &self.fisher {
            let (Some(var), Some(anchor)) = (params.get(name), self.anchor.get(name)) else {
                continue;
            };
            let pull = ((var.as_tensor().detach() - anchor)? * f)?;
            let pull = (pull * self.lambda)?;
            let total = match grads.remove(name) {
                Some(g) => (g + pull)?,
                None => pull,
            };
            grads.insert(name.clone(), total);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use whittle_ir::TensorData;

    use super::*;
    use crate::params::select_trainable;

    #[test]
    fn the_penalty_pulls_each_weight_back_by_lambda_times_its_fisher() {
        let model = whittle_zoo::build("mlp:hidden=8").unwrap();
        let mut exec = Executor::new(&model).unwrap();
        exec.set_trainable(&select_trainable(&model, &[]).unwrap())
            .unwrap();
        let pixels: Vec<f32> = (0..4 * 784)
            .map(|i| ((i * 37) % 255) as f32 / 255.0)
            .collect();
        let images = TensorData::from_slice(vec![4, 1, 28, 28], &pixels).unwrap();
        let data = Dataset::new(images, vec![0, 1, 2, 3], 10).unwrap();
        let mut ewc = Ewc::new(10.0);
        ewc.consolidate(&exec, &data, 4, None).unwrap();
        let total = |t: &Tensor| t.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let fisher: f64 = ewc.fisher.values().map(total).sum();
        assert!(fisher > 0.0, "an untrained model's Fisher is not zero");
        assert_eq!(ewc.fisher.len(), exec.params().len());
        // At the anchor there is no pull; one step of +1 on every weight pulls by 10 F.
        let mut grads = HashMap::new();
        ewc.add_gradient(exec.params(), &mut grads).unwrap();
        assert!(grads.values().all(|g| total(&g.abs().unwrap()) == 0.0));
        for var in exec.params().values() {
            var.set(&(var.as_tensor() + 1.0).unwrap()).unwrap();
        }
        let mut grads = HashMap::new();
        ewc.add_gradient(exec.params(), &mut grads).unwrap();
        let pull: f64 = grads.values().map(total).sum();
        assert!(
            (pull - 10.0 * fisher).abs() <= 1e-4 * pull.abs().max(1.0),
            "{pull} vs {fisher}"
        );
    }
}

//! The search space: candidate actions and their compositions, always in the order
//! prune (fine-tuned or distilled from the original) -> low-rank factorization
//! (fine-tuned) -> graph optimization -> quantization. Pruning and fine-tuning see the
//! model before the optimization folds its batch norms into the convs: zoo:cnn on
//! Fashion-MNIST pruned 50% (stem included) and fine-tuned 3 epochs kept 89.36% with its
//! batch norms against 88.35% folded. A [`Candidate`] becomes the pipeline's step
//! configurations ([`Candidate::steps`]), so its models are cached by content key.

use serde::{Deserialize, Serialize};
use whittle_pipeline::step::factorize::Factorize;
use whittle_pipeline::step::fp16::Fp16;
use whittle_pipeline::step::int4::Int4;
use whittle_pipeline::step::optimize::Optimize;
use whittle_pipeline::step::prune::{DistillLoss, PruneMethod, PruneStep};
use whittle_pipeline::step::qat::Qat;
use whittle_pipeline::step::quantize::{Calibrator, Mode, Quantize};
use whittle_pipeline::step::train::{TrainStep, Training};
use whittle_pipeline::step::verify::Checks;
use whittle_pipeline::step::StepConfig;

/// How weights are removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Prune {
    /// Nothing removed.
    None,
    /// Whole channels removed (smaller and faster dense layers).
    Channel {
        /// Share of channels removed, percent.
        percent: u8,
    },
    /// Single weights zeroed by magnitude (smaller only once compressed).
    Unstructured {
        /// Share of weights zeroed, percent.
        percent: u8,
    },
    /// 2 of every 4 weights zeroed.
    Nm24,
}

/// How numbers are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quant {
    /// Float32 as trained.
    None,
    /// INT8, activations calibrated on training data, per-channel weights.
    Int8Static,
    /// INT8 weights, activations quantized at run time.
    Int8Dynamic,
    /// Float16 weights and activations.
    Fp16,
    /// 4-bit weights of MatMul layers.
    Int4,
    /// Static INT8 learnt with quantization-aware training (fake quantization during
    /// fine-tuning): a refinement the search adds for candidates whose static INT8 loses
    /// too much, outside the grid.
    Qat,
}

/// One point of the space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Candidate {
    /// Pruning.
    pub prune: Prune,
    /// Low-rank factorization of the weights to half their rank.
    pub factorize: bool,
    /// Quantization.
    pub quant: Quant,
    /// Fine-tuned after pruning or factorization (distilled from the original for
    /// channel pruning).
    pub tuned: bool,
    /// Mixed precision: static INT8 keeping the most sensitive layers float until the
    /// accuracy lost is within this many hundredths of a point.
    pub mixed: Option<u16>,
}

/// Pruning actions of the space.
pub const PRUNES: [Prune; 4] = [
    Prune::None,
    Prune::Channel { percent: 30 },
    Prune::Channel { percent: 50 },
    Prune::Nm24,
];

/// Quantization actions of the space.
pub const QUANTS: [Quant; 5] = [
    Quant::None,
    Quant::Int8Static,
    Quant::Int8Dynamic,
    Quant::Fp16,
    Quant::Int4,
];

/// Channel pruning refined by the search stays at or below this share, percent.
pub const CHANNEL_MAX: u8 = 80;
/// The search refines channel ratios to this resolution, percent.
pub const CHANNEL_STEP: u8 = 5;

/// Rank kept by factorization, as a share of the full rank.
const RANK_RATIO: f64 = 0.5;
/// Calibration samples of static INT8.
const CALIB_SAMPLES: usize = 256;
/// Eval samples the mixed-precision fallback ranks layers on.
const MIXED_EVAL_SAMPLES: usize = 2000;
/// Learning rate of fine-tuning (AdamW, cosine decay): a trained model moves a little.
const FINETUNE_LR: f64 = 1e-3;

/// Learning rate of quantization-aware training: the weights only adapt to rounding.
const QAT_LR: f64 = 1e-4;
/// Channel pruning fine-tunes for `--finetune-epochs` once more per this many percent of
/// channels removed: a heavily pruned model needs longer to recover (zoo:cnn on
/// Fashion-MNIST pruned 50% lost 2.5 points after one epoch of distillation, 1.4 after
/// three).
const PERCENT_PER_EPOCH: u8 = 25;

/// What turning candidates into steps needs besides the candidate.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Training data SPEC (calibration and fine-tuning).
    pub data: String,
    /// Eval data SPEC (mixed precision's yardstick).
    pub eval_data: String,
    /// Fine-tuning epochs.
    pub finetune_epochs: usize,
    /// Seed.
    pub seed: u64,
    /// Channel pruning removes the stem Conv's output channels too (the prune step's
    /// `prune_stem`): the speed target's, since the stem's channels feed the next Conv,
    /// which dominates a small CNN's time.
    pub prune_stem: bool,
}

#[cfg(test)]
impl Settings {
    /// Settings of the unit tests: two fine-tuning epochs.
    pub(crate) fn example() -> Settings {
        Settings {
            data: "mnist:D".into(),
            eval_data: "mnist:E".into(),
            finetune_epochs: 2,
            seed: 7,
            prune_stem: false,
        }
    }
}

impl Candidate {
    /// The candidate that changes nothing but the graph (lossless optimization).
    pub const IDENTITY: Candidate = Candidate {
        prune: Prune::None,
        factorize: false,
        quant: Quant::None,
        tuned: false,
        mixed: None,
    };

    /// Whether it prunes or factorizes (what fine-tuning can recover).
    pub fn changes_weights(&self) -> bool {
        self.prune != Prune::None || self.factorize
    }

    /// Whether it trains (fine-tuning or quantization-aware training): the costly ones.
    pub fn trains(&self) -> bool {
        self.tuned || self.quant == Quant::Qat
    }

    /// Whether it needs labelled data: fine-tuning, QAT and mixed precision (which ranks
    /// layers by top-1 accuracy) do.
    pub fn needs_labels(&self) -> bool {
        self.trains() || self.mixed.is_some()
    }

    /// The same candidate fine-tuned.
    pub fn tuned(self) -> Candidate {
        Candidate {
            tuned: true,
            ..self
        }
    }

    /// The same candidate without fine-tuning and mixed precision: the point of the grid
    /// it refines.
    pub fn untuned(self) -> Candidate {
        Candidate {
            tuned: false,
            mixed: None,
            ..self
        }
    }

    /// The single actions it composes, each alone on the original model (what the
    /// predictor measured), the identity excluded.
    pub fn actions(&self) -> Vec<Candidate> {
        let mut parts = Vec::new();
        if self.prune != Prune::None {
            parts.push(Candidate {
                prune: self.prune,
                ..Candidate::IDENTITY
            });
        }
        if self.factorize {
            parts.push(Candidate {
                factorize: true,
                ..Candidate::IDENTITY
            });
        }
        if self.quant != Quant::None {
            parts.push(Candidate {
                quant: self.quant,
                ..Candidate::IDENTITY
            });
        }
        parts
    }

    /// A short name: `channel-50% + tune -> int8-static (mixed 0.50)`.
    pub fn name(&self) -> String {
        let mut parts = Vec::new();
        let tune = if self.tuned { " + tune" } else { "" };
        match self.prune {
            Prune::None => {}
            Prune::Channel { percent } => parts.push(format!("channel-{percent}%")),
            Prune::Unstructured { percent } => parts.push(format!("sparse-{percent}%")),
            Prune::Nm24 => parts.push("2:4".into()),
        }
        if self.factorize {
            parts.push("low-rank".into());
        }
        if let Some(last) = parts.last_mut() {
            last.push_str(tune);
        }
        let quant = match self.quant {
            Quant::None => None,
            Quant::Int8Static => Some("int8-static"),
            Quant::Int8Dynamic => Some("int8-dynamic"),
            Quant::Fp16 => Some("fp16"),
            Quant::Int4 => Some("int4"),
            Quant::Qat => Some("int8-qat"),
        };
        parts.extend(quant.map(|q| match self.mixed {
            Some(h) => format!("{q} (mixed, {:.2} pt)", f64::from(h) / 100.0),
            None => q.to_string(),
        }));
        if parts.is_empty() {
            "optimize".into()
        } else {
            parts.join(" -> ")
        }
    }

    /// Fine-tuning epochs after its pruning or factorization: `base`, and `base` more per
    /// [`PERCENT_PER_EPOCH`] percent of channels removed.
    pub fn finetune_epochs(&self, base: usize) -> usize {
        let heavier = match self.prune {
            Prune::Channel { percent } => usize::from(percent / PERCENT_PER_EPOCH),
            _ => 0,
        };
        base.max(1) * (1 + heavier)
    }

    /// The pipeline steps of the candidate.
    pub fn steps(&self, s: &Settings) -> Vec<StepConfig> {
        let mut steps = Vec::new();
        let training = Training {
            epochs: self.finetune_epochs(s.finetune_epochs),
            lr: FINETUNE_LR,
            seed: Some(s.seed),
            ..Training::default()
        };
        let (method, sparsity) = match self.prune {
            Prune::None => (None, None),
            Prune::Channel { percent } => (Some(PruneMethod::Channel), Some(percent)),
            Prune::Unstructured { percent } => (Some(PruneMethod::Magnitude), Some(percent)),
            Prune::Nm24 => (Some(PruneMethod::Nm), None),
        };
        if let Some(method) = method {
            let mut prune = PruneStep::new(method);
            prune.sparsity = sparsity.map(|p| f64::from(p) / 100.0);
            prune.seed = Some(s.seed);
            prune.prune_stem = s.prune_stem && method == PruneMethod::Channel;
            if self.tuned {
                prune.data = Some(s.data.clone());
                prune.finetune = Some(training.clone());
                // Channel pruning changes the features: learn the original's outputs.
                if method == PruneMethod::Channel {
                    prune.distill = Some(DistillLoss::default());
                }
            }
            steps.push(StepConfig::Prune(prune));
        }
        if self.factorize {
            steps.push(StepConfig::Factorize(Factorize {
                rank_ratio: Some(RANK_RATIO),
                ..Factorize::default()
            }));
            if self.tuned {
                let mut train = TrainStep::new(s.data.clone());
                train.training = training.clone();
                train.keep_zeros = self.prune != Prune::None;
                steps.push(StepConfig::Train(train));
            }
        }
        steps.push(StepConfig::Optimize(Optimize::default()));
        let quiet = Checks {
            verify_samples: 0,
            no_latency: true,
            ..Checks::default()
        };
        match self.quant {
            Quant::None => {}
            Quant::Int8Static => {
                let mut checks = quiet;
                let budget = self.mixed.map(|h| f64::from(h) / 100.0);
                if budget.is_some() {
                    checks.eval_data = Some(s.eval_data.clone());
                    checks.eval_samples = Some(MIXED_EVAL_SAMPLES);
                }
                steps.push(StepConfig::Quantize(Quantize {
                    mode: Mode::Static,
                    calib_data: Some(s.data.clone()),
                    calib_samples: Some(CALIB_SAMPLES),
                    calibration: Some(Calibrator::Minmax),
                    per_channel: true,
                    accuracy_budget: budget,
                    checks,
                    ..Quantize::default()
                }));
            }
            Quant::Int8Dynamic => steps.push(StepConfig::Quantize(Quantize {
                mode: Mode::Dynamic,
                checks: quiet,
                ..Quantize::default()
            })),
            Quant::Fp16 => steps.push(StepConfig::Fp16(Fp16 {
                checks: quiet,
                ..Fp16::default()
            })),
            Quant::Int4 => steps.push(StepConfig::Int4(Int4 {
                checks: quiet,
                ..Int4::default()
            })),
            Quant::Qat => steps.push(StepConfig::Qat(Qat {
                calibration: Calibrator::Minmax,
                calib_samples: CALIB_SAMPLES,
                per_channel: true,
                training: Training {
                    lr: QAT_LR,
                    epochs: s.finetune_epochs.max(1),
                    ..training
                },
                ..Qat::new(s.data.clone())
            })),
        }
        steps
    }
}

/// An action `--actions` may restrict the search to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Channel pruning, at any ratio.
    Channel,
    /// 2:4 pruning.
    Nm24,
    /// Low-rank factorization.
    LowRank,
    /// Static INT8 (mixed precision included).
    Int8Static,
    /// Dynamic INT8.
    Int8Dynamic,
    /// FP16.
    Fp16,
    /// INT4 weights.
    Int4,
    /// Quantization-aware training to static INT8: named, it is a quantization of the
    /// grid, not only a refinement of static INT8 that loses too much.
    Qat,
}

/// Every action by its `--actions` name.
pub const ACTIONS: [(&str, Action); 8] = [
    ("channel", Action::Channel),
    ("2:4", Action::Nm24),
    ("low-rank", Action::LowRank),
    ("int8-static", Action::Int8Static),
    ("int8-dynamic", Action::Int8Dynamic),
    ("fp16", Action::Fp16),
    ("int4", Action::Int4),
    ("qat", Action::Qat),
];

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        (ACTIONS.iter().find(|(name, _)| *name == s))
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                let names: Vec<&str> = ACTIONS.iter().map(|(n, _)| *n).collect();
                format!("unknown action '{s}' (expected {})", names.join(", "))
            })
    }
}

impl Candidate {
    /// The actions it uses (none for the identity).
    pub fn uses(&self) -> Vec<Action> {
        let prune = match self.prune {
            Prune::Channel { .. } => Some(Action::Channel),
            Prune::Nm24 => Some(Action::Nm24),
            Prune::None | Prune::Unstructured { .. } => None,
        };
        let quant = match self.quant {
            Quant::None => None,
            Quant::Int8Static => Some(Action::Int8Static),
            Quant::Int8Dynamic => Some(Action::Int8Dynamic),
            Quant::Fp16 => Some(Action::Fp16),
            Quant::Int4 => Some(Action::Int4),
            Quant::Qat => Some(Action::Qat),
        };
        let factorize = self.factorize.then_some(Action::LowRank);
        [prune, factorize, quant].into_iter().flatten().collect()
    }

    /// Whether it uses only actions of `allowed` (None: every action allowed).
    pub fn allowed(&self, allowed: Option<&[Action]>) -> bool {
        allowed.is_none_or(|a| self.uses().iter().all(|u| a.contains(u)))
    }
}

/// Every point of the grid: each pruning x factorization x quantization, and the
/// fine-tuned variant of each that prunes or factorizes (mixed precision is a refinement
/// the search adds, outside the grid). With `allowed` (`--actions`), only the points that
/// use its actions; QAT is then a quantization of the grid if it names it.
pub fn grid(allowed: Option<&[Action]>) -> Vec<Candidate> {
    let qat = allowed.is_some_and(|a| a.contains(&Action::Qat));
    let quants = QUANTS.into_iter().chain(qat.then_some(Quant::Qat));
    let mut all = Vec::new();
    for prune in PRUNES {
        for factorize in [false, true] {
            for quant in quants.clone() {
                let c = Candidate {
                    prune,
                    factorize,
                    quant,
                    tuned: false,
                    mixed: None,
                };
                all.push(c);
                if c.changes_weights() {
                    all.push(c.tuned());
                }
            }
        }
    }
    all.retain(|c| c.allowed(allowed));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(c: &Candidate) -> Vec<String> {
        c.steps(&Settings::example())
            .iter()
            .map(|s| s.step().name().to_string())
            .collect()
    }

    #[test]
    fn the_grid_counts_every_composition_once() {
        let g = grid(None);
        // 4 prunings x 2 factorizations x 5 quantizations, plus a tuned variant of the 35
        // that prune or factorize.
        assert_eq!(g.len(), 40 + 35);
        let unique: std::collections::HashSet<_> = g.iter().collect();
        assert_eq!(unique.len(), g.len());
        assert!(g.contains(&Candidate::IDENTITY));
        assert!(g.iter().all(|c| c.quant != Quant::Qat));
    }

    #[test]
    fn actions_restrict_the_grid_and_a_named_qat_joins_it() {
        let names = |allowed: &[Action]| -> Vec<String> {
            grid(Some(allowed)).iter().map(Candidate::name).collect()
        };
        // QAT named: a quantization of the grid, beside static INT8; nothing else.
        assert_eq!(
            names(&[Action::Qat, Action::Int8Static]),
            ["optimize", "int8-static", "int8-qat"]
        );
        // Channel pruning at both ratios, untuned and tuned, with and without FP16.
        let g = names(&[Action::Channel, Action::Fp16]);
        assert_eq!(g.len(), 2 + 2 * 2 * 2, "{g:?}");
        assert!(
            g.contains(&"channel-50% + tune -> fp16".to_string()),
            "{g:?}"
        );
        assert!(g
            .iter()
            .all(|n| !n.contains("int8") && !n.contains("low-rank")));
        // Mixed precision is static INT8's.
        let mixed = Candidate {
            quant: Quant::Int8Static,
            mixed: Some(50),
            ..Candidate::IDENTITY
        };
        assert!(mixed.allowed(Some(&[Action::Int8Static])));
        assert!(!mixed.allowed(Some(&[Action::Qat])));
        assert_eq!("2:4".parse::<Action>(), Ok(Action::Nm24));
        let err = "int3".parse::<Action>().unwrap_err();
        assert!(
            err.contains("'int3'") && err.contains("int8-static, int8-dynamic"),
            "{err}"
        );
    }

    #[test]
    fn steps_run_prune_then_factorize_then_optimize_then_quantize() {
        let c = Candidate {
            prune: Prune::Channel { percent: 50 },
            factorize: true,
            quant: Quant::Int8Static,
            tuned: true,
            mixed: Some(50),
        };
        assert_eq!(
            kinds(&c),
            ["prune", "factorize", "train", "optimize", "quantize"]
        );
        let steps = c.steps(&Settings::example());
        let StepConfig::Prune(p) = &steps[0] else {
            panic!("{steps:?}")
        };
        assert_eq!(p.sparsity, Some(0.5));
        // Two epochs, twice more for the 50% removed.
        assert_eq!(p.finetune.as_ref().map(|t| t.epochs), Some(6));
        assert!(p.distill.is_some());
        let StepConfig::Quantize(q) = &steps[4] else {
            panic!("{steps:?}")
        };
        assert_eq!(q.accuracy_budget, Some(0.5));
        assert_eq!(q.checks.eval_data.as_deref(), Some("mnist:E"));
        assert_eq!(
            c.name(),
            "channel-50% -> low-rank + tune -> int8-static (mixed, 0.50 pt)"
        );
        assert_eq!(
            kinds(&c.untuned()),
            ["prune", "factorize", "optimize", "quantize"]
        );
        assert_eq!(c.actions().len(), 3);
        assert_eq!(Candidate::IDENTITY.name(), "optimize");
        assert!(!p.prune_stem);
    }

    #[test]
    fn the_stem_is_pruned_only_by_channel_pruning_when_asked() {
        let stem = Settings {
            prune_stem: true,
            ..Settings::example()
        };
        let prune_of = |c: Candidate| match c.steps(&stem).swap_remove(0) {
            StepConfig::Prune(p) => p,
            other => panic!("{other:?}"),
        };
        let channel = Candidate {
            prune: Prune::Channel { percent: 50 },
            ..Candidate::IDENTITY
        };
        assert!(prune_of(channel).prune_stem);
        let nm = Candidate {
            prune: Prune::Nm24,
            ..Candidate::IDENTITY
        };
        assert!(!prune_of(nm).prune_stem);
    }
}

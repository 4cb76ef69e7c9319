//! What `whittle auto` is asked: the model, its data, the target, the constraints and the
//! budget ([`AutoConfig`]), checked before any work starts.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use whittle_pipeline::{DataSource, ModelSource, PipelineError};

use super::space::Action;
use crate::pareto::{Direction, Objectives};

/// What the search optimizes once the constraints are met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The lowest ONNX Runtime latency.
    Speed,
    /// The smallest model file.
    Size,
    /// The highest accuracy (ties go to the faster model).
    Accuracy,
    /// The lowest geometric mean of the latency and size ratios to the baseline.
    Balanced,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "speed" => Ok(Target::Speed),
            "size" => Ok(Target::Size),
            "accuracy" => Ok(Target::Accuracy),
            "balanced" => Ok(Target::Balanced),
            other => Err(format!(
                "unknown target '{other}' (expected speed, size, accuracy or balanced)"
            )),
        }
    }
}

impl Target {
    /// The target's score of a model with `latency` and `size` ratios to the baseline
    /// and `drop` (accuracy lost, in points): smaller is better.
    pub fn score(self, latency: f64, size: f64, drop: f64) -> f64 {
        match self {
            Target::Speed => latency,
            Target::Size => size,
            Target::Balanced => (latency * size).sqrt(),
            Target::Accuracy => drop + 1e-3 * latency,
        }
    }
}

/// When the search ends (the first limit reached).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Wall time of this run's search.
    pub time: Option<Duration>,
    /// Trials in all, those of the journal included.
    pub trials: Option<usize>,
}

/// The time budget when neither `--budget` nor `--max-trials` is given.
pub const DEFAULT_TIME: Duration = Duration::from_secs(20 * 60);

/// Everything `whittle auto` needs.
#[derive(Clone, Debug)]
pub struct AutoConfig {
    /// The model to compress.
    pub model: ModelSource,
    /// Labelled data: its train split calibrates and fine-tunes. A `feeds:FILE.npz`
    /// archive has no labels: it only calibrates, and the search skips what needs labels
    /// (fine-tuning, QAT, mixed precision).
    pub data: DataSource,
    /// Data whose test split measures accuracy (default: `data`); label-less feeds when
    /// `data` is: the "accuracy" is then the cosine similarity of the outputs to the
    /// baseline's (1 for the baseline).
    pub eval_data: DataSource,
    /// What to optimize.
    pub target: Target,
    /// Largest top-1 accuracy drop allowed, in percentage points (label-less feeds: of
    /// cosine x 100, so a minimum cosine C is `100 (1 - C)`).
    pub max_accuracy_drop: f64,
    /// Largest ONNX Runtime latency at batch 1, milliseconds.
    pub max_latency_ms: Option<f64>,
    /// Largest model file, bytes.
    pub max_size_bytes: Option<u64>,
    /// When to stop.
    pub budget: Budget,
    /// Fine-tuning epochs of pruned or factorized candidates (channel pruning: as many
    /// again per 25% of channels removed, see [`super::space::Candidate::finetune_epochs`]).
    pub finetune_epochs: usize,
    /// Threads of ONNX Runtime (latency) and whittle's executor.
    pub threads: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Evaluate every point of the space, in grid order, without prediction or early drop
    /// (the reference the search's efficiency is measured against).
    pub exhaustive: bool,
    /// Only candidates using these actions (`--actions`; None: every action). A named
    /// action is tried even where the model's profile says it cannot gain anything.
    pub actions: Option<Vec<Action>>,
    /// The work folder (journal and every candidate's models).
    pub work_dir: PathBuf,
    /// Where the best model so far is written after every trial.
    pub output: PathBuf,
}

impl AutoConfig {
    /// Refuses values out of range, naming the option.
    pub fn validate(&self) -> whittle_pipeline::Result<()> {
        let refuse = |what: &str, why: String| Err(PipelineError::invalid(what, why));
        if !(self.max_accuracy_drop.is_finite() && (0.0..=100.0).contains(&self.max_accuracy_drop))
        {
            return refuse(
                "--max-accuracy-drop",
                format!(
                    "must be between 0 and 100 points, got {}",
                    self.max_accuracy_drop
                ),
            );
        }
        if let Some(ms) = self.max_latency_ms {
            if !(ms.is_finite() && ms > 0.0) {
                return refuse("--max-latency-ms", format!("must be positive, got {ms}"));
            }
        }
        if self.max_size_bytes == Some(0) {
            return refuse("--max-size-mb", "must be positive".into());
        }
        if self.budget.trials == Some(0) {
            return refuse("--max-trials", "must be at least 1".into());
        }
        if self.budget.time == Some(Duration::ZERO) {
            return refuse("--budget", "must be longer than 0 s".into());
        }
        if self.threads == 0 {
            return refuse("--threads", "must be at least 1".into());
        }
        if self.data.is_labelled() != self.eval_data.is_labelled() {
            return refuse(
                "--data/--eval-data",
                "give two labelled dataset SPECs or two feeds:FILE.npz archives (without labels the outputs' cosine to the baseline's is the accuracy)".into(),
            );
        }
        Ok(())
    }

    /// The objectives of a candidate (`latency_ms`, `size_bytes`, `accuracy` in 0..1) and
    /// the constraints on them, for a baseline of accuracy `baseline_accuracy`.
    pub fn objectives(&self, baseline_accuracy: f64) -> Objectives {
        let mut o = Objectives::new([
            (LATENCY, Direction::Min),
            (SIZE, Direction::Min),
            (ACCURACY, Direction::Max),
        ]);
        let limit = baseline_accuracy - self.max_accuracy_drop / 100.0;
        o = o.constrain(ACCURACY, limit).expect("a known objective");
        if let Some(ms) = self.max_latency_ms {
            o = o.constrain(LATENCY, ms).expect("a known objective");
        }
        if let Some(bytes) = self.max_size_bytes {
            o = o.constrain(SIZE, bytes as f64).expect("a known objective");
        }
        o
    }
}

/// The latency objective's name.
pub const LATENCY: &str = "latency_ms";
/// The size objective's name.
pub const SIZE: &str = "size_bytes";
/// The accuracy objective's name.
pub const ACCURACY: &str = "accuracy";

/// Parses a duration: `90s`, `20m`, `1.5h` or plain seconds (an error naming the text).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("'{text}': the unit must be s, m or h")),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 90s, 20m or 1.5h"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("'{text}' must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("20m"), Ok(Duration::from_secs(1200)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("20x").unwrap_err().contains("'20x'"));
        assert!(parse_duration("-1m").is_err());
    }

    #[test]
    fn targets_score_their_own_figure() {
        assert_eq!(Target::Speed.score(0.5, 0.25, 0.3), 0.5);
        assert_eq!(Target::Size.score(0.5, 0.25, 0.3), 0.25);
        assert!((Target::Balanced.score(0.5, 0.5, 0.0) - 0.5).abs() < 1e-12);
        assert!(Target::Accuracy.score(0.9, 1.0, 0.1) < Target::Accuracy.score(0.1, 1.0, 0.2));
    }
}

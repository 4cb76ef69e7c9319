//! Helpers of the continual-learning tests (`continual.rs`, `continual_ncm.rs`): Split
//! MNIST from the assets, one short ER-style run on a small MLP with a setting changed, and
//! the plain run on the tests' Split MNIST, made once per test binary for every test that
//! compares a setting against it.

#![allow(dead_code)]

use std::sync::OnceLock;

use whittle_data::scenario::{Scenario, ScenarioKind};
use whittle_data::{Dataset, Split};
use whittle_train::continual::{run, ContinualConfig, ContinualRun, NoHook};

/// The first `count` samples of a split of MNIST.
pub fn mnist(split: Split, count: usize) -> Dataset {
    let dir = whittle_data::assets_dir().join("mnist");
    assert!(
        dir.is_dir(),
        "{} missing: run scripts/fetch-assets.sh",
        dir.display()
    );
    whittle_data::load(&format!("mnist:{}", dir.display()), split, Some(count)).unwrap()
}

/// Split MNIST (5 tasks of 2 classes) of `train` training and `test` test samples.
pub fn split_mnist(kind: ScenarioKind, train: usize, test: usize) -> Scenario {
    let (train, test) = (mnist(Split::Train, train), mnist(Split::Test, test));
    Scenario::split(kind, &train, &test, 2, None, None).unwrap()
}

/// Training samples of the tests' Split MNIST (the first of MNIST's, about 300 per class)
/// and test samples.
pub const TRAIN: usize = 3000;
pub const TEST: usize = 1000;

/// The tests' class-IL Split MNIST (`TRAIN`, `TEST`) and the plain [`short_run`] on it
/// (ER, seed 0), made once and shared by the tests of one binary.
pub fn plain_er() -> &'static (Scenario, ContinualRun) {
    static PLAIN: OnceLock<(Scenario, ContinualRun)> = OnceLock::new();
    PLAIN.get_or_init(|| {
        let scenario = split_mnist(ScenarioKind::ClassIl, TRAIN, TEST);
        let run = short_run(&scenario, |_| ());
        (scenario, run)
    })
}

/// A run on `scenario` of an MLP with 100 hidden units, from the default settings (ER,
/// buffer 500, batches of 10) with 32 replayed samples per step and `change` applied.
pub fn short_run(scenario: &Scenario, change: impl FnOnce(&mut ContinualConfig)) -> ContinualRun {
    let model = whittle_zoo::build("mlp:hidden=100").unwrap();
    let mut config = ContinualConfig {
        replay_batch: 32,
        ..ContinualConfig::default()
    };
    change(&mut config);
    run(&model, scenario, &config, &mut NoHook).unwrap()
}

/// An accuracy matrix in percent, rounded to 0.1.
pub fn percent(r: &[Vec<f64>]) -> Vec<Vec<f64>> {
    r.iter()
        .map(|row| row.iter().map(|v| (1000.0 * v).round() / 10.0).collect())
        .collect()
}

//! Cache keys follow the contents of the files a step reads, not only their names: a
//! changed dataset file makes the step that reads it run again, a changed teacher file
//! changes the distill step's key.

use std::path::{Path, PathBuf};

use whittle_pipeline::recipe::{Format, Recipe};
use whittle_pipeline::runner::Runner;
use whittle_pipeline::step::distill::Distill;
use whittle_pipeline::step::StepConfig;
use whittle_pipeline::{ModelSource, SilentObserver};
use whittle_testkit::scratch;

fn assets() -> PathBuf {
    whittle_data::assets_dir()
}

/// Whether each step of a run of `recipe` in `work` came from the work folder.
fn cached(recipe: &Recipe, work: &Path) -> Vec<bool> {
    let runner = Runner {
        work_dir: work.to_path_buf(),
        observer: &SilentObserver,
    };
    let run = runner.run(recipe).unwrap();
    run.steps.iter().map(|s| s.cached).collect()
}

#[test]
fn a_changed_data_file_reruns_the_step_that_reads_it() {
    let dir = scratch("cache-keys-data");
    // MNIST's test split in a folder of the test's own, to change one label in.
    let data = dir.join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    for file in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        std::fs::copy(assets().join("mnist").join(file), data.join(file)).unwrap();
    }
    let lenet = assets().join("models/mnist_lenet5.onnx");
    let text = format!(
        "model = \"{}\"\n[[steps]]\nstep = \"optimize\"\n\
         [[steps]]\nstep = \"evaluate\"\ndata = \"mnist:{}\"\nsamples = 50\n",
        lenet.display(),
        data.display()
    );
    let recipe = Recipe::parse(&text, Format::Toml).unwrap();
    let work = dir.join("work");
    assert_eq!(cached(&recipe, &work), [false, false]);
    assert_eq!(cached(&recipe, &work), [true, true]);
    // The first test label (after the 8-byte IDX header) becomes another class.
    let labels = data.join("t10k-labels-idx1-ubyte");
    let mut bytes = std::fs::read(&labels).unwrap();
    bytes[8] = (bytes[8] + 1) % 10;
    std::fs::write(&labels, &bytes).unwrap();
    assert_eq!(cached(&recipe, &work), [true, false]);
    assert_eq!(cached(&recipe, &work), [true, true]);
}

#[test]
fn a_changed_teacher_file_changes_the_distill_key() {
    let dir = scratch("cache-keys-teacher");
    let teacher = dir.join("teacher.onnx");
    let lenet = std::fs::read(assets().join("models/mnist_lenet5.onnx")).unwrap();
    std::fs::write(&teacher, &lenet).unwrap();
    let step = StepConfig::Distill(Distill::new(
        ModelSource::File(teacher.clone()),
        "mnist:/nowhere",
    ));
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let key = || whittle_pipeline::cache::key(&work, "parent", &step, None).unwrap();
    let first = key();
    assert_eq!(key(), first);
    let mlp = whittle_zoo::build("zoo:mlp:hidden=8").unwrap();
    std::fs::write(&teacher, mlp.to_bytes()).unwrap();
    let other = key();
    assert_ne!(other, first);
    std::fs::write(&teacher, &lenet).unwrap();
    assert_eq!(key(), first);
    // Its hash is remembered beside the models.
    assert!(work.join("file_hashes.json").is_file());
}

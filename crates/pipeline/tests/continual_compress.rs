//! The `continual` step on Split MNIST: its compressed variants (FP16, INT8, pruned,
//! pruned + FP16/INT8) calibrated and fine-tuned on the replay buffer and the last task
//! only, scored like the run scores its tasks; compression during training (gradual
//! pruning across tasks, QAT on the last) ends sparse and INT8, close to compression after
//! the run; the shipped recipe `recipes/continual_compress.toml` compresses after and
//! during training and runs; LoRA adapters train only themselves and the head per task
//! and leave a plain model; the nearest-class-mean heads survive pruning (Euclidean) and
//! every compression (cosine, with its normalisation); bad keys are refused by name.

use whittle_ir::{Model, TensorData};
use whittle_pipeline::continual::ContinualReport;
use whittle_pipeline::continual_compress::Precision;
use whittle_pipeline::recipe::Recipe;
use whittle_pipeline::step::StepConfig;
use whittle_pipeline::{Ctx, ModelSource, SilentObserver};

fn step(extra: &str) -> StepConfig {
    step_with("", extra)
}

/// [`step`] with more `training` keys (`more`: `, key = value...`).
fn step_with(more: &str, extra: &str) -> StepConfig {
    let data = whittle_data::assets_dir().join("mnist");
    let text = format!(
        "step = \"continual\"\ndata = \"mnist:{}\"\ntrain_samples = 3000\ntest_samples = 1000\n\
         seeds = [0]\nbaselines = false\ntraining = {{ strategy = \"er\", buffer = 200{more} }}\n{extra}",
        data.display()
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn mlp() -> Model {
    ModelSource::parse("zoo:mlp:hidden=64,classes=10")
        .load()
        .unwrap()
}

/// The compress-after variants of `quantize = ["fp16", "int8"], prune = 0.5`, in name order.
const AFTER: [&str; 6] = [
    "fp16",
    "fp32",
    "int8",
    "pruned",
    "pruned_fp16",
    "pruned_int8",
];

/// The names of a report's compressed variants, in order.
fn variants(report: &ContinualReport) -> Vec<&str> {
    report.compressed.keys().map(String::as_str).collect()
}

fn run(config: &StepConfig) -> (Model, ContinualReport) {
    run_on(config, mlp())
}

fn run_on(config: &StepConfig, model: Model) -> (Model, ContinualReport) {
    let observer = SilentObserver;
    let mut ctx = Ctx::new(&observer);
    ctx.threads = Some(1);
    let (model, report) = config.step().run(&mut ctx, model).unwrap();
    (model, serde_json::from_value(report.details).unwrap())
}

#[test]
fn compressed_variants_are_scored_on_every_task() {
    let config = step("compress = { quantize = [\"fp16\", \"int8\"], prune = 0.5, fps = false }");
    let (_, report) = run(&config);
    assert_eq!(variants(&report), AFTER);
    let c = &report.compressed;
    for (name, m) in c {
        println!(
            "{name:12} acc {:.4} forgetting {:.4} task-IL {:.4} size {} nonzero {}/{}",
            m.average_accuracy,
            m.forgetting,
            m.task_il_accuracy.unwrap(),
            m.size_bytes,
            m.nonzero_parameters,
            m.parameters
        );
    }
    let fp32 = &c["fp32"];
    // The uncompressed model scores exactly as the run scored its last row.
    assert!((fp32.average_accuracy - report.summary.average_accuracy).abs() < 1e-12);
    assert!((fp32.forgetting - report.summary.forgetting).abs() < 1e-12);
    assert!(fp32.average_accuracy > 0.5, "ER learned little: {fp32:?}");
    let drop = |name: &str| fp32.average_accuracy - c[name].average_accuracy;
    assert!(drop("fp16").abs() <= 0.005, "fp16 lost {}", drop("fp16"));
    assert!(drop("int8").abs() <= 0.03, "int8 lost {}", drop("int8"));
    assert!(c["fp16"].size_bytes * 10 < fp32.size_bytes * 6);
    assert!(c["int8"].size_bytes * 10 < fp32.size_bytes * 4);
    // Half of the weights are zero after pruning and stay zero through fine-tuning.
    let pruned = &c["pruned"];
    assert!(pruned.nonzero_parameters * 10 < fp32.nonzero_parameters * 6);
    assert!(drop("pruned") <= 0.1, "pruning lost {}", drop("pruned"));
    assert!(
        drop("pruned_int8") <= 0.12,
        "pruned int8 lost {}",
        drop("pruned_int8")
    );
}

#[test]
fn compress_during_prunes_across_tasks_and_ends_int8_close_to_compress_after() {
    let config =
        step("compress = { quantize = [\"int8\"], prune = 0.5, during = true, fps = false }");
    let (model, report) = run(&config);
    let c = &report.compressed;
    let names: Vec<&str> = c.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "during_pruned_int8",
            "fp32",
            "int8",
            "pruned",
            "pruned_int8"
        ]
    );
    let (during, after) = (&c["during_pruned_int8"], &c["pruned_int8"]);
    for (name, m) in c {
        println!(
            "{name:20} acc {:.4} forgetting {:.4} size {} nonzero {}/{}",
            m.average_accuracy, m.forgetting, m.size_bytes, m.nonzero_parameters, m.parameters
        );
    }
    // The step passes on the model compressed during training: QDQ INT8 with half of
    // every prunable weight zero (the zero int8 codes of the pruned weights).
    let ops = model.op_types();
    assert!(
        ops.contains(&"QuantizeLinear") && ops.contains(&"DequantizeLinear"),
        "{ops:?}"
    );
    let weights: Vec<_> = (model.graph().initializer.iter())
        .filter(|t| t.data_type == whittle_ir::DataType::Int8 as i32)
        .filter(|t| t.dims.len() == 2)
        .collect();
    assert_eq!(weights.len(), 2, "the two Gemm weights as int8");
    for w in weights {
        let values = TensorData::from_proto(w, None)
            .unwrap()
            .to_f64_vec()
            .unwrap();
        let share = values.iter().filter(|v| **v == 0.0).count() as f64 / values.len() as f64;
        assert!((0.5..0.6).contains(&share), "{}: {share} zero", w.name);
    }
    // As small as pruning + INT8 after the run, as accurate within 5 points.
    assert!(during.size_bytes * 10 < c["fp32"].size_bytes * 4);
    assert_eq!(
        during.nonzero_parameters * 10 / during.parameters,
        after.nonzero_parameters * 10 / after.parameters
    );
    assert!(
        (during.average_accuracy - after.average_accuracy).abs() <= 0.05,
        "during {} after {}",
        during.average_accuracy,
        after.average_accuracy
    );
    assert!(during.average_accuracy > 0.5, "{during:?}");
}

#[test]
fn the_recipe_compresses_after_and_during_training_and_runs() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../recipes/continual_compress.toml"
    );
    let recipe = Recipe::load(std::path::Path::new(path)).unwrap();
    let [StepConfig::Continual(step)] = recipe.steps.as_slice() else {
        panic!("{path}: one continual step expected: {:?}", recipe.steps);
    };
    let spec = &step.spec;
    assert!(spec.data.starts_with("fashion-mnist:"), "{}", spec.data);
    assert_eq!(spec.seeds, [0, 1, 2]);
    let c = &spec.compress;
    assert_eq!(c.quantize, [Precision::Fp16, Precision::Int8]);
    assert_eq!((c.prune, c.during), (Some(0.5), true));
    // The recipe's settings on 2000 training and 500 test images, one seed: every
    // compress-after variant beside the one compressed during training, which the step
    // passes on (QDQ INT8).
    let mut small = step.clone();
    small.spec.train_samples = Some(2000);
    small.spec.test_samples = Some(500);
    small.spec.seeds = vec![0];
    small.spec.compress.fps = false;
    let (model, report) = run_on(&StepConfig::Continual(small), recipe.model.load().unwrap());
    let mut want = vec!["during_pruned_int8"];
    want.extend(AFTER);
    assert_eq!(variants(&report), want);
    assert!(model
        .graph()
        .node
        .iter()
        .any(|n| n.op_type == "DequantizeLinear"));
    let during = &report.compressed["during_pruned_int8"];
    assert!(during.average_accuracy > 0.4, "{during:?}");
}

#[test]
fn lora_trains_adapters_and_head_per_task_and_exports_a_plain_model() {
    let (model, report) = run(&step("lora_rank = 4"));
    // Adapter on the 784 -> 64 layer (4 * (784 + 64)) plus the 64 -> 10 head with its bias.
    let per_task = 4 * (784 + 64) + 64 * 10 + 10;
    assert_eq!(report.seeds[0].trainable_parameters, vec![per_task; 5]);
    assert!(model
        .graph()
        .initializer
        .iter()
        .all(|t| !t.name.contains(".lora")));
    let plain = mlp();
    let names =
        |m: &Model| -> Vec<String> { m.graph().node.iter().map(|n| n.op_type.clone()).collect() };
    assert_eq!(names(&model), names(&plain));
    assert!(
        report.summary.average_accuracy > 0.3,
        "{}",
        report.summary.average_accuracy
    );
}

#[test]
fn the_mean_head_survives_pruning_and_refuses_compression_during_training() {
    let config = step_with(", ncm = true", "compress = { prune = 0.5, fps = false }");
    let (_, report) = run(&config);
    let (fp32, pruned) = (&report.compressed["fp32"], &report.compressed["pruned"]);
    println!("fp32 {fp32:?}\npruned {pruned:?}");
    // The pruned model's head is the class means again after its fine-tune (that
    // fine-tune alone brings the newest classes' bias back: 5.8 points lost on Split
    // Fashion-MNIST); its head is dense, the rest half zeros.
    assert!(
        pruned.average_accuracy > fp32.average_accuracy - 0.02,
        "{fp32:?} {pruned:?}"
    );
    assert!(
        pruned.forgetting < fp32.forgetting + 0.02,
        "{fp32:?} {pruned:?}"
    );
    assert!(pruned.nonzero_parameters < pruned.parameters * 6 / 10);
    let observer = SilentObserver;
    let mut ctx = Ctx::new(&observer);
    let err = step_with(", ncm = true", "compress = { prune = 0.5, during = true }")
        .step()
        .run(&mut ctx, mlp())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`compress.during`") && err.contains("`ncm`"),
        "{err}"
    );
}

#[test]
fn the_cosine_mean_head_keeps_one_normalisation_through_every_compression() {
    let config = step_with(
        ", ncm = \"cosine\"",
        "compress = { quantize = [\"fp16\", \"int8\"], prune = 0.5, fps = false }",
    );
    let (model, report) = run(&config);
    assert_eq!(variants(&report), AFTER);
    // The scored model: unit features (LpNormalization, p = 2) into the mean head.
    let ops = model.op_types();
    assert_eq!(
        ops.iter().filter(|&&op| op == "LpNormalization").count(),
        1,
        "{ops:?}"
    );
    assert_eq!(ops[ops.len() - 2..], ["LpNormalization", "Gemm"]);
    let fp32 = &report.compressed["fp32"];
    for (name, points) in [
        ("fp16", 0.2),
        ("int8", 1.0),
        ("pruned", 2.0),
        ("pruned_int8", 2.0),
    ] {
        let m = &report.compressed[name];
        println!("{name} {m:?}");
        assert!(
            m.average_accuracy > fp32.average_accuracy - points / 100.0,
            "{name}: {fp32:?} {m:?}"
        );
    }
    let int8 = &report.compressed["int8"];
    assert!(
        int8.forgetting < fp32.forgetting + 0.01,
        "{fp32:?} {int8:?}"
    );
    assert!(
        report.summary.average_accuracy > 0.7,
        "{:?}",
        report.summary
    );
}

#[test]
fn bad_keys_are_refused_by_name() {
    let observer = SilentObserver;
    let mut ctx = Ctx::new(&observer);
    let err = step("lora_rank = 0")
        .step()
        .run(&mut ctx, mlp())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`lora_rank`"), "{err}");
    let err = step("compress = { prune = 1.5 }")
        .step()
        .run(&mut ctx, mlp())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`compress.prune`"), "{err}");
    for bad in [
        "compress = { quantize = [\"fp16\"], during = true }",
        "lora_rank = 2\ncompress = { prune = 0.5, during = true }",
    ] {
        let err = step(bad)
            .step()
            .run(&mut ctx, mlp())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`compress.during`"), "{bad}: {err}");
    }
    let data = "step = \"continual\"\ndata = \"mnist:x\"\nlora_rnak = 4\n";
    let err = toml::from_str::<StepConfig>(data).unwrap_err().to_string();
    assert!(err.contains("lora_rnak"), "{err}");
}

//! `whittle zoo`: writing zoo models, listing them, and its errors.

mod support;

use support::{json, scratch, whittle};

#[test]
fn zoo_writes_a_model_and_reports_its_size() {
    let dir = scratch("write");
    let path = dir.join("cnn.onnx");
    let p = path.to_str().unwrap();
    let report = json(&whittle(&[
        "zoo",
        "zoo:cnn:channels=8-16",
        "-o",
        p,
        "--json",
    ]));
    // Conv 1->8 and 8->16 (3x3, no bias) with BatchNormalization, a 16->10 classifier.
    assert_eq!(report["parameters"], 72 + 32 + 1152 + 64 + 170);
    assert_eq!(report["macs"], 8 * 28 * 28 * 9 + 16 * 14 * 14 * 72 + 160);
    assert_eq!(report["model"], "cnn");
    assert_eq!(
        report["spec"],
        "cnn:channels=8-16,classes=10,input=1x28x28,seed=0"
    );
    assert_eq!(
        report["size_bytes"].as_u64(),
        Some(std::fs::metadata(&path).unwrap().len())
    );
    let model = whittle_ir::Model::load(&path).unwrap();
    assert_eq!(model.graph().output[0].name, "logits");
    let again = whittle(&["zoo", "cnn", "-o", p]);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("--force"),
        "{err}"
    );
    let forced = whittle(&["zoo", "cnn", "-o", p, "--force"]);
    assert!(forced.status.success());
    let text = String::from_utf8_lossy(&forced.stdout);
    assert!(text.contains("94634") && text.contains("MACs"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn zoo_lists_every_model_with_its_options() {
    let list = json(&whittle(&["zoo", "--list", "--json"]));
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    let want = [
        "mlp",
        "lenet",
        "cnn",
        "resnet",
        "mobilenetv3-small",
        "vit-tiny",
    ];
    assert_eq!(names, want);
    let vit = &list[5]["options"];
    let keys: Vec<&str> = vit
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"heads") && keys.contains(&"input"),
        "{keys:?}"
    );
    let text = whittle(&["zoo", "--list"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("channels=32-64-128"));
}

#[test]
fn zoo_errors_are_one_line_and_leave_no_file() {
    let dir = scratch("errors");
    let path = dir.join("m.onnx");
    let p = path.to_str().unwrap();
    for (spec, needle) in [
        ("alexnet", "unknown model 'alexnet'"),
        ("cnn:depth=2", "unknown option 'depth'"),
        ("lenet:input=1x6x6", "does not fit"),
    ] {
        let out = whittle(&["zoo", spec, "-o", p]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "{spec} left a file"
        );
    }
    assert_eq!(whittle(&["zoo", "cnn"]).status.code(), Some(2));
    assert_eq!(whittle(&["zoo", "--list", "cnn"]).status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn zoo_refuses_parameters_beyond_the_memory_limit_before_building() {
    let dir = scratch("memory");
    let path = dir.join("m.onnx");
    let run = |spec: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_whittle"))
            .args(["zoo", spec, "-o", path.to_str().unwrap()])
            .env(whittle_ir::memory::LIMIT_ENV, (100u64 << 20).to_string())
            .output()
            .unwrap()
    };
    // The second layer brings the parameters to 784*4096 + 4096 + 4096*4096 floats (76 MiB),
    // held three times while building and saving: 228.8 MiB.
    let out = run("mlp:hidden=4096-4096");
    support::assert_clean_error(
        &out,
        &[
            "mlp: building the model needs 228.8 MiB",
            "but only 100.0 MiB of memory is available",
        ],
    );
    assert!(!path.exists(), "a refused model was written");
    // 10^5 x 10^5 weights: refused as fast, no 40 GB allocation attempted.
    let started = std::time::Instant::now();
    let out = run("mlp:hidden=100000-100000");
    support::assert_clean_error(&out, &["building the model needs"]);
    assert!(started.elapsed().as_secs() < 10);
    assert!(
        run("mlp").status.success(),
        "the default mlp fits in 100 MiB"
    );
    assert!(path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

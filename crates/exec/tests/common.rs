//! Shared helpers of the executor's integration tests: where the assets are, scratch folders.

#![allow(dead_code, unused_imports)]

use std::path::PathBuf;

pub use whittle_testkit::scratch;

/// The assets folder; panics with the command to run when it has not been fetched.
pub fn assets() -> PathBuf {
    let dir = whittle_data::assets_dir();
    assert!(
        dir.join("models").is_dir(),
        "assets not found in {}: run scripts/fetch-assets.sh (or set WHITTLE_ASSETS)",
        dir.display()
    );
    dir
}

/// Path of a model under the assets' `models/` folder.
pub fn model_path(name: &str) -> PathBuf {
    assets().join("models").join(name)
}

/// Runs `model` in ONNX Runtime (scripts/ort_reference.py) on `inputs`; returns the outputs
/// in graph order. Panics with a clear message when Python or onnxruntime is missing.
pub fn ort_outputs(
    model: &std::path::Path,
    inputs: &[(String, whittle_ir::TensorData)],
    scratch: &std::path::Path,
) -> Vec<whittle_ir::TensorData> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ort_reference.py");
    std::fs::create_dir_all(scratch).unwrap();
    let mut args = vec![
        script.display().to_string(),
        model.display().to_string(),
        scratch.join("ort").display().to_string(),
    ];
    for (i, (name, data)) in inputs.iter().enumerate() {
        let path = scratch.join(format!("input_{i}.npy"));
        whittle_data::npy::write_npy(&path, data).unwrap();
        args.push(format!("{name}={}", path.display()));
    }
    let python = std::env::var("WHITTLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {python}: {e}"));
    assert!(
        out.status.success(),
        "ONNX Runtime reference failed (pip install -r scripts/requirements.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = std::fs::read_to_string(scratch.join("ort/names.txt")).unwrap();
    (0..names.lines().count())
        .map(|i| whittle_data::npy::read_npy(&scratch.join(format!("ort/{i}.npy"))).unwrap())
        .collect()
}

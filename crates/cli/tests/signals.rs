//! SIGTERM or Ctrl-C while whittle writes checkpoints: it exits with 130 and leaves no
//! temporary file behind, and the last committed checkpoint still loads.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn temporaries(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            found.extend(temporaries(&entry.path()));
        } else if name.ends_with(".tmp") {
            found.push(name);
        }
    }
    found
}

#[test]
fn a_terminated_run_removes_its_temporary_files() {
    let dir = support::scratch("signals");
    let ck = dir.join("ck");
    let data = support::mnist_spec();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let _ = std::fs::remove_dir_all(&ck);
        // A wide MLP on one batch per epoch: most of the run is writing checkpoints.
        let mut child = Command::new(env!("CARGO_BIN_EXE_whittle"))
            .args(["train", "--model", "zoo:mlp:hidden=2048", "--epochs", "500"])
            .args(["--data", &data, "--limit", "64", "--batch-size", "64"])
            .arg("--checkpoint-dir")
            .arg(&ck)
            .arg("-o")
            .arg(dir.join("never.onnx"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !ck.join("epoch-3").exists() {
            assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint");
            std::thread::sleep(Duration::from_micros(200));
        }
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "signal {signal}");
        assert!(temporaries(&ck).is_empty(), "{:?}", temporaries(&ck));
        assert!(!dir.join("never.onnx").exists());
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(ck.join("state.json")).unwrap()).unwrap();
        let epoch = state["epoch"].as_u64().unwrap();
        whittle_ir::Model::load(ck.join(format!("epoch-{epoch}/model.onnx"))).unwrap();
    }
}

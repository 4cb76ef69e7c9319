//! Output into a closed pipe (`whittle ... --json | head -1`) ends quietly, without a panic.

use std::io::Read;
use std::process::{Command, Stdio};

#[test]
fn printing_into_a_closed_pipe_does_not_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(["zoo", "--list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run whittle");
    // Close the reading end before whittle has printed: every write then fails with EPIPE.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

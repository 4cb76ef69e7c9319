//! Developer tool: `cargo run --release -p whittle-exec --example conformance -- [FILTER] [-v]`
//! runs the ONNX node tests under `$WHITTLE_ASSETS/onnx-node-tests` (see `whittle_data::assets_dir`) and prints each result.

use whittle_exec::conformance::{run_suite, Outcome};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let verbose = args.iter().any(|a| a == "-v");
    let filter = args
        .iter()
        .find(|a| *a != "-v")
        .cloned()
        .unwrap_or_default();
    let root = whittle_data::assets_dir().join("onnx-node-tests");
    let summary = run_suite(&root, &filter).expect("read the test folder");
    for case in &summary.cases {
        match &case.outcome {
            Outcome::Passed if verbose => println!("PASS {}", case.name),
            Outcome::Failed(m) => println!("FAIL {}: {m}", case.name),
            Outcome::Unsupported(m) if verbose => println!("UNSUPPORTED {}: {m}", case.name),
            _ => {}
        }
    }
    println!(
        "{} passed, {} failed, {} unsupported",
        summary.passed(),
        summary.failed(),
        summary.unsupported()
    );
}

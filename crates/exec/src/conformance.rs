//! Runs the ONNX backend node tests (`test_*/model.onnx` + `test_data_set_*/{input,output}_*.pb`)
//! and compares whittle's outputs with the expected ones using ONNX's tolerances.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use whittle_ir::{DataType, Model, TensorData};

use crate::error::ExecError;
use crate::executor::{Executor, RunOptions};
use crate::value::Value;

/// Relative tolerance of float comparisons (as in onnx's backend test runner).
pub const RTOL: f64 = 1e-3;
/// Absolute tolerance of float comparisons.
pub const ATOL: f64 = 1e-7;

/// A test of supported operators that fails for a documented reason.
#[derive(Clone, Copy, Debug)]
pub struct KnownFailure {
    /// Test directory name.
    pub test: &'static str,
    /// Text the failure message must contain: a failure for another reason is not excused.
    pub message: &'static str,
    /// Why it fails.
    pub reason: &'static str,
}

/// Tests of supported operators that fail for a documented reason.
pub const KNOWN_FAILURES: &[KnownFailure] = &[
    KnownFailure {
        test: "test_cast_FLOAT_to_BFLOAT16",
        message: "output 'output': element ",
        reason:
            "expected data truncates to bfloat16; whittle rounds to nearest even like ONNX Runtime",
    },
    shape_mismatch("test_castlike_BFLOAT16_to_FLOAT"),
    shape_mismatch("test_castlike_BFLOAT16_to_FLOAT_expanded"),
    shape_mismatch("test_castlike_FLOAT_to_BFLOAT16"),
    shape_mismatch("test_castlike_FLOAT_to_BFLOAT16_expanded"),
];

/// The bfloat16 CastLike tests feed `like` as [1] while their models declare [3,4].
const fn shape_mismatch(test: &'static str) -> KnownFailure {
    KnownFailure {
        test,
        message: "input 'like'",
        reason: "the test feeds `like` as [1] while its model declares [3,4]; whittle checks input shapes",
    }
}

/// The known failure of test `name`, if it has one.
pub fn known_failure(name: &str) -> Option<&'static KnownFailure> {
    KNOWN_FAILURES.iter().find(|k| k.test == name)
}

/// Outcome of one test case.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Every data set matched.
    Passed,
    /// An output differs, or loading, preparing or running failed for any reason other
    /// than an unsupported operator (a corrupt model or data file fails).
    Failed(String),
    /// The model uses an operator, or an operator on an element type, that whittle does
    /// not implement ([`ExecError::Unsupported`], [`ExecError::UnsupportedType`]).
    Unsupported(String),
}

/// One test case's result.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// Test directory name, e.g. `test_relu`.
    pub name: String,
    /// Operator types used by the test's model, sorted.
    pub ops: Vec<String>,
    /// What happened.
    pub outcome: Outcome,
}

/// Totals of a conformance run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Every case, sorted by name.
    pub cases: Vec<CaseResult>,
}

impl Summary {
    /// Number of cases with the given outcome kind.
    pub fn count(&self, pred: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| pred(&c.outcome)).count()
    }
    /// Passed cases.
    pub fn passed(&self) -> usize {
        self.count(|o| *o == Outcome::Passed)
    }
    /// Failed cases.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }
    /// Unsupported cases.
    pub fn unsupported(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Unsupported(_)))
    }
    /// Pass counts per operator for single-operator tests: `op -> (passed, total)`.
    pub fn per_op(&self) -> BTreeMap<String, (usize, usize)> {
        let mut map: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for case in self.cases.iter().filter(|c| c.ops.len() == 1) {
            let e = map.entry(case.ops[0].clone()).or_default();
            e.1 += 1;
            if case.outcome == Outcome::Passed {
                e.0 += 1;
            }
        }
        map
    }
}

/// Runs every `test_*` directory under `root` whose name contains `filter`.
pub fn run_suite(root: &Path, filter: &str) -> std::io::Result<Summary> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(filter))
        })
        .collect();
    dirs.sort();
    Ok(Summary {
        cases: dirs.iter().map(|d| run_case(d)).collect(),
    })
}

/// Runs one test directory.
pub fn run_case(dir: &Path) -> CaseResult {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let model = Model::load(dir.join("model.onnx"));
    let mut ops: Vec<String> = model
        .as_ref()
        .map(|m| m.graph().node.iter().map(|n| n.op_type.clone()).collect())
        .unwrap_or_default();
    ops.sort();
    ops.dedup();
    let outcome = match model {
        Err(e) => Outcome::Failed(format!("loading the model: {e}")),
        Ok(model) => check_model(&model, dir),
    };
    CaseResult { name, ops, outcome }
}

/// Unsupported for an operator or element type whittle does not implement, failed for
/// anything else.
fn classify(e: ExecError) -> Outcome {
    match e {
        ExecError::Unsupported { .. } | ExecError::UnsupportedType { .. } => {
            Outcome::Unsupported(e.to_string())
        }
        other => Outcome::Failed(other.to_string()),
    }
}

fn check_model(model: &Model, dir: &Path) -> Outcome {
    let exec = match Executor::new(model) {
        Ok(e) => e,
        Err(e) => return classify(e),
    };
    let mut sets: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect(),
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    sets.sort();
    for set in sets {
        match check_data_set(&exec, &set) {
            Ok(()) => {}
            Err(outcome) => return outcome,
        }
    }
    Outcome::Passed
}

fn read_pbs(dir: &Path, prefix: &str) -> Result<Vec<(String, TensorData)>, Outcome> {
    let mut out = Vec::new();
    for i in 0.. {
        let path = dir.join(format!("{prefix}_{i}.pb"));
        if !path.exists() {
            break;
        }
        let bytes = std::fs::read(&path).map_err(|e| Outcome::Failed(e.to_string()))?;
        let decoded = TensorData::decode(&bytes, None)
            .map_err(|e| Outcome::Failed(format!("{}: {e}", path.display())))?;
        out.push(decoded);
    }
    Ok(out)
}

fn check_data_set(exec: &Executor, set: &Path) -> Result<(), Outcome> {
    let inputs = read_pbs(set, "input")?;
    let expected = read_pbs(set, "output")?;
    let specs = exec.inputs();
    let mut feed = HashMap::new();
    for (i, (name, data)) in inputs.iter().enumerate() {
        let name = if specs.iter().any(|s| &s.name == name) {
            name.clone()
        } else {
            match specs.get(i) {
                Some(s) => s.name.clone(),
                None => return Err(Outcome::Failed(format!("no graph input for input_{i}"))),
            }
        };
        let declared = specs.iter().find(|s| s.name == name).and_then(|s| s.dtype);
        let data = bfloat16_bits(data, declared);
        let value = Value::try_from(&data).map_err(classify)?;
        feed.insert(name, value);
    }
    // Node by node; then the first run at these shapes (a plan built from static shape
    // inference, or node by node recording one) and the second (the plan): all checked.
    let steps = 0..exec.run_order().len();
    let by_node = exec
        .run_range(steps, feed.clone(), RunOptions::default())
        .map_err(classify)?;
    let first = exec.run(feed.clone()).map_err(classify)?;
    let second = exec.run(feed).map_err(classify)?;
    for (run, outputs) in [
        ("", &second),
        (" (first run)", &first),
        (" (node by node)", &by_node),
    ] {
        for (i, out_name) in exec.output_names().iter().enumerate() {
            let Some((_, want)) = expected.get(i) else {
                continue;
            };
            let got = outputs
                .get(out_name)
                .ok_or_else(|| Outcome::Failed(format!("output '{out_name}' missing{run}")))?
                .to_data()
                .map_err(|e| Outcome::Failed(e.to_string()))?;
            let want = bfloat16_bits(want, Some(got.dtype()));
            compare(&got, &want)
                .map_err(|m| Outcome::Failed(format!("output '{out_name}'{run}: {m}")))?;
        }
    }
    Ok(())
}

/// ONNX 1.12's test files store bfloat16 tensors as UINT16 bit patterns: read them as the
/// bfloat16 the graph declares.
fn bfloat16_bits(data: &TensorData, declared: Option<DataType>) -> TensorData {
    match (data.dtype(), declared, data.bytes()) {
        (DataType::Uint16, Some(DataType::Bfloat16), Some(bytes)) => {
            TensorData::from_bytes(DataType::Bfloat16, data.dims().to_vec(), bytes.to_vec())
                .unwrap_or_else(|_| data.clone())
        }
        _ => data.clone(),
    }
}

/// Compares two tensors: same type and shape; floats within [`RTOL`]/[`ATOL`]
/// (NaN matches NaN), everything else exactly.
pub fn compare(got: &TensorData, want: &TensorData) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!("type {} != expected {}", got.dtype(), want.dtype()));
    }
    if got.dims() != want.dims() {
        return Err(format!(
            "shape {:?} != expected {:?}",
            got.dims(),
            want.dims()
        ));
    }
    if got.dtype().is_float() {
        let (g, w) = (
            got.to_f64_vec().map_err(|e| e.to_string())?,
            want.to_f64_vec().map_err(|e| e.to_string())?,
        );
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= ATOL + RTOL * b.abs();
            if !ok {
                return Err(format!("element {i}: {a} != expected {b}"));
            }
        }
        return Ok(());
    }
    if got != want {
        let detail = match (got.to_i64_vec(), want.to_i64_vec()) {
            (Ok(g), Ok(w)) => g
                .iter()
                .zip(&w)
                .position(|(a, b)| a != b)
                .map(|i| format!("element {i}: {} != expected {}", g[i], w[i]))
                .unwrap_or_default(),
            _ => String::new(),
        };
        return Err(format!("values differ {detail}"));
    }
    Ok(())
}

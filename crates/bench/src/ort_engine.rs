//! ONNX Runtime through the `ort` crate, loaded at run time (`load-dynamic`): no download,
//! no link-time dependency. The library is `$ORT_DYLIB_PATH` when set (and not empty), else the
//! `libonnxruntime.so.*` inside the Python `onnxruntime` package
//! (`<package dir>/capi/`). Sessions use `threads` intra-op threads, one inter-op
//! thread and every graph optimisation (ORT's default level, `ORT_ENABLE_ALL`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
use whittle_ir::{DataType, Element, TensorData};

use crate::error::{BenchError, Result};

/// The one ONNX Runtime environment a process may hold (ort allows one).
static ENVIRONMENT: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();

/// Where the ONNX Runtime shared library is: `$ORT_DYLIB_PATH`, else the Python
/// `onnxruntime` package's `capi/libonnxruntime.so.*`. Fails with how to provide one.
pub fn library_path() -> Result<PathBuf> {
    find_library().map_err(BenchError::Ort)
}

/// [`library_path`], failing with the reason alone (without the "ONNX Runtime" prefix
/// [`BenchError::Ort`] adds).
fn find_library() -> std::result::Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(format!("ORT_DYLIB_PATH={} is not a file", path.display()));
        }
        return Ok(path);
    }
    python_package_library().ok_or_else(|| {
        "library not found: install it with `python3 -m pip install onnxruntime` (the \
         package holds the library; scripts/requirements.txt pins the tested version), or \
         set ORT_DYLIB_PATH to a libonnxruntime.so"
            .into()
    })
}

/// `libonnxruntime.so.<version>` of the Python package, if python3 can import it.
fn python_package_library() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("capi");
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    libs.sort();
    libs.pop()
}

fn environment() -> Result<&'static Environment> {
    let env = ENVIRONMENT.get_or_init(|| {
        let path = find_library()?;
        let builder =
            ort::init_from(&path).map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        builder
            .with_name("whittle")
            .build()
            .map_err(|e| e.to_string())
    });
    env.as_ref().map_err(|e| BenchError::Ort(e.clone()))
}

/// A model loaded into an ONNX Runtime session on the CPU.
pub struct OrtEngine {
    session: Session,
}

/// Inputs converted to ONNX Runtime values once, to be fed to many runs.
pub struct OrtInputs(Vec<(String, DynValue)>);

impl OrtEngine {
    /// Loads `model` with `threads` intra-op threads (0: ORT's default, one per core).
    pub fn load(model: &Path, threads: usize) -> Result<Self> {
        let env = environment()?;
        let at = |e: ort::Error| BenchError::Ort(format!("{}: {e}", model.display()));
        let options = |e: ort::Error<SessionBuilder>| at(e.into());
        let session = Session::builder(env)
            .map_err(at)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(options)?
            .with_intra_threads(threads)
            .map_err(options)?
            .with_inter_threads(1)
            .map_err(options)?
            .commit_from_file(model)
            .map_err(at)?;
        Ok(OrtEngine { session })
    }

    /// Converts host tensors into ONNX Runtime values.
    pub fn prepare(&self, inputs: &HashMap<String, TensorData>) -> Result<OrtInputs> {
        inputs
            .iter()
            .map(|(name, data)| Ok((name.clone(), to_ort(name, data)?)))
            .collect::<Result<_>>()
            .map(OrtInputs)
    }

    /// Runs once on prepared inputs and drops the outputs (for timing).
    pub fn run_prepared(&mut self, inputs: &OrtInputs) -> Result<()> {
        self.session.run(feed(inputs))?;
        Ok(())
    }

    /// Runs once and returns every output as a host tensor.
    pub fn run(
        &mut self,
        inputs: &HashMap<String, TensorData>,
    ) -> Result<HashMap<String, TensorData>> {
        let prepared = self.prepare(inputs)?;
        let outputs = self.session.run(feed(&prepared))?;
        outputs
            .iter()
            .map(|(name, value)| Ok((name.to_string(), from_ort(name, &value)?)))
            .collect()
    }
}

fn feed(inputs: &OrtInputs) -> Vec<(String, SessionInputValue<'_>)> {
    inputs
        .0
        .iter()
        .map(|(n, v)| (n.clone(), SessionInputValue::from(v)))
        .collect()
}

fn typed<T: Element + ort::value::PrimitiveTensorElementType + std::fmt::Debug>(
    data: &TensorData,
) -> Result<DynValue> {
    let tensor = Tensor::from_array((data.dims().to_vec(), data.to_vec::<T>()?))?;
    Ok(tensor.into_dyn())
}

fn to_ort(name: &str, data: &TensorData) -> Result<DynValue> {
    match data.dtype() {
        DataType::Float => typed::<f32>(data),
        DataType::Double => typed::<f64>(data),
        DataType::Int64 => typed::<i64>(data),
        DataType::Int32 => typed::<i32>(data),
        DataType::Uint8 => typed::<u8>(data),
        DataType::Int8 => typed::<i8>(data),
        DataType::Bool => typed::<bool>(data),
        other => Err(BenchError::Ort(format!(
            "input '{name}': {other} tensors are not passed to ONNX Runtime"
        ))),
    }
}

fn extract<T: Element + ort::value::PrimitiveTensorElementType>(
    value: &ort::value::DynValueRef<'_>,
) -> Result<TensorData> {
    let (shape, values) = value.try_extract_tensor::<T>()?;
    let dims = shape.iter().map(|&d| d.max(0) as usize).collect();
    Ok(TensorData::from_slice(dims, values)?)
}

fn from_ort(name: &str, value: &ort::value::DynValueRef<'_>) -> Result<TensorData> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(BenchError::Ort(format!("output '{name}' is not a tensor")));
    };
    match ty {
        TensorElementType::Float32 => extract::<f32>(value),
        TensorElementType::Float64 => extract::<f64>(value),
        TensorElementType::Int64 => extract::<i64>(value),
        TensorElementType::Int32 => extract::<i32>(value),
        TensorElementType::Uint8 => extract::<u8>(value),
        TensorElementType::Int8 => extract::<i8>(value),
        TensorElementType::Bool => extract::<bool>(value),
        other => Err(BenchError::Ort(format!(
            "output '{name}' is {other:?}, which whittle does not read back"
        ))),
    }
}

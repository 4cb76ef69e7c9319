//! Concrete input shapes from declared ones plus `--batch` / `--shape`, and seeded
//! random inputs that fit them.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use whittle_exec::InputSpec;
use whittle_ir::proto::ValueInfoProto;
use whittle_ir::{DataType, Dim, GraphEdit, Model, TensorData, TensorType};

use crate::error::{bail, Result};

/// A runtime input of the model with every dimension fixed.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedInput {
    /// Input name.
    pub name: String,
    /// Declared element type.
    pub dtype: DataType,
    /// Dimensions to run with.
    pub dims: Vec<usize>,
    /// Whether the leading dimension is dynamic and was taken as 1 (no `--batch` given).
    pub batch_assumed: bool,
}

/// How to fix the dynamic dimensions of a model's inputs.
#[derive(Clone, Debug, Default)]
pub struct ShapeRequest {
    /// Leading (batch) dimension of every input whose leading dimension is not a fixed
    /// number; it replaces the leading dimension of a `shapes` entry too. Without it, a
    /// dynamic leading dimension is taken as 1 (as ONNX Runtime's perf tool does).
    pub batch: Option<usize>,
    /// Full shapes of inputs by name (`--shape NAME=AxBxC`); named dimensions they fix
    /// (e.g. `sequence_length`) take the same value in every other input.
    pub shapes: HashMap<String, Vec<usize>>,
}

/// Fixes every dimension of every runtime input. A dynamic leading (batch) dimension is
/// `request.batch`, else 1 (marked [`ResolvedInput::batch_assumed`]); other dynamic
/// dimensions are guessed never. Fails, naming the input and the dimension, when one is
/// left open, when a request contradicts a fixed dimension, and on a size of 0.
pub fn resolve_inputs(model: &Model, request: &ShapeRequest) -> Result<Vec<ResolvedInput>> {
    if request.batch == Some(0) {
        bail!("`batch` 0: a batch needs at least 1 sample");
    }
    let graph = model.graph();
    let runtime = graph.runtime_inputs();
    let ports: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|v| runtime.contains(&v.name.as_str()))
        .collect();
    for (name, dims) in &request.shapes {
        if !runtime.contains(&name.as_str()) {
            bail!(
                "`shapes` {name}=...: the model has no input '{name}' (inputs: {})",
                runtime.join(", ")
            );
        }
        if dims.contains(&0) {
            bail!("`shapes` {name}: every dimension must be at least 1, got {dims:?}");
        }
    }
    let mut symbols = HashMap::new();
    // Leading symbols taken as 1 for want of --batch.
    let mut assumed = HashSet::new();
    for port in &ports {
        if let Some(given) = request.shapes.get(&port.name) {
            let declared = TensorType::from_value_info(port);
            let given = with_batch(port, given, request.batch)?;
            bind_given(&port.name, declared.dims.as_deref(), &given, &mut symbols)?;
        }
    }
    for port in &ports {
        if let Some(Some(Dim::Symbol(s))) = TensorType::from_value_info(port)
            .dims
            .map(|d| d.first().cloned())
        {
            match request.batch {
                Some(b) => {
                    symbols.insert(s, b);
                }
                None if !symbols.contains_key(&s) => {
                    symbols.insert(s.clone(), 1);
                    assumed.insert(s);
                }
                None => {}
            }
        }
    }
    ports
        .iter()
        .map(|port| resolve_one(port, request, &symbols, &assumed))
        .collect()
}

/// A note saying which inputs' dynamic batch dimension was taken as 1, if any was.
pub fn batch_note(inputs: &[ResolvedInput]) -> Option<String> {
    let assumed: Vec<String> = inputs
        .iter()
        .filter(|i| i.batch_assumed)
        .map(|i| format!("'{}'", i.name))
        .collect();
    (!assumed.is_empty()).then(|| {
        format!(
            "the dynamic batch dimension of input {} is taken as 1 (`batch` B sets it)",
            assumed.join(", ")
        )
    })
}

/// The input shapes by name, for reports.
pub fn shape_map(inputs: &[ResolvedInput]) -> BTreeMap<String, Vec<usize>> {
    inputs
        .iter()
        .map(|i| (i.name.clone(), i.dims.clone()))
        .collect()
}

/// `given` with its leading dimension replaced by `batch` when the declared leading
/// dimension is dynamic.
fn with_batch(port: &ValueInfoProto, given: &[usize], batch: Option<usize>) -> Result<Vec<usize>> {
    let declared = TensorType::from_value_info(port);
    let lead = declared.dims.as_ref().and_then(|d| d.first().cloned());
    let mut dims = given.to_vec();
    match (batch, lead, dims.first_mut()) {
        (Some(b), Some(Dim::Known(n)), _) if b != n => bail!(
            "input '{}' has a fixed batch dimension of {n}; `batch` {b} cannot change it",
            port.name
        ),
        (Some(b), Some(Dim::Symbol(_) | Dim::Unknown) | None, Some(first)) => *first = b,
        _ => {}
    }
    Ok(dims)
}

/// Checks a `--shape` against the declared dimensions and records the symbols it fixes.
fn bind_given(
    name: &str,
    declared: Option<&[Dim]>,
    given: &[usize],
    symbols: &mut HashMap<String, usize>,
) -> Result<()> {
    let Some(declared) = declared else {
        return Ok(());
    };
    if declared.len() != given.len() {
        bail!(
            "`shapes` {name}: {} dimensions given, the input has {} ({})",
            given.len(),
            declared.len(),
            show_dims(declared)
        );
    }
    for (d, &g) in declared.iter().zip(given) {
        match d {
            Dim::Known(n) if *n != g => bail!(
                "`shapes` {name}: dimension {g} contradicts the declared {} ",
                show_dims(declared)
            ),
            Dim::Symbol(s) => match symbols.insert(s.clone(), g) {
                Some(old) if old != g => {
                    bail!("`shapes` {name}: '{s}' is {g} here but {old} in another `shapes` entry")
                }
                _ => {}
            },
            _ => {}
        }
    }
    Ok(())
}

fn resolve_one(
    port: &ValueInfoProto,
    request: &ShapeRequest,
    symbols: &HashMap<String, usize>,
    assumed: &HashSet<String>,
) -> Result<ResolvedInput> {
    let declared = TensorType::from_value_info(port);
    let name = &port.name;
    let Some(dtype) = declared.dtype else {
        bail!("input '{name}' has no declared tensor element type");
    };
    let lead = declared.dims.as_ref().and_then(|d| d.first());
    let batch_assumed = !request.shapes.contains_key(name)
        && match lead {
            Some(Dim::Symbol(s)) => assumed.contains(s),
            Some(Dim::Unknown) => request.batch.is_none(),
            _ => false,
        };
    let dims = match (request.shapes.get(name), &declared.dims) {
        (Some(given), _) => with_batch(port, given, request.batch)?,
        (None, None) => bail!(
            "input '{name}' has no declared shape; give it with `shapes` {name}=DIMS (e.g. {name}=1x3x224x224)"
        ),
        (None, Some(dims)) => dims
            .iter()
            .enumerate()
            .map(|(axis, d)| fix_dim(name, dims, axis, d, request.batch, symbols))
            .collect::<Result<_>>()?,
    };
    Ok(ResolvedInput {
        name: name.clone(),
        dtype,
        dims,
        batch_assumed,
    })
}

fn fix_dim(
    name: &str,
    dims: &[Dim],
    axis: usize,
    dim: &Dim,
    batch: Option<usize>,
    symbols: &HashMap<String, usize>,
) -> Result<usize> {
    match (dim, axis, batch) {
        (Dim::Known(n), 0, Some(b)) if *n != b => {
            bail!("input '{name}' has a fixed batch dimension of {n}; `batch` {b} cannot change it")
        }
        (Dim::Known(n), _, _) => return Ok(*n),
        _ => {}
    }
    if let Some(&v) = match dim {
        Dim::Symbol(s) => symbols.get(s),
        _ => None,
    } {
        return Ok(v);
    }
    if axis == 0 {
        return Ok(batch.unwrap_or(1));
    }
    let what = match dim {
        Dim::Symbol(s) => format!("'{s}'"),
        _ => format!("{axis}"),
    };
    bail!(
        "input '{name}' {} has dynamic dimension {what}: fix it with `shapes` {name}=DIMS (numbers joined by 'x')",
        show_dims(dims)
    )
}

fn show_dims(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Known(n) => n.to_string(),
            Dim::Symbol(s) => s.clone(),
            Dim::Unknown => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(","))
}

/// Inputs of `specs` (declared input specs, as [`whittle_exec::Executor::inputs`] gives
/// them) fixed for a synthetic run: an input named in `shapes` takes that shape; otherwise
/// an open leading (batch) dimension is 1 ([`ResolvedInput::batch_assumed`]) and any other
/// open dimension 16 (a short sequence or a small image). An input without a declared rank
/// is refused unless `shapes` gives it.
pub fn inputs_from_specs(
    specs: &[InputSpec],
    shapes: &HashMap<String, Vec<usize>>,
) -> Result<Vec<ResolvedInput>> {
    specs
        .iter()
        .map(|spec| {
            let (dims, batch_assumed) = match (shapes.get(&spec.name), &spec.dims) {
                (Some(given), _) => (given.clone(), false),
                (None, Some(declared)) => (
                    declared
                        .iter()
                        .enumerate()
                        .map(|(i, d)| d.unwrap_or(if i == 0 { 1 } else { 16 }))
                        .collect(),
                    declared.first().is_some_and(Option::is_none),
                ),
                (None, None) => bail!(
                    "input '{}' declares no shape: give its full shape to make synthetic inputs",
                    spec.name
                ),
            };
            Ok(ResolvedInput {
                name: spec.name.clone(),
                dtype: spec.dtype.unwrap_or(DataType::Float),
                dims,
                batch_assumed,
            })
        })
        .collect()
}

/// Seeded random values for `inputs`, the one synthetic-input policy of whittle (profiling,
/// benchmarks, latency, output comparisons and verification without data): floats uniform
/// in [0, 1) (the range of normalized images); integer inputs whose name contains `mask`
/// all ones, those whose name contains `type` or `segment` (token type ids) all zeros,
/// other integers (token ids, indices) uniform in 0..100; booleans true.
pub fn random_inputs(inputs: &[ResolvedInput], seed: u64) -> Result<HashMap<String, TensorData>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    inputs
        .iter()
        .map(|input| Ok((input.name.clone(), random_tensor(input, &mut rng)?)))
        .collect()
}

fn random_tensor(input: &ResolvedInput, rng: &mut ChaCha8Rng) -> Result<TensorData> {
    let n: usize = input.dims.iter().product();
    let dims = input.dims.clone();
    let name = input.name.to_ascii_lowercase();
    let fixed = if name.contains("mask") {
        Some(1)
    } else if name.contains("type") || name.contains("segment") {
        Some(0)
    } else {
        None
    };
    let mut ints = || -> Vec<i64> {
        (0..n)
            .map(|_| fixed.unwrap_or_else(|| rng.random_range(0..100)))
            .collect()
    };
    let data = match input.dtype {
        DataType::Float => {
            let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
            TensorData::from_slice(dims, &v)
        }
        DataType::Double => {
            let v: Vec<f64> = (0..n).map(|_| rng.random::<f64>()).collect();
            TensorData::from_slice(dims, &v)
        }
        DataType::Int64 => TensorData::from_slice(dims, &ints()),
        DataType::Int32 => TensorData::from_slice(dims, &narrow::<i32>(ints())),
        DataType::Uint8 => TensorData::from_slice(dims, &narrow::<u8>(ints())),
        DataType::Int8 => TensorData::from_slice(dims, &narrow::<i8>(ints())),
        DataType::Bool => TensorData::from_slice(dims, &vec![true; n]),
        other => bail!(
            "input '{}' is {other}: random inputs are made for float, double, int64, int32, uint8, int8 and bool",
            input.name
        ),
    };
    Ok(data?)
}

/// Values in 0..100 fit every narrower integer type.
fn narrow<T: TryFrom<i64> + Default>(v: Vec<i64>) -> Vec<T> {
    v.into_iter()
        .map(|x| T::try_from(x).unwrap_or_default())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle_ir::proto::{tensor_shape_proto, type_proto, GraphProto, ModelProto};
    use whittle_ir::proto::{TensorShapeProto, TypeProto};

    fn port(name: &str, dtype: DataType, dims: &[&str]) -> ValueInfoProto {
        use tensor_shape_proto::{dimension::Value as D, Dimension};
        let dim = dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d.parse::<i64>() {
                    Ok(n) => D::DimValue(n),
                    Err(_) => D::DimParam(d.to_string()),
                }),
                ..Default::default()
            })
            .collect();
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: dtype.code(),
                    shape: Some(TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn model(inputs: Vec<ValueInfoProto>) -> Model {
        Model::new(ModelProto {
            graph: Some(GraphProto {
                input: inputs,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn bert() -> Model {
        model(vec![
            port("input_ids", DataType::Int64, &["batch", "seq"]),
            port("attention_mask", DataType::Int64, &["batch", "seq"]),
        ])
    }

    fn request(batch: Option<usize>, shapes: &[(&str, &[usize])]) -> ShapeRequest {
        ShapeRequest {
            batch,
            shapes: shapes
                .iter()
                .map(|(n, d)| (n.to_string(), d.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn one_shape_fixes_shared_symbols_and_batch_replaces_the_leading_dim() {
        let got = resolve_inputs(&bert(), &request(Some(8), &[("input_ids", &[1, 128])])).unwrap();
        assert_eq!(got[0].dims, vec![8, 128]);
        assert_eq!(got[1].dims, vec![8, 128]);
    }

    #[test]
    fn open_dimensions_are_errors_that_ask_for_a_shape() {
        let err = resolve_inputs(&bert(), &request(Some(1), &[])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("'seq'") && msg.contains("`shapes` input_ids="),
            "{msg}"
        );
        let img = model(vec![port("x", DataType::Float, &["N", "1", "28", "28"])]);
        let got = resolve_inputs(&img, &request(Some(4), &[])).unwrap();
        assert_eq!(got[0].dims, vec![4, 1, 28, 28]);
        assert!(!got[0].batch_assumed);
        assert_eq!(batch_note(&got), None);
    }

    #[test]
    fn a_dynamic_batch_without_batch_is_one_and_said_so() {
        let img = model(vec![port("x", DataType::Float, &["N", "1", "28", "28"])]);
        let got = resolve_inputs(&img, &request(None, &[])).unwrap();
        assert_eq!(got[0].dims, vec![1, 1, 28, 28]);
        assert!(got[0].batch_assumed);
        let note = batch_note(&got).unwrap();
        assert!(
            note.contains("'x'") && note.contains("taken as 1"),
            "{note}"
        );
        // A batch fixed by another input's --shape is not assumed.
        let got = resolve_inputs(&bert(), &request(None, &[("input_ids", &[3, 16])])).unwrap();
        assert_eq!(got[1].dims, vec![3, 16]);
        assert!(got.iter().all(|i| !i.batch_assumed));
        // Only the batch is assumed: the sequence length still has to be given.
        let err = resolve_inputs(&bert(), &request(None, &[])).unwrap_err();
        assert!(err.to_string().contains("'seq'"), "{err}");
    }

    #[test]
    fn empty_batches_and_shapes_are_refused() {
        let img = model(vec![port("x", DataType::Float, &["N", "1", "28", "28"])]);
        let err = resolve_inputs(&img, &request(Some(0), &[])).unwrap_err();
        assert!(err.to_string().contains("`batch` 0"), "{err}");
        let err = resolve_inputs(&img, &request(None, &[("x", &[2, 0, 28, 28])])).unwrap_err();
        assert!(err.to_string().contains("`shapes` x"), "{err}");
    }

    #[test]
    fn contradictions_are_errors() {
        let fixed = model(vec![port("x", DataType::Float, &["1", "3"])]);
        assert!(resolve_inputs(&fixed, &request(Some(2), &[])).is_err());
        assert!(resolve_inputs(&fixed, &request(None, &[("x", &[1, 4])])).is_err());
        assert!(resolve_inputs(&fixed, &request(None, &[("y", &[1, 3])])).is_err());
        assert!(resolve_inputs(&fixed, &request(None, &[("x", &[1, 3, 1])])).is_err());
    }

    #[test]
    fn random_inputs_are_seeded_and_in_range() {
        let inputs =
            resolve_inputs(&bert(), &request(Some(2), &[("input_ids", &[2, 16])])).unwrap();
        let a = random_inputs(&inputs, 7).unwrap();
        let b = random_inputs(&inputs, 7).unwrap();
        let ids = a["input_ids"].to_vec::<i64>().unwrap();
        assert_eq!(ids, b["input_ids"].to_vec::<i64>().unwrap());
        assert!(ids.iter().all(|&i| (0..100).contains(&i)));
        assert!(ids.iter().any(|&i| i != ids[0]));
        let mask = a["attention_mask"].to_vec::<i64>().unwrap();
        assert!(mask.iter().all(|&m| m == 1));
        assert_eq!(a["attention_mask"].dims(), &[2, 16]);
        let c = random_inputs(&inputs, 8).unwrap();
        assert_ne!(ids, c["input_ids"].to_vec::<i64>().unwrap());
    }

    #[test]
    fn spec_inputs_take_batch_1_and_16_elsewhere_and_type_ids_0() {
        let spec = |name: &str, dtype, dims: Option<Vec<Option<usize>>>| InputSpec {
            name: name.into(),
            dtype,
            dims,
        };
        let specs = [
            spec("x", None, Some(vec![None, Some(3), None])),
            spec(
                "token_type_ids",
                Some(DataType::Int64),
                Some(vec![Some(2), None]),
            ),
        ];
        let inputs = inputs_from_specs(&specs, &HashMap::new()).unwrap();
        assert_eq!(inputs[0].dims, [1, 3, 16]);
        assert_eq!(inputs[0].dtype, DataType::Float);
        assert!(inputs[0].batch_assumed && !inputs[1].batch_assumed);
        let values = random_inputs(&inputs, 0).unwrap();
        let x = values["x"].to_vec::<f32>().unwrap();
        assert!(x.iter().all(|v| (0.0..1.0).contains(v)));
        assert!(x.iter().any(|&v| v != x[0]));
        let types = values["token_type_ids"].to_vec::<i64>().unwrap();
        assert_eq!(types, vec![0; 32]);
        let given = HashMap::from([("x".to_string(), vec![2, 3, 5])]);
        assert_eq!(
            inputs_from_specs(&specs, &given).unwrap()[0].dims,
            [2, 3, 5]
        );
        let err = inputs_from_specs(&[spec("z", None, None)], &HashMap::new()).unwrap_err();
        assert!(
            err.to_string().contains("input 'z' declares no shape"),
            "{err}"
        );
    }
}

//! Quantization-aware training graphs: fake quantization equals ONNX Runtime's
//! QuantizeLinear -> DequantizeLinear, and the QAT export of LeNet5 is the static QDQ
//! model (same nodes; same scales when nothing was trained).

#[path = "../../exec/tests/common.rs"]
mod common;

use std::collections::HashMap;

use common::{model_path, ort_outputs, scratch};
use whittle_data::Split;
use whittle_exec::ops::fake_quant::DOMAIN;
use whittle_exec::{Executor, Value};
use whittle_ir::attr::make;
use whittle_ir::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto};
use whittle_ir::shape::TensorType;
use whittle_ir::{DataType, ExternalData, Model, TensorData};
use whittle_passes::qat::{self, insert::ScaleMode, QatState};
use whittle_passes::quantize::{self, QuantConfig};

/// Pseudo-random floats in [-4, 4) (a fixed LCG, so failures reproduce).
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
        })
        .collect()
}

fn node(
    op: &str,
    domain: &str,
    inputs: &[&str],
    attrs: Vec<whittle_ir::proto::AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        domain: domain.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![format!("{op}_out")],
        attribute: attrs,
        ..Default::default()
    }
}

/// A one-input graph `x [4, 3, 5] -> nodes -> last node's output`.
fn graph_model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> Model {
    let out = nodes.last().unwrap().output[0].clone();
    let io = |n: &str| TensorType::known(DataType::Float, &[4, 3, 5]).to_value_info(n);
    let opset = |d: &str, v| OperatorSetIdProto {
        domain: d.into(),
        version: v,
    };
    Model::new(ModelProto {
        ir_version: 8,
        opset_import: vec![opset("", 13), opset(DOMAIN, 1)],
        graph: Some(GraphProto {
            name: "fq".into(),
            node: nodes,
            input: vec![io("x")],
            output: vec![io(&out)],
            initializer: inits,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Scale and uint8 zero point initializers (per tensor: scalars; per channel: 3 values).
fn params(per_channel: bool) -> Vec<TensorProto> {
    let (dims, s, z): (Vec<usize>, Vec<f32>, Vec<u8>) = if per_channel {
        (vec![3], vec![0.02, 0.05, 0.011], vec![128, 100, 7])
    } else {
        (vec![], vec![0.03], vec![120])
    };
    vec![
        TensorData::from_slice(dims.clone(), &s)
            .unwrap()
            .to_proto("s"),
        TensorData::from_slice(dims, &z).unwrap().to_proto("z"),
    ]
}

#[test]
fn fake_quantize_equals_onnx_runtime_quantize_dequantize() {
    let dir = scratch("qat-fq-ort");
    let x = TensorData::from_slice(vec![4, 3, 5], &random(60, 7)).unwrap();
    for per_channel in [false, true] {
        let axis: Vec<_> = per_channel
            .then(|| make::int("axis", 1))
            .into_iter()
            .collect();
        let q = node("QuantizeLinear", "", &["x", "s", "z"], axis.clone());
        let dq = node(
            "DequantizeLinear",
            "",
            &["QuantizeLinear_out", "s", "z"],
            axis.clone(),
        );
        let reference = graph_model(vec![q, dq], params(per_channel));
        let path = dir.join(format!("qdq{per_channel}.onnx"));
        reference.save(&path, &ExternalData::Never).unwrap();
        let ort = ort_outputs(
            &path,
            &[("x".into(), x.clone())],
            &dir.join(format!("o{per_channel}")),
        );
        let mut attrs = vec![make::int("qmin", 0), make::int("qmax", 255)];
        attrs.extend(axis);
        let fq = graph_model(
            vec![node("FakeQuantize", DOMAIN, &["x", "s", "z"], attrs)],
            params(per_channel),
        );
        let feed = HashMap::from([("x".to_string(), Value::try_from(&x).unwrap())]);
        let ours = Executor::new(&fq).unwrap().run(feed).unwrap();
        let ours: Vec<f32> = ours["FakeQuantize_out"]
            .to_data()
            .unwrap()
            .to_vec()
            .unwrap();
        let theirs: Vec<f32> = ort[0].to_vec().unwrap();
        let saturated = theirs.iter().filter(|v| v.abs() > 2.0).count();
        assert!(saturated > 0, "the data should reach the clamp");
        for (a, b) in ours.iter().zip(&theirs) {
            assert!(
                (a - b).abs() <= 1e-6,
                "per_channel={per_channel}: {a} vs {b}"
            );
        }
    }
}

fn lenet() -> Model {
    Model::load(model_path("mnist_lenet5.onnx")).unwrap()
}

fn mnist_batches(split: Split, n: usize) -> (TensorData, Vec<HashMap<String, Value>>) {
    let spec = format!("mnist:{}", common::assets().join("mnist").display());
    let images = whittle_data::spec::load(&spec, split, Some(n))
        .unwrap()
        .images;
    let all = Value::try_from(&images).unwrap();
    let batches = (0..n)
        .step_by(32)
        .map(|s| {
            let rows = all.tensor().narrow(0, s, 32.min(n - s)).unwrap();
            HashMap::from([("input".to_string(), Value::new(rows, all.dtype()).unwrap())])
        })
        .collect();
    (images, batches)
}

fn op_types(m: &Model) -> Vec<String> {
    let mut ops: Vec<String> = m.graph().node.iter().map(|n| n.op_type.clone()).collect();
    ops.sort();
    ops
}

/// Float initializer values by name (scales and float weights).
fn scales(m: &Model) -> HashMap<String, Vec<f64>> {
    m.graph()
        .initializer
        .iter()
        .filter(|t| t.name.ends_with("_scale"))
        .map(|t| {
            (
                t.name.clone(),
                TensorData::from_proto(t, None)
                    .unwrap()
                    .to_f64_vec()
                    .unwrap(),
            )
        })
        .collect()
}

fn assert_same_qdq(a: &Model, b: &Model) {
    assert_eq!(op_types(a), op_types(b));
    let (sa, sb) = (scales(a), scales(b));
    assert_eq!(sa.len(), sb.len());
    for (name, va) in &sa {
        let vb = sb
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing: {:?}", sb.keys()));
        for (x, y) in va.iter().zip(vb) {
            assert!((x - y).abs() <= x.abs() * 1e-5, "{name}: {x} vs {y}");
        }
    }
}

#[test]
fn untrained_qat_export_of_lenet5_is_the_static_qdq_model() {
    let cfg = QuantConfig {
        per_channel: true,
        ..QuantConfig::default()
    };
    let (_, calib) = mnist_batches(Split::Train, 128);
    let (ptq, _) = quantize::static_int8(&lenet(), &cfg, calib.clone()).unwrap();
    let state = QatState::calibrate(&lenet(), &cfg, calib).unwrap();
    let training = qat::insert::training_graph(&state, &cfg, ScaleMode::Learned).unwrap();
    let fq = training.count_op("FakeQuantize");
    // 4 weights; activations: input, 2 conv outputs (Relu-aliased), 2 pool outputs,
    // Gemm outputs, Relu outputs.
    assert!(fq >= 10, "{fq} fake quantizations");
    let stripped = qat::strip::strip(&training).unwrap();
    let (exported, plan) = qat::export::export_qdq(&stripped, &cfg).unwrap();
    assert_eq!(plan.targets.len(), 4);
    assert_same_qdq(&exported, &ptq);

    // The training graph computes what the QDQ model computes.
    let (_, test) = mnist_batches(Split::Test, 32);
    let run = |m: &Model| -> Vec<f32> {
        let out = Executor::new(m).unwrap().run(test[0].clone()).unwrap();
        out.into_values()
            .next()
            .unwrap()
            .to_data()
            .unwrap()
            .to_vec()
            .unwrap()
    };
    let (a, b) = (run(&training), run(&ptq));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 0.05, "training graph vs QDQ: {worst}");
}

#[test]
fn a_static_qdq_model_imports_back_and_exports_unchanged() {
    for per_channel in [false, true] {
        let cfg = QuantConfig {
            per_channel,
            ..QuantConfig::default()
        };
        import_round_trip(&cfg);
    }
}

#[test]
fn a_transformers_8_bit_constants_import_back_as_float_initializers() {
    // Static QDQ stores zoo:vit-tiny's biases, LayerNormalization parameters and positional
    // table in 8 bits behind Cast -> Sub -> Mul chains: QAT must get every float
    // initializer back as a float initializer of the same name, so it trains.
    let vit = whittle_zoo::build("zoo:vit-tiny").unwrap();
    let (_, calib) = mnist_batches(Split::Train, 32);
    let (ptq, _) = quantize::static_int8(&vit, &QuantConfig::default(), calib).unwrap();
    let uint8 = |m: &Model| {
        (m.graph().initializer.iter())
            .filter(|t| t.data_type == DataType::Uint8 as i32)
            .count()
    };
    assert!(uint8(&ptq) > 0, "no 8-bit constant to import");
    let state = qat::import::from_qdq(&ptq).unwrap();
    assert_eq!(uint8(&state.model), 0);
    let float = DataType::Float as i32;
    for t in vit
        .graph()
        .initializer
        .iter()
        .filter(|t| t.data_type == float)
    {
        let back = state
            .model
            .graph()
            .initializer
            .iter()
            .find(|b| b.name == t.name);
        assert_eq!(back.map(|b| b.data_type), Some(float), "{}", t.name);
    }
}

fn import_round_trip(cfg: &QuantConfig) {
    let (_, calib) = mnist_batches(Split::Train, 64);
    let (ptq, _) = quantize::static_int8(&lenet(), cfg, calib).unwrap();
    let state = qat::import::from_qdq(&ptq).unwrap();
    assert!(!qat::import::is_qdq(&state.model));
    assert!(state.params.len() >= 6, "{:?}", state.params.keys());
    let (again, _) = qat::export::export_qdq(&state, cfg).unwrap();
    assert_same_qdq(&again, &ptq);
    let ints = |m: &Model, name: &str| -> Vec<f64> {
        let t = m
            .graph()
            .initializer
            .iter()
            .find(|t| t.name == name)
            .unwrap();
        TensorData::from_proto(t, None)
            .unwrap()
            .to_f64_vec()
            .unwrap()
    };
    for t in ptq
        .graph()
        .initializer
        .iter()
        .filter(|t| t.data_type == DataType::Int8 as i32)
    {
        assert_eq!(ints(&again, &t.name), ints(&ptq, &t.name), "{}", t.name);
    }
}

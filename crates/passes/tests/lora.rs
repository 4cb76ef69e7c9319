//! LoRA adapters: insertion leaves outputs unchanged, training the adapters (and the head)
//! leaves every other weight as it was, merging gives the same outputs as plain ONNX in
//! whittle's executor and ONNX Runtime, and bad options are refused naming the option or
//! the layer.

mod structured;

use whittle_ir::attr::make;
use whittle_ir::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto};
use whittle_ir::{DataType, ExternalData, GraphEdit, Model, TensorData, TensorType};
use whittle_passes::lora::{
    adapter_freeze, add_adapters, head_layer, head_parameters, is_adapter, merge_adapters,
    LoraConfig,
};
use whittle_train::{TrainConfig, Trainer};

use structured::{accuracy, max_diff, mnist, onnx_check, ort_outputs, outputs, scratch};

fn node(name: &str, op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn weight(name: &str, dims: &[usize], seed: usize) -> TensorProto {
    let n: usize = dims.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| (((i * 7 + seed * 3) % 13) as f32 - 6.0) * 0.05)
        .collect();
    TensorData::from_slice(dims.to_vec(), &values)
        .unwrap()
        .to_proto(name)
}

/// Every kind of layer LoRA adapts: a strided, padded 1x1 Conv with a bias, a Gemm with
/// `transA`, `alpha` and a bias, a Gemm with `transB`, a MatMul, and a 3x3 Conv that cannot
/// take an adapter. x [2, 3, 6, 6] -> conv1x1 (3 -> 4, stride 2, pad 1) [2, 4, 4, 4] -> conv3x3 -> Relu ->
/// Flatten [2, 16] -> Transpose -> Gemm(transA, alpha 0.5) [2, 10] -> Gemm(transB) [2, 8]
/// -> MatMul [2, 5].
fn mixed_model() -> Model {
    let mut pointwise = node("pointwise", "Conv", &["x", "pw.w", "pw.b"], "c1");
    pointwise.attribute = vec![
        make::ints("strides", &[2, 2]),
        make::ints("pads", &[1, 1, 1, 1]),
        make::ints("kernel_shape", &[1, 1]),
    ];
    let spatial = node("spatial", "Conv", &["c1", "sp.w"], "c2");
    let mut flatten = node("flatten", "Flatten", &["r"], "f");
    flatten.attribute = vec![make::int("axis", 1)];
    let mut transpose = node("transpose", "Transpose", &["f"], "t");
    transpose.attribute = vec![make::ints("perm", &[1, 0])];
    let mut fc1 = node("fc1", "Gemm", &["t", "fc1.w", "fc1.b"], "h1");
    fc1.attribute = vec![make::int("transA", 1), make::float("alpha", 0.5)];
    let mut fc2 = node("fc2", "Gemm", &["h1", "fc2.w"], "h2");
    fc2.attribute = vec![make::int("transB", 1)];
    let nodes = vec![
        pointwise,
        spatial,
        node("relu", "Relu", &["c2"], "r"),
        flatten,
        transpose,
        fc1,
        fc2,
        node("head", "MatMul", &["h2", "head.w"], "y"),
    ];
    let inits = vec![
        weight("pw.w", &[4, 3, 1, 1], 1),
        weight("pw.b", &[4], 2),
        weight("sp.w", &[4, 4, 3, 3], 3),
        weight("fc1.w", &[16, 10], 4),
        weight("fc1.b", &[10], 5),
        weight("fc2.w", &[8, 10], 6),
        weight("head.w", &[8, 5], 7),
    ];
    let io =
        |name: &str, dims: &[usize]| TensorType::known(DataType::Float, dims).to_value_info(name);
    Model::new(ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            name: "mixed".into(),
            node: nodes,
            input: vec![io("x", &[2, 3, 6, 6])],
            output: vec![io("y", &[2, 5])],
            initializer: inits,
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn mixed_inputs() -> Vec<(String, TensorData)> {
    let values: Vec<f32> = (0..2 * 3 * 36)
        .map(|i| ((i * 5 % 17) as f32) * 0.1 - 0.8)
        .collect();
    vec![(
        "x".into(),
        TensorData::from_slice(vec![2, 3, 6, 6], &values).unwrap(),
    )]
}

fn initializer(model: &Model, name: &str) -> Vec<f32> {
    let proto = model
        .graph()
        .initializer(name)
        .unwrap_or_else(|| panic!("no '{name}'"));
    TensorData::from_proto(proto, None)
        .unwrap()
        .to_vec()
        .unwrap()
}

/// `model` with every adapter's B set to seeded nonzero values: what training leaves.
fn with_trained_adapters(model: &Model) -> Model {
    let mut out = model.clone();
    for t in &mut out.graph_mut().initializer {
        if t.name.ends_with(".lora_b") {
            let data = TensorData::from_proto(t, None).unwrap();
            let values: Vec<f32> = (0..data.numel())
                .map(|i| ((i * 11 % 7) as f32 - 3.0) * 0.2)
                .collect();
            *t = TensorData::from_slice(data.dims().to_vec(), &values)
                .unwrap()
                .to_proto(&t.name);
        }
    }
    out
}

#[test]
fn insertion_leaves_outputs_unchanged_and_reports_each_adapter() {
    let model = mixed_model();
    let inputs = mixed_inputs();
    let cfg = LoraConfig::new(2);
    let (adapted, report) = add_adapters(&model, &cfg).unwrap();
    let layers: Vec<(&str, &str, usize, usize)> = (report.layers.iter())
        .map(|l| (l.layer.as_str(), l.op.as_str(), l.inputs, l.outputs))
        .collect();
    assert_eq!(
        layers,
        [
            ("pointwise", "Conv", 3, 4),
            ("fc1", "Gemm", 16, 10),
            ("fc2", "Gemm", 10, 8),
            ("head", "MatMul", 8, 5),
        ]
    );
    assert_eq!(report.adapter_parameters, 2 * (7 + 26 + 18 + 13));
    assert_eq!(report.scale, 1.0);
    let a = initializer(&adapted, "fc1.w.lora_a");
    assert_eq!(a.len(), 16 * 2);
    assert!(a.iter().all(|v| v.abs() <= 0.25) && a.iter().any(|v| *v != 0.0));
    assert!(initializer(&adapted, "fc1.w.lora_b")
        .iter()
        .all(|v| *v == 0.0));
    let diff = max_diff(&outputs(&adapted, &inputs), &outputs(&model, &inputs));
    assert!(diff == 0.0, "adapters changed the outputs by {diff:e}");
    // Seeded: the same seed draws the same A, another seed another.
    let again = add_adapters(&model, &cfg).unwrap().0;
    assert_eq!(initializer(&again, "fc1.w.lora_a"), a);
    let other = add_adapters(&model, &LoraConfig { seed: 1, ..cfg })
        .unwrap()
        .0;
    assert_ne!(initializer(&other, "fc1.w.lora_a"), a);
}

#[test]
fn merged_model_is_plain_onnx_with_the_adapted_outputs_in_whittle_and_ort() {
    let model = mixed_model();
    let inputs = mixed_inputs();
    let cfg = LoraConfig {
        alpha: 3.0,
        ..LoraConfig::new(2)
    };
    let trained = with_trained_adapters(&add_adapters(&model, &cfg).unwrap().0);
    let merged = merge_adapters(&trained).unwrap();
    // Plain again: the original nodes, no adapter tensors, only the weights changed.
    let ops =
        |m: &Model| -> Vec<String> { m.graph().node.iter().map(|n| n.name.clone()).collect() };
    assert_eq!(ops(&merged), ops(&model));
    assert!(merged
        .graph()
        .initializer
        .iter()
        .all(|t| !t.name.contains(".lora")));
    assert_eq!(initializer(&merged, "sp.w"), initializer(&model, "sp.w"));
    assert_ne!(initializer(&merged, "fc1.w"), initializer(&model, "fc1.w"));
    let unmerged_out = outputs(&trained, &inputs);
    let base = outputs(&model, &inputs);
    assert!(
        max_diff(&unmerged_out, &base) > 1e-2,
        "the trained adapters must matter"
    );
    let diff = max_diff(&outputs(&merged, &inputs), &unmerged_out);
    assert!(diff <= 1e-5, "merged vs adapted in whittle: {diff:e}");
    let dir = scratch("lora-merge");
    let mut ort = Vec::new();
    for (name, m) in [("adapted", &trained), ("merged", &merged)] {
        let path = dir.join(format!("{name}.onnx"));
        m.save(&path, &ExternalData::Never).unwrap();
        onnx_check(&path);
        ort.push(ort_outputs(&path, &inputs, &dir.join(name)));
    }
    let diff = max_diff(&ort[1], &ort[0]);
    assert!(diff <= 1e-5, "merged vs adapted in ONNX Runtime: {diff:e}");
    let diff = max_diff(&ort[0], &unmerged_out);
    assert!(
        diff <= 1e-5,
        "adapted model: whittle vs ONNX Runtime {diff:e}"
    );
}

#[test]
fn training_adapters_and_head_leaves_every_other_weight_unchanged() {
    let model = whittle_zoo::build("mlp:hidden=64-32,classes=10").unwrap();
    let head = head_layer(&model).unwrap().unwrap();
    let head_params = head_parameters(&model).unwrap();
    assert_eq!(head_params.len(), 2, "{head_params:?}");
    let cfg = LoraConfig {
        exclude_head: true,
        ..LoraConfig::new(4)
    };
    let (adapted, report) = add_adapters(&model, &cfg).unwrap();
    assert_eq!(report.layers.len(), 2);
    assert!(report.layers.iter().all(|l| l.layer != head));
    assert_eq!(report.adapter_parameters, 4 * (784 + 64) + 4 * (64 + 32));
    let freeze = adapter_freeze(&adapted, &head_params).unwrap();
    let config = TrainConfig {
        freeze,
        epochs: 4,
        lr: 1e-2,
        batch_size: 32,
        ..TrainConfig::default()
    };
    let data = mnist(512);
    let mut trainer = Trainer::new(&adapted, config).unwrap();
    let trained_report = trainer.fit(&data, None).unwrap();
    let head_size: usize = (head_params.iter())
        .map(|n| initializer(&model, n).len())
        .sum();
    assert_eq!(
        trained_report.trainable_parameters as u64,
        report.adapter_parameters + head_size as u64
    );
    let trained = trainer.model().unwrap();
    for t in &model.graph().initializer {
        let (before, after) = (initializer(&model, &t.name), initializer(&trained, &t.name));
        if head_params.contains(&t.name) {
            assert_ne!(before, after, "head tensor '{}' did not train", t.name);
        } else {
            assert_eq!(before, after, "frozen tensor '{}' changed", t.name);
        }
    }
    for t in adapted
        .graph()
        .initializer
        .iter()
        .filter(|t| is_adapter(&t.name))
    {
        let after = initializer(&trained, &t.name);
        assert_ne!(
            initializer(&adapted, &t.name),
            after,
            "adapter '{}' did not train",
            t.name
        );
    }
    let merged = merge_adapters(&trained).unwrap();
    let (acc_trained, acc_merged) = (accuracy(&trained, &data), accuracy(&merged, &data));
    println!("adapters + head after 4 epochs on 512 MNIST images: accuracy {acc_trained:.3}, merged {acc_merged:.3}");
    let acc_before = accuracy(&model, &data);
    assert!(
        acc_trained > acc_before + 0.3,
        "training did not learn: {acc_before} -> {acc_trained}"
    );
    assert!((acc_trained - acc_merged).abs() <= 1.0 / 512.0);
}

fn error_of(result: whittle_passes::Result<impl std::fmt::Debug>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn bad_options_are_refused_naming_the_option_or_layer() {
    let model = mixed_model();
    let add = |cfg: LoraConfig| error_of(add_adapters(&model, &cfg));
    let rank0 = add(LoraConfig::new(0));
    assert!(rank0.contains("`rank` must be at least 1"), "{rank0}");
    let big = add(LoraConfig::new(6));
    assert!(
        big.contains("`rank` 6 exceeds layer 'pointwise' (3 -> 4 features): at most 3"),
        "{big}"
    );
    let alpha = add(LoraConfig {
        alpha: f64::NAN,
        ..LoraConfig::new(1)
    });
    assert!(alpha.contains("`alpha`"), "{alpha}");
    let unknown = add(LoraConfig {
        targets: vec!["fc9".into()],
        ..LoraConfig::new(1)
    });
    assert!(
        unknown.contains("no layer 'fc9'") && unknown.contains("pointwise, fc1, fc2, head"),
        "{unknown}"
    );
    let spatial = add(LoraConfig {
        targets: vec!["spatial".into()],
        ..LoraConfig::new(1)
    });
    assert!(
        spatial.contains("layer 'spatial' cannot take an adapter: kernel [3, 3] is not 1x1"),
        "{spatial}"
    );
    // A graph with no weighted layer at all.
    let mut bare = model.clone();
    bare.graph_mut().node.retain(|n| n.op_type == "Relu");
    let none = error_of(add_adapters(&bare, &LoraConfig::new(1)));
    assert!(none.contains("LoRA found no layer to adapt"), "{none}");
    // Adapting twice and merging a model without adapters.
    let (adapted, _) = add_adapters(&model, &LoraConfig::new(1)).unwrap();
    let twice = error_of(add_adapters(
        &adapted,
        &LoraConfig {
            targets: vec!["fc1".into()],
            ..LoraConfig::new(1)
        },
    ));
    assert!(twice.contains("already has an adapter"), "{twice}");
    let plain = error_of(merge_adapters(&model));
    assert!(plain.contains("no LoRA adapters to merge"), "{plain}");
    // A branch edited out of shape: its add no longer reads the layer.
    let mut broken = adapted.clone();
    let add_node = (broken.graph_mut().node.iter_mut())
        .find(|n| n.name == "fc2.lora_add")
        .unwrap();
    add_node.op_type = "Sub".into();
    let edited = error_of(merge_adapters(&broken));
    assert!(
        edited.contains("'fc2.w.lora_a'") && edited.contains("fc2.lora_add"),
        "{edited}"
    );
    let head = error_of(adapter_freeze(&adapted, &["nope".into()]));
    assert!(
        head.contains("'nope' is not a trainable parameter"),
        "{head}"
    );
}

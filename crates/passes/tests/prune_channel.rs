//! Structured channel pruning on zoo models and the pretrained LeNet5: pruned models pass
//! onnx.checker, agree with ONNX Runtime, lose the hand-computed parameters and MACs, and
//! removing dead channels (zero weights, BN γ and β) leaves outputs unchanged across
//! residual Adds, Concat, squeeze-excite and Flatten->Gemm.

mod structured;

use whittle_ir::attr::make;
use whittle_ir::{GraphEdit, Model};
use whittle_passes::prune::channel::{
    prune_channels, ChannelConfig, ChannelReport, Criterion, Scope, TaylorData,
};
use whittle_zoo::layers::{Act, Conv};
use whittle_zoo::GraphBuilder;

use structured::{check_in_ort, inputs_for, kill_channels, max_diff, model_path, outputs};

fn lenet5() -> Model {
    Model::load(model_path("mnist_lenet5.onnx")).unwrap()
}

fn cfg(ratio: f64, round_to: usize, protected: Option<Vec<String>>) -> ChannelConfig {
    ChannelConfig {
        ratio,
        round_to,
        protected,
        ..ChannelConfig::default()
    }
}

fn conv_names(model: &Model) -> Vec<String> {
    (model.graph().node.iter())
        .filter(|n| n.op_type == "Conv")
        .map(|n| n.name.clone())
        .collect()
}

/// input [3,8,8] -> Conv 3x3 (8, bias) -> Relu -> Conv 1x1 (4, bias) -> GAP -> Gemm (2).
fn two_conv_net() -> Model {
    let mut b = GraphBuilder::new(1);
    let x = b.input("input", &[3, 8, 8]);
    let h = b.conv(&x, Conv::new(8, 3).bias()).unwrap();
    let h = b.act(&h, Act::Relu);
    let h = b.conv(&h, Conv::new(4, 1).bias()).unwrap();
    let h = b.global_avg_pool(&h).unwrap();
    let h = b.flatten(&h);
    let y = b.linear(&h, 2).unwrap();
    b.finish(&y, "logits", "two_conv").unwrap()
}

/// Two conv branches concatenated on channels, a 1x1 conv, GAP and a classifier.
fn concat_net() -> Model {
    let mut b = GraphBuilder::new(2);
    let x = b.input("input", &[1, 8, 8]);
    let a = b
        .conv_bn(&x, Conv::new(8, 3), 1e-5, Some(Act::Relu))
        .unwrap();
    let c = b
        .conv_bn(&x, Conv::new(16, 3), 1e-5, Some(Act::Relu))
        .unwrap();
    let a2 = b
        .conv_bn(&a, Conv::new(8, 3), 1e-5, Some(Act::Relu))
        .unwrap();
    let cat = b.node(
        "Concat",
        "concat",
        vec![a2.name.clone(), c.name.clone()],
        vec![make::int("axis", 1)],
        vec![24, 8, 8],
    );
    let h = b
        .conv_bn(&cat, Conv::new(8, 1), 1e-5, Some(Act::Relu))
        .unwrap();
    let h = b.global_avg_pool(&h).unwrap();
    let h = b.flatten(&h);
    let y = b.linear(&h, 3).unwrap();
    b.finish(&y, "logits", "concat").unwrap()
}

fn summary(name: &str, r: &ChannelReport) {
    println!(
        "{name}: params {} -> {}, MACs {} -> {}, {} groups pruned, {} skipped",
        r.params_before,
        r.params_after,
        r.macs_before,
        r.macs_after,
        r.groups.len(),
        r.skipped.len()
    );
    for s in &r.skipped {
        println!(
            "  skipped {:?} ({}): {}",
            s.layers.first(),
            s.channels,
            s.reason
        );
    }
}

#[test]
fn two_conv_net_loses_the_hand_computed_params_and_macs() {
    let model = two_conv_net();
    let second = conv_names(&model)[1].clone();
    let (pruned, report) = prune_channels(&model, &cfg(0.5, 1, Some(vec![second])), None).unwrap();
    // Conv1 8->4 filters of 3x3x3 (+bias), Conv2 keeps 4 filters over 4 inputs.
    assert_eq!(report.params_before, 216 + 8 + 32 + 4 + 10);
    assert_eq!(report.params_after, 108 + 4 + 16 + 4 + 10);
    // Conv1: 8·8·8 outputs × 27, Conv2: 4·8·8 × 8, Gemm 2 × 4.
    assert_eq!(report.macs_before, 13824 + 2048 + 8);
    assert_eq!(report.macs_after, 6912 + 1024 + 8);
    let macs = whittle_ir::cost::model_macs(&pruned, &Default::default()).unwrap();
    assert_eq!(macs, report.macs_after);
    assert_eq!(report.groups.len(), 1);
    assert_eq!(
        (
            report.groups[0].channels_before,
            report.groups[0].channels_after
        ),
        (8, 4)
    );
    check_in_ort("two-conv", &pruned, &inputs_for(&model));
}

#[test]
fn zoo_models_and_lenet5_prune_run_in_ort_and_shrink() {
    let models = ["zoo:cnn", "zoo:resnet", "zoo:mobilenetv3-small", "zoo:mlp"];
    let mut all: Vec<(String, Model)> = models
        .iter()
        .map(|s| (s.to_string(), whittle_zoo::build(s).unwrap()))
        .collect();
    all.push(("lenet5".into(), lenet5()));
    for (name, model) in all {
        let (pruned, report) = prune_channels(&model, &ChannelConfig::default(), None).unwrap();
        summary(&name, &report);
        assert!(!report.groups.is_empty(), "{name}: nothing pruned");
        let stem_kept = report
            .skipped
            .iter()
            .any(|s| s.reason.starts_with("protected layer"));
        assert_eq!(
            stem_kept,
            name != "zoo:mlp",
            "{name}: the stem is protected by default"
        );
        assert!(
            report.params_after < report.params_before,
            "{name}: params did not fall"
        );
        assert!(
            report.macs_after < report.macs_before,
            "{name}: MACs did not fall"
        );
        whittle_ir::validate(&pruned).unwrap();
        check_in_ort(&format!("prune-{name}"), &pruned, &inputs_for(&model));
    }
}

#[test]
fn mobilenet_prunes_depthwise_and_squeeze_excite_channels() {
    let model = whittle_zoo::build("zoo:mobilenetv3-small").unwrap();
    let (pruned, report) = prune_channels(&model, &cfg(0.5, 8, None), None).unwrap();
    let expand = (report.groups.iter())
        .find(|g| g.layers.iter().any(|l| l == "block5.conv_1"))
        .expect("block5's expansion group is prunable");
    assert_eq!((expand.channels_before, expand.channels_after), (240, 120));
    let dw = pruned.graph().find_node("block5.conv_1").unwrap();
    let group = pruned.graph().node[dw]
        .attribute
        .iter()
        .find(|a| a.name == "group")
        .unwrap();
    assert_eq!(group.i, 120);
    let se = pruned.graph().initializer("block5.se.conv.weight").unwrap();
    assert_eq!(se.dims, vec![32, 120, 1, 1]);
}

#[test]
fn removing_dead_channels_leaves_outputs_unchanged() {
    let models = [
        ("concat", concat_net()),
        ("resnet", whittle_zoo::build("zoo:resnet").unwrap()),
        (
            "mobilenet",
            whittle_zoo::build("zoo:mobilenetv3-small").unwrap(),
        ),
        ("mlp", whittle_zoo::build("zoo:mlp").unwrap()),
        ("lenet5", lenet5()),
    ];
    for (name, model) in models {
        let dead = kill_channels(&model, |k, _| k % 2 == 1);
        let (pruned, report) = prune_channels(&dead, &cfg(0.5, 1, Some(vec![])), None).unwrap();
        summary(name, &report);
        assert!(report
            .groups
            .iter()
            .all(|g| g.channels_after == g.channels_before.div_ceil(2)));
        let inputs = inputs_for(&model);
        let diff = max_diff(&outputs(&pruned, &inputs), &outputs(&dead, &inputs));
        println!("{name}: dead channels removed, output diff {diff:.2e}");
        assert!(diff <= 1e-5, "{name}: outputs changed by {diff:.3e}");
    }
}

#[test]
fn concat_offsets_are_sliced_per_branch() {
    let model = concat_net();
    let (pruned, report) = prune_channels(&model, &cfg(0.5, 1, Some(vec![])), None).unwrap();
    summary("concat", &report);
    let consumer = pruned
        .graph()
        .node
        .iter()
        .find(|n| n.input.iter().any(|i| i == "concat"))
        .unwrap();
    let w = pruned.graph().initializer(&consumer.input[1]).unwrap();
    // The concat carries 8 + 16 channels: half of each branch remains.
    assert_eq!(w.dims[1], 4 + 8);
    check_in_ort("prune-concat", &pruned, &inputs_for(&model));
}

#[test]
fn round_to_is_honoured_and_layers_never_reach_zero() {
    let model = whittle_zoo::build("zoo:cnn").unwrap();
    let (_, report) = prune_channels(&model, &cfg(0.3, 8, None), None).unwrap();
    for g in &report.groups {
        assert_eq!(g.channels_after % 8, 0, "{:?}", g.layers);
    }
    let (_, report) = prune_channels(&model, &cfg(0.99, 1, Some(vec![])), None).unwrap();
    assert!(report.groups.iter().all(|g| g.channels_after >= 1));
    let err = prune_channels(&model, &cfg(1.0, 1, None), None).unwrap_err();
    assert!(err.to_string().contains("[0, 1)"), "{err}");
}

#[test]
fn unprovable_groups_are_skipped_and_reported() {
    let mut b = GraphBuilder::new(3);
    let x = b.input("input", &[1, 8, 8]);
    let h = b.conv(&x, Conv::new(8, 3)).unwrap();
    let h = b.transpose(&h, &[0, 2, 1]).unwrap();
    let h = b.conv(&h, Conv::new(8, 3)).unwrap();
    let h = b.global_avg_pool(&h).unwrap();
    let h = b.flatten(&h);
    let y = b.linear(&h, 2).unwrap();
    let model = b.finish(&y, "logits", "transposed").unwrap();
    let first = conv_names(&model)[0].clone();
    let (pruned, report) = prune_channels(&model, &cfg(0.5, 1, Some(vec![])), None).unwrap();
    summary("transposed", &report);
    let skipped = report
        .skipped
        .iter()
        .find(|s| s.layers[0] == first)
        .unwrap();
    assert!(skipped.reason.contains("Transpose"), "{}", skipped.reason);
    let weight = &model.graph().node[0].input[1];
    assert_eq!(pruned.graph().initializer(weight).unwrap().dims[0], 8);
    check_in_ort("prune-transposed", &pruned, &inputs_for(&model));
}

#[test]
fn a_conv_bias_computed_at_run_time_blocks_its_groups() {
    let mut model = two_conv_net();
    let g = model.graph_mut();
    let conv2 = g.node.iter().rposition(|n| n.op_type == "Conv").unwrap();
    let bias = g.node[conv2].input[2].clone();
    g.node.insert(
        conv2,
        whittle_ir::proto::NodeProto {
            op_type: "Identity".into(),
            name: "bias_copy".into(),
            input: vec![bias],
            output: vec!["bias_at_run_time".into()],
            ..Default::default()
        },
    );
    g.node[conv2 + 1].input[2] = "bias_at_run_time".into();
    let (pruned, report) = prune_channels(&model, &cfg(0.5, 1, Some(vec![])), None).unwrap();
    summary("runtime-bias", &report);
    let skipped = report
        .skipped
        .iter()
        .find(|s| s.reason.contains("bias is computed at run time"))
        .expect("the first conv's channels are left");
    assert_eq!(skipped.channels, 8);
    check_in_ort("prune-runtime-bias", &pruned, &inputs_for(&model));
}

#[test]
fn criteria_and_global_ranking_give_valid_models() {
    let model = lenet5();
    let data = structured::mnist(64);
    let batches = (0..2)
        .map(|i| {
            let (x, y) = data.batch(i * 32, (i + 1) * 32).unwrap();
            (x, y.to_vec())
        })
        .collect();
    let taylor = TaylorData { batches };
    let criteria = [
        Criterion::L2,
        Criterion::BnGamma,
        Criterion::Taylor,
        Criterion::Random { seed: 4 },
    ];
    for criterion in criteria {
        let c = ChannelConfig {
            criterion: criterion.clone(),
            scope: Scope::Global,
            ..cfg(0.3, 8, None)
        };
        let (pruned, report) = prune_channels(&model, &c, Some(&taylor)).unwrap();
        summary(&format!("lenet5 global {criterion:?}"), &report);
        assert!(report.params_after < report.params_before);
        check_in_ort(
            &format!("prune-lenet-{criterion:?}"),
            &pruned,
            &inputs_for(&model),
        );
    }
    let err = prune_channels(
        &model,
        &ChannelConfig {
            criterion: Criterion::Taylor,
            ..cfg(0.3, 8, None)
        },
        None,
    );
    assert!(err.is_err());
}

#[test]
fn pruned_models_keep_a_symbolic_batch() {
    let model = whittle_zoo::build("zoo:cnn").unwrap();
    let (pruned, _) = prune_channels(&model, &ChannelConfig::default(), None).unwrap();
    let g = pruned.graph();
    assert!(!g.value_info.is_empty());
    for v in g.value_info.iter().chain(&g.output) {
        let dims = whittle_ir::shape::TensorType::from_value_info(v)
            .dims
            .unwrap();
        assert!(
            !matches!(dims.first(), Some(whittle_ir::shape::Dim::Known(_))),
            "{} has a fixed batch: {dims:?}",
            v.name
        );
    }
}

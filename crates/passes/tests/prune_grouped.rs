//! Channel pruning through grouped (non-depthwise) convolutions: the pruned models keep
//! `group`, pass onnx.checker, agree with ONNX Runtime and lose the hand-computed
//! parameters and MACs; removing dead channels that differ from group to group leaves the
//! outputs unchanged; groups whose segments cannot stay balanced are left with a reason.

mod structured;

use whittle_ir::proto::NodeProto;
use whittle_ir::{GraphEdit, Model};
use whittle_passes::prune::channel::{
    prune_channels, ChannelConfig, ChannelReport, Criterion, Scope,
};
use whittle_zoo::layers::{Act, Conv};
use whittle_zoo::GraphBuilder;

use structured::{check_in_ort, inputs_for, kill_channels, max_diff, outputs};

/// A Conv with `groups` groups.
fn grouped(out: usize, kernel: usize, groups: usize) -> Conv {
    Conv {
        groups,
        ..Conv::new(out, kernel)
    }
}

/// input [3,8,8] -> Conv 3x3 (16) -> BN -> Relu -> Conv 3x3 (16, group 4) -> Relu ->
/// Conv 1x1 (8) -> GAP -> Flatten -> Gemm (2).
fn grouped_net() -> Model {
    let mut b = GraphBuilder::new(5);
    let x = b.input("input", &[3, 8, 8]);
    let h = b
        .conv_bn(&x, Conv::new(16, 3), 1e-5, Some(Act::Relu))
        .unwrap();
    let h = b.conv(&h, grouped(16, 3, 4)).unwrap();
    let h = b.act(&h, Act::Relu);
    let h = b.conv(&h, Conv::new(8, 1)).unwrap();
    let h = b.global_avg_pool(&h).unwrap();
    let h = b.flatten(&h);
    let y = b.linear(&h, 2).unwrap();
    b.finish(&y, "logits", "grouped").unwrap()
}

fn cfg(ratio: f64, round_to: usize) -> ChannelConfig {
    ChannelConfig {
        ratio,
        round_to,
        protected: Some(vec![]),
        ..ChannelConfig::default()
    }
}

/// The Convs of `model` in graph order.
fn convs(model: &Model) -> Vec<&NodeProto> {
    (model.graph().node.iter())
        .filter(|n| n.op_type == "Conv")
        .collect()
}

fn weight_dims(model: &Model, conv: &NodeProto) -> Vec<i64> {
    model
        .graph()
        .initializer(&conv.input[1])
        .unwrap()
        .dims
        .clone()
}

fn group_attr(conv: &NodeProto) -> i64 {
    conv.attribute.iter().find(|a| a.name == "group").unwrap().i
}

/// `(channels before, after)` of the group whose first layer is `layer`.
fn channels(report: &ChannelReport, layer: &str) -> (usize, usize) {
    let g = (report.groups.iter())
        .find(|g| g.layers[0] == layer)
        .unwrap_or_else(|| panic!("no pruned group starts at {layer}: {report:?}"));
    (g.channels_before, g.channels_after)
}

#[test]
fn grouped_conv_prunes_both_sides_and_keeps_its_groups() {
    let model = grouped_net();
    let names: Vec<String> = convs(&model).iter().map(|n| n.name.clone()).collect();
    let (pruned, report) = prune_channels(&model, &cfg(0.5, 1), None).unwrap();
    assert!(report.skipped.iter().all(|s| s.layers[0] != names[0]));
    assert_eq!(channels(&report, &names[0]), (16, 8));
    assert_eq!(channels(&report, &names[1]), (16, 8));
    assert_eq!(channels(&report, &names[2]), (8, 4));
    let after = convs(&pruned);
    assert_eq!(group_attr(after[1]), 4);
    // 8 outputs (2 per group), each reading the 2 kept inputs of its group.
    assert_eq!(weight_dims(&pruned, after[1]), vec![8, 2, 3, 3]);
    assert_eq!(weight_dims(&pruned, after[2]), vec![4, 8, 1, 1]);
    // Conv1 16·27, BN 4·16, grouped 16·4·9, Conv3 8·16, Gemm 2·8 + 2.
    assert_eq!(report.params_before, 432 + 64 + 576 + 128 + 18);
    assert_eq!(report.params_after, 216 + 32 + 144 + 32 + 10);
    // Per 8x8 output position: Conv1 16·27, grouped 16·36, Conv3 8·16; Gemm 2·8.
    assert_eq!(report.macs_before, 64 * (432 + 576 + 128) + 16);
    assert_eq!(report.macs_after, 64 * (216 + 144 + 32) + 8);
    check_in_ort("prune-grouped", &pruned, &inputs_for(&model));
}

#[test]
fn removing_dead_channels_through_a_grouped_conv_leaves_outputs_unchanged() {
    let model = grouped_net();
    // Dead channels differ between segments of 4: 1 and 3 in even ones, 0 and 2 in odd
    // ones, so each group of the grouped Conv drops its own weight columns.
    let dead = kill_channels(&model, |k, g| {
        let segment = k / (g.width / g.segments);
        (k + segment) % 2 == 1
    });
    let (pruned, report) = prune_channels(&dead, &cfg(0.5, 1), None).unwrap();
    assert_eq!(report.groups.len(), 3);
    assert!(report
        .groups
        .iter()
        .all(|g| g.channels_after == g.channels_before / 2));
    let inputs = inputs_for(&model);
    let diff = max_diff(&outputs(&pruned, &inputs), &outputs(&dead, &inputs));
    println!("grouped: dead channels removed, output diff {diff:.2e}");
    assert!(diff <= 1e-5, "outputs changed by {diff:.3e}");
}

#[test]
fn global_ranking_and_round_to_keep_segments_balanced() {
    let model = grouped_net();
    let names: Vec<String> = convs(&model).iter().map(|n| n.name.clone()).collect();
    let c = ChannelConfig {
        scope: Scope::Global,
        criterion: Criterion::Random { seed: 7 },
        ..cfg(0.6, 1)
    };
    let (pruned, report) = prune_channels(&model, &c, None).unwrap();
    for layer in &names[..2] {
        let (_, after) = channels(&report, layer);
        assert_eq!(after % 4, 0, "{layer} keeps {after}");
        assert!(after >= 4);
    }
    check_in_ort("prune-grouped-global", &pruned, &inputs_for(&model));
    // round_to 6 with 4 segments: kept counts are multiples of 12.
    let (pruned, report) = prune_channels(&model, &cfg(0.5, 6), None).unwrap();
    assert_eq!(channels(&report, &names[0]), (16, 12));
    assert_eq!(channels(&report, &names[1]), (16, 12));
    assert_eq!(channels(&report, &names[2]), (8, 6));
    assert_eq!(weight_dims(&pruned, convs(&pruned)[1]), vec![12, 3, 3, 3]);
    check_in_ort("prune-grouped-round", &pruned, &inputs_for(&model));
}

#[test]
fn grouped_conv_over_a_concat_is_left_with_a_reason() {
    // Two 8-channel branches concatenated feed a Conv of 4 groups: its groups straddle
    // the branches, which the analysis does not balance.
    let mut b = GraphBuilder::new(7);
    let x = b.input("input", &[3, 8, 8]);
    let left = b.conv(&x, Conv::new(8, 3)).unwrap();
    let right = b.conv(&x, Conv::new(8, 3)).unwrap();
    let cat = b.node(
        "Concat",
        "concat",
        vec![left.name.clone(), right.name.clone()],
        vec![whittle_ir::attr::make::int("axis", 1)],
        vec![16, 8, 8],
    );
    let h = b.conv(&cat, grouped(16, 3, 4)).unwrap();
    let h = b.global_avg_pool(&h).unwrap();
    let h = b.flatten(&h);
    let y = b.linear(&h, 2).unwrap();
    let model = b.finish(&y, "logits", "concat-grouped").unwrap();
    let names: Vec<String> = convs(&model).iter().map(|n| n.name.clone()).collect();
    let (pruned, report) = prune_channels(&model, &cfg(0.5, 1), None).unwrap();
    for layer in &names[..2] {
        let skipped = (report.skipped.iter())
            .find(|s| s.layers[0] == *layer)
            .unwrap_or_else(|| panic!("{layer} was pruned: {report:?}"));
        let expected = format!(
            "grouped convolution '{}' reads channels of several",
            names[2]
        );
        assert!(skipped.reason.contains(&expected), "{}", skipped.reason);
    }
    // The grouped Conv's own outputs stay prunable.
    assert_eq!(channels(&report, &names[2]), (16, 8));
    assert_eq!(weight_dims(&pruned, convs(&pruned)[2]), vec![8, 4, 3, 3]);
    check_in_ort("prune-concat-grouped", &pruned, &inputs_for(&model));
}

#[test]
fn segments_that_cannot_stay_balanced_are_left_with_a_reason() {
    // A stem of 12 channels read by Convs of 4 and 6 groups: balancing both needs 12
    // segments of one channel. Their outputs meet in an Add (12 segments again).
    let mut b = GraphBuilder::new(6);
    let x = b.input("input", &[3, 8, 8]);
    let stem = b.conv(&x, Conv::new(12, 3)).unwrap();
    let stem = b.act(&stem, Act::Relu);
    let four = b.conv(&stem, grouped(12, 3, 4)).unwrap();
    let six = b.conv(&stem, grouped(12, 3, 6)).unwrap();
    let h = b.add(&four, &six).unwrap();
    let h = b.conv(&h, Conv::new(8, 1)).unwrap();
    let h = b.global_avg_pool(&h).unwrap();
    let h = b.flatten(&h);
    let y = b.linear(&h, 2).unwrap();
    let model = b.finish(&y, "logits", "unbalanced").unwrap();
    let names: Vec<String> = convs(&model).iter().map(|n| n.name.clone()).collect();
    let (pruned, report) = prune_channels(&model, &cfg(0.5, 1), None).unwrap();
    // The stem's group, and the Add's (both grouped outputs, the first one leading).
    let stem = (report.skipped.iter()).find(|s| s.layers[0] == names[0]);
    let add =
        (report.skipped.iter()).find(|s| s.layers[0] == names[1] && s.layers.contains(&names[2]));
    for skipped in [stem, add] {
        let skipped = skipped.unwrap_or_else(|| panic!("a group was pruned: {report:?}"));
        assert!(
            skipped.reason.contains("12 equal segments of one channel"),
            "{}",
            skipped.reason
        );
    }
    assert_eq!(channels(&report, &names[3]), (8, 4));
    let after = convs(&pruned);
    assert_eq!(weight_dims(&pruned, after[0])[0], 12);
    assert_eq!(weight_dims(&pruned, after[1]), vec![12, 3, 3, 3]);
    assert_eq!(weight_dims(&pruned, after[2]), vec![12, 2, 3, 3]);
    assert_eq!(weight_dims(&pruned, after[3]), vec![4, 12, 1, 1]);
    whittle_ir::validate(&pruned).unwrap();
    check_in_ort("prune-unbalanced", &pruned, &inputs_for(&model));
}

//! Low-rank factorization of the pretrained LeNet5: exact at full rank, output error falling
//! as the rank rises, MNIST accuracy at a few ranks, ORT agreement and onnx.checker.

mod structured;

use whittle_ir::Model;
use whittle_passes::factorize::{choose_rank, factorize, FactorizeConfig, RankRule};

use structured::{accuracy, check_in_ort, inputs_for, max_diff, mnist, model_path, outputs};

/// LeNet5's first Gemm (3136 -> 200): the largest layer; its nodes are unnamed, so it goes
/// by its output.
const FIRST_GEMM: &str = "g1";

fn lenet5() -> Model {
    Model::load(model_path("mnist_lenet5.onnx")).unwrap()
}

fn only_first_gemm(rank: RankRule) -> FactorizeConfig {
    FactorizeConfig {
        layers: Some(vec![FIRST_GEMM.into()]),
        ..FactorizeConfig::new(rank)
    }
}

#[test]
fn full_rank_factorization_is_exact() {
    let model = lenet5();
    let cfg = FactorizeConfig {
        skip_unprofitable: false,
        ..only_first_gemm(RankRule::Ratio(1.0))
    };
    let (out, report) = factorize(&model, &cfg).unwrap();
    let layer = &report.layers[0];
    assert_eq!((layer.inputs, layer.outputs, layer.rank), (3136, 200, 200));
    assert_eq!(layer.params_after, 200 * (3136 + 200));
    assert_eq!(out.graph().node.len(), model.graph().node.len() + 1);
    let inputs = vec![("input".to_string(), mnist(32).images)];
    let diff = max_diff(&outputs(&out, &inputs), &outputs(&model, &inputs));
    println!("full rank: output diff {diff:.2e}");
    assert!(
        diff <= 1e-4,
        "full-rank factorization changed outputs by {diff:.3e}"
    );
}

#[test]
fn output_error_falls_as_rank_rises_and_accuracy_holds() {
    let model = lenet5();
    let data = mnist(1000);
    let inputs = vec![("input".to_string(), data.images.clone())];
    let reference = outputs(&model, &inputs);
    let base = accuracy(&model, &data);
    println!("original: accuracy {base:.4}");
    let mut last = f64::INFINITY;
    for ratio in [0.02, 0.05, 0.1, 0.25] {
        let (out, report) = factorize(&model, &only_first_gemm(RankRule::Ratio(ratio))).unwrap();
        let layer = &report.layers[0];
        assert!(layer.skipped_reason.is_none(), "{:?}", layer.skipped_reason);
        let diff = max_diff(&outputs(&out, &inputs), &reference);
        let acc = accuracy(&out, &data);
        println!(
            "ratio {ratio}: rank {}, params {} -> {}, diff {diff:.3e}, accuracy {acc:.4}",
            layer.rank, report.params_before, report.params_after
        );
        assert!(
            diff < last,
            "error did not fall at ratio {ratio}: {diff} >= {last}"
        );
        assert!(report.params_after < report.params_before);
        last = diff;
        if ratio >= 0.1 {
            assert!(
                acc >= base - 0.01,
                "rank {}: accuracy {acc} vs {base}",
                layer.rank
            );
        }
    }
}

#[test]
fn whole_model_factorization_runs_in_ort() {
    let model = lenet5();
    let (out, report) = factorize(&model, &FactorizeConfig::new(RankRule::Energy(0.9))).unwrap();
    for l in &report.layers {
        println!(
            "{} {} {}x{} rank {} skipped {:?}",
            l.name, l.op, l.inputs, l.outputs, l.rank, l.skipped_reason
        );
    }
    let convs = report.layers.iter().filter(|l| l.op == "Conv").count();
    assert_eq!(convs, 2);
    for l in &report.layers {
        let grows = l.rank * (l.inputs + l.outputs) >= l.inputs * l.outputs;
        assert_eq!(l.skipped_reason.is_some(), grows, "{}", l.name);
    }
    assert!(report.params_after < report.params_before);
    check_in_ort("factorize-lenet5", &out, &inputs_for(&model));
}

#[test]
fn rank_rules_and_bad_options() {
    let sigma = [3.0, 2.0, 1.0];
    assert_eq!(choose_rank(&sigma, RankRule::Ratio(0.5)), 2);
    assert_eq!(choose_rank(&sigma, RankRule::Ratio(0.01)), 1);
    // Σσ² = 14: 9/14 < 0.9 <= 13/14.
    assert_eq!(choose_rank(&sigma, RankRule::Energy(0.9)), 2);
    assert_eq!(choose_rank(&sigma, RankRule::Energy(1.0)), 3);
    let model = lenet5();
    let err = factorize(&model, &FactorizeConfig::new(RankRule::Ratio(1.5))).unwrap_err();
    assert!(err.to_string().contains("(0, 1]"), "{err}");
    let cfg = FactorizeConfig {
        layers: Some(vec!["nope".into()]),
        ..FactorizeConfig::new(RankRule::Ratio(0.5))
    };
    let err = factorize(&model, &cfg).unwrap_err();
    assert!(err.to_string().contains("'nope'"), "{err}");
}

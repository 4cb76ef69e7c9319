//! The pipeline's sources and Evaluator on real data: LeNet-5 on MNIST scores what ONNX
//! Runtime scores, a model is perfectly faithful to itself, and a mismatched `images:`
//! size is refused before any file is read.

use std::path::PathBuf;

use whittle_data::Split;
use whittle_exec::executor::model_inputs;
use whittle_exec::InputSpec;
use whittle_pipeline::eval::{Evaluator, Reference};
use whittle_pipeline::{Ctx, DataSource, ModelSource, SilentObserver};

fn asset(relative: &str) -> PathBuf {
    whittle_data::assets_dir().join(relative)
}

fn lenet() -> ModelSource {
    ModelSource::parse(asset("models/mnist_lenet5.onnx").to_str().unwrap())
}

fn mnist() -> DataSource {
    DataSource::new(format!("mnist:{}", asset("mnist").display()))
}

#[test]
fn lenet5_top1_on_mnist_equals_onnx_runtime() {
    let model = lenet().load().unwrap();
    let data = mnist()
        .load(&model_inputs(&model), Split::Test, None)
        .unwrap();
    let ctx = Ctx::new(&SilentObserver);
    let metrics = Evaluator::new()
        .with_labelled(data, 256)
        .with_cost()
        .evaluate(&ctx, &model)
        .unwrap();
    // ONNX Runtime (scripts/ort_eval.py) classifies 9889 of the 10,000 test images correctly.
    assert_eq!(metrics.samples, Some(10000));
    assert!(
        (metrics.top1.unwrap() - 0.9889).abs() < 1e-12,
        "{metrics:?}"
    );
    assert!(metrics.top5.unwrap() > metrics.top1.unwrap());
    assert_eq!(metrics.per_class.len(), 10);
    assert_eq!(metrics.per_class[1].samples, 1135);
    // conv 32·1·9+32, conv 64·32·9+64, fc 200·3136+200, fc 10·200+10.
    assert_eq!(metrics.parameters, Some(648_226));
    // conv1 (padded) 28²·32·9, conv2 14²·64·288, fc 3136·200, fc 200·10.
    assert_eq!(
        metrics.macs,
        Some(28 * 28 * 32 * 9 + 14 * 14 * 64 * 288 + 3136 * 200 + 2000)
    );
    assert!(metrics.size_bytes.unwrap() > 4 * 648_226);
    assert_eq!(metrics.sqnr_db, None);
    assert_eq!(metrics.latency_ms_ort, None);
}

#[test]
fn a_model_is_perfectly_faithful_to_itself() {
    let model = lenet().load().unwrap();
    let ctx = Ctx::new(&SilentObserver);
    let feeds = mnist()
        .feeds(&model_inputs(&model), Split::Test, 40)
        .unwrap();
    assert_eq!(feeds.len(), 2, "batches of 32");
    let reference = Reference::new(&ctx, &model, feeds).unwrap();
    let evaluator = Evaluator::new().with_reference(reference);
    let metrics = evaluator.evaluate(&ctx, &model).unwrap();
    assert_eq!(metrics.sqnr_db, Some(f64::INFINITY));
    assert!((metrics.cosine.unwrap() - 1.0).abs() < 1e-6, "{metrics:?}");
    assert_eq!(metrics.samples, Some(40));
}

#[test]
fn a_wrong_image_size_is_refused_before_reading_files() {
    // No folder exists: only the SPEC is read.
    let lenet = vec![InputSpec {
        name: "x".into(),
        dtype: None,
        dims: Some(vec![None, Some(1), Some(28), Some(28)]),
    }];
    let source = DataSource::new("images:/nowhere?size=32x28").with_role("the calibration data");
    let err = source.check_inputs(&lenet).unwrap_err().to_string();
    assert_eq!(
        err,
        "the calibration data images:/nowhere?size=32x28 asks for images of size 32x28, but \
         the model's input 'x' takes [?, 1, 28, 28]"
    );
    let err = source
        .load(&lenet, Split::Test, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("asks for images of size 32x28"), "{err}");
    let err = source
        .feeds(&lenet, Split::Train, 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("asks for images of size 32x28"), "{err}");
    let three = DataSource::new("images:/nowhere?size=28&channels=3");
    let err = three.check_inputs(&lenet).unwrap_err().to_string();
    assert!(err.contains("size 28x28 and 3 channels"), "{err}");
    DataSource::new("images:/nowhere?size=28&channels=1")
        .check_inputs(&lenet)
        .unwrap();
    let flat = vec![InputSpec {
        name: "x".into(),
        dtype: None,
        dims: Some(vec![None, Some(784)]),
    }];
    let err = DataSource::new("images:/nowhere")
        .check_inputs(&flat)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("gives images of shape [N, C, H, W]"),
        "{err}"
    );
}

#[test]
fn sources_parse_and_show_what_they_name() {
    let zoo = ModelSource::parse("zoo:cnn:classes=4");
    assert_eq!(zoo.to_string(), "zoo:cnn:classes=4");
    assert_eq!(zoo.path(), None);
    let model = zoo.load().unwrap();
    assert_eq!(model.graph().output[0].name, "logits");
    let json = serde_json::to_string(&zoo).unwrap();
    assert_eq!(json, "\"zoo:cnn:classes=4\"");
    assert_eq!(serde_json::from_str::<ModelSource>(&json).unwrap(), zoo);
    let err = ModelSource::parse("/no/such.onnx").load().unwrap_err();
    assert!(err.to_string().contains("/no/such.onnx"), "{err}");
    let feeds = DataSource::new("feeds:/none.npz");
    assert!(!feeds.is_labelled());
    let two = ["a", "b"].map(|n| InputSpec {
        name: n.into(),
        dtype: None,
        dims: None,
    });
    let err = feeds.load(&two, Split::Test, None).unwrap_err().to_string();
    assert_eq!(
        err,
        "the data needs a labelled dataset; feeds:FILE.npz has no labels"
    );
    let calib = DataSource::new("mnist:/none").with_role("--calib-data");
    let err = calib.feeds(&two, Split::Train, 8).unwrap_err().to_string();
    assert_eq!(
        err,
        "--calib-data SPEC feeds one input, but the model has 2 (a, b); give feeds:FILE.npz \
         with one array per input"
    );
}

//! The options architecture search uses: mobilenetv3-small's searchable layout (depths,
//! kernels, expansions, se per stage) and cnn's `convs`. Defaults leave every model as it
//! was; the new layouts build the blocks they describe and run in whittle and ONNX Runtime
//! alike.

use std::collections::HashMap;
use std::process::Command;

use candle_core::Device;
use whittle_exec::{Executor, Value};
use whittle_ir::numeric::max_abs_diff;
use whittle_ir::{Model, TensorData};
use whittle_zoo::build;

/// (kernel size, group > 1) of every Conv node, in graph order.
fn convs(model: &Model) -> Vec<(i64, bool)> {
    model
        .graph()
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .map(|n| {
            let int = |name: &str| {
                n.attribute.iter().find(|a| a.name == name).map(|a| {
                    if a.ints.is_empty() {
                        a.i
                    } else {
                        a.ints[0]
                    }
                })
            };
            (
                int("kernel_shape").unwrap_or(0),
                int("group").unwrap_or(1) > 1,
            )
        })
        .collect()
}

#[test]
fn defaults_are_unchanged() {
    // The new options are left out of the recorded spec, so the bytes stay as before.
    let default = build("mobilenetv3-small").unwrap();
    assert_eq!(
        default.metadata(whittle_zoo::SPEC_KEY),
        Some("mobilenetv3-small:classes=10,dropout=0.2,input=1x28x28,seed=0,width=1.0")
    );
    // torchvision's 11 inverted residual blocks, 9 with squeeze-excite.
    assert_eq!(convs(&default).iter().filter(|c| c.1).count(), 11);
    assert_eq!(default.count_op("HardSigmoid"), 9);
    let cnn = build("cnn").unwrap();
    assert_eq!(cnn.graph().node, build("cnn:convs=1").unwrap().graph().node);
    assert_eq!(
        cnn.metadata(whittle_zoo::SPEC_KEY),
        Some("cnn:channels=32-64-128,classes=10,input=1x28x28,seed=0")
    );
    assert_eq!(convs(&cnn).len(), 3);
}

#[test]
fn the_searchable_layout_builds_the_blocks_it_names() {
    let spec = "mobilenetv3-small:depths=2-1-3,kernels=3-5-5,expansions=2-6-4,se=0-1-0,width=0.5";
    let model = build(spec).unwrap();
    whittle_ir::validate(&model).unwrap();
    let depthwise: Vec<i64> = convs(&model)
        .into_iter()
        .filter(|c| c.1)
        .map(|c| c.0)
        .collect();
    assert_eq!(
        depthwise,
        [3, 3, 5, 5, 5, 5],
        "2 + 1 + 3 blocks with their stage's kernel"
    );
    assert_eq!(
        model.count_op("HardSigmoid"),
        1,
        "squeeze-excite in the second stage only"
    );
    let cnn = build("cnn:channels=8-16,convs=2").unwrap();
    assert_eq!(convs(&cnn), [(3, false); 4]);

    // whittle and ONNX Runtime agree on both.
    let dir = whittle_testkit::scratch("zoo-search");
    let x: Vec<f32> = (0..2 * 28 * 28)
        .map(|i| ((i * 37 % 101) as f32) / 101.0)
        .collect();
    let input = TensorData::from_slice(vec![2, 1, 28, 28], &x).unwrap();
    whittle_data::npy::write_npy(&dir.join("x.npy"), &input).unwrap();
    for (name, m) in [("mobile", &model), ("cnn", &cnn)] {
        let path = dir.join(format!("{name}.onnx"));
        m.save(&path, &Default::default()).unwrap();
        let feed = HashMap::from([(
            "input".to_string(),
            Value::from_data(&input, &Device::Cpu).unwrap(),
        )]);
        let ours = Executor::new(m).unwrap().run(feed).unwrap()["logits"]
            .to_data()
            .unwrap();
        let script = "import sys, numpy as np, onnxruntime as ort; \
            s = ort.InferenceSession(sys.argv[1]); \
            np.save(sys.argv[3], s.run(None, {'input': np.load(sys.argv[2])})[0])";
        let out = dir.join(format!("{name}-ort.npy"));
        let status = Command::new("python3")
            .args(["-c", script])
            .args([&path, &dir.join("x.npy"), &out])
            .status()
            .unwrap();
        assert!(status.success());
        let theirs = whittle_data::npy::read_npy(&out).unwrap();
        assert_eq!(ours.dims(), [2, 10]);
        let diff = max_abs_diff(
            ours.to_vec::<f32>().unwrap(),
            theirs.to_vec::<f32>().unwrap(),
        );
        assert!(diff < 1e-4, "{name}: {diff}");
    }
}

#[test]
fn bad_layouts_name_the_option() {
    let err = |spec: &str| build(spec).unwrap_err().to_string();
    let e = err("mobilenetv3-small:depths=1-1-1");
    assert!(
        e.contains("depths, kernels, expansions, se") && e.contains("all or none"),
        "{e}"
    );
    let e = err("mobilenetv3-small:depths=1-1,kernels=3-7,expansions=2-2,se=0-0");
    assert!(e.contains("kernels: 7"), "{e}");
    let e = err("mobilenetv3-small:depths=1-1,kernels=3,expansions=2-2,se=0-0");
    assert!(e.contains("kernels has 1 entries, depths has 2"), "{e}");
    let e = err("mobilenetv3-small:depths=1,kernels=3,expansions=2,se=2");
    assert!(e.contains("se: '2'"), "{e}");
    let e = err(
        "mobilenetv3-small:depths=1-1-1-1-1,kernels=3-3-3-3-3,expansions=2-2-2-2-2,se=0-0-0-0-0",
    );
    assert!(e.contains("5 stages, expected 1 to 4"), "{e}");
    let e = err("cnn:convs=0");
    assert!(e.contains("'convs'"), "{e}");
}

//! An `npz:` subset of the MNIST asset for tests that need a small labelled dataset: the
//! first training and test images as `mnist:` loads them ([N, 1, 28, 28] floats in 0..1,
//! int64 labels), written by numpy. The CLI's tests reach it as `support::mnist_npz::mnist_npz`; other
//! crates' tests include this file with `#[path]`.

use std::path::Path;
use std::process::Command;

/// Writes `dir/small.npz` with the first `train` training and `test` test images of the
/// MNIST asset and returns its dataset spec.
pub fn mnist_npz(dir: &Path, train: usize, test: usize) -> String {
    let out = dir.join("small.npz");
    let code = format!(
        "import numpy as np\n\
         def images(p, n):\n    b = open(p, 'rb').read()\n    \
         return (np.frombuffer(b, np.uint8, n * 784, 16).reshape(n, 1, 28, 28) / 255.0).astype(np.float32)\n\
         def labels(p, n):\n    return np.frombuffer(open(p, 'rb').read(), np.uint8, n, 8).astype(np.int64)\n\
         d = '{dir}'\n\
         np.savez('{out}', x_train=images(d + '/train-images-idx3-ubyte', {train}), \
         y_train=labels(d + '/train-labels-idx1-ubyte', {train}), \
         x_test=images(d + '/t10k-images-idx3-ubyte', {test}), \
         y_test=labels(d + '/t10k-labels-idx1-ubyte', {test}))\n",
        dir = whittle_data::assets_dir().join("mnist").display(),
        out = out.display()
    );
    let python = std::env::var("WHITTLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(python)
        .args(["-c", &code])
        .status()
        .expect("run python3");
    assert!(status.success(), "numpy could not write {}", out.display());
    format!("npz:{}", out.display())
}

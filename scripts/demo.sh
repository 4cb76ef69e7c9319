#!/usr/bin/env bash
# The main job on its built-in default: fetch the real assets, build whittle, then inspect the
# pretrained MNIST LeNet5 and measure its accuracy on the 10,000 MNIST test images.
set -euo pipefail
cd "$(dirname "$0")/.."
export WHITTLE_ASSETS=${WHITTLE_ASSETS:-$HOME/.cache/whittle-assets}
scripts/fetch-assets.sh "$WHITTLE_ASSETS"
cargo build --release -q -p whittle-cli
whittle=target/release/whittle
model="$WHITTLE_ASSETS/models/mnist_lenet5.onnx"
$whittle inspect "$model"
echo
$whittle eval "$model" --data "mnist:$WHITTLE_ASSETS/mnist"

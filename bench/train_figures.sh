#!/usr/bin/env bash
# Trains zoo:cnn and zoo:vit-tiny on Fashion-MNIST side by side within a time budget:
# a short probe measures each model's throughput, then each trains for as many whole
# epochs as fit (the LR schedule spans exactly those epochs). Writes OUT/<model>.onnx,
# OUT/<model>.json (whittle train --json) and OUT/<model>.log.
#
#   bench/train_figures.sh FASHION_MNIST_DIR OUT_DIR BUDGET_SECONDS [CNN_THREADS VIT_THREADS]
#
# Evaluate afterwards with `whittle eval OUT/cnn.onnx --data fashion-mnist:DIR` and in
# ONNX Runtime (scripts/ort_eval.py).
set -euo pipefail
data="fashion-mnist:$1"
out="$2"
budget="$3"
cnn_threads="${4:-2}"
vit_threads="${5:-2}"
whittle="${WHITTLE:-target/release/whittle}"
mkdir -p "$out"

cnn_args=(--model zoo:cnn --optimizer adamw --lr 0.003 --lr-schedule one-cycle --batch-size 64)
vit_args=(--model zoo:vit-tiny --optimizer adamw --lr 0.001 --weight-decay 0.05
  --lr-schedule warmup-cosine --warmup-epochs 0.3 --batch-size 64)

# Images per second of a 1,280-image probe run, both models at once (as they will train).
probe() { # NAME THREADS ARGS...
  local name="$1" threads="$2"
  shift 2
  RAYON_NUM_THREADS="$threads" "$whittle" train "$@" --data "$data" --limit 1280 --epochs 1 \
    -o "$out/$name-probe.onnx" --force --json |
    python3 -c "import json,sys; print(json.load(sys.stdin)['epochs'][0]['images_per_sec'])" \
      >"$out/$name.ips"
}
start=$(date +%s)
probe cnn "$cnn_threads" "${cnn_args[@]}" &
probe vit-tiny "$vit_threads" "${vit_args[@]}" &
wait
rm -f "$out"/*-probe.onnx
left=$((budget - ($(date +%s) - start)))

# Whole epochs of 60,000 images that fit in 85% of the time left (at least one; a
# smaller --limit when not even one fits).
plan() { # IPS -> "--epochs E [--limit N]"
  python3 -c "
ips, left = float('$1'), $left * 0.85
epochs = int(ips * left // 60000)
print(f'--epochs {min(epochs, 30)}' if epochs >= 1 else f'--epochs 1 --limit {int(ips * left)}')"
}
train() { # NAME THREADS ARGS...
  local name="$1" threads="$2"
  shift 2
  # shellcheck disable=SC2046
  RAYON_NUM_THREADS="$threads" "$whittle" train "$@" --data "$data" \
    $(plan "$(cat "$out/$name.ips")") --seed 0 -o "$out/$name.onnx" --force --json \
    >"$out/$name.json" 2>"$out/$name.log"
}
train cnn "$cnn_threads" "${cnn_args[@]}" &
train vit-tiny "$vit_threads" "${vit_args[@]}" &
wait
for m in cnn vit-tiny; do
  python3 -c "
import json
j = json.load(open('$out/$m.json'))
for e in j['epochs']:
    print('$m', 'epoch', e['epoch'], 'loss %.4f' % e['loss'], 'train acc %.4f' % e['accuracy'], '%.0f img/s' % e['images_per_sec'])"
done

"""PyTorch twins of the zoo models bench/train_vs_torch.py trains, and one timed run.

Each class mirrors crates/zoo/src/models/ layer for layer (widths, kernels, strides,
padding, BatchNorm/LayerNorm epsilons, activations, dropout); initialisation differs and
does not matter for speed. Input 1x28x28 (Fashion-MNIST), 10 classes.

usage (run by train_vs_torch.py with the torch virtual environment's python, one fresh
process per configuration):
  python bench/train_vs_torch_models.py --model cnn --threads 1 --steps 40 --warmup 10 \
      --data DIR
prints one JSON line: {"images_per_s": ..., "loss": ...}.
"""
import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

BN_EPS, LN_EPS = 1e-5, 1e-5


def conv_bn(cin, cout, k, stride=1, groups=1, eps=BN_EPS, act=None):
    """zoo's conv_bn: Conv (no bias, padding k // 2), BatchNorm, optional activation."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=eps)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Cnn(nn.Module):
    """zoo:cnn: Conv3x3-BN-ReLU blocks 32-64-128, MaxPool 2x2 between, GAP, Linear."""

    def __init__(self, channels=(32, 64, 128)):
        super().__init__()
        blocks, cin = [], 1
        for i, c in enumerate(channels):
            blocks.append(conv_bn(cin, c, 3, act=nn.ReLU))
            if i + 1 < len(channels):
                blocks.append(nn.MaxPool2d(2, 2))
            cin = c
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a = conv_bn(cin, cout, 3, stride, act=nn.ReLU)
        self.b = conv_bn(cout, cout, 3)
        self.short = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        s = x if self.short is None else self.short(x)
        return F.relu(self.b(self.a(x)) + s)


class ResNet(nn.Module):
    """zoo:resnet (ResNet-8): stem 3x3-16, stages 16-32-64 of one basic block each."""

    def __init__(self, widths=(16, 32, 64), blocks=1):
        super().__init__()
        layers, cin = [conv_bn(1, widths[0], 3, act=nn.ReLU)], widths[0]
        for s, w in enumerate(widths):
            for k in range(blocks):
                layers.append(BasicBlock(cin, w, 2 if s > 0 and k == 0 else 1))
                cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def make_divisible(v):
    r = max(int(v + 4) // 8 * 8, 8)
    return r + 8 if r < 0.9 * v else r


class SqueezeExcite(nn.Module):
    def __init__(self, c):
        super().__init__()
        s = make_divisible(c // 4)
        self.fc1, self.fc2 = nn.Conv2d(c, s, 1), nn.Conv2d(s, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    def __init__(self, cin, k, exp, out, se, act, stride):
        super().__init__()
        eps = 1e-3
        layers = [] if exp == cin else [conv_bn(cin, exp, 1, eps=eps, act=act)]
        layers.append(conv_bn(exp, exp, k, stride, groups=exp, eps=eps, act=act))
        if se:
            layers.append(SqueezeExcite(exp))
        layers.append(conv_bn(exp, out, 1, eps=eps))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == out

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


# (kernel, expanded, out, SE, activation, stride): zoo's BLOCKS (Table 2 of the paper).
BNECK = [(3, 16, 16, True, nn.ReLU, 2), (3, 72, 24, False, nn.ReLU, 2),
         (3, 88, 24, False, nn.ReLU, 1), (5, 96, 40, True, nn.Hardswish, 2),
         (5, 240, 40, True, nn.Hardswish, 1), (5, 240, 40, True, nn.Hardswish, 1),
         (5, 120, 48, True, nn.Hardswish, 1), (5, 144, 48, True, nn.Hardswish, 1),
         (5, 288, 96, True, nn.Hardswish, 2), (5, 576, 96, True, nn.Hardswish, 1),
         (5, 576, 96, True, nn.Hardswish, 1)]


class MobileNetV3Small(nn.Module):
    """zoo:mobilenetv3-small at width 1.0, dropout 0.2."""

    def __init__(self):
        super().__init__()
        layers, cin = [conv_bn(1, 16, 3, 2, eps=1e-3, act=nn.Hardswish)], 16
        for k, exp, out, se, act, stride in BNECK:
            layers.append(InvertedResidual(cin, k, exp, out, se, act, stride))
            cin = out
        layers.append(conv_bn(cin, 6 * cin, 1, eps=1e-3, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(6 * cin, 1024), nn.Hardswish(), nn.Dropout(0.2),
                                  nn.Linear(1024, 10))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class EncoderBlock(nn.Module):
    def __init__(self, dim, heads, mlp, dropout):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim, eps=LN_EPS), nn.LayerNorm(dim, eps=LN_EPS)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.fc1, self.fc2, self.drop = nn.Linear(dim, mlp), nn.Linear(mlp, dim), nn.Dropout(dropout)

    def attention(self, x):
        n, t, d = x.shape
        h = self.heads
        q = self.q(x).view(n, t, h, d // h).transpose(1, 2)
        k = self.k(x).view(n, t, h, d // h).permute(0, 2, 3, 1)
        v = self.v(x).view(n, t, h, d // h).transpose(1, 2)
        w = torch.softmax(q @ k / (d // h) ** 0.5, dim=-1)
        return self.o((w @ v).transpose(1, 2).reshape(n, t, d))

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.fc2(self.drop(F.gelu(self.fc1(self.ln2(x)))))


class VitTiny(nn.Module):
    """zoo:vit-tiny: patch 4, dim 128, depth 5, 4 heads, MLP 304, dropout 0.1, exact GELU,
    explicit attention (MatMul, Softmax) as the ONNX graph has it."""

    def __init__(self, patch=4, dim=128, depth=5, heads=4, mlp=304, dropout=0.1):
        super().__init__()
        self.embed = nn.Conv2d(1, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, (28 // patch) ** 2, dim) * 0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, mlp, dropout) for _ in range(depth)))
        self.ln = nn.LayerNorm(dim, eps=LN_EPS)
        self.drop, self.head = nn.Dropout(dropout), nn.Linear(dim, 10)

    def forward(self, x):
        y = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.drop(self.ln(self.blocks(y)).mean(1)))


MODELS = {"cnn": Cnn, "resnet": ResNet, "mobilenetv3-small": MobileNetV3Small, "vit-tiny": VitTiny}


def fashion(data_dir, count):
    """The first `count` Fashion-MNIST training images (scaled to [0, 1]) and labels."""
    with gzip.open(os.path.join(data_dir, "train-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16)[: count * 784]
    with gzip.open(os.path.join(data_dir, "train-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:count]
    x = torch.from_numpy(x.reshape(count, 1, 28, 28).astype(np.float32) / 255.0)
    return x, torch.from_numpy(y.astype(np.int64))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--steps", type=int, required=True, help="timed steps")
    p.add_argument("--warmup", type=int, required=True, help="untimed steps before them")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--data", required=True, help="Fashion-MNIST directory (idx .gz files)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = MODELS[a.model]().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    x, y = fashion(a.data, (a.warmup + a.steps) * a.batch)
    start, loss = None, 0.0
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            start = time.perf_counter()
        xb = x[step * a.batch:(step + 1) * a.batch]
        yb = y[step * a.batch:(step + 1) * a.batch]
        opt.zero_grad(set_to_none=True)
        out = F.cross_entropy(model(xb), yb)
        out.backward()
        opt.step()
        loss = out.item()
    seconds = time.perf_counter() - start
    print(json.dumps({"images_per_s": a.steps * a.batch / seconds, "loss": loss}))


if __name__ == "__main__":
    main()

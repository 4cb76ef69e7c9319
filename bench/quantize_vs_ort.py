"""Quantization with whittle against ONNX Runtime's quantization tools.

usage: python3 bench/quantize_vs_ort.py [--whittle BIN] [--write docs/BENCHMARKS.md]

Models and data:
  * MNIST LeNet5: calibration on the first 512 MNIST train images, accuracy on all 10k
    test images, both in ONNX Runtime.
  * paraphrase-MiniLM-L3-v2: fidelity is the mean cosine of the mean-pooled sentence
    embeddings (output "461") to the float32 model's, on 64 real sentences taken from
    Debian's /usr/share/common-licenses and /usr/share/doc README files, tokenised with
    minilm-vocab.txt by the small WordPiece tokenizer below. Its static rows calibrate on
    64 other sentences, given to whittle as feeds:FILE.npz (arrays input_ids and
    attention_mask) and to ORT's quantize_static through a CalibrationDataReader.

Rows: whittle `quantize` (dynamic; static with each calibration method, per-tensor and
per-channel; fp16; int4) beside ORT's quantize_dynamic / quantize_static (same
calibration images, CalibrationMethod MinMax / Entropy / Percentile / Distribution), its
float16 converter and its MatMulNBitsQuantizer. Each row: accuracy (or cosine), size,
ORT latency at batch 1 and 32 (1 thread, median), wall time to quantize. A second table
gives the peak RSS of static calibration with 512 and 5,000 samples.

The ORT MatMulNBits rows need the `onnx_ir` package (`pip install onnx_ir`); without it
they are kept as skipped with the import error.

whittle is called as `BIN quantize MODEL -o OUT --mode M [...] --json`. A row whose
command fails (e.g. a mode the binary does not have yet) is kept with its error as a
note.
"""
import argparse
import glob
import gzip
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.environ.get("WHITTLE_ASSETS", os.path.expanduser("~/.cache/whittle-assets"))
MODELS = os.path.join(ASSETS, "models")
MNIST = os.path.join(ASSETS, "mnist")
LENET = os.path.join(MODELS, "mnist_lenet5.onnx")
MINILM = os.path.join(MODELS, "paraphrase-MiniLM-L3-v2.onnx")
VOCAB = os.path.join(MODELS, "minilm-vocab.txt")
CALIB = 512
METHODS = ["minmax", "entropy", "percentile", "mse"]
BEGIN, END = "<!-- quantize-vs-ort:begin -->", "<!-- quantize-vs-ort:end -->"
ENCODERS_BEGIN, ENCODERS_END = "<!-- quantize-encoders:begin -->", "<!-- quantize-encoders:end -->"


# ---------------------------------------------------------------- data


def read_idx(name):
    with open(os.path.join(MNIST, name), "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def mnist(split, limit=None):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(f"{prefix}-images-idx3-ubyte")[:limit].astype(np.float32) / 255.0
    y = read_idx(f"{prefix}-labels-idx1-ubyte")[:limit].astype(np.int64)
    return x[:, None, :, :], y


def read_text(path):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="ignore") as f:
            return f.read()
    except OSError:
        return ""


def sentences(count=64):
    """Distinct prose sentences of 8-40 words from Debian's documentation."""
    paths = sorted(glob.glob("/usr/share/common-licenses/*")) + sorted(
        glob.glob("/usr/share/doc/*/README*")
    )
    found, seen = [], set()
    for path in paths:
        text = " ".join(read_text(path).split())
        for s in re.split(r"(?<=[.!?])\s+", text):
            words = s.split()
            if 8 <= len(words) <= 40 and s not in seen and sum(c.isalpha() for c in s) > 0.7 * len(s):
                seen.add(s)
                found.append(s)
                if len(found) == count:
                    return found
    return found


class WordPiece:
    """BERT's uncased WordPiece: lower-case, strip accents, split punctuation, greedy
    longest-match sub-words with the ## continuation prefix."""

    def __init__(self, vocab_path):
        with open(vocab_path, encoding="utf-8") as f:
            self.ids = {tok.rstrip("\n"): i for i, tok in enumerate(f)}

    def words(self, text):
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        out = []
        for chunk in text.split():
            out.extend(t for t in re.split(r"([^\w]|_)", chunk) if t)
        return out

    def piece_ids(self, word):
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.ids:
                    ids.append(self.ids[sub])
                    break
                end -= 1
            if end == start:
                return [self.ids["[UNK]"]]
            start = end
        return ids

    def encode(self, text, max_len=128):
        ids = [self.ids["[CLS]"]]
        for w in self.words(text):
            ids.extend(self.piece_ids(w))
        return ids[: max_len - 1] + [self.ids["[SEP]"]]


def minilm_batch(texts, tokenizer, width=None):
    """input_ids and attention_mask of `texts`, padded to `width` tokens (default: the
    longest)."""
    encoded = [tokenizer.encode(t) for t in texts]
    width = width or max(len(e) for e in encoded)
    ids = np.zeros((len(encoded), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = e
        mask[i, : len(e)] = 1
    return {"input_ids": ids, "attention_mask": mask}


# ---------------------------------------------------------------- measuring


def session(path, threads=1):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def lenet_accuracy(path, x, y):
    s = session(path)
    name = s.get_inputs()[0].name
    pred = np.concatenate([s.run(None, {name: x[i : i + 500]})[0].argmax(1) for i in range(0, len(x), 500)])
    return float((pred == y).mean())


def minilm_embeddings(path, feeds):
    s = session(path)
    names = [o.name for o in s.get_outputs()]
    rows = [s.run(["461"], {k: v[i : i + 1, : int(feeds["attention_mask"][i].sum())] for k, v in feeds.items()})[0]
            for i in range(len(feeds["input_ids"]))] if "461" in names else []
    return np.concatenate(rows)


def mean_cosine(a, b):
    num = (a * b).sum(1)
    return float((num / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())


def latencies_ms(paths, feeds, runs, rounds=5):
    """Median latency (ms) of each model over `runs` runs, taken in `rounds` rounds that
    visit every model in turn, so a change of the machine's speed during the bench touches
    every row alike instead of the rows measured at that moment."""
    sessions = [session(p) for p in paths]
    for s in sessions:
        for _ in range(3):
            s.run(None, feeds)
    times = [[] for _ in paths]
    for _ in range(rounds):
        for s, t in zip(sessions, times):
            for _ in range(max(1, runs // rounds)):
                start = time.perf_counter()
                s.run(None, feeds)
                t.append(1e3 * (time.perf_counter() - start))
    return [statistics.median(t) for t in times]


def with_latencies(measured, feeds1, feeds32, runs1, runs32, digits):
    """Fills the b1 / b32 latency cells of `measured` rows [(cells, path or None), ...]:
    the cells hold the placeholders "{b1}" and "{b32}"."""
    ran = [(cells, path) for cells, path in measured if path]
    paths = [path for _, path in ran]
    b1, b32 = latencies_ms(paths, feeds1, runs1), latencies_ms(paths, feeds32, runs32)
    rows = []
    for cells, path in measured:
        if path:
            i = paths.index(path)
            cells = [c.replace("{b1}", f"{b1[i]:.{digits}f}").replace("{b32}", f"{b32[i]:.{digits}f}") for c in cells]
        rows.append(cells)
    return rows


def child_rss(cmd):
    """Peak RSS (MiB) and seconds of a child process.

    The child is started through /usr/bin/time: a child forked straight from this (large)
    Python process would inherit its memory high-water mark, so wait4's ru_maxrss would
    report this process's size rather than the child's.
    """
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "maxrss_kib=%M", *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except OSError as e:  # the binary is missing
        return False, 0.0, 0.0, str(e)
    seconds = time.perf_counter() - start
    err = proc.stderr.decode(errors="ignore").strip().splitlines()
    rss = next((int(l.split("=")[1]) for l in reversed(err) if l.startswith("maxrss_kib=")), 0)
    err = [l for l in err if not l.startswith("maxrss_kib=") and not l.startswith("Command exited")]
    note = next((line for line in err if line.startswith("error")), err[-1] if err else "")
    return proc.returncode == 0, seconds, rss / 1024, note


# ---------------------------------------------------------------- quantizers


def repeated(cmd, runs):
    """child_rss `runs` times: the median seconds (this VM moves 30% run to run, more on the
    first run after a large process) and the largest peak RSS."""
    results = [child_rss(cmd) for _ in range(runs)]
    ok = all(r[0] for r in results)
    seconds = statistics.median(r[1] for r in results)
    return ok, seconds, max(r[2] for r in results), results[-1][3]


class Bench:
    def __init__(self, args, tmp):
        self.args, self.tmp, self.count = args, tmp, 0

    def out_path(self, tag):
        self.count += 1
        return os.path.join(self.tmp, f"{self.count:02d}_{tag}.onnx")

    def whittle(self, model, mode, extra=(), tag=None):
        out = self.out_path(tag or mode)
        # --no-latency: the ONNX Runtime timing quantize adds would count in its time and memory.
        cmd = [self.args.whittle, "quantize", model, "-o", out, "--mode", mode, *extra, "--json", "--force",
               "--no-latency"]
        ok, seconds, rss, err = repeated(cmd, self.args.runs)
        return (out if ok else None), seconds, rss, err

    def ort(self, code, out):
        """Runs ORT's quantization in a child Python (for wall time and peak RSS)."""
        prelude = "import sys, numpy as np\nsys.path.insert(0, %r)\nfrom quantize_vs_ort import *\n" % os.path.dirname(
            os.path.abspath(__file__)
        )
        ok, seconds, rss, err = repeated([sys.executable, "-c", prelude + code.replace("{out}", out)], self.args.runs)
        return (out if ok else None), seconds, rss, err


ORT_STATIC = """
from onnxruntime.quantization import quantize_static, CalibrationDataReader, CalibrationMethod, QuantFormat
x, _ = mnist("train", {samples})
class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = iter([{{"input": x[i:i+1]}} for i in range(len(x))])
    def get_next(self):
        return next(self.it, None)
quantize_static({model!r}, "{{out}}", Reader(), quant_format=QuantFormat.QDQ, per_channel={per_channel},
                calibrate_method=CalibrationMethod.{method})
"""
ORT_DYNAMIC = """
from onnxruntime.quantization import quantize_dynamic
quantize_dynamic({model!r}, "{{out}}")
"""
ORT_FP16 = """
import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16
onnx.save(convert_float_to_float16(onnx.load({model!r}), keep_io_types=True), "{{out}}")
"""
ORT_INT4 = """
import onnx
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer, DefaultWeightOnlyQuantConfig
cfg = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=False)
q = MatMulNBitsQuantizer(onnx.load({model!r}), algo_config=cfg)
q.process()
q.model.save_model_to_file("{{out}}")
"""
ORT_STATIC_FEEDS = """
from onnxruntime.quantization import quantize_static, CalibrationDataReader, CalibrationMethod, QuantFormat
c = dict(np.load({calib!r}))
class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = iter([{{k: v[i:i+1] for k, v in c.items()}} for i in range(len(c["input_ids"]))])
    def get_next(self):
        return next(self.it, None)
quantize_static({model!r}, "{{out}}", Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                calibrate_method=CalibrationMethod.{method})
"""
ORT_METHOD = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile", "mse": "Distribution"}
# whittle's default histogram size, given to ORT's entropy calibrator for a same-settings row.
ENTROPY_BINS = 2048


def use_histogram_bins(bins, quantized_bins=128):
    """Makes ORT's quantize_static build entropy histograms of `bins` bins searched with
    `quantized_bins` levels (TensorRT's 128). Its defaults, 128 and 128, leave the KL search
    one candidate, the full range, so ORT's Entropy is then MinMax."""
    import onnxruntime.quantization  # noqa: F401 (loads the module patched below)

    # The package re-exports a function `quantize` under the submodule's name.
    qz = sys.modules["onnxruntime.quantization.quantize"]
    create = qz.create_calibrator

    def with_bins(*args, extra_options=None, **kwargs):
        options = dict(extra_options or {}, num_bins=bins, num_quantized_bins=quantized_bins)
        return create(*args, extra_options=options, **kwargs)

    qz.create_calibrator = with_bins


def lenet_rows(b, quick):
    x_test, y_test = mnist("test")
    calib = f"mnist:{MNIST}"
    jobs = [("fp32", "-", lambda: (LENET, 0.0, None, ""))]
    jobs.append(("whittle dynamic", "-", lambda: b.whittle(LENET, "dynamic")))
    jobs.append(("ORT quantize_dynamic", "-", lambda: b.ort(ORT_DYNAMIC.format(model=LENET), b.out_path("ort_dyn"))))
    for per_channel in (False, True):
        gran = "per-channel" if per_channel else "per-tensor"
        for m in METHODS[: 1 if quick else 4]:
            extra = ["--calib-data", calib, "--calib-samples", str(CALIB), "--calibration", m]
            extra += ["--per-channel"] if per_channel else []
            jobs.append((f"whittle static {m}", gran, lambda e=extra, m=m: b.whittle(LENET, "static", e, f"static_{m}")))
            code = ORT_STATIC.format(samples=CALIB, model=LENET, per_channel=per_channel, method=ORT_METHOD[m])
            jobs.append((f"ORT quantize_static {ORT_METHOD[m]}", gran,
                         lambda c=code: b.ort(c, b.out_path("ort_static"))))
            if m == "entropy":
                code = f"use_histogram_bins({ENTROPY_BINS})\n" + code
                jobs.append((f"ORT quantize_static Entropy, {ENTROPY_BINS} bins", gran,
                             lambda c=code: b.ort(c, b.out_path("ort_static"))))
    jobs.append(("whittle fp16", "-", lambda: b.whittle(LENET, "fp16")))
    jobs.append(("ORT float16 converter", "-", lambda: b.ort(ORT_FP16.format(model=LENET), b.out_path("ort_fp16"))))
    jobs.append(("whittle int4 (block 32)", "-", lambda: b.whittle(LENET, "int4", ["--block-size", "32"])))
    jobs.append(("ORT MatMulNBits (block 32)", "-", lambda: b.ort(ORT_INT4.format(model=LENET), b.out_path("ort_int4"))))
    feeds1, feeds32 = {"input": x_test[:1]}, {"input": x_test[:32]}
    measured = []
    for name, gran, job in jobs:
        path, seconds, _, err = job()
        if path is None:
            measured.append(([name, gran, "-", "-", "-", "-", f"{seconds:.1f}", f"skipped: {err[:80]}"], None))
            continue
        try:
            acc = lenet_accuracy(path, x_test, y_test)
            size = os.path.getsize(path)
            measured.append(([name, gran, f"{100 * acc:.2f}%", f"{size / 1024:.0f} KiB", "{b1}", "{b32}",
                              f"{seconds:.1f}" if seconds else "-", ""], path))
        except Exception as e:  # the emitted model does not run in ORT
            measured.append(([name, gran, "-", "-", "-", "-", f"{seconds:.1f}", f"ORT failed: {str(e)[:80]}"], None))
    return with_latencies(measured, feeds1, feeds32, 200, 50, 3)


def minilm_rows(b):
    tok = WordPiece(VOCAB)
    texts = sentences(64)
    feeds = minilm_batch(texts, tok)
    ref = minilm_embeddings(MINILM, feeds)
    seq = 64
    lat1 = {k: np.ones((1, seq), dtype=np.int64) * (101 if k == "input_ids" else 1) for k in feeds}
    lat32 = {k: np.repeat(v, 32, axis=0) for k, v in lat1.items()}
    jobs = [
        ("fp32", lambda: (MINILM, 0.0, None, "")),
        ("whittle dynamic", lambda: b.whittle(MINILM, "dynamic")),
        ("ORT quantize_dynamic", lambda: b.ort(ORT_DYNAMIC.format(model=MINILM), b.out_path("ort_dyn"))),
        ("whittle fp16", lambda: b.whittle(MINILM, "fp16")),
        ("ORT float16 converter", lambda: b.ort(ORT_FP16.format(model=MINILM), b.out_path("ort_fp16"))),
        ("whittle int4 (block 32)", lambda: b.whittle(MINILM, "int4", ["--block-size", "32"])),
        ("ORT MatMulNBits (block 32)", lambda: b.ort(ORT_INT4.format(model=MINILM), b.out_path("ort_int4"))),
    ]
    jobs += minilm_static_jobs(b)
    measured = []
    for name, job in jobs:
        path, seconds, _, err = job()
        if path is None:
            measured.append(([name, "-", "-", "-", "-", f"{seconds:.1f}", f"skipped: {err[:80]}"], None))
            continue
        try:
            cos = mean_cosine(ref, minilm_embeddings(path, feeds))
            size = os.path.getsize(path) / 2**20
            measured.append(([name, f"{cos:.5f}", f"{size:.1f} MiB", "{b1}", "{b32}",
                              f"{seconds:.1f}" if seconds else "-", ""], path))
        except Exception as e:
            measured.append(([name, "-", "-", "-", "-", f"{seconds:.1f}", f"ORT failed: {str(e)[:80]}"], None))
    return with_latencies(measured, lat1, lat32, 20, 5, 2), len(texts)


def minilm_static_jobs(b):
    """Static QDQ per-channel rows, calibrated on 64 sentences other than the measured ones."""
    calib = os.path.join(b.tmp, "minilm_calib.npz")
    np.savez(calib, **minilm_batch(sentences(128)[64:], WordPiece(VOCAB)))
    jobs = []
    for m in ("minmax", "entropy", "percentile"):
        extra = ["--calib-data", f"feeds:{calib}", "--per-channel", "--calibration", m]
        jobs.append((f"whittle static {m} per-channel",
                     lambda e=extra, m=m: b.whittle(MINILM, "static", e, f"static_{m}")))
        code = ORT_STATIC_FEEDS.format(calib=calib, model=MINILM, method=ORT_METHOD[m])
        jobs.append((f"ORT quantize_static {ORT_METHOD[m]} per-channel",
                     lambda c=code: b.ort(c, b.out_path("ort_static"))))
    extra = ["--calib-data", f"feeds:{calib}", "--per-channel", "--calibration", "percentile", "--reduce-range"]
    jobs.append(("whittle static percentile per-channel --reduce-range",
                 lambda: b.whittle(MINILM, "static", extra, "static_percentile_rr")))
    return jobs


def stacked_minilm(path, out):
    """A 6-layer MiniLM-class encoder with real weights: MiniLM-L3 with its three encoder
    layers run twice (layers 4-6 copy layers 1-3, weights included, so it has six layers'
    parameters), written to `out`."""
    import onnx

    m = onnx.load(path)
    g = m.graph
    layers = [n for n in g.node if "/encoder/layer." in n.name]
    made = {o for n in layers for o in n.output}
    inits = {i.name: i for i in g.initializer}
    first_in = next(i for i in layers[0].input if i not in made and i not in inits)
    last_out = layers[-1].output[0]
    copies, copied_inits = [], {}
    for n in layers:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.name = n.name + "_again"
        for k, x in enumerate(c.input):
            if x in made:
                c.input[k] = x + "_again"
            elif x == first_in:
                c.input[k] = last_out
            elif x in inits:
                copied_inits.setdefault(x, x + "_again")
                c.input[k] = copied_inits[x]
        for k, y in enumerate(c.output):
            c.output[k] = y + "_again"
        copies.append(c)
    for n in g.node:
        if n not in layers:
            n.input[:] = [last_out + "_again" if x == last_out else x for x in n.input]
    at = max(i for i, n in enumerate(g.node) if "/encoder/layer." in n.name) + 1
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(nodes[:at] + copies + nodes[at:])
    for old, new in copied_inits.items():
        t = onnx.TensorProto()
        t.CopyFrom(inits[old])
        t.name = new
        g.initializer.append(t)
    onnx.save(m, out)
    return out


# Static INT8 of transformer encoders (issue 16's goal): calibration sentences and their
# padded length.
ENCODER_CALIB, ENCODER_SEQ = 128, 128


def encoder_rows(b):
    """Static INT8 (MinMax, per-channel QDQ) of MiniLM-L3 and of the 6-layer encoder of
    `stacked_minilm`, calibrated on ENCODER_CALIB sentences padded to ENCODER_SEQ tokens:
    whittle's and ORT's wall time and peak RSS (median and largest of --runs runs) and
    the cosine of each result to FP32 on 64 other sentences."""
    tok = WordPiece(VOCAB)
    texts = sentences(64 + ENCODER_CALIB)
    calib = os.path.join(b.tmp, "encoder_calib.npz")
    np.savez(calib, **minilm_batch(texts[64:], tok, ENCODER_SEQ))
    feeds = minilm_batch(texts[:64], tok)
    six = stacked_minilm(MINILM, os.path.join(b.tmp, "minilm_6_layers.onnx"))
    rows = []
    for name, model in (("MiniLM-L3", MINILM), ("6-layer (MiniLM-L3's layers twice)", six)):
        ref = minilm_embeddings(model, feeds)
        extra = ["--calib-data", f"feeds:{calib}", "--calib-samples", str(ENCODER_CALIB), "--per-channel",
                 "--calibration", "minmax"]
        mine = b.whittle(model, "static", extra, "encoder")
        theirs = b.ort(ORT_STATIC_FEEDS.format(calib=calib, model=model, method="MinMax"), b.out_path("ort_encoder"))
        row = [name]
        for path, seconds, rss, err in (mine, theirs):
            cos = f"{mean_cosine(ref, minilm_embeddings(path, feeds)):.5f}" if path else f"failed: {err[:60]}"
            row += [f"{seconds:.2f}", f"{rss:.0f}", cos]
        ok = mine[0] and theirs[0]
        row += [f"{mine[1] / theirs[1]:.2f}x" if ok else "-", f"{mine[2] / theirs[2]:.2f}x" if ok else "-"]
        rows.append(row)
    return rows


def encoder_table(b):
    load = os.getloadavg()
    return "\n".join([
        f"Static INT8 (MinMax, per-channel QDQ), {ENCODER_CALIB} calibration sentences padded to {ENCODER_SEQ} "
        f"tokens; seconds: median of {b.args.runs} runs of each tool (whittle's, then ORT's), peak RSS: the largest; "
        f"cosine of the sentence embeddings to FP32 on 64 other sentences. Load average at the start "
        f"{load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} (2 cores).",
        "",
        table(["model", "whittle s", "whittle MiB", "whittle cosine", "ORT s", "ORT MiB", "ORT cosine",
               "time ratio", "memory ratio"], encoder_rows(b)),
    ])


def rss_rows(b):
    rows = []
    for samples in (512, 5000):
        extra = ["--calib-data", f"mnist:{MNIST}", "--calib-samples", str(samples), "--calibration", "minmax"]
        path, seconds, rss, err = b.whittle(LENET, "static", extra, f"rss_{samples}")
        rows.append(["whittle static minmax", str(samples), f"{rss:.0f}" if path else "-",
                     f"{seconds:.1f}", "" if path else f"skipped: {err[:80]}"])
        code = ORT_STATIC.format(samples=samples, model=LENET, per_channel=False, method="MinMax")
        path, seconds, rss, err = b.ort(code, b.out_path("ort_rss"))
        rows.append(["ORT quantize_static MinMax", str(samples), f"{rss:.0f}" if path else "-",
                     f"{seconds:.1f}", "" if path else f"failed: {err[:80]}"])
    return rows


def write_section(path, text, begin, end, heading, command):
    """Puts `text` between the `begin` and `end` markers of the Markdown file at `path`,
    or appends it under a new `heading` section naming the `command` that made it."""
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    block = f"{begin}\n{text}\n{end}"
    if begin in doc:
        doc = doc[: doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc += f"\n## {heading}\n\n`{command}`\n\n{block}\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--whittle", default=os.path.join(ROOT, "target/release/whittle"))
    p.add_argument("--write", help="markdown file whose marked section receives the tables")
    p.add_argument("--quick", action="store_true", help="minmax only, no MiniLM, no RSS table")
    p.add_argument("--runs", type=int, default=3, help="quantize runs per row; the table gives the median time")
    p.add_argument("--encoders", action="store_true",
                   help="only the table of static INT8 of transformer encoders (its own marked section)")
    args = p.parse_args()
    if args.encoders:
        with tempfile.TemporaryDirectory() as tmp:
            text = encoder_table(Bench(args, tmp))
        print(text)
        if args.write:
            write_section(args.write, text, ENCODERS_BEGIN, ENCODERS_END, "Static INT8 of transformer encoders",
                          "python3 bench/quantize_vs_ort.py --encoders --write docs/BENCHMARKS.md")
        return
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(args, tmp)
        lenet = lenet_rows(b, args.quick)
        minilm, n_sent = ([], 0) if args.quick else minilm_rows(b)
        rss = [] if args.quick else rss_rows(b)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    parts = [
        f"Machine: {cpu}, {os.cpu_count()} cores, ONNX Runtime {ort.__version__}. Latency: ORT, 1 thread, "
        "default graph optimisations, median over 5 rounds that visit every model in turn. Quantize time: wall seconds of the quantizing process, "
        f"median of {args.runs} runs.",
        "",
        f"**MNIST LeNet5** (calibration: first {CALIB} train images; accuracy: all 10k test images)",
        "",
        table(["method", "granularity", "accuracy", "size", "b1 ms", "b32 ms", "quantize s", "note"], lenet),
    ]
    if minilm:
        parts += ["", f"**paraphrase-MiniLM-L3-v2** (mean cosine of sentence embeddings to fp32 on {n_sent} "
                  "Debian documentation sentences; latency at sequence length 64)", "",
                  table(["method", "cosine", "size", "b1 ms", "b32 ms", "quantize s", "note"], minilm)]
    if rss:
        parts += ["", "**Peak RSS of static calibration** (LeNet5, minmax, per-tensor)", "",
                  table(["tool", "samples", "peak RSS MiB", "seconds", "note"], rss)]
    text = "\n".join(parts)
    print(text)
    if args.write:
        write_section(args.write, text, BEGIN, END, "Quantization against ONNX Runtime",
                      "python3 bench/quantize_vs_ort.py --write docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()

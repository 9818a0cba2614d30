"""Side-by-side benchmark: keras_lightnets against what a user would pick instead.

For each variant, in one process and interleaved round by round, the median
of `--runs` timed calls after warm-up (spread over 4 interpreters or sessions
of each file, used in turn, made once every file is written, alternating
between files: see `made_in_turns`) of: TFLite float32 and int8 latency
(ai-edge-litert, 1 thread and all threads, batch 1; int8 post-training and,
when keras_lightnets.optimize imports, from the TF-MOT QAT graph), ONNX Runtime
latency (1 thread, NCHW input as torchvision's exports take), Keras
`predict_on_batch` latency at batch 1, throughput at batch 32 and training
throughput at batch 32 (MobileNetV2); plus file sizes,
params and MACs. Models get random weights shaped like trained ones (see
`trained_like`): latency does not depend on the values, int8 files do.
Peers, measured in the same rounds: keras.applications' MobileNet/V2/V3 in
the same formats, torchvision's models exported with `torch.onnx.export` and
run in the same ONNX Runtime, and Google's own MobileNetV2 int8 TFLite files
from ../shared/data/weights. Achieved GMAC/s is compared with the measured
peak of a large float32 matmul on this machine.

Writes `benchmark.md`, `benchmark.json` and `latency_vs_top1.png` to
`--out` (default benchmarks/results) and prints the table.

    python benchmarks/run.py                      # the full run
    python benchmarks/run.py --variants mobilenet_v3_small_075 --runs 3 --quick

`--quick` times our files only (no peers, no QAT, no training), for smoke tests.
The targets the ratios are checked against are benchmarks/targets.py's.
"""

import argparse
import functools
import json
import os
import pathlib
import platform
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Benchmark the checkout this script belongs to, not whatever copy is installed,
# with the helpers beside this script.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import targets  # noqa: E402
import timing  # noqa: E402
from timing import (  # noqa: E402, F401  (run.X: the investigations' names)
    INSTANCES,
    SHARED,
    Runner,
    in_turn,
    interleave,
    made_in_turns,
    matmul_peak_gmacs,
    model_domain,
    tflite_instance,
    trained_like,
)

DEFAULT_VARIANTS = [
    "mobilenet_v1_100",
    "mobilenet_v2_100",
    "mobilenet_v3_large_100",
    "mobilenet_v3_small_100",
    "shufflenet_v2_100",
    "shufflenet_v1_g3_100",
    "squeezenet_1_1",
    "mnasnet_100",
]
SIZE = 224
# Also timed without its normalization layer, for the ShuffleNetV2 / MobileNetV2 target:
# MobileNetV2's graph has none (its callers normalize), so the two networks then do
# the same job.
NORMALIZED_INPUT = "shufflenet_v2_100"

# Peers per variant. Columns: keras.applications factory and kwargs, torchvision
# builder name (exported to ONNX), Google TFLite files (name -> shared file).
PEERS = {
    "mobilenet_v1_100": ("MobileNet", {"alpha": 1.0}, None, {}),
    "mobilenet_v2_100": ("MobileNetV2", {"alpha": 1.0}, "mobilenet_v2", {
        "google_int8_ptq": "mobilenet_v2_1.0_224_int8_ptq_reference.tflite",
        "google_uint8_qat": "mobilenet_v2_1.0_224_uint8_qat_reference.tflite",
    }),
    "mobilenet_v3_large_100": ("MobileNetV3Large", {"alpha": 1.0}, "mobilenet_v3_large", {}),
    "mobilenet_v3_small_100": ("MobileNetV3Small", {"alpha": 1.0}, "mobilenet_v3_small", {}),
    "shufflenet_v2_100": (None, {}, "shufflenet_v2_x1_0", {}),
    "squeezenet_1_1": (None, {}, "squeezenet1_1", {}),
    "mnasnet_100": (None, {}, "mnasnet1_0", {}),
}


# -- timing --------------------------------------------------------------------------------


def onnx_instance(path, threads=1):
    """One ONNX Runtime session: a call running one inference."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in inp.shape]
    feed = {inp.name: np.random.default_rng(0).uniform(0, 1, shape).astype("float32")}
    return lambda: session.run(None, feed)


def keras_predict_call(model, batch):
    x = np.random.default_rng(0).uniform(0, 1, (batch, SIZE, SIZE, 3)).astype("float32")
    return lambda: model.predict_on_batch(x)


def keras_train_call(model, batch):
    import keras

    x = np.random.default_rng(0).uniform(0, 1, (batch, SIZE, SIZE, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(batch) % 1000, 1000)
    model.compile(optimizer=keras.optimizers.SGD(0.001), loss="categorical_crossentropy")
    return lambda: model.train_on_batch(x, y)


# -- building the artifacts ---------------------------------------------------------------


def calibration_images(count=32):
    """Real photos when ../shared is there (raw 0-255 RGB), else smooth noise."""
    return timing.calibration_images(SIZE, count)


def export_all(model, prefix, data, quick, strict=True, qat=False):
    """Float32 and int8 TFLite and ONNX files of one Keras model: `({kind: path}, notes)`.

    Our float files must reproduce the model (export verification); int8 files
    and peers' files that do not are timed all the same, noted (`timing.write_file`).
    """
    from keras_lightnets import export

    notes = []
    calibration = data[: 8 if quick else 32]
    files = timing.tflite_files(model, prefix, data, calibration, notes, strict)
    if qat:
        # TF-MOT's graph, calibrated but not trained (the graph is what counts):
        # the int8 path for MobileNetV3, whose PTQ file keeps HARD_SWISH.
        from keras_lightnets import optimize

        aware = optimize.quantize_aware(model, representative_data=calibration)
        files["tflite_int8_qat"] = export.to_tflite(
            aware, f"{prefix}_int8_qat.tflite", "int8", representative_data=calibration,
            progress=False, verify=False).path
    # Channels-first input, as torchvision's exports take it.
    files["onnx"] = timing.write_file(notes, strict, export.to_onnx, model, f"{prefix}.onnx",
                                      batch_size=1, input_layout="NCHW", verify_data=data[:2])
    return files, notes


def qat_available():
    try:
        import keras_lightnets.optimize  # noqa: F401

        return True
    except ImportError as exc:
        print(f"keras_lightnets.optimize is not importable ({exc}): no QAT int8 column")
        return False


def torchvision_onnx(builder, path):
    """torchvision's model exported with torch.onnx.export (NCHW, batch 1)."""
    import types

    import torch

    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("stub"))
    import torchvision.models as tvm

    model = getattr(tvm, builder)(weights=None).eval()
    x = torch.zeros(1, 3, SIZE, SIZE)
    torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["output"],
                      opset_version=17, dynamo=False)
    return path


def top1_of(entry):
    """Reported ImageNet top-1 of the variant's published weights, or None."""
    import inspect

    from keras_lightnets.weights import manifest

    kwargs = {name: p.default for name, p in inspect.signature(entry.factory).parameters.items()}
    kwargs.update(entry.kwargs)
    rows = [e for e in manifest.entries(entry.family)
            if all(kwargs.get(k) == v for k, v in e["variant"].items())]
    rows.sort(key=lambda e: e["input_size"] != SIZE)  # this input size first, else 224
    return rows[0]["top1"] if rows else None


def keras_application(name, kwargs):
    import keras

    return getattr(keras.applications, name)(weights=None, input_shape=(SIZE, SIZE, 3),
                                              classifier_activation=None, **kwargs)


# -- the run ------------------------------------------------------------------------------


def same_graph(path_a, path_b):
    """Whether two TFLite files run the same operators, in order, on tensors of the same
    shapes (their weights aside)."""
    import tflite_graph

    def ops(path):
        model, names = tflite_graph.read(pathlib.Path(path).read_bytes())
        graph = model.subgraphs[0]
        return [(names[op.opcodeIndex],
                 [tuple(graph.tensors[t].shape) for t in (*op.inputs, *op.outputs) if t >= 0])
                for op in graph.operators]

    return ops(path_a) == ops(path_b)


def benchmark(variants, runs, warmup, out, quick=False, train_steps=None, size=224,
              normalized_input=NORMALIZED_INPUT):
    """Builds, exports and times every variant and its peers; writes the results."""
    import keras
    import tensorflow as tf

    import keras_lightnets as kl
    from keras_lightnets import export, registry

    tf.get_logger().setLevel("ERROR")  # predict_on_batch retracing notes, one per model
    global SIZE, NORMALIZED_INPUT
    SIZE, NORMALIZED_INPUT = size, normalized_input
    load_start = os.getloadavg()[0]
    threads_all = os.cpu_count()
    images = calibration_images(8 if quick else 32)
    qat = not quick and qat_available()
    work = pathlib.Path(tempfile.mkdtemp(prefix="kl_bench_"))
    runners, rows, train_runners, instances = [], {}, [], []
    for name in variants:
        entry = registry.get_entry(name)
        ours = entry.build(weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
        data = trained_like(ours, images, entry.preprocess_input)
        stats = kl.profile(ours)
        row = rows[name] = {"family": entry.family, "params": stats["params"],
                            "macs": stats["macs"], "top1": top1_of(entry), "sizes": {},
                            "notes": []}
        print(f"[{name}] exporting ...", flush=True)
        files, notes = export_all(ours, work / name, data, quick, qat=qat)
        sources = {"ours": (ours, files)}
        keras_name, keras_kwargs, tv_builder, google = PEERS.get(name, (None, {}, None, {}))
        if keras_name and not quick:
            peer = keras_application(keras_name, keras_kwargs)
            peer_data = trained_like(peer, images, entry.preprocess_input)
            peer_files, peer_notes = export_all(peer, work / f"{name}_keras", peer_data, quick,
                                                strict=False)
            sources["keras.applications"] = (peer, peer_files)
            row["same_graph_as_keras_applications"] = same_graph(
                files["tflite_fp32"], peer_files["tflite_fp32"])
            notes += [f"keras.applications {n}" for n in peer_notes]
        if tv_builder and not quick:
            sources["torchvision"] = (None, {"onnx": torchvision_onnx(
                tv_builder, work / f"{name}_torchvision.onnx")})
        for label, file in google.items():
            path = SHARED / "data" / "weights" / file
            if path.is_file() and not quick:
                sources[label] = (None, {"tflite_int8": path})
        if name == NORMALIZED_INPUT:
            # MobileNetV2's graph takes normalized pixels; the same network of ours too.
            net = entry.build(weights=None, input_shape=(SIZE, SIZE, 3),
                              classifier_activation=None, include_preprocessing=False)
            net_data = trained_like(net, images, entry.preprocess_input)
            sources["ours_normalized_input"] = (None, {"tflite_fp32": export.to_tflite(
                net, work / f"{name}_normalized_input_fp32.tflite",
                verify_data=net_data[:4]).path})
        row["notes"] = notes
        for source, (model, files) in sources.items():
            for kind, path in files.items():
                row["sizes"][f"{source}:{kind}"] = os.path.getsize(path)
                if kind.startswith("tflite"):
                    instances.append(((name, source, f"{kind}_1t"),
                                      functools.partial(tflite_instance, path, 1)))
                    if kind != "tflite_int8_qat" and source != "ours_normalized_input":
                        instances.append(((name, source, f"{kind}_{threads_all}t"),
                                          functools.partial(tflite_instance, path, threads_all)))
                else:
                    instances.append(((name, source, "onnxruntime_1t"),
                                      functools.partial(onnx_instance, path)))
            if model is not None:
                runners.append(Runner(name, source, "keras_b1", keras_predict_call(model, 1)))
                runners.append(Runner(name, source, "keras_b32",
                                      keras_predict_call(model, 32), items=32))
        if name == "mobilenet_v2_100" and not quick:
            for source, factory in (("ours", lambda: kl.MobileNetV2(weights=None)),
                                    ("keras.applications",
                                     lambda: keras.applications.MobileNetV2(weights=None))):
                train_runners.append(Runner(name, source, "keras_train_b32",
                                            keras_train_call(factory(), 32), items=32))

    # The runtime instances of every file, once every file is written (see `made_in_turns`).
    runners += [Runner(*key, call) for (key, _), call in zip(
        instances, made_in_turns([make for _, make in instances]), strict=True)]
    # The matmul peak, before and after the timing (the best of both: other
    # processes on the machine only ever lower it).
    peaks = [(matmul_peak_gmacs(threads=1), matmul_peak_gmacs())]
    print(f"timing {len(runners)} runners x {runs} rounds ...", flush=True)
    interleave(runners, runs, warmup)
    if train_runners:
        print(f"timing training, {train_steps or runs} steps ...", flush=True)
        interleave(train_runners, train_steps or runs, 2)
    peaks.append((matmul_peak_gmacs(threads=1), matmul_peak_gmacs()))
    peak_1t, peak_all = (max(p) for p in zip(*peaks, strict=True))
    load = (load_start, os.getloadavg()[0])
    shutil.rmtree(work, ignore_errors=True)
    return summarise(rows, runners + train_runners, peak_1t, peak_all, runs, out, load)


def summarise(rows, runners, peak_1t, peak_all, runs, out, load=(None, None)):
    results = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_1min_start": load[0], "load_1min_end": load[1],
                    "matmul_peak_gmacs_1t": peak_1t, "matmul_peak_gmacs_all": peak_all},
        "runs": runs, "input_size": SIZE, "variants": rows, "measurements": [],
    }
    for r in runners:
        m = {"variant": r.variant, "source": r.source, "kind": r.kind, "median_ms": r.median_ms,
             "runs": len(r.times), "times_ms": [1000 * t for t in r.times]}
        if r.items > 1:
            m["images_per_s"] = r.items / (r.median_ms / 1000)
        macs = rows[r.variant]["macs"]
        if r.kind.startswith("tflite_fp32") and r.source == "ours":
            peak = peak_1t if r.kind.endswith("_1t") else peak_all
            m["gmacs"] = macs / (r.median_ms / 1000) / 1e9
            m["fraction_of_peak"] = m["gmacs"] / peak
        results["measurements"].append(m)
    results["targets"] = measured_targets(results)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(results, indent=1))
    table = markdown(results)
    (out / "benchmark.md").write_text(table)
    plot(results, out / "latency_vs_top1.png")
    print(table)
    return results


def _median(results, variant, source, kind):
    m = _measurement(results, variant, source, kind)
    return None if m is None else m["median_ms"]


def _ratio(a, b):
    return None if a is None or b is None else a / b


def _measurement(results, variant, source, kind):
    for m in results["measurements"]:
        if (m["variant"], m["source"], m["kind"]) == (variant, source, kind):
            return m
    return None


def paired_ratio(results, ours, reference):
    """Median over rounds of ours / reference timed in the same round (what the machine
    did in between weighs on both), or the ratio of medians when not timed together."""
    a, b = _measurement(results, *ours), _measurement(results, *reference)
    if a is None or b is None:
        return None
    if a.get("times_ms") and b.get("times_ms"):
        return timing.paired_ratio(a["times_ms"], b["times_ms"])
    return _ratio(a["median_ms"], b["median_ms"])


def measured_targets(results):
    """The measured ratios (ours / reference) against benchmarks/targets.py's bounds."""
    out = []

    def add(what, ours, reference, target):
        """`ours` and `reference`: the `(variant, source, kind)` of two timings;
        `target`: a key of `targets.TARGETS`, or None for a row for information."""
        ratio = paired_ratio(results, ours, reference)
        if ratio is None:
            return
        if target is None:
            out.append({"target": what, "ratio": ratio, "bound": "-", "met": None})
            return
        out.append({"target": what, "ratio": ratio, "bound": targets.text(target),
                    "met": targets.met(target, ratio)})

    for v in ("mobilenet_v1_100", "mobilenet_v2_100", "mobilenet_v3_large_100",
              "mobilenet_v3_small_100"):
        same = results["variants"].get(v, {}).get("same_graph_as_keras_applications")
        add(f"{v} float32 TFLite vs keras.applications (1 thread)"
            + (", op-for-op the same graph" if same else ""),
            (v, "ours", "tflite_fp32_1t"), (v, "keras.applications", "tflite_fp32_1t"),
            "float32_vs_keras_applications")
    add("mobilenet_v2_100 int8 TFLite vs Google's int8 file (1 thread)",
        ("mobilenet_v2_100", "ours", "tflite_int8_1t"),
        ("mobilenet_v2_100", "google_int8_ptq", "tflite_int8_1t"), "int8_vs_google")
    for v in results["variants"]:
        add(f"{v} int8 (post-training) vs float32 TFLite (1 thread)",
            (v, "ours", "tflite_int8_1t"), (v, "ours", "tflite_fp32_1t"), "int8_vs_float32")
        add(f"{v} int8 (QAT graph) vs float32 TFLite (1 thread)",
            (v, "ours", "tflite_int8_qat_1t"), (v, "ours", "tflite_fp32_1t"),
            "int8_vs_float32")
        add(f"{v} ONNX Runtime vs torchvision's export (1 thread)",
            (v, "ours", "onnxruntime_1t"), (v, "torchvision", "onnxruntime_1t"),
            "onnx_vs_torchvision")
    add(f"{NORMALIZED_INPUT} vs mobilenet_v2_100 float32 TFLite (1 thread), both taking "
        "normalized pixels (MobileNetV2 has no normalization layer)",
        (NORMALIZED_INPUT, "ours_normalized_input", "tflite_fp32_1t"),
        ("mobilenet_v2_100", "ours", "tflite_fp32_1t"), "shufflenet_v2_vs_mobilenet_v2")
    add(f"{NORMALIZED_INPUT} with its normalization layer (the default) vs mobilenet_v2_100 "
        "float32 TFLite (1 thread)",
        (NORMALIZED_INPUT, "ours", "tflite_fp32_1t"),
        ("mobilenet_v2_100", "ours", "tflite_fp32_1t"), None)
    # Throughput is the inverse of step time: ours / reference = reference time / our time.
    add("mobilenet_v2_100 Keras training throughput vs keras.applications",
        ("mobilenet_v2_100", "keras.applications", "keras_train_b32"),
        ("mobilenet_v2_100", "ours", "keras_train_b32"), "training_throughput")
    return out


def markdown(results):
    lines = [f"Machine: {results['machine']['cpus']} CPUs, {results['machine']['platform']}; "
             f"float32 matmul peak {results['machine']['matmul_peak_gmacs_1t']:.1f} GMAC/s "
             f"(1 thread), {results['machine']['matmul_peak_gmacs_all']:.1f} (all); "
             f"median of {results['runs']} interleaved runs (files: {INSTANCES} runtime "
             f"instances each, in turn), batch 1 unless noted; "
             f"1-minute load average {_load(results)} (other processes share the machine).",
             ""]
    kinds = sorted({m["kind"] for m in results["measurements"]})
    lines.append("| variant | source | " + " | ".join(f"{k} (ms)" for k in kinds) + " |")
    lines.append("|---|---|" + "---|" * len(kinds))
    pairs = sorted({(m["variant"], m["source"]) for m in results["measurements"]})
    for variant, source in pairs:
        cells = []
        for k in kinds:
            v = _median(results, variant, source, k)
            cells.append("" if v is None else f"{v:.2f}")
        lines.append(f"| {variant} | {source} | " + " | ".join(cells) + " |")
    lines += ["", "| variant | params | MACs (M) | reported top-1 | TFLite fp32 GMAC/s "
              "(1 thread) | of peak |", "|---|---|---|---|---|---|"]
    for variant, row in results["variants"].items():
        g = [m for m in results["measurements"] if m["variant"] == variant
             and m["source"] == "ours" and m["kind"] == "tflite_fp32_1t"]
        gm = f"{g[0]['gmacs']:.1f} | {g[0]['fraction_of_peak']:.0%}" if g else " | "
        lines.append(f"| {variant} | {row['params']:,} | {row['macs'] / 1e6:.0f} | "
                     f"{row['top1']} | {gm} |")
    lines += ["", "Ratios: median over rounds of the two files' times in the same round.", "",
              "| target | measured ratio | bound | met |", "|---|---|---|---|"]
    for t in results["targets"]:
        met = "-" if t["met"] is None else "yes" if t["met"] else "NO"
        lines.append(f"| {t['target']} | {t['ratio']:.3f} | {t['bound']} | {met} |")
    notes = [f"- {variant}: {note}" for variant, row in results["variants"].items()
             for note in row.get("notes", [])]
    if notes:
        lines += ["", "Files timed although their export verification failed:", *notes]
    return "\n".join(lines) + "\n"


def _load(results):
    return timing.load_text(results["machine"].get("load_1min_start"),
                            results["machine"].get("load_1min_end"))


def plot(results, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written")
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    # Series: (label, source, kinds; the fastest of `kinds` is plotted), marker, colour.
    series = [
        ("ours, TFLite float32", "ours", ("tflite_fp32_1t",), "o", "tab:blue"),
        ("ours, TFLite int8", "ours", ("tflite_int8_1t", "tflite_int8_qat_1t"), "D", "tab:cyan"),
        ("keras.applications, TFLite float32", "keras.applications", ("tflite_fp32_1t",), "s",
         "tab:orange"),
        ("torchvision, ONNX Runtime", "torchvision", ("onnxruntime_1t",), "^", "tab:green"),
        ("ours, ONNX Runtime", "ours", ("onnxruntime_1t",), "v", "tab:olive"),
        ("Google int8 (PTQ)", "google_int8_ptq", ("tflite_int8_1t",), "x", "tab:red"),
        ("Google uint8 (QAT)", "google_uint8_qat", ("tflite_int8_1t",), "+", "tab:purple"),
    ]
    seen = set()
    for variant, row in results["variants"].items():
        if row["top1"] is None:
            continue
        for label, source, kinds, marker, colour in series:
            times = [t for t in (_median(results, variant, source, k) for k in kinds)
                     if t is not None]
            if not times:
                continue
            ax.scatter(min(times), row["top1"], marker=marker, color=colour,
                       label=None if label in seen else label)
            seen.add(label)
        ms = _median(results, variant, "ours", "tflite_fp32_1t")
        if ms is not None:
            ax.annotate(variant, (ms, row["top1"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("latency, ms (1 thread, batch 1)")
    ax.set_ylabel("reported ImageNet top-1 (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--normalized-input", default=NORMALIZED_INPUT,
                        help="variant also timed without its normalization layer")
    parser.add_argument("--size", type=int, default=SIZE, help="input rows and cols")
    parser.add_argument("--quick", action="store_true",
                        help="ours only: no peers, no QAT, no training, fewer calibration images")
    args = parser.parse_args(argv)
    benchmark(args.variants, args.runs, args.warmup, args.out, quick=args.quick,
              size=args.size, normalized_input=args.normalized_input)
    return 0


if __name__ == "__main__":
    sys.exit(main())

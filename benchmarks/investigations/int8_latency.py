"""float32 vs int8 TFLite latency per family, measured side by side.

Each model is exported three ways and the files are timed in one process,
interleaved (one inference of each file in turn, `--runs` rounds) with
ai-edge-litert on 1 thread at batch 1:

- float32: `export.to_tflite(model)`;
- int8 PTQ: `export.to_tflite(model, quantization="int8")` on the Keras 3 model;
- int8 QAT: `export.to_tflite(optimize.quantize_aware(model, ...), "int8")`
  (calibrated on the same images, not trained: the graph is what counts);
- int8 and float32 convolutions: the int8 file (QAT, PTQ for the reference)
  and the float32 file with every op but CONV_2D, DEPTHWISE_CONV_2D and
  FULLY_CONNECTED cut out (`tflite_graph.keep_ops`). No int8 graph of the
  architecture is faster than its convolutions, so `floor` (int8
  convolutions over the float32 file, timed in the same rounds) is the
  lowest int8/float32 ratio this runtime allows the model. The cut files
  read a few more buffers than a whole graph would; `convolutions_ratio`
  (int8 over float32 convolutions, both cut the same way) cancels that out.

keras.applications' MobileNetV3Large is timed the same way as a reference
(its hard-swish is raw `x + 3` arithmetic). Calibration uses the sample
photos of ../shared/data/imagenet-sample when present, random pixels
otherwise. Weights are random but shaped like trained ones
(`trained_weights.trained_like`): XNNPACK refuses int8 ADD/MUL ops whose
input and output scales are too far apart, which is what untouched initial
weights produce, and a refused op splits the graph and costs more than
float32, which says nothing about a trained model (FINDINGS.md).
The int8 files are not checked against the model here: tests/test_optimize.py
does that on every family.

Usage:
    python benchmarks/investigations/int8_latency.py         # every family, 224 px
    python benchmarks/investigations/int8_latency.py --models mobilenet_v3_large_100 --runs 200

Writes benchmarks/investigations/results/int8_latency.json and .md (or under `--out`).
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = ROOT / "benchmarks" / "investigations"
# The checkout's package, the helpers of benchmarks/ and the scripts beside this one.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(HERE))

import targets  # noqa: E402
import tflite_graph  # noqa: E402
from trained_weights import trained_like  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"
REFERENCE = "keras_applications_mobilenet_v3_large"


def default_models():
    from keras_lightnets import registry

    names = [e.name for e in registry.entries() if e.default]
    return names + ["shufflenet_v1_g3_100:native", REFERENCE]


def calibration_images(size, count=32):
    """Sample photos resized to `size` (float RGB in [0, 255]), or random pixels."""
    labels = SAMPLE / "labels.csv"
    if labels.exists():
        from PIL import Image

        names = [line.split(",")[0] for line in labels.read_text().splitlines()[1:count + 1]]
        images = []
        for name in names:
            with Image.open(SAMPLE / "jpeg" / name) as img:
                images.append(np.asarray(img.convert("RGB").resize((size, size)), "float32"))
        return np.stack(images), "sample photos"
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (count, size, size, 3)).astype("float32"), "random pixels"


def build(name, size):
    """`(keras_model, preprocess)` for a registry name, `name:native`, or the reference."""
    import keras

    from keras_lightnets import registry

    shape = (size, size, 3)
    if name == REFERENCE:
        model = keras.applications.MobileNetV3Large(input_shape=shape, weights=None)
        return model, lambda x: x
    base, _, variant = name.partition(":")
    entry = registry.get_entry(base)
    extra = {"group_conv": "native"} if variant == "native" else {}
    model = entry.build(weights=None, input_shape=shape, **extra)
    return model, lambda x: np.asarray(entry.preprocess_input(x.copy()), "float32")


def export_all(name, size, images, workdir, qat=True):
    """The three TFLite files of one model (two without `qat`), with their export reports."""
    from keras_lightnets import export, optimize

    model, preprocess = build(name, size)
    x = preprocess(images)
    trained_like(model, x)
    io_dtype = "uint8" if export.expects_raw_pixels(model) else "int8"
    stem = name.replace(":", "_")
    files = {}
    files["float32"] = export.to_tflite(model, workdir / f"{stem}_f32.tflite", progress=False)
    files["int8_ptq"] = export.to_tflite(
        model, workdir / f"{stem}_ptq.tflite", "int8", representative_data=x,
        io_dtype=io_dtype, progress=False, verify=False)
    if qat and name != REFERENCE:
        aware = optimize.quantize_aware(model, representative_data=x)
        files["int8_qat"] = export.to_tflite(
            aware, workdir / f"{stem}_qat.tflite", "int8", representative_data=x,
            io_dtype=io_dtype, progress=False, verify=False)
    return files


def time_side_by_side(paths, runs, warmup=5):
    """Median ms per file: `runs` rounds, one invoke of each file per round."""
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(0)
    interpreters = {}
    for key, path in paths.items():
        interp = Interpreter(model_path=str(path), num_threads=1)
        interp.allocate_tensors()
        for detail in interp.get_input_details():
            dtype = np.dtype(detail["dtype"])
            if dtype.kind == "f":
                value = rng.uniform(0, 1, detail["shape"]).astype(dtype)
            else:
                info = np.iinfo(dtype)
                value = rng.integers(info.min, info.max, detail["shape"], endpoint=True)
            interp.set_tensor(detail["index"], value.astype(dtype))
        for _ in range(warmup):
            interp.invoke()
        interpreters[key] = interp
    times = {key: [] for key in paths}
    for _ in range(runs):
        for key, interp in interpreters.items():
            start = time.perf_counter()
            interp.invoke()
            times[key].append((time.perf_counter() - start) * 1e3)
    return {key: statistics.median(t) for key, t in times.items()}


def run(models, size, runs, out):
    images, source = calibration_images(size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            print(f"exporting {name} ...", flush=True)
            reports = export_all(name, size, images, pathlib.Path(tmp))
            int8 = "int8_qat" if "int8_qat" in reports else "int8_ptq"
            paths = {k: r.path for k, r in reports.items()}
            for kind, key in ((int8, "int8_convolutions"), ("float32", "float32_convolutions")):
                whole = pathlib.Path(reports[kind].path)
                paths[key] = whole.with_suffix(".convs.tflite")
                paths[key].write_bytes(tflite_graph.keep_ops(whole.read_bytes()))
            latency = time_side_by_side(paths, runs)
            row = {
                "model": name, "size": size,
                "float32_ms": latency["float32"],
                "int8_ptq_ms": latency["int8_ptq"],
                "int8_qat_ms": latency.get("int8_qat"),
                "int8_over_float32": latency[int8] / latency["float32"],
                "int8_convolutions_ms": latency["int8_convolutions"],
                "float32_convolutions_ms": latency["float32_convolutions"],
                "floor": latency["int8_convolutions"] / latency["float32"],
                "convolutions_ratio": (latency["int8_convolutions"]
                                       / latency["float32_convolutions"]),
                "int8_ops": list(reports[int8].ops),
                "hard_swish_fused": "HARD_SWISH" in reports[int8].ops,
                "sizes_bytes": {k: r.size_bytes for k, r in reports.items()},
            }
            rows.append(row)
            print(format_row(row), flush=True)
    result = {
        "what": "median latency (ms) of ai-edge-litert, 1 thread, batch 1, files timed "
                "side by side in one process",
        "runs": runs, "size": size, "calibration": source,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "target": f"int8 {targets.text('int8_vs_float32')} x float32",
        "rows": rows,
    }
    return write_results(out, "int8_latency", result, markdown(result))


def write_results(out, stem, result, text):
    """`result` as `{stem}.json` and the table `text` as `{stem}.md` under `out`; printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(text)
    print(text)
    return result


def format_row(row):
    qat = "-" if row["int8_qat_ms"] is None else f"{row['int8_qat_ms']:.2f}"
    return (f"{row['model']}: float32 {row['float32_ms']:.2f} ms, int8 PTQ "
            f"{row['int8_ptq_ms']:.2f} ms, int8 QAT {qat} ms, "
            f"ratio {row['int8_over_float32']:.2f}, int8 convolutions alone "
            f"{row['int8_convolutions_ms']:.2f} ms (floor {row['floor']:.2f}, over float32 "
            f"convolutions {row['convolutions_ratio']:.2f})")


def markdown(result):
    lines = [
        f"# int8 vs float32 TFLite latency ({result['size']} px)",
        "",
        f"{result['what']}; {result['runs']} runs; calibration on {result['calibration']}; "
        f"{result['machine']['platform']}, {result['machine']['cpus']} CPUs. Target: "
        f"{result['target']} (int8 is the QAT file, PTQ for the keras.applications "
        "reference). Convolutions alone: each file with every op but CONV_2D, "
        "DEPTHWISE_CONV_2D and FULLY_CONNECTED cut out, timed in the same rounds; floor: "
        "int8 convolutions over the float32 file (no int8 graph of the model beats it).",
        "",
        "| model | float32 ms | int8 PTQ ms | int8 QAT ms | int8 / float32 "
        "| convolutions alone: float32 ms | int8 ms | floor | int8 / float32 | HARD_SWISH |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        qat = "-" if row["int8_qat_ms"] is None else f"{row['int8_qat_ms']:.2f}"
        lines.append(
            f"| {row['model']} | {row['float32_ms']:.2f} | {row['int8_ptq_ms']:.2f} | {qat} "
            f"| {row['int8_over_float32']:.2f} | {row['float32_convolutions_ms']:.2f} "
            f"| {row['int8_convolutions_ms']:.2f} | {row['floor']:.2f} "
            f"| {row['convolutions_ratio']:.2f} | {'yes' if row['hard_swish_fused'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="registry names ('name:native' for "
                        f"ShuffleNet V1's Conv2D(groups), '{REFERENCE}'); default: one per "
                        "family plus the reference")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "results")
    args = parser.parse_args(argv)
    return run(args.models or default_models(), args.size, args.runs, args.out)


if __name__ == "__main__":
    main()

"""What ShuffleNet V2's channel split and shuffle cost in its TFLite file.

The target (`shufflenet_v2_vs_mobilenet_v2` in benchmarks/targets.py):
ShuffleNetV2 1.0 float32 TFLite against our MobileNetV2 1.0. These files are
timed side by side in one process, interleaved as `run.py` does (each through
`run.INSTANCES` interpreters in turn, made as `run.py` makes them: the ratio
moves with how warm the caches are, see FINDINGS.md), with ai-edge-litert on
1 thread at batch 1, and given as ratios to the MobileNetV2 file:

- `shufflenet_v2`: the file `export.to_tflite` writes (shuffles resolved into
  the weights: every unit's channels gathered by SLICE and CONCATENATION),
  normalization layer included;
- `normalized_input`: the same network built without its normalization
  layer, taking normalized pixels as the MobileNetV2 file does (its graph
  has no normalization: callers normalize);
- `unrouted`: the file without the `route` pass (concatenation, shuffle
  RESHAPE/TRANSPOSE/RESHAPE and split in every unit);
- `free_slices`: the exported file with its SLICE ops cut out
  (`tflite_graph.keep_ops` of every other op type), the time if every slice
  cost nothing;
- `convolutions`: its CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED ops
  alone: the time of the architecture's arithmetic with nothing else.

Each basic unit's first convolution reads channels made by at least two
earlier convolutions (half of the unit before's output comes from the unit
before that), and no TFLite op writes into part of a tensor, so every unit
needs at least one CONCATENATION: `free_slices` is about the least the
split and shuffle can cost with this runtime.

Usage:
    python benchmarks/investigations/split_cost.py                  # 224 px, 300 runs
    python benchmarks/investigations/split_cost.py --size 96 --runs 3 --out /tmp/x

Writes split_cost.json and split_cost.md to `--out` (default
benchmarks/investigations/results).
"""

import argparse
import functools
import os
import pathlib
import platform
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = ROOT / "benchmarks" / "investigations"
# The checkout's package, the helpers of benchmarks/ and the scripts beside this one.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(HERE))

import int8_latency  # noqa: E402
import run  # noqa: E402
import targets  # noqa: E402
import tflite_graph  # noqa: E402
from trained_weights import trained_like  # noqa: E402

FILES = ("mobilenet_v2", "shufflenet_v2", "normalized_input", "unrouted", "free_slices",
         "convolutions")


def export_files(shufflenet, reference, size, workdir):
    """`({file: path}, {file: op counts})` for the files of the module docstring."""
    from keras_lightnets import export, registry
    from keras_lightnets.export import passes

    images, _ = int8_latency.calibration_images(size)
    entry = registry.get_entry(shufflenet)
    model, preprocess = int8_latency.build(shufflenet, size)
    built = {"mobilenet_v2": int8_latency.build(reference, size),
             "normalized_input": (entry.build(weights=None, input_shape=(size, size, 3),
                                              include_preprocessing=False),
                                  entry.preprocess_input),
             "shufflenet_v2": (model, preprocess)}
    paths = {}
    for key, (net, prep) in built.items():
        trained_like(net, prep(images))
        paths[key] = pathlib.Path(export.to_tflite(
            net, workdir / f"{key}.tflite", progress=False).path)
    unrouted = {p.name for p in passes.KERAS} - {"route"}
    paths["unrouted"] = pathlib.Path(export.to_tflite(
        model, workdir / "unrouted.tflite", passes=unrouted, progress=False).path)

    content = paths["shufflenet_v2"].read_bytes()
    kinds = set(tflite_graph.op_counts(content))
    for key, types in (("free_slices", tuple(sorted(kinds - {"SLICE"}))),
                       ("convolutions", tflite_graph.CONVOLUTIONS)):
        paths[key] = workdir / f"{key}.tflite"
        paths[key].write_bytes(tflite_graph.keep_ops(content, types))
    return paths, {key: tflite_graph.op_counts(path.read_bytes()) for key, path in paths.items()}


def measure(shufflenet, reference, size, runs, warmup, out):
    with tempfile.TemporaryDirectory() as tmp:
        paths, ops = export_files(shufflenet, reference, size, pathlib.Path(tmp))
        calls = run.made_in_turns([functools.partial(run.tflite_instance, paths[key], 1)
                                   for key in FILES])
        runners = [run.Runner(key, None, None, call)
                   for key, call in zip(FILES, calls, strict=True)]
        run.interleave(runners, runs, warmup)
    ms = {r.variant: r.median_ms for r in runners}
    result = {
        "what": "median latency (ms) of ai-edge-litert, 1 thread, batch 1, files timed "
                f"side by side in one process, each through {run.INSTANCES} interpreters "
                "in turn",
        "shufflenet": shufflenet, "reference": reference, "size": size, "runs": runs,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "target": f"shufflenet_v2 {targets.text('shufflenet_v2_vs_mobilenet_v2')} x mobilenet_v2",
        "files": {key: {"median_ms": ms[key], "over_mobilenet_v2": ms[key] / ms["mobilenet_v2"],
                        "ops": ops[key]} for key in FILES},
    }
    return int8_latency.write_results(out, "split_cost", result, markdown(result))


def markdown(result):
    lines = [
        f"# ShuffleNet V2's split and shuffle in TFLite ({result['size']} px)",
        "",
        f"{result['shufflenet']} against {result['reference']}: {result['what']}; "
        f"{result['runs']} runs; {result['machine']['platform']}, "
        f"{result['machine']['cpus']} CPUs. Target: {result['target']}. Files: see "
        "benchmarks/investigations/split_cost.py.",
        "",
        "| file | ms | over mobilenet_v2 | SLICE | CONCATENATION | other ops |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, row in result["files"].items():
        ops = dict(row["ops"])
        slices, concats = ops.pop("SLICE", 0), ops.pop("CONCATENATION", 0)
        lines.append(f"| {key} | {row['median_ms']:.3f} | {row['over_mobilenet_v2']:.3f} "
                     f"| {slices} | {concats} | {sum(ops.values())} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shufflenet", default="shufflenet_v2_100")
    parser.add_argument("--reference", default="mobilenet_v2_100")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "results")
    args = parser.parse_args(argv)
    return measure(args.shufflenet, args.reference, args.size, args.runs, args.warmup, args.out)


if __name__ == "__main__":
    main()

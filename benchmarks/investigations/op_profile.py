"""Op-level latency profile of our TFLite files: float32 against int8, per op type.

The Python runtime gives no per-op timing once XNNPACK has taken the graph,
so each operator of a file is cut out into a file of its own (its constant
inputs kept, its other inputs made graph inputs) and timed alone with
ai-edge-litert on 1 thread at batch 1. The cut file runs `--copies` copies of
the operator on the same input, so that the per-invoke overhead of the Python
call is shared out; an op's time is the file's median over `--copies`. The
sum over ops is printed beside the whole file's latency: when the two agree,
the per-op figures account for the file. They never agree exactly: in the
whole file XNNPACK fuses a PAD into the convolution after it, which a cut
file cannot, and a cut op reads its weights from cache only as well as the
files timed between its runs leave them.

For each model the float32 and int8 (post-training, trained-like weights as
in int8_latency.py) files are profiled. The summary gives, per op type, the
float32 and int8 time and their ratio, and two bounds the graph cannot beat
with this runtime's kernels: `floor_int8_conv` is the int8 time of the
convolutions (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) alone over the
float32 sum (the int8 file cannot be faster than its convolutions, whatever
else is removed), and
`best_mix` the int8/float32 ratio if every op type took the cheaper of its
two precisions.

Usage:
    python benchmarks/investigations/op_profile.py --models mobilenet_v3_small_100 \
        shufflenet_v2_100
    python benchmarks/investigations/op_profile.py --models mobilenet_v2_100 --per-op

Writes op_profile.json and op_profile.md to `--out` (default
benchmarks/investigations/results).
"""

import argparse
import collections
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = ROOT / "benchmarks" / "investigations"
# The checkout's package, the helpers of benchmarks/ and the scripts beside this one.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(HERE))

import int8_latency  # noqa: E402
import run  # noqa: E402
import targets  # noqa: E402
from tflite_graph import CONVOLUTIONS, cut_ops  # noqa: E402

# -- timing -------------------------------------------------------------------------------


def _call(content, seed=0):
    """One inference of a TFLite file (bytes) with random inputs, 1 thread."""
    from keras_lightnets.export import tflite

    interp = tflite.interpreter(content, num_threads=1)
    rng = np.random.default_rng(seed)
    for detail in interp.get_input_details():
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            x = rng.normal(size=detail["shape"]).astype(dtype)
        else:
            info = np.iinfo(dtype)
            x = rng.integers(info.min, info.max, size=detail["shape"], endpoint=True).astype(dtype)
        interp.set_tensor(detail["index"], x)

    return interp.invoke


def time_calls(calls, runs, warmup):
    """Median seconds of each call, interleaved as `run.py` does (shuffled every round)."""
    runners = [run.Runner(None, None, None, call) for call in calls]
    run.interleave(runners, runs, warmup)
    return [statistics.median(runner.times) for runner in runners]


def profile_file(content, copies, runs, warmup):
    """Per-op rows `{index, op, input, output, ms}` of one file, and its whole latency (ms)."""
    rows, cuts = [], []
    for index, op, shape_in, shape_out, cut in cut_ops(content, copies):
        rows.append({"index": index, "op": op, "input": shape_in, "output": shape_out})
        cuts.append(cut)
    whole = _call(content)
    # 64 ops at a time: an interpreter per op of a whole file at once takes gigabytes.
    medians = []
    for start in range(0, len(cuts), 64):
        block = [_call(cut) for cut in cuts[start:start + 64]] + [whole]
        medians.append(time_calls(block, runs, warmup))
    for row, seconds in zip(rows, [m for block in medians for m in block[:-1]], strict=True):
        row["ms"] = 1000 * seconds / copies
    whole_ms = 1000 * statistics.median(block[-1] for block in medians)
    return rows, whole_ms


# -- per model ----------------------------------------------------------------------------


def export_pair(name, size, images, workdir):
    """float32 and int8 (post-training) TFLite bytes of one model."""
    files = int8_latency.export_all(name, size, images, workdir, qat=False)
    return {precision: pathlib.Path(files[kind].path).read_bytes()
            for precision, kind in (("float32", "float32"), ("int8", "int8_ptq"))}


def by_type(rows):
    totals = collections.defaultdict(float)
    for row in rows:
        totals[row["op"]] += row["ms"]
    return dict(totals)


def summarise(name, profiles):
    f32, int8 = (by_type(profiles[p]["ops"]) for p in ("float32", "int8"))
    f32_sum, int8_sum = sum(f32.values()), sum(int8.values())
    types = sorted(set(f32) | set(int8), key=lambda t: -f32.get(t, int8.get(t, 0)))
    table = {t: {"float32_ms": f32.get(t, 0.0), "int8_ms": int8.get(t, 0.0)} for t in types}
    # Quantize/dequantize ops have no float32 counterpart: they count at their int8 cost.
    best = sum(min(v["float32_ms"], v["int8_ms"]) if v["float32_ms"] else v["int8_ms"]
               for v in table.values())
    convs = sum(int8.get(t, 0.0) for t in CONVOLUTIONS)
    return {
        "model": name,
        "whole_ms": {p: profiles[p]["whole_ms"] for p in profiles},
        "sum_of_ops_ms": {"float32": f32_sum, "int8": int8_sum},
        "ratio_whole": profiles["int8"]["whole_ms"] / profiles["float32"]["whole_ms"],
        "ratio_sum_of_ops": int8_sum / f32_sum,
        "floor_int8_conv": convs / f32_sum,
        "best_mix": best / f32_sum,
        "by_type": table,
    }


def markdown(summaries, per_op):
    lines = ["# Op-level profile: float32 vs int8 TFLite (ai-edge-litert, 1 thread, batch 1)", "",
             f"Machine: {platform.processor() or platform.machine()}. Each op timed alone "
             "(see the script's docstring); times in ms. PAD runs fused into the next "
             "convolution in the whole file: its time alone over-counts.", ""]
    for s in summaries:
        lines += [f"## {s['model']}", "",
                  f"Whole file: float32 {s['whole_ms']['float32']:.3f}, "
                  f"int8 {s['whole_ms']['int8']:.3f} (ratio {s['ratio_whole']:.2f}). "
                  f"Sum of ops: float32 {s['sum_of_ops_ms']['float32']:.3f}, "
                  f"int8 {s['sum_of_ops_ms']['int8']:.3f} (ratio {s['ratio_sum_of_ops']:.2f}). "
                  f"int8 convolutions alone / float32: {s['floor_int8_conv']:.2f}; "
                  f"every op type in its cheaper precision: {s['best_mix']:.2f} "
                  f"(target {targets.bound('int8_vs_float32')}).", "",
                  "| op type | float32 ms | int8 ms | int8/float32 | share of float32 |",
                  "|---|---|---|---|---|"]
        total = s["sum_of_ops_ms"]["float32"]
        for op, v in s["by_type"].items():
            ratio = f"{v['int8_ms'] / v['float32_ms']:.2f}" if v["float32_ms"] else "-"
            lines.append(f"| {op} | {v['float32_ms']:.3f} | {v['int8_ms']:.3f} | {ratio} | "
                         f"{v['float32_ms'] / total:.0%} |")
        lines.append("")
    for name, profiles in (per_op or {}).items():
        for precision, profile in profiles.items():
            lines += [f"## {name}, {precision}: every op", "",
                      "| # | op | input | output | ms |", "|---|---|---|---|---|"]
            lines += [f"| {row['index']} | {row['op']} | {row['input']} | {row['output']} | "
                      f"{row['ms']:.4f} |" for row in profile["ops"]]
            lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=int8_latency.default_models()[:-1])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--per-op", action="store_true", help="also list every op")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if min(args.runs, args.copies) < 1 or args.warmup < 0:
        parser.error("--runs and --copies must be >= 1, --warmup >= 0")

    images, source = int8_latency.calibration_images(args.size)
    summaries, per_op = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            files = export_pair(name, args.size, images, pathlib.Path(tmp))
            profiles = {}
            for precision, content in files.items():
                ops, whole = profile_file(content, args.copies, args.runs, args.warmup)
                profiles[precision] = {"ops": ops, "whole_ms": whole}
            summary = summarise(name, profiles)
            summaries.append(summary)
            if args.per_op:
                per_op[name] = profiles
            print(f"{name}: whole int8/float32 {summary['ratio_whole']:.2f}, sum of ops "
                  f"{summary['ratio_sum_of_ops']:.2f}, int8 convolutions alone "
                  f"{summary['floor_int8_conv']:.2f}, best mix {summary['best_mix']:.2f}",
                  flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": {"processor": platform.processor(), "machine": platform.machine()},
              "size": args.size, "runs": args.runs, "copies": args.copies,
              "calibration": source, "models": summaries,
              "per_op": per_op or None}
    (args.out / "op_profile.json").write_text(json.dumps(result, separators=(",", ":")))
    text = markdown(summaries, per_op)
    (args.out / "op_profile.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

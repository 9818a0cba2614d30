"""Times two TFLite files side by side: what retiring `export._stem` cost.

`export._stem` (removed) exported ShuffleNet's stem max pool as a SAME pool fed
by a stem convolution padded one row and column more, where the model pads
explicitly (ZeroPadding2D, then a VALID pool: a PAD op XNNPACK runs as a copy
of the map). Export the same model with the code before and after the removal
(e.g. `PYTHONPATH=<checkout before> python -c "..."` for the first file) and
pass both files here:

    python benchmarks/investigations/stem_retired.py before.tflite after.tflite

Both files run in one process with ai-edge-litert on one thread, one
inference of each in turn (the order swapped every run), after a warm-up;
the medians, their ratio and the median of the per-run ratios are printed
(and written as JSON with `--out`).
"""

import argparse
import json
import statistics
import time

import numpy as np


def interpreter(path):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interp.get_input_details():
        dtype = np.dtype(detail["dtype"])
        shape = [max(1, int(d)) for d in detail["shape"]]
        if dtype.kind == "f":
            value = rng.uniform(0, 255, shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            value = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        interp.set_tensor(detail["index"], value)
    return interp


def side_by_side(paths, runs, warmup):
    """`{path: [ms per run]}`, the files run one inference each in turn."""
    interps = [interpreter(p) for p in paths]
    for _ in range(warmup):
        for interp in interps:
            interp.invoke()
    times = [[] for _ in paths]
    for run in range(runs):
        order = range(len(paths)) if run % 2 == 0 else reversed(range(len(paths)))
        for i in order:
            start = time.perf_counter()
            interps[i].invoke()
            times[i].append((time.perf_counter() - start) * 1e3)
    return dict(zip(map(str, paths), times, strict=True))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="the file exported with the stem rewrite")
    parser.add_argument("after", help="the file exported without it")
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--out", help="write the medians as JSON here")
    args = parser.parse_args(argv)
    times = side_by_side([args.before, args.after], args.runs, args.warmup)
    result = {"runs": args.runs}
    for key, path in (("before", args.before), ("after", args.after)):
        ms = times[str(path)]
        deciles = statistics.quantiles(ms, n=10)
        result[key] = {"path": str(path), "median_ms": statistics.median(ms),
                       "p10_ms": deciles[0], "p90_ms": deciles[-1]}
        print(f"{key:6s} median {result[key]['median_ms']:.3f} ms "
              f"(p10 {deciles[0]:.3f}, p90 {deciles[-1]:.3f})  {path}")
    result["after_over_before"] = result["after"]["median_ms"] / result["before"]["median_ms"]
    # Each run's two inferences are next to each other in time: their ratio moves less
    # with the machine's load than the medians do.
    result["paired_ratio_median"] = statistics.median(
        a / b for a, b in zip(times[str(args.after)], times[str(args.before)], strict=True))
    print(f"after / before: {result['after_over_before']:.3f} "
          f"(median of the paired ratios {result['paired_ratio_median']:.3f})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()

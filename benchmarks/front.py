"""The accuracy-latency front: every weight set the package loads, timed on this machine.

Every manifest entry with its top (`include_top`) whose flavour this version
builds is a point: its publisher's top-1 (the manifest's `top1`) against the
latency of its architecture's TFLite files, float32 and post-training int8
(`keras_lightnets.export`, batch 1), run by ai-edge-litert with XNNPACK on one
thread. Weight sets that share an architecture (family, variant, flavour and
input size) share one timed pair of files; each architecture is timed at its
entry's own input size, with random trained-like weights (latency does not
depend on the values; int8 files do, see `timing.trained_like`), whether or not
the weight file is on the machine. keras.applications' MobileNet, MobileNetV2,
MobileNetV3Small and MobileNetV3Large (alpha 1.0, 224 px, weights=None) are
exported the same way and timed in the same rounds: every file once per round,
in a new order each round, through `--instances` interpreters in turn; a file's
latency is the median over `--runs` rounds, an int8/float32 ratio the median of
the two files' ratios within a round.

Writes `front.md`, `front.json` and `front.png` to `--out` (default
benchmarks/results) and prints the table. The targets are benchmarks/targets.py's
`front_top1_gain` and `int8_not_slower`.

    python benchmarks/front.py                                   # the full run
    python benchmarks/front.py --variants mobilenet_v3_small_035 --keras MobileNetV3Small \\
        --size 96 --runs 3 --warmup 1 --quick                    # a smoke run
"""

import argparse
import datetime
import functools
import gc
import json
import multiprocessing
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Benchmark the checkout this script belongs to, with the helpers beside it.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import targets  # noqa: E402
import timing  # noqa: E402

# keras.applications' MobileNets timed beside ours. Columns: keras.applications factory,
# its preprocessing module, and the (family, variant) of the manifest's entry of the
# same published file (its top-1).
KERAS_MOBILENETS = {
    "MobileNet": ("mobilenet", "MobileNet", {"alpha": 1.0}),
    "MobileNetV2": ("mobilenet_v2", "MobileNetV2", {"alpha": 1.0}),
    "MobileNetV3Small": ("mobilenet_v3", "MobileNetV3Small",
                         {"alpha": 1.0, "minimalistic": False}),
    "MobileNetV3Large": ("mobilenet_v3", "MobileNetV3Large",
                         {"alpha": 1.0, "minimalistic": False}),
}
KERAS_SIZE = 224
KERAS_SOURCE = "keras.applications"
PRECISIONS = ("float32", "int8")
# Interpreters per file: fewer than run.py's, as a hundred architectures' files are
# all alive at once.
INSTANCES = 2
# New export processes after one dies of a signal (a native abort in TensorFlow, seen
# now and then under load), each resuming where the last stopped.
EXPORT_RETRIES = 2


# -- the points --------------------------------------------------------------------------


def registry_name(entry):
    """The registered model whose variant the manifest entry serves (first by name)."""
    from keras_lightnets import registry
    from keras_lightnets.weights import manifest

    for name in registry.list_models(entry["family"]):
        if manifest.matches(entry, registry.get_entry(name).variant):
            return name
    return None


def architectures(names=None, size=None):
    """The timed architectures: `{id: {...,"entries": [manifest entries]}}` in manifest
    order, one per (family, variant, flavour, input size), and the entries this
    version cannot build (`[(entry, why)]`).

    `names`: only the entries of these registered models; `size`: every
    architecture at this input size instead of its entry's (smoke runs).
    """
    from keras_lightnets import registry
    from keras_lightnets.weights import manifest, sources

    for name in names or ():
        registry.get_entry(name)  # a ValueError naming the close names
    groups, skipped, ids = {}, [], set()
    for e in manifest.entries():
        if not e["include_top"]:
            continue
        name = registry_name(e)
        if names is not None and name not in names:
            continue
        if not manifest.buildable(e) or name is None:
            skipped.append((e, "this version does not build its source's flavour"
                            if name else "no registered model"))
            continue
        flavour = sources.flavour_for(e["family"], e["weights"])
        rows = size or e["input_size"]
        key = (e["family"], tuple(sorted(e["variant"].items(), key=str)), flavour, rows)
        if key not in groups:
            ident = f"{name}.{flavour.source}@{rows}"
            while ident in ids:
                ident += "'"
            ids.add(ident)
            groups[key] = {"id": ident, "model": name, "family": e["family"],
                           "variant": e["variant"], "flavour": flavour.source,
                           "input_size": rows, "weights": e["weights"],
                           "macs": e.get("macs") if rows == e["input_size"] else None,
                           "entries": []}
        groups[key]["entries"].append(e)
    return {g["id"]: g for g in groups.values()}, skipped


def weight_set_name(entry):
    """`model.set` (a `get_model` name), with the input size where the set has several."""
    from keras_lightnets.weights import manifest

    name = f"{registry_name(entry)}.{entry['weights']}"
    sizes = {e["input_size"] for e in manifest.entries(entry["family"], entry["weights"])
             if e["include_top"] and e["variant"] == entry["variant"]}
    return f"{name} @{entry['input_size']}" if len(sizes) > 1 else name


def keras_reference_entry(family, variant):
    """The manifest entry of keras.applications' own file of the variant at 224 px."""
    from keras_lightnets.weights import manifest

    for e in manifest.entries(family):
        if (e["source"] == KERAS_SOURCE and e["include_top"] and e["input_size"] == KERAS_SIZE
                and manifest.matches(e, variant)):
            return e
    return None


# -- building and timing -------------------------------------------------------------------


def build_ours(arch):
    """The architecture's Keras model, its weight set's flavour, without a weight file."""
    from keras_lightnets import registry
    from keras_lightnets.models import common

    entry = registry.get_entry(arch["model"])
    rows = arch["input_size"]
    with common.weights_not_loaded(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the default-size warning of other sizes
        model = entry.build(weights=arch["weights"], input_shape=(rows, rows, 3),
                            classifier_activation=None)
    return model, entry.preprocess_input


def build_keras(name, size):
    import keras

    module, _, _ = KERAS_MOBILENETS[name]
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3),
                                               classifier_activation=None)
    return model, getattr(keras.applications, module).preprocess_input


def export_pair(build, prefix, images, quick):
    """Builds a model, gives it trained-like weights and writes its float32 and int8
    files: `(files, notes, params)`."""
    import keras

    model, preprocess = build()
    # Batch-norm statistics from 8 photos: a training-mode pass over 16 at 384 px holds
    # gigabytes.
    data = timing.trained_like(model, images, preprocess, count=8)
    notes = []
    # The int8 file unverified: on random weights its agreement says little (the tests
    # check it on photos). Without the fitted rounding of the weights, which changes their
    # integer values, not the ops, and holds every calibration image's activations.
    files = timing.tflite_files(model, prefix, data, data[: 8 if quick else 32], notes,
                                strict=False, verify=False, adaptive_rounding=False)
    params = model.count_params()
    del model
    keras.backend.clear_session()
    gc.collect()
    return {p: files[f"tflite_{'fp32' if p == 'float32' else 'int8'}"] for p in PRECISIONS}, \
        notes, params


def export_all(jobs, work, quick):
    """Writes every job's files into `work` and `work/exports.json`: `{ident: row}` of
    the files and the failures. Run in a process of its own (`benchmark`), so that the
    memory TensorFlow keeps after the largest export is not held while timing."""
    import faulthandler

    import tensorflow as tf

    faulthandler.enable()
    tf.get_logger().setLevel("ERROR")
    photos = functools.lru_cache(maxsize=None)(
        lambda rows: timing.calibration_images(rows, 8 if quick else 32))
    done = pathlib.Path(work) / "exports.json"
    # A retried process (`benchmark`) keeps what its predecessor finished.
    rows = json.loads(done.read_text()) if done.exists() else {}
    for i, (ident, ours, what, rows_px) in enumerate(jobs):
        if ident in rows:
            continue
        print(f"[{i + 1}/{len(jobs)}] {ident}: exporting ...", flush=True)
        build = (functools.partial(build_ours, what) if ours
                 else functools.partial(build_keras, what, rows_px))
        start = time.time()
        try:
            paths, notes, params = export_pair(build, pathlib.Path(work) / f"{i:03d}",
                                               photos(rows_px), quick)
        except Exception as exc:  # one architecture's failure must not end the run
            if not ours:
                raise
            rows[ident] = {"failed": f"export failed: {type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0][:200]}"}
            print(f"    left out: {rows[ident]['failed']}", flush=True)
        else:
            rows[ident] = {"files": paths, "params": params, "notes": notes,
                           "export_s": time.time() - start,
                           "bytes": {p: os.path.getsize(path) for p, path in paths.items()}}
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows))
        os.replace(tmp, done)


def benchmark(names=None, keras_names=tuple(KERAS_MOBILENETS), runs=40, warmup=3,
              instances=INSTANCES, max_macs=None, size=None, quick=False, out=None):
    """Exports and times every architecture and keras.applications MobileNet; writes
    and returns the results."""
    started = time.time()
    load_start = os.getloadavg()[0]
    archs, skipped = architectures(names, size)
    left_out = [{"weight_set": f"{e['family']} {e['variant']} {e['weights']}",
                 "reason": why} for e, why in skipped]
    for ident, arch in list(archs.items()):
        if max_macs is not None and arch["macs"] is not None and arch["macs"] > max_macs:
            left_out.append({"architecture": ident, "macs": arch["macs"],
                             "weight_sets": [weight_set_name(e) for e in arch["entries"]],
                             "reason": f"MACs above --max-macs {max_macs:.3g}"})
            del archs[ident]
    work = pathlib.Path(tempfile.mkdtemp(prefix="kl_front_"))
    jobs = [(ident, True, arch, arch["input_size"]) for ident, arch in archs.items()]
    jobs += [(f"keras.applications.{name}", False, name, size or KERAS_SIZE)
             for name in keras_names]
    for attempt in range(1 + EXPORT_RETRIES):
        child = multiprocessing.get_context("spawn").Process(
            target=export_all, args=(jobs, str(work), quick))
        child.start()
        child.join()
        if child.exitcode >= 0 or attempt == EXPORT_RETRIES:
            break
        # faulthandler has printed where it died.
        print(f"the export process died of signal {-child.exitcode}; resuming the exports "
              "in a new process", file=sys.stderr, flush=True)
    if child.exitcode != 0:
        raise RuntimeError(f"the export process failed (exit code {child.exitcode})")
    rows = json.loads((work / "exports.json").read_text())
    for ident, row in list(rows.items()):
        if "failed" in row:
            arch = archs.pop(ident)
            left_out.append({"architecture": ident, "macs": arch["macs"],
                             "weight_sets": [weight_set_name(e) for e in arch["entries"]],
                             "reason": row.pop("failed")})
            del rows[ident]
    files = {ident: row.pop("files") for ident, row in rows.items()}
    makers = [(ident, p, functools.partial(timing.tflite_instance, path, 1))
              for ident, paths in files.items() for p, path in paths.items()]
    print(f"making {len(makers)} files x {instances} interpreters ...", flush=True)
    runners = [timing.Runner(ident, None, p, call) for (ident, p, _), call in zip(
        makers, timing.made_in_turns([m for _, _, m in makers], instances), strict=True)]
    peaks = [timing.matmul_peak_gmacs(threads=1)]
    print(f"timing {len(runners)} files x {runs} rounds ...", flush=True)
    timed = time.time()
    timing.interleave(runners, runs, warmup)
    timed = time.time() - timed
    peaks.append(timing.matmul_peak_gmacs(threads=1))
    shutil.rmtree(work, ignore_errors=True)
    for r in runners:
        row = rows[r.variant]
        row[f"{r.kind}_ms"] = r.median_ms
        row.setdefault("times_ms", {})[r.kind] = [1000 * t for t in r.times]
    for row in rows.values():
        row["int8_over_float32"] = timing.paired_ratio(row["times_ms"]["int8"],
                                                       row["times_ms"]["float32"])
    results = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "load_1min_start": load_start,
                    "load_1min_end": os.getloadavg()[0], "matmul_peak_gmacs_1t": max(peaks)},
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "runs": runs, "warmup": warmup, "instances": instances, "quick": quick,
        "size_override": size, "max_macs": max_macs,
        "seconds": {"total": time.time() - started, "timing": timed},
        "architectures": {}, "keras_applications": {}, "points": [], "left_out": left_out,
    }
    for ident, arch in archs.items():
        row = rows[ident]
        results["architectures"][ident] = {
            **{k: arch[k] for k in ("model", "family", "variant", "flavour", "input_size",
                                    "macs")},
            **row, "weight_sets": [weight_set_name(e) for e in arch["entries"]]}
        for e in arch["entries"]:
            results["points"].append({
                "weight_set": weight_set_name(e), "family": e["family"],
                "variant": e["variant"], "weights": e["weights"], "source": e["source"],
                "input_size": e["input_size"], "file": e["file"], "top1": e.get("top1"),
                "top1_source": e.get("top1_source"), "architecture": ident,
                "float32_ms": row["float32_ms"], "int8_ms": row["int8_ms"],
                "int8_over_float32": row["int8_over_float32"]})
    for name in keras_names:
        ident = f"keras.applications.{name}"
        _, family, variant = KERAS_MOBILENETS[name]
        reference = keras_reference_entry(family, variant) or {}
        results["keras_applications"][name] = {
            **rows[ident], "input_size": size or KERAS_SIZE, "top1": reference.get("top1"),
            "top1_source": reference.get("top1_source"), "manifest_file": reference.get("file")}
    mark_fronts(results)
    results["targets"] = measured_targets(results)
    if out is not None:
        write(results, out)
    return results


# -- the front and the targets -------------------------------------------------------------


def _all_points(results):
    """Ours and keras.applications', as `(label, top1, {precision: ms})`."""
    points = [(p["weight_set"], p["top1"], p) for p in results["points"]]
    points += [(f"keras.applications.{name}", k["top1"], k)
               for name, k in results["keras_applications"].items()]
    return [(label, top1, {q: row[f"{q}_ms"] for q in PRECISIONS})
            for label, top1, row in points if top1 is not None]


def front(points, precision):
    """Labels of the points no other point beats: as fast or faster and more accurate,
    or faster and as accurate."""
    on = set()
    for label, top1, ms in points:
        beaten = any((o_ms[precision] <= ms[precision] and o_top1 > top1)
                     or (o_ms[precision] < ms[precision] and o_top1 >= top1)
                     for _, o_top1, o_ms in points)
        if not beaten:
            on.add(label)
    return on


def mark_fronts(results):
    points = _all_points(results)
    fronts = {q: front(points, q) for q in PRECISIONS}
    for p in results["points"]:
        p["front"] = [q for q in PRECISIONS if p["weight_set"] in fronts[q]]
    for name, k in results["keras_applications"].items():
        k["front"] = [q for q in PRECISIONS if f"keras.applications.{name}" in fronts[q]]


def measured_targets(results):
    """`front_top1_gain` per keras.applications MobileNet and `int8_not_slower` over our
    files, against benchmarks/targets.py's bounds."""
    gains = []
    for name, k in results["keras_applications"].items():
        row = {"keras_model": name, "keras_top1": k["top1"], "keras_float32_ms": k["float32_ms"]}
        faster = [p for p in results["points"]
                  if p["top1"] is not None and p["float32_ms"] <= k["float32_ms"]]
        best = max(faster, key=lambda p: (p["top1"], -p["float32_ms"]), default=None)
        # For information: the best within 2 % of the keras model's latency.
        near = max((p for p in results["points"] if p["top1"] is not None
                    and p["float32_ms"] <= 1.02 * k["float32_ms"]),
                   key=lambda p: (p["top1"], -p["float32_ms"]), default=None)
        for key, p in (("best", best), ("best_within_2pct", near)):
            row[key] = None if p is None else {
                "weight_set": p["weight_set"], "top1": p["top1"], "float32_ms": p["float32_ms"],
                "gain": None if k["top1"] is None else p["top1"] - k["top1"]}
        # Our file of keras.applications' own weights (the same graph): what a few
        # percent of latency mean in this run.
        _, family, variant = KERAS_MOBILENETS[name]
        same = [ident for ident, a in results["architectures"].items()
                if a["family"] == family and a["variant"] == variant
                and a["flavour"] == KERAS_SOURCE and a["input_size"] == k["input_size"]]
        row["ours_same_weights_over_keras"] = None if not same else timing.paired_ratio(
            results["architectures"][same[0]]["times_ms"]["float32"], k["times_ms"]["float32"])
        gain = row["best"]["gain"] if row["best"] else None
        row.update(gain=gain, bound=targets.text("front_top1_gain"),
                   met=gain is not None and targets.met("front_top1_gain", gain))
        gains.append(row)
    ratios = {ident: a["int8_over_float32"] for ident, a in results["architectures"].items()}
    worst = max(ratios, key=ratios.get, default=None)
    slower = sorted((i for i, r in ratios.items() if not targets.met("int8_not_slower", r)),
                    key=ratios.get, reverse=True)
    int8 = {"files": len(ratios), "worst_architecture": worst,
            "worst_ratio": ratios.get(worst), "slower": {i: ratios[i] for i in slower},
            "bound": targets.text("int8_not_slower"), "met": bool(ratios) and not slower}
    return {"front_top1_gain": gains, "int8_not_slower": int8}


# -- writing -------------------------------------------------------------------------------


def write(results, out):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "front.json").write_text(json.dumps(results, indent=1))
    table = markdown(results)
    (out / "front.md").write_text(table)
    plot(results, out / "front.png")
    print(table)


def _ms(v):
    return "" if v is None else f"{v:.2f}"


def _variant(variant):
    return ", ".join(f"{k}={v}" for k, v in variant.items())


def markdown(results):
    m = results["machine"]
    minutes = results["seconds"]["total"] / 60
    lines = [
        "# The accuracy-latency front", "",
        f"{results['date']}. Machine: {m['cpus']} CPUs, {m['platform']}; float32 matmul peak "
        f"{m['matmul_peak_gmacs_1t']:.1f} GMAC/s (1 thread); 1-minute load average "
        f"{timing.load_text(m['load_1min_start'], m['load_1min_end'])} (other processes "
        f"share the machine; the interleaved rounds weigh on every file alike).",
        "",
        f"TFLite files (`keras_lightnets.export`, batch 1) run by ai-edge-litert with XNNPACK "
        f"on 1 thread: median of {results['runs']} interleaved rounds after "
        f"{results['warmup']} untimed ones (each file through {results['instances']} "
        f"interpreters in turn); int8/float32 is the median of the two files' ratios within "
        f"a round. Int8: post-training, calibrated on {8 if results['quick'] else 32} photos, "
        f"without the fitted rounding of the weights (`adaptive_rounding=False`), "
        f"unverified. Random trained-like weights: latency is the architecture's, whether "
        f"or not the weight file is on this machine; weight sets that share an architecture "
        f"(family, variant, flavour, input size) share its timing (the `timed as` column). "
        f"Top-1: the publisher's figure (the manifest's `top1`; sources below). The run "
        f"took {minutes:.1f} minutes ({results['seconds']['timing'] / 60:.1f} timing).",
    ]
    if results["size_override"]:
        lines += ["", f"Smoke run: every model at {results['size_override']} px, not its "
                      f"entry's size; top-1 figures are the publishers' at their sizes."]
    sources = {}
    for p in results["points"]:
        sources.setdefault(p["top1_source"], len(sources) + 1)
    for k in results["keras_applications"].values():
        sources.setdefault(k["top1_source"], len(sources) + 1)
    order = {ident: i + 1 for i, ident in enumerate(sorted(
        results["architectures"], key=lambda a: results["architectures"][a]["float32_ms"]))}
    rows = [(p["float32_ms"], p["weight_set"], p["source"], p["input_size"], p["top1"],
             sources[p["top1_source"]], p, str(order[p["architecture"]]))
            for p in results["points"]]
    rows += [(k["float32_ms"], f"**keras.applications.{name}** (weights=None)",
              KERAS_SOURCE + " (reference)", k["input_size"], k["top1"],
              sources[k["top1_source"]], k, "-")
             for name, k in results["keras_applications"].items()]
    lines += ["", "Sorted by float32 latency; `front`: no other point (ours or "
                  "keras.applications') is as fast and more accurate, or faster and as "
                  "accurate, at that precision.", "",
              "| weight set | source | input | top-1 | float32 ms | int8 ms | int8/float32 "
              "| front | timed as |",
              "|---|---|---|---|---|---|---|---|---|"]
    for ms, label, source, rows_px, top1, ref, row, timed_as in sorted(
            rows, key=lambda r: (r[0], r[1])):
        top = "" if top1 is None else f"{top1:.2f} [{ref}]"
        ratio = row.get("int8_over_float32")
        lines.append(f"| {label} | {source} | {rows_px} | {top} | {_ms(ms)} | "
                     f"{_ms(row['int8_ms'])} | {'' if ratio is None else f'{ratio:.2f}'} | "
                     f"{', '.join(row['front'])} | {timed_as} |")
    lines += ["", "Top-1 sources:", *[f"{i}. {s}" for s, i in sources.items()]]
    if results["left_out"]:
        lines += ["", "Left out:", ""]
        for x in results["left_out"]:
            what = x.get("architecture") or x.get("weight_set")
            sets = f" ({', '.join(x['weight_sets'])})" if x.get("weight_sets") else ""
            macs = f", {x['macs'] / 1e9:.2f} GMACs" if x.get("macs") else ""
            lines.append(f"- {what}{sets}{macs}: {x['reason']}")
    notes = [f"- {ident}: {note}" for ident, a in results["architectures"].items()
             for note in a["notes"]]
    notes += [f"- keras.applications.{name}: {note}"
              for name, k in results["keras_applications"].items() for note in k["notes"]]
    if notes:
        lines += ["", "Files timed although their export verification failed (random "
                      "weights):", *notes]
    lines += ["", *targets_markdown(results)]
    return "\n".join(lines) + "\n"


def targets_markdown(results):
    t = results["targets"]
    lines = ["## Targets", "",
             f"`front_top1_gain` ({targets.text('front_top1_gain')} points): at each "
             f"keras.applications MobileNet's float32 latency (this run), the package's most "
             f"accurate weight set no slower; the best within 2 % of that latency for "
             f"information.", "",
             "| keras.applications | its top-1 | its float32 ms | best weight set no slower "
             "| its ms | top-1 | gain | met | best within 2 % (gain) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for g in t["front_top1_gain"]:
        b, n = g["best"], g["best_within_2pct"]
        best = "none | | | " if b is None else \
            f"{b['weight_set']} | {b['float32_ms']:.2f} | {b['top1']:.2f} | {b['gain']:+.2f}"
        near = "" if n is None else f"{n['weight_set']} ({n['gain']:+.2f})"
        lines.append(f"| {g['keras_model']} | {g['keras_top1']} | {g['keras_float32_ms']:.2f} "
                     f"| {best} | {'yes' if g['met'] else 'NO'} | {near} |")
    same = [f"{g['keras_model']} {g['ours_same_weights_over_keras']:.3f}"
            for g in t["front_top1_gain"] if g.get("ours_same_weights_over_keras")]
    if same:
        lines += ["", "Resolution: our float32 file of the same keras.applications weights over "
                      "keras.applications' own file (op-for-op the same graph as run.py "
                      "checks), paired per round: " + ", ".join(same) + "."]
    i = t["int8_not_slower"]
    worst = "" if i["worst_ratio"] is None else f"{i['worst_ratio']:.3f}"
    lines += ["", f"`int8_not_slower` ({i['bound']}): int8/float32 over our {i['files']} "
                  f"architectures' files; worst {i['worst_architecture']} {worst}; "
                  f"met: {'yes' if i['met'] else 'NO'}."]
    if i["slower"]:
        lines.append("Over the bound: " + ", ".join(f"{a} {r:.3f}"
                                                     for a, r in i["slower"].items()) + ".")
    return lines


def plot(results, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is not installed: no plot written")
        return
    colours = {"keras.applications": "tab:orange", "torchvision": "tab:green",
               "paddleclas": "tab:blue", "timm": "tab:red", "megvii": "tab:purple"}
    fig, axes = plt.subplots(1, 2, figsize=(16, 7), sharey=True)
    points = _all_points(results)
    for ax, precision in zip(axes, PRECISIONS, strict=True):
        key = f"{precision}_ms"
        for source in sorted({p["source"] for p in results["points"]}):
            mine = [p for p in results["points"] if p["source"] == source and p["top1"]]
            ax.scatter([p[key] for p in mine], [p["top1"] for p in mine], s=18,
                       color=colours.get(source, "tab:gray"), alpha=0.8,
                       label=f"keras_lightnets, {source} weights")
        for name, k in results["keras_applications"].items():
            if k["top1"] is None:
                continue
            ax.scatter(k[key], k["top1"], marker="*", s=160, color="black", zorder=3,
                       label="keras.applications (same export)"
                       if name == next(iter(results["keras_applications"])) else None)
            ax.annotate(name, (k[key], k["top1"]), fontsize=7, xytext=(6, -12),
                        textcoords="offset points", fontweight="bold")
        on = sorted(((ms[precision], top1, label) for label, top1, ms in points
                     if label in front(points, precision)))
        if on:
            ax.step([x for x, _, _ in on], [y for _, y, _ in on], where="post",
                    color="gray", lw=0.8, alpha=0.7, label="front")
            for x, y, label in on:
                if not label.startswith("keras.applications"):
                    ax.annotate(label, (x, y), fontsize=5.5, xytext=(-3, 4),
                                textcoords="offset points", ha="right", alpha=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"TFLite {precision} latency, ms (1 thread, batch 1, XNNPACK)")
        ax.set_title(f"{precision} files")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("publisher's ImageNet top-1 (%)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("keras_lightnets weight sets: accuracy vs latency on this machine "
                 f"({results['date']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=None,
                        help="only the weight sets of these registered models")
    parser.add_argument("--keras", nargs="*", default=list(KERAS_MOBILENETS),
                        choices=list(KERAS_MOBILENETS),
                        help="keras.applications MobileNets timed beside ours (none: give "
                             "the option alone)")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--instances", type=int, default=INSTANCES,
                        help="interpreters per file, used in turn")
    parser.add_argument("--max-macs", type=float, default=None,
                        help="leave out architectures above this many MACs (listed)")
    parser.add_argument("--size", type=int, default=None,
                        help="every model at this input size (smoke runs only)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer calibration images")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--from-json", default=None,
                        help="rewrite the table and plot from a recorded front.json")
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(pathlib.Path(args.from_json).read_text())
        mark_fronts(results)
        results["targets"] = measured_targets(results)
        write(results, args.out)
        return 0
    benchmark(args.variants, args.keras, args.runs, args.warmup, args.instances,
              args.max_macs, args.size, args.quick, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

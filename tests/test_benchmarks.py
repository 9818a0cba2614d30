"""The benchmark scripts end to end on one tiny variant: smoke tests, no timing is asserted."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from conftest import ROOT

VARIANT = "mobilenet_v3_small_075"
INVESTIGATIONS = ROOT / "benchmarks" / "investigations"


def test_benchmark_script_writes_table_json_and_plot(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--variants", VARIANT,
         "--runs", "3", "--warmup", "1", "--size", "96", "--quick", "--out", str(tmp_path),
         "--normalized-input", VARIANT],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert data["input_size"] == 96
    row = data["variants"][VARIANT]
    assert row["params"] > 0 and row["macs"] > 0 and row["top1"] is not None
    assert row["sizes"]["ours:tflite_int8"] < row["sizes"]["ours:tflite_fp32"]
    kinds = {m["kind"]: m for m in data["measurements"] if m["source"] == "ours"}
    assert {"tflite_fp32_1t", "tflite_int8_1t", "onnxruntime_1t", "keras_b1",
            "keras_b32"} <= set(kinds)
    # The same network without its normalization layer, as MobileNetV2's graph is.
    assert [m["kind"] for m in data["measurements"]
            if m["source"] == "ours_normalized_input"] == ["tflite_fp32_1t"]
    for m in data["measurements"]:
        assert m["runs"] == 3 and m["median_ms"] > 0, m
    assert kinds["keras_b32"]["images_per_s"] > 0
    assert 0 < kinds["tflite_fp32_1t"]["fraction_of_peak"]
    assert data["machine"]["matmul_peak_gmacs_1t"] > 0
    ratio = {t["target"]: t for t in data["targets"]}
    target = ratio[f"{VARIANT} int8 (post-training) vs float32 TFLite (1 thread)"]
    assert target["ratio"] > 0 and isinstance(target["met"], bool)

    table = (tmp_path / "benchmark.md").read_text()
    line = next(x for x in table.splitlines() if x.startswith(f"| {VARIANT} | ours |"))
    assert len(re.findall(r"\d+\.\d\d", line)) == len(kinds)
    png = (tmp_path / "latency_vs_top1.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_op_profile_accounts_for_every_op(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(INVESTIGATIONS / "op_profile.py"), "--models", VARIANT,
         "--size", "96", "--runs", "2", "--warmup", "1", "--copies", "2", "--per-op",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    data = json.loads((tmp_path / "op_profile.json").read_text())
    (summary,) = data["models"]
    profiles = data["per_op"][VARIANT]
    for precision in ("float32", "int8"):
        ops = profiles[precision]["ops"]
        # One row per operator of the file, in order, each timed.
        assert [row["index"] for row in ops] == list(range(len(ops)))
        assert all(row["ms"] > 0 for row in ops)
        by_type = {}
        for row in ops:
            by_type[row["op"]] = by_type.get(row["op"], 0) + row["ms"]
        assert sum(by_type.values()) == pytest.approx(summary["sum_of_ops_ms"][precision])
        assert summary["whole_ms"][precision] > 0
    assert {"CONV_2D", "DEPTHWISE_CONV_2D"} <= set(summary["by_type"])
    assert "QUANTIZE" in {row["op"] for row in profiles["int8"]["ops"]}
    assert 0 < summary["floor_int8_conv"] < summary["ratio_sum_of_ops"]
    assert f"## {VARIANT}" in (tmp_path / "op_profile.md").read_text()


def test_keep_ops_leaves_the_convolutions_wired_as_they_were(tmp_path):
    """The int8 floor file: only the convolutions, each still reading what it read."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import tflite_graph
    from ai_edge_litert.tools import flatbuffer_utils

    import keras_lightnets as kl
    from keras_lightnets import export

    model = kl.MobileNetV2(alpha=0.35, input_shape=(64, 64, 3), weights=None)
    report = export.to_tflite(model, tmp_path / "f32.tflite", progress=False)
    content = pathlib.Path(report.path).read_bytes()
    whole = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    cut = flatbuffer_utils.read_model_from_bytearray(
        bytearray(tflite_graph.keep_ops(content)))
    names = tflite_graph.op_names(whole)
    convs = [op for op in whole.subgraphs[0].operators
             if names[op.opcodeIndex] in tflite_graph.CONVOLUTIONS]
    kept = cut.subgraphs[0].operators
    assert [op.opcodeIndex for op in kept] == [op.opcodeIndex for op in convs]
    graph = cut.subgraphs[0]
    made = {int(t) for op in kept for t in op.outputs}
    inputs = {int(t) for t in graph.inputs}
    # The block inputs (made by dropped ADDs and the input layer) are graph inputs, one per
    # shape; the projections that fed an ADD and the classifier are graph outputs.
    assert not inputs & made and 1 < len(inputs) < len(convs) and len(graph.outputs) > 1
    for op, original in zip(kept, convs, strict=True):
        assert [int(t) for t in op.outputs] == [int(t) for t in original.outputs]
        for t, was in zip(op.inputs, original.inputs, strict=True):
            if was in made or t < 0 or t == was:
                assert t == was
            else:
                assert t in inputs
                assert (list(graph.tensors[t].shape), graph.tensors[t].type) == \
                    (list(whole.subgraphs[0].tensors[was].shape),
                     whole.subgraphs[0].tensors[was].type)

    from keras_lightnets.export import tflite
    interp = tflite.interpreter(tflite_graph.keep_ops(content), num_threads=1)
    interp.invoke()


def test_split_cost_times_the_shufflenet_files_side_by_side(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(INVESTIGATIONS / "split_cost.py"), "--shufflenet",
         "shufflenet_v2_050", "--reference", "mobilenet_v2_035", "--size", "64", "--runs", "3",
         "--warmup", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    files = json.loads((tmp_path / "split_cost.json").read_text())["files"]
    assert list(files) == ["mobilenet_v2", "shufflenet_v2", "normalized_input",
                           "unrouted", "free_slices", "convolutions"]
    for row in files.values():
        assert row["median_ms"] > 0 and row["over_mobilenet_v2"] > 0
    assert files["mobilenet_v2"]["over_mobilenet_v2"] == 1
    ops = {key: row["ops"] for key, row in files.items()}
    # Routed: no shuffle ops, slices gather the channels; unrouted: the model's own shuffles.
    assert ops["shufflenet_v2"]["SLICE"] > 0 and "TRANSPOSE" not in ops["shufflenet_v2"]
    assert ops["unrouted"]["TRANSPOSE"] > 0
    assert "SLICE" not in ops["free_slices"]
    assert ops["free_slices"]["CONCATENATION"] == ops["shufflenet_v2"]["CONCATENATION"]
    # Without the normalization layer: one CONV_2D fewer, the same network.
    assert ops["normalized_input"]["CONV_2D"] == ops["shufflenet_v2"]["CONV_2D"] - 1
    assert ops["normalized_input"]["PAD"] == ops["shufflenet_v2"]["PAD"]
    assert set(ops["convolutions"]) == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    assert "| free_slices |" in (tmp_path / "split_cost.md").read_text()


def test_readme_targets_table_mirrors_targets_py():
    """benchmarks/README.md's table of targets gives targets.py's bounds, one row per key."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import targets

    text = (ROOT / "benchmarks" / "README.md").read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| `")]
    table = {cells[0].strip().strip("`"): cells[2].strip() for cells in rows}
    assert table == {key: targets.text(key) for key in targets.TARGETS}


def test_front_script_times_each_architecture_once(tmp_path):
    """Two weight sets of one architecture (PaddleClas' MobileNetV3 Small 0.35, plain and
    SSLD) share one timed pair of files, beside keras.applications' MobileNet."""
    from keras_lightnets.weights import manifest

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "front.py"), "--variants",
         "mobilenet_v3_small_035", "--keras", "MobileNet", "--size", "64", "--runs", "3",
         "--warmup", "1", "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-3000:]

    data = json.loads((tmp_path / "front.json").read_text())
    sets = {e["weights"]: e for e in manifest.entries("MobileNetV3Small")
            if e["variant"]["alpha"] == 0.35 and e["include_top"]}
    assert set(sets) == {"paddle", "paddle_ssld"}
    (ident, arch), = data["architectures"].items()
    assert ident == "mobilenet_v3_small_035.paddleclas@64" and arch["input_size"] == 64
    assert arch["weight_sets"] == [f"mobilenet_v3_small_035.{w}" for w in sets]
    for precision in ("float32", "int8"):
        assert arch[f"{precision}_ms"] > 0 and len(arch["times_ms"][precision]) == 3
    assert arch["bytes"]["int8"] < arch["bytes"]["float32"]
    assert arch["int8_over_float32"] > 0
    points = {p["weights"]: p for p in data["points"]}
    assert set(points) == set(sets)
    for weights, p in points.items():
        assert (p["top1"], p["top1_source"]) == (sets[weights]["top1"],
                                                 sets[weights]["top1_source"])
        assert (p["architecture"], p["float32_ms"], p["int8_ms"]) == \
            (ident, arch["float32_ms"], arch["int8_ms"])
    # Same latency, lower top-1: never on a front.
    assert points["paddle"]["front"] == []
    (keras_name, peer), = data["keras_applications"].items()
    assert keras_name == "MobileNet" and peer["float32_ms"] > 0 and peer["int8_ms"] > 0
    assert peer["top1"] == next(e["top1"] for e in manifest.entries("MobileNet", "imagenet")
                                if e["variant"] == {"alpha": 1.0} and e["input_size"] == 224)
    (gain,) = data["targets"]["front_top1_gain"]
    assert gain["keras_model"] == "MobileNet" and isinstance(gain["met"], bool)
    if gain["best"] is not None:
        assert gain["gain"] == gain["best"]["top1"] - peer["top1"]
    int8 = data["targets"]["int8_not_slower"]
    assert int8["files"] == 1 and int8["worst_architecture"] == ident
    assert int8["worst_ratio"] == arch["int8_over_float32"] and isinstance(int8["met"], bool)
    assert data["machine"]["load_1min_start"] is not None

    table = (tmp_path / "front.md").read_text()
    line = next(x for x in table.splitlines()
                if x.startswith("| mobilenet_v3_small_035.paddle_ssld |"))
    assert f"{arch['float32_ms']:.2f}" in line and "[1]" in line
    assert "**keras.applications.MobileNet**" in table and "## Targets" in table
    png = (tmp_path / "front.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_front_marks_the_points_no_other_beats():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import front

    points = [("a", 70.0, {"float32": 1.0}), ("b", 72.0, {"float32": 2.0}),
              ("c", 71.0, {"float32": 3.0}), ("d", 72.0, {"float32": 2.5}),
              ("e", 70.0, {"float32": 1.0})]
    # c is slower and less accurate than b; d as accurate as b but slower; a and e tie.
    assert front.front(points, "float32") == {"a", "b", "e"}


def test_front_export_process_resumes_what_its_predecessor_finished(tmp_path):
    """A retried export process (after a native abort) skips the finished jobs and
    keeps their rows."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import front

    finished = {"a": {"files": {"float32": "a.tflite"}, "params": 1},
                "b": {"failed": "export failed: ValueError: x"}}
    (tmp_path / "exports.json").write_text(json.dumps(finished))
    # Building either would fail: "nothing" is no architecture.
    front.export_all([("a", True, "nothing", 64), ("b", True, "nothing", 64)],
                     str(tmp_path), quick=True)
    assert json.loads((tmp_path / "exports.json").read_text()) == finished

"""The keras-lightnets command, end to end through subprocess."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SAMPLE, WEIGHTS, shared_file


def run_cli(*args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "keras_lightnets_cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )


def test_demo_runs_offline_with_random_weights():
    result = run_cli("demo", "--model", "mobilenet_v3_small_100")
    assert result.returncode == 0, result.stderr
    assert "params" in result.stdout and "2,554,968" in result.stdout
    assert "MACs" in result.stdout
    assert "Top-5" in result.stdout


def test_classify_with_real_weights():
    weights = shared_file(WEIGHTS / "mobilenet_1_0.25_224_keras.h5")
    photo = shared_file(SAMPLE / "jpeg" / "n01530575_brambling.JPEG")
    result = run_cli("classify", "mobilenet_v1_025", str(photo), "--weights", str(weights))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("Top-5")
    assert len(lines) == 6
    assert "n01530575" in result.stdout  # brambling is among the top 5


def test_info_and_list():
    from keras_lightnets import registry
    from keras_lightnets.weights import has_imagenet_weights

    result = run_cli("info", "mobilenet_v2_035")
    assert result.returncode == 0, result.stderr
    assert "1,691,208" in result.stdout
    assert "DepthwiseConv2D" in result.stdout  # the layer summary
    result = run_cli("list", "--family", "MobileNetV3Small")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.split() == ["name", "family", "params", "MACs", "(M)", "ImageNet"]
    names = registry.list_models(family="MobileNetV3Small")
    assert [row.split()[0] for row in rows] == names
    for row in rows:
        entry = registry.get_entry(row.split()[0])
        expected = "yes" if has_imagenet_weights(entry.family, entry.kwargs) else "no"
        assert row.split()[-1] == expected, row


@pytest.mark.heavy
def test_list_every_model():
    from keras_lightnets import registry

    result = run_cli("list", timeout=900)
    assert result.returncode == 0, result.stderr
    listed = [row.split()[0] for row in result.stdout.strip().splitlines()[1:]]
    assert listed == registry.list_models()


def test_export_int8_tflite_with_real_weights(tmp_path):
    weights = shared_file(WEIGHTS / "mobilenet_1_0.25_224_keras.h5")
    shared_file(SAMPLE / "jpeg")
    out = tmp_path / "mobilenet_int8.tflite"
    result = run_cli("export", "mobilenet_v1_025", "--weights", str(weights),
                     "--format", "tflite", "--quantize", "int8", "--calibration-dir",
                     str(SAMPLE / "jpeg"), "--calibration-limit", "32", "--io-dtype", "uint8",
                     "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "/32" in result.stdout  # the calibration progress bar has its target
    assert "verified on 16 inputs" in result.stdout
    assert "uint8" in result.stdout and "preprocess_input" in result.stdout
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(out))
    assert interp.get_input_details()[0]["dtype"] == np.uint8
    assert list(interp.get_input_details()[0]["shape"]) == [1, 224, 224, 3]


@pytest.mark.parametrize("fmt, name", [("onnx", "model.onnx"), ("saved_model", "saved"),
                                       ("tflite", "model.tflite")])
def test_export_formats(fmt, name, tmp_path):
    out = tmp_path / name
    extra = {"tflite": ["--quantize", "float16"], "onnx": ["--input-layout", "NCHW"]}
    result = run_cli("export", "mobilenet_v3_small_100", "--weights", "none", "--format", fmt,
                     "--input-size", "96", *extra.get(fmt, []), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.exists()
    assert "verified on" in result.stdout and "raw RGB pixels" in result.stdout
    assert ("batch" in result.stdout) == (fmt == "onnx")
    if fmt == "onnx":
        import onnx

        dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_value for d in dims[1:]] == [3, 96, 96]


def test_benchmark_measures_float_and_int8_latency():
    result = run_cli("benchmark", "mobilenet_v1_025", "--input-size", "96", "--runs", "3",
                     "--warmup", "1")
    assert result.returncode == 0, result.stderr
    row = result.stdout.strip().splitlines()[-1].split()
    assert row[0] == "mobilenet_v1_025" and row[1] == "96x96"
    float_ms, int8_ms, float_mib, int8_mib = map(float, row[2:])
    assert float_ms > 0 and int8_ms > 0
    assert int8_mib < float_mib / 2


@pytest.mark.parametrize("args", [
    ("info", "no_such_model"),
    ("classify", "mobilenet_v1_025", "/no/such.jpg", "--weights", "none"),
    ("demo", "--weights", "/no/such/file.h5"),
    ("frobnicate",),
    ("export", "mobilenet_v1_025", "--format", "tflite"),  # no -o
    ("export", "mobilenet_v1_025", "--format", "tflite", "--quantize", "int8", "-o", "x"),
])
def test_user_errors_exit_2_without_traceback(args):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("keras-lightnets: error:"), lines


@pytest.mark.parametrize("args", [
    ("export", "mobilenet_v1_025", "--format", "tflite", "--quantize", "int4", "-o", "x"),
    ("export", "mobilenet_v1_025", "--format", "onnx", "--quantize", "int8", "-o", "x"),
    ("export", "mobilenet_v1_025", "--format", "tflite", "--quantize", "int8",
     "--calibration-dir", "/no/such/dir", "-o", "x"),
    ("export", "mobilenet_v1_025", "--format", "tflite", "--calibration-dir", "/tmp", "-o", "x"),
    ("export", "mobilenet_v1_025", "--format", "onnx", "--io-dtype", "uint8", "-o", "x"),
    ("export", "mobilenet_v1_025", "--format", "tflite", "--input-layout", "NCHW", "-o", "x"),
    ("export", "mobilenet_v1_025", "--format", "tflite", "--batch-size", "0", "-o", "x"),
    ("export", "no_such_model", "--format", "onnx", "-o", "x"),
    ("export", "mobilenet_v1_025", "--weights", "/no/such.h5", "--format", "onnx", "-o", "x"),
    ("export", "mobilenet_v1_025", "--weights", "none", "--format", "onnx", "--opset", "7",
     "-o", "x"),
    ("benchmark", "no_such_model"),
    ("benchmark", "mobilenet_v1_025", "--runs", "-1"),
])
def test_more_user_errors_exit_2_in_process(args, capsys, tmp_path, monkeypatch):
    """The same contract through `cli.main` (each subprocess costs a TF import)."""
    from keras_lightnets import cli

    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse errors
        code = exc.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-lightnets: error:"), lines
    assert not os.listdir(tmp_path)

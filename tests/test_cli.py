"""The keras-lightnets command, end to end through subprocess."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SAMPLE, WEIGHTS, shared_file


def run_cli(*args, timeout=300, env=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "keras_lightnets_cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )


def test_demo_runs_offline_with_random_weights(tmp_path):
    result = run_cli("demo", env={"KERAS_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "params" in result.stdout and "2,554,968" in result.stdout
    assert "MACs" in result.stdout and "Keras forward" in result.stdout
    # Random weights: no meaningless top-5, and the output says why.
    assert "Top-5" not in result.stdout
    assert "weights are random" in result.stdout


def test_demo_uses_cached_imagenet_weights(tmp_path):
    weights = shared_file(WEIGHTS / "mobilenet_1_0.25_224_keras.h5")
    photo = shared_file(SAMPLE / "jpeg" / "n01622779_great_grey_owl.JPEG")
    (tmp_path / "models").mkdir()
    os.symlink(weights, tmp_path / "models" / "mobilenet_2_5_224_tf.h5")
    result = run_cli("demo", "--model", "mobilenet_v1_025", "--image", str(photo),
                     env={"KERAS_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "weights=imagenet" in result.stdout
    top = result.stdout.split("Top-5")[1].splitlines()[1].split()
    assert top[:2] == ["n01622779", "great_grey_owl"], result.stdout


def test_classify_with_real_weights():
    weights = shared_file(WEIGHTS / "mobilenet_1_0.25_224_keras.h5")
    photo = shared_file(SAMPLE / "jpeg" / "n01622779_great_grey_owl.JPEG")
    result = run_cli("classify", "mobilenet_v1_025", str(photo), "--weights", str(weights))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("Top-5")
    assert len(lines) == 6
    # the rows, not the header (which names the file), hold the class
    assert lines[1].split()[:2] == ["n01622779", "great_grey_owl"], result.stdout


def test_info_and_list():
    from keras_lightnets import registry
    from keras_lightnets.weights import has_imagenet_weights

    result = run_cli("info", "mobilenet_v2_035")
    assert result.returncode == 0, result.stderr
    assert "1,691,208" in result.stdout
    assert "DepthwiseConv2D" in result.stdout  # the layer summary
    result = run_cli("list", "--family", "MobileNetV3Small")
    assert result.returncode == 0, result.stderr
    header, *rows, footer = result.stdout.strip().splitlines()
    assert header.split() == ["name", "family", "params", "MACs", "(M)", "ImageNet"]
    assert "224x224" in footer
    names = registry.list_models(family="MobileNetV3Small")
    assert [row.split()[0] for row in rows] == names
    for row in rows:
        entry = registry.get_entry(row.split()[0])
        expected = "yes" if has_imagenet_weights(entry.family, entry.variant) else "no"
        assert row.split()[-1] == expected, row


def test_list_every_model_with_its_weights(monkeypatch, capsys):
    """`list` reads the recorded table: every model, no model built."""
    from keras_lightnets import cli, registry

    def no_build(*args, **kwargs):
        raise AssertionError("list must not build models")

    monkeypatch.setattr(registry.ModelEntry, "build", no_build)
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:-1]
    rows = {line.split()[0]: line.split() for line in lines}
    assert list(rows) == registry.list_models()
    for alpha in ("050", "100", "150", "200"):
        assert rows[f"shufflenet_v2_{alpha}"][-1] == "yes"
    assert rows["shufflenet_v2_025"][-1] == "no"
    assert rows["mobilenet_v3_small_100"][2] == "2,554,968"


def _registry_entries():
    import keras_lightnets

    return keras_lightnets.registry.entries()


@pytest.mark.parametrize("entry", [
    pytest.param(e, id=e.name, marks=() if e.default else pytest.mark.heavy)
    for e in _registry_entries()])
def test_list_table_has_not_drifted(entry):
    from keras_lightnets import registry

    recorded = registry.complexity_table()[entry.name]
    assert (recorded["params"], recorded["macs"]) == registry.complexity(entry), (
        "refresh with `python -m keras_lightnets.weights.manifest --update`")


def test_unknown_family_and_model_name_suggest(capsys):
    from keras_lightnets import cli

    assert cli.main(["list", "--family", "shufflenetv2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'ShuffleNetV2'" in err and "MobileNetV3Small" in err and len(err.splitlines()) == 1
    assert cli.main(["info", "mobilenetv2_100"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Did you mean 'mobilenet_v2_100'" in err and len(err.splitlines()) == 1


def test_version_and_weights_help(capsys):
    import keras_lightnets
    from keras_lightnets import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert keras_lightnets.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["classify", "--help"])
    assert "imagenet (default)" in " ".join(capsys.readouterr().out.split())


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


def test_benchmark_weights_are_trained_like():
    """The benchmark's random weights: batch norms measured on the inputs, layer scales of a
    trained model's size (initial ones leave float32 files off by rounding alone)."""
    import keras

    import keras_lightnets as kl
    from keras_lightnets import cli

    model = kl.MobileNetV4HybridMedium(weights=None, input_shape=(64, 64, 3))
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    cli._trained_like(model, x)
    scales = [la.get_weights()[0] for la in model._flatten_layers()
              if isinstance(la, kl.layers.LayerScale)]
    assert scales and all(0.5 <= s.min() and s.max() <= 1.5 for s in scales)
    norms = [la for la in model._flatten_layers()
             if isinstance(la, keras.layers.BatchNormalization)]
    assert all(np.abs(la.moving_mean.numpy()).max() > 0 for la in norms)


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
    ("export", "mobilenet_v1_025", "--weights", "none", "--format", "tflite", "--input-size",
     "100000", "-o", "x"),
    ("info", "mobilenet_v1_025", "--weights", "/tmp"),  # a folder, not a weights file
    ("info", "shufflenet_v2_050", "--weights", "/dev/null"),
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


def _png_header(path, width, height):
    """A PNG whose header claims `width` x `height` pixels (a decompression bomb's)."""
    import struct
    import zlib

    body = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + body
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(body)) + chunk
                     + struct.pack(">I", zlib.crc32(chunk)))
    return path


@pytest.mark.parametrize("case", ["offline_classify", "offline_export", "keras_home_is_file",
                                  "image_bomb", "output_under_a_file"])
def test_user_facing_failures_are_one_line(case, tmp_path, monkeypatch, capsys):
    """Failed downloads, bad cache folders, hostile images, unwritable outputs: exit 2."""
    from keras_lightnets import cli

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KERAS_LIGHTNETS_WEIGHTS_MIRROR", (tmp_path / "empty").as_uri())
    photo = _png_header(tmp_path / "bomb.png", 50000, 50000)
    args = {
        "offline_classify": ["classify", "mobilenet_v1_025", str(photo)],
        "offline_export": ["export", "mobilenet_v1_025", "--format", "onnx", "-o",
                           str(tmp_path / "m.onnx")],
        "keras_home_is_file": ["classify", "mobilenet_v1_025", str(photo)],
        "image_bomb": ["classify", "mobilenet_v1_025", str(photo), "--weights", "none"],
        "output_under_a_file": ["export", "mobilenet_v1_025", "--weights", "none",
                                "--input-size", "32", "--format", "tflite", "--no-verify",
                                "-o", str(photo / "m.tflite")],
    }[case]
    if case == "keras_home_is_file":
        (tmp_path / "home").write_text("not a folder")
    assert cli.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-lightnets: error:"), lines
    if case.startswith("offline"):
        assert "mobilenet_2_5_224_tf.h5" in lines[0]
        assert str(tmp_path / "home") in lines[0] and "KERAS_LIGHTNETS_WEIGHTS_MIRROR" in lines[0]


def test_failed_verification_names_the_cli_flag(tmp_path, monkeypatch, capsys):
    from keras_lightnets import cli, export
    from keras_lightnets.export.verify import ExportVerificationError

    def failing(*args, **kwargs):
        raise ExportVerificationError("The tflite export does not reproduce the Keras model.")

    monkeypatch.setattr(export, "to_tflite", failing)
    code = cli.main(["export", "mobilenet_v1_025", "--weights", "none", "--input-size", "32",
                     "--format", "tflite", "-o", str(tmp_path / "m.tflite")])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--no-verify" in err

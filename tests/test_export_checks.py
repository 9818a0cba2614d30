"""Export verification judged as a user judges a format, and export argument and IO safety.

Float16 and dynamic-range files of the real MobileNet 0.25 must pass their
default verification, and files converted from weights perturbed by 10% must
fail it; the rest runs on tiny models.
"""

import errno
import os
import subprocess
import time

import keras
import numpy as np
import pytest
from conftest import WEIGHTS, shared_file

from keras_lightnets import export
from keras_lightnets.export import _atomic, _model, verify
from keras_lightnets.export import tflite as tflite_lib

SIZE = 32


@pytest.fixture(scope="module")
def real_mobilenet():
    import keras_lightnets as kl

    weights = shared_file(WEIGHTS / "mobilenet_1_0.25_224_keras.h5")
    return kl.MobileNet(alpha=0.25, weights=str(weights))


def tiny_model(lambda_layer=False, classes=10, activation=None, seed=0):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.ReLU(6.0, name="conv_relu")(x)
    if lambda_layer:
        x = keras.layers.Lambda(lambda t: t * 0.5 + 0.25, name="halve")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(classes, activation=activation, name="fc")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in v.path
                       else rng.normal(0, 0.5, w.shape).astype("float32")
                       for v, w in zip(model.weights, model.get_weights(), strict=True)])
    return model


def images(n=16, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, SIZE, SIZE, 3)).astype("float32")


@pytest.mark.parametrize("quantization", ["float16", "dynamic"])
def test_real_weights_pass_and_perturbed_weights_fail(real_mobilenet, quantization, tmp_path,
                                                      monkeypatch):
    model = real_mobilenet
    report = export.to_tflite(model, tmp_path / "m.tflite", quantization)
    assert report.verified and report.verify_inputs == "synthetic images", report
    assert report.samples == tflite_lib.VERIFY_IMAGES
    assert "top1_in_top5 >= 0.75" in report.tolerance and "synthetic" in report.tolerance
    assert report.top1_in_top5 >= 0.75 and report.top5_overlap is not None
    assert "criterion:" in report.summary()
    if quantization == "float16":
        assert report.logit_max_rel_diff <= 0.1, report
    else:
        assert report.logit_cosine >= 0.85, report

    # A broken conversion: the file holds the weights times (1 + 0.1 N(0, 1)).
    rng = np.random.default_rng(0)
    perturbed = keras.models.clone_model(model)
    perturbed.set_weights([w * (1 + 0.1 * rng.standard_normal(w.shape)).astype("float32")
                           for w in model.get_weights()])
    convert = tflite_lib.convert
    monkeypatch.setattr(tflite_lib, "convert",
                        lambda _, *args, **kwargs: convert(perturbed, *args, **kwargs))
    path = tmp_path / "broken.tflite"
    with pytest.raises(export.ExportVerificationError, match="top 5") as info:
        export.to_tflite(model, path, quantization)
    broken = info.value.report
    assert broken.top1_in_top5 < 0.75
    assert (broken.logit_max_rel_diff > 0.1 if quantization == "float16"
            else broken.logit_cosine < 0.85), broken
    assert not path.exists()


def test_logits_of_softmax_outputs_ignore_a_constant_shift():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (6, 20))
    reference = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    shifted = np.exp(logits + 1e-3 * rng.normal(size=logits.shape))
    measured = verify.measure([reference.astype("float32")],
                              [(shifted / shifted.sum(1, keepdims=True)).astype("float32")])
    assert measured["logit_cosine"] > 0.9999 and measured["logit_max_rel_diff"] < 1e-3
    assert measured["top1_in_top5"] == 1.0 and measured["constant_outputs"] == 0


def test_synthetic_images_are_deterministic_and_in_the_input_domain():
    model = tiny_model()
    x = _model.synthetic_images(model, (1, 40, 48, 3), 4)
    assert x.shape == (4, 40, 48, 3) and x.dtype == np.float32
    assert -1 <= x.min() and x.max() <= 1 and x.std() > 0.1
    np.testing.assert_array_equal(x, _model.synthetic_images(model, (1, 40, 48, 3), 4))
    raw = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255),
                            keras.layers.Conv2D(2, 3)])
    x = _model.synthetic_images(raw, (1, 16, 16, 3), 2)
    assert 0 <= x.min() and x.max() <= 255 and x.max() > 100


def test_untrained_int8_outputs_say_they_are_near_constant(tmp_path):
    # An untrained softmax over many classes: every probability rounds to zero in int8.
    model = tiny_model(classes=1000, activation="softmax")
    model.get_layer("fc").set_weights([np.zeros((8, 1000), "float32"),
                                       np.zeros(1000, "float32")])
    path = tmp_path / "m.tflite"
    with pytest.raises(export.ExportVerificationError, match="near-constant") as info:
        export.to_tflite(model, path, "int8", representative_data=images(), progress=False)
    message = str(info.value)
    assert "an untrained model, or calibration data unlike the inputs" in message
    assert "verify=False" in message and "trained model" in message
    assert info.value.report.constant_outputs == info.value.report.samples
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("tolerance", [-1, 0, float("nan"), float("inf"), "0.1", True])
@pytest.mark.parametrize("exporter", ["tflite", "onnx", "saved_model"])
def test_bad_tolerances_are_refused(exporter, tolerance, tmp_path):
    model = tiny_model()
    fn = {"tflite": export.to_tflite, "onnx": export.to_onnx,
          "saved_model": export.to_saved_model}[exporter]
    with pytest.raises(ValueError, match=r"Received: tolerance="):
        fn(model, tmp_path / "m", tolerance=tolerance)
    assert not os.listdir(tmp_path)


def test_cosine_tolerances_above_one_and_bad_top1_bounds_are_refused(tmp_path):
    model = tiny_model()
    with pytest.raises(ValueError, match=r"Received: tolerance=1.5"):
        export.to_tflite(model, tmp_path / "m.tflite", "dynamic", tolerance=1.5)
    with pytest.raises(ValueError, match=r"Received: min_top1_agreement=2"):
        export.to_tflite(model, tmp_path / "m.tflite", min_top1_agreement=2)


@pytest.mark.parametrize("adaptive_rounding", [True, False])
def test_non_finite_calibration_data_is_refused(adaptive_rounding, tmp_path):
    x = images(8)
    x[5, 3, 3, 1] = np.nan
    with pytest.raises(ValueError, match="finite") as info:
        export.to_tflite(tiny_model(), tmp_path / "m.tflite", "int8", representative_data=x,
                         adaptive_rounding=adaptive_rounding, progress=False)
    assert "Received: representative_data.nonfinite_images=1" in str(info.value)
    with pytest.raises(ValueError, match="verify_data"):
        export.to_tflite(tiny_model(), tmp_path / "m.tflite", verify_data=x)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("data", ["photos/", b"photos", 3])
def test_representative_data_must_hold_batches(data, tmp_path):
    with pytest.raises(ValueError, match="--calibration-dir") as info:
        export.to_tflite(tiny_model(), tmp_path / "m.tflite", "int8", representative_data=data)
    assert str(info.value).endswith(f"Received: representative_data={data!r}")


def test_models_with_lambda_layers_export_to_int8(tmp_path):
    model = tiny_model(lambda_layer=True)
    for quantization, kwargs in ((None, {}), ("int8", {"representative_data": images()})):
        report = export.to_tflite(model, tmp_path / f"{quantization}.tflite", quantization,
                                  progress=False, **kwargs)
        assert report.verified and report.cosine >= 0.95, report


def test_destinations_under_files_are_refused_missing_folders_made(tmp_path):
    model = tiny_model()
    (tmp_path / "file").write_text("mine")
    for parent, reason in ((tmp_path / "file", "is not a directory"),
                           (tmp_path / "file" / "sub", "cannot be created")):
        for fn, name in ((export.to_tflite, "m.tflite"), (export.to_onnx, "m.onnx"),
                         (export.to_saved_model, "saved")):
            with pytest.raises(ValueError, match=reason) as info:
                fn(model, parent / name)
            assert str(parent) in str(info.value)
            assert str(info.value).endswith(f"Received: path={str(parent / name)!r}")
    assert sorted(os.listdir(tmp_path)) == ["file"]
    report = export.to_tflite(model, tmp_path / "new" / "folder" / "m.tflite")
    assert report.verified and (tmp_path / "new" / "folder" / "m.tflite").is_file()


def test_unwritable_folders_give_one_line_export_errors(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(_atomic.tempfile, "mkstemp", read_only)
    with pytest.raises(export.ExportError, match="Read-only file system") as info:
        export.to_tflite(tiny_model(), tmp_path / "m.tflite")
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_stale_temporaries_are_removed_by_the_next_export(tmp_path):
    process = subprocess.Popen(["true"])
    process.wait()
    dead, live = process.pid, os.getpid()
    stale = [tmp_path / f".m.tflite.tmp-{dead}-abcd1234",
             tmp_path / f".other.onnx.tmp-{dead}-x1y2z3_w",
             tmp_path / f".saved.old-{dead}-qwertyui", tmp_path / ".m.tflite.tmp-oldname1"]
    kept = [tmp_path / f".m.tflite.tmp-{live}-abcd1234", tmp_path / ".m.tflite.tmp-newname1",
            tmp_path / ".notes.tmp-mine", tmp_path / "m.tflite.tmp-12-abcd1234"]
    for path in stale + kept:
        if "saved" in path.name:
            path.mkdir()
            (path / "saved_model.pb").write_bytes(b"")
        else:
            path.write_bytes(b"")
    day_ago = time.time() - 2 * _atomic.STALE_SECONDS
    os.utime(tmp_path / ".m.tflite.tmp-oldname1", (day_ago, day_ago))
    export.to_tflite(tiny_model(), tmp_path / "m.tflite")
    assert sorted(os.listdir(tmp_path)) == sorted(["m.tflite", *(p.name for p in kept)])


def test_export_passes_are_switchable_and_reported(tmp_path):
    """`passes=` runs only the named passes; the report says what each one did."""
    from keras_lightnets import layers

    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Rescaling(scale=[0.5, 0.25, 0.125], offset=[-1.0, 0.0, 1.0], name="norm")(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = layers.HardSwish(name="act")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(x))
    report = export.to_tflite(model, tmp_path / "all.tflite")
    assert report.passes == {"rounding": "not applicable", "fold": "not applicable",
                             "route": "not applicable", "int8_hard_swish": "not applicable",
                             "int8_average_pool": "not applicable",
                             "int8_relu": "not applicable",
                             "rescaling_conv": "applied"}, report.passes
    assert "passes applied: rescaling_conv" in str(report)
    assert "MUL" not in report.ops and "HARD_SWISH" in report.ops, report.ops
    report = export.to_tflite(model, tmp_path / "none.tflite", passes=[])
    assert set(report.passes.values()) == {"off"} and "MUL" in report.ops, report
    with pytest.raises(ValueError, match=r"the passes are \[.*'route'.*Received: passes="):
        export.to_tflite(model, tmp_path / "bad.tflite", passes={"stem"})
    with pytest.raises(ValueError, match="Received: passes='route'"):
        export.to_tflite(model, tmp_path / "bad.tflite", passes="route")
    with pytest.raises(ValueError, match=r"channel_shuffle.*Received: passes="):
        export.to_onnx(model, tmp_path / "bad.onnx", passes=["fold"])
    report = export.to_onnx(model, tmp_path / "model.onnx", passes={"hard_activations"})
    assert report.passes["hard_activations"] == "applied", report.passes
    assert report.passes["quantized_kernels"] == "off", report.passes

"""PaddleClas's MobileNetV3 flavour: its `.pdparams` files load through `weights=<path>`
and the model's logits are PaddleClas's own; it exports like every other model.

The references come from PaddleClas's model code (`paddle_reference.py`, run once per
session in a subprocess): random weights, trained-like batch norm, logits of std 3 on
sample photos, the raw 0-255 RGB batch going through the embedded normalization.
"""

import pickle
import shutil

import harness
import keras
import numpy as np
import paddle_ref
import pytest
from test_download_safety import models_dir, serve

import keras_lightnets as kl
from keras_lightnets import export, optimize, registry
from keras_lightnets import weights as wl
from keras_lightnets.weights import convert, download, pdparams, sources

# PaddleClas architecture: (factory, alpha).
V3 = {
    f"MobileNetV3_{size}_x{alpha}".replace(".", "_"): (factory, alpha)
    for size, factory in (("large", "MobileNetV3Large"), ("small", "MobileNetV3Small"))
    for alpha in (0.35, 0.5, 0.75, 1.0, 1.25)
}
paddle_ref.request(*V3)


def _build(arch, path, **kwargs):
    factory, alpha = V3[arch]
    return getattr(kl, factory)(alpha=alpha, weights=str(path), classifier_activation=None,
                                input_shape=(paddle_ref.SIZE, paddle_ref.SIZE, 3), **kwargs)


@pytest.mark.parametrize("arch", [
    pytest.param(a, marks=() if a.endswith("x1_0") else pytest.mark.heavy) for a in V3])
def test_mobilenet_v3_matches_paddleclas(arch):
    path, images, logits, logits64 = paddle_ref.reference(arch)
    model = _build(arch, path)
    got = np.asarray(model(images, training=False))
    assert np.std(logits64) > 2, "degenerate reference logits"
    # PaddleClas's own float32 logits drift from its float64 ones by up to ~1e-4.
    np.testing.assert_allclose(got, logits64, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got, logits, atol=1e-4 + np.abs(logits - logits64).max(), rtol=0)
    print(f"{arch}: max |diff| {np.abs(got - logits64).max():.1e} to PaddleClas's float64, "
          f"its float32 {np.abs(logits - logits64).max():.1e}")


def test_mobilenet_v3_in_float64_matches_paddleclas_float64():
    arch = "MobileNetV3_small_x0_75"
    path, images, _, logits64 = paddle_ref.reference(arch)
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        model = _build(arch, path)
    finally:
        keras.config.set_dtype_policy(policy)
    got = np.asarray(model(images.astype("float64"), training=False))
    # The folded constants (SE gate, dropout) are applied to the float32 file's values.
    np.testing.assert_allclose(got, logits64, atol=1e-5, rtol=0)


def test_every_tensor_of_the_file_is_used_and_ssld_prefix_is_stripped(tmp_path):
    arch = "MobileNetV3_large_x1_0"
    path, images, _, logits64 = paddle_ref.reference(arch)
    state = pdparams.load_state_dict(path)
    model = _build(arch, path)
    assert convert.load_state(model, state, sources.PADDLE, "MobileNetV3Large") == sorted(state)
    # An SSLD file: the student's tensors under "Student.", as PaddleClas's distillation saves.
    ssld = tmp_path / f"{arch}_ssld.pdparams"
    ssld.write_bytes(pickle.dumps({f"Student.{k}": v for k, v in state.items()}, protocol=4))
    got = np.asarray(_build(arch, ssld)(images, training=False))
    np.testing.assert_allclose(got, logits64, atol=1e-4, rtol=0)


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined")
def test_paddle_sets_resolve_through_the_manifest_and_mirror(tmp_path, monkeypatch):
    """weights="paddle_ssld" fetches the entry's file from the mirror: a hostile file is
    refused with nothing run or cached; PaddleClas's file loads, with and without the top."""
    path, images, _, logits64 = paddle_ref.reference("MobileNetV3_small_x0_35")
    served, home, marker = tmp_path / "served", tmp_path / "home", tmp_path / "marker"
    served.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv(download.MIRROR_ENV, served.as_uri())
    name = "MobileNetV3_small_x0_35_ssld_pretrained.pdparams"

    def build(**kwargs):
        return kl.MobileNetV3Small(alpha=0.35, weights="paddle_ssld", classifier_activation=None,
                                   input_shape=(paddle_ref.SIZE, paddle_ref.SIZE, 3), **kwargs)

    hostile = {"fc.weight": np.ones(2, "float32"),
               "x": _Command(f"touch {marker}")}
    (served / name).write_bytes(pickle.dumps(hostile, protocol=2))
    with pytest.raises(download.WeightsDownloadError, match="not a loadable weights file"):
        build()
    assert not marker.exists()
    cache = home / download.CACHE_SUBDIR
    assert not cache.exists() or not any(cache.iterdir())

    shutil.copy(path, served / name)
    full = build()
    np.testing.assert_allclose(np.asarray(full(images, training=False)), logits64,
                               atol=1e-4, rtol=0)
    assert (cache / name).is_file()
    # The cached file serves the model without its top (the classifier's tensors unused).
    features = np.asarray(build(include_top=False, pooling="avg")(images, training=False))
    head = keras.Model(full.input, full.get_layer("conv_1_hard_swish").output)
    np.testing.assert_allclose(features, np.asarray(head(images)).mean((1, 2)), atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined")
def test_ssld_set_from_127_0_0_1_is_recorded_and_a_changed_file_refused(tmp_path, monkeypatch):
    """weights="paddle_ssld" downloads MobileNetV3 Large SSLD from a local server; the sha256 of
    the first file is recorded (PaddleClas publishes none) and a changed file is refused."""
    path, images, _, logits64 = paddle_ref.reference("MobileNetV3_large_x1_0")
    home = tmp_path / "home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    name = "MobileNetV3_large_x1_0_ssld_pretrained.pdparams"

    def build():
        return kl.MobileNetV3Large(weights="paddle_ssld", classifier_activation=None,
                                   input_shape=(paddle_ref.SIZE, paddle_ref.SIZE, 3))

    with serve(monkeypatch, path.read_bytes()):
        model = build()
    np.testing.assert_allclose(np.asarray(model(images, training=False)), logits64,
                               atol=1e-4, rtol=0)
    assert sorted(models_dir(home)) == [name, name + ".sha256"]
    state = pdparams.load_state_dict(path)
    state["fc.weight"] = state["fc.weight"] * 1.01  # same shapes, other values
    (home / download.CACHE_SUBDIR / name).unlink()
    with serve(monkeypatch, pickle.dumps(state, protocol=2)), pytest.raises(
            ValueError, match="differs from the one first downloaded"):
        build()
    assert models_dir(home) == [name + ".sha256"]


class _Command:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


def test_a_pdparams_file_builds_the_paddle_flavour_and_refuses_a_keras_one(tmp_path):
    assert sources.flavour_for("MobileNetV3Small", "x.pdparams") is sources._PADDLE_V3
    path = tmp_path / "MobileNetV3_small_x0_75.pdparams"
    path.write_bytes(b"never read: the flavour is checked first")
    model = kl.MobileNetV3Small(alpha=0.75, weights=None, input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="is paddleclas's, for its flavour of MobileNetV3Small"):
        wl.load_file(model, path)


def test_paddle_flavour_exports_float32_and_qat_int8_tflite(tmp_path):
    """The PaddleClas flavour of MobileNetV3 Large (loaded from PaddleClas's file, then
    trained-like on the export photos) through verified float32 and QAT int8 TFLite."""
    path, *_ = paddle_ref.reference("MobileNetV3_large_x1_0")
    size = 96
    model = kl.MobileNetV3Large(weights=str(path), input_shape=(size, size, 3),
                                classifier_activation=None)
    x = harness.export_photos(registry.get_entry("mobilenet_v3_large_100"), model, size)
    fit, held = x[:harness.CALIBRATION_PHOTOS], x[harness.CALIBRATION_PHOTOS:]
    harness.trained_like(model, fit)

    f32 = tmp_path / "paddle_v3_large.tflite"
    report = export.to_tflite(model, f32)
    assert report.verified and report.max_rel_diff <= harness.FLOAT_REL, report
    harness.check_file(model, f32, held)

    qat = optimize.quantize_aware(model, representative_data=fit)
    int8 = tmp_path / "paddle_v3_large_int8.tflite"
    report = export.to_tflite(qat, int8, "int8", representative_data=fit, verify_data=held,
                              progress=False)
    assert report.verified and report.cosine >= harness.INT8_COSINE, report
    assert report.inputs[0]["dtype"] == "int8" and report.outputs[0]["dtype"] == "int8"
    harness.check_file(qat, int8, held, quantized=True)

"""The harness's export check on every registered model (`harness.run_export_test`).

Each family's default variant at 96 px, with trained-like weights, through
float32 TFLite, ONNX and int8 TFLite: the exporters' own verification, the
structure of the files, and each file run here against the Keras model on
photos the int8 file was not calibrated on. The other variants run with
`-m heavy`.
"""

import harness
import numpy as np
import paddle_ref
import pytest
from conftest import _release_memory

from keras_lightnets import export, registry

SIZE = 96
# NASNetMobile's 770 layers make its case heavy; test_nasnet exports a smaller NASNet-A.
CASES = [
    pytest.param(e, id=e.name) if harness.in_default_run(e, export=True)
    else pytest.param(e, id=e.name, marks=pytest.mark.heavy)
    for e in registry.entries()
]


@pytest.fixture(autouse=True)
def _release():
    """Nothing outlives a test here: a worker stays at one model's memory."""
    yield
    _release_memory()


@pytest.mark.parametrize("entry", CASES)
def test_export(entry, tmp_path):
    measured = harness.run_export_test(entry, tmp_path, SIZE)
    print(f"\n{entry.name}: " + ", ".join(
        f"{kind} max rel diff {m['max_rel_diff']:.2g} cosine {m['cosine']:.4f}"
        for kind, m in measured.items()))


# PaddleClas's flavours (issue #20), built by a file PaddleClas's own code wrote (its
# kernels; `run_export_test` makes the batch norms and classifier trained-like). Columns:
# registry name, PaddleClas architecture, factory kwargs beyond the entry's.
PADDLE_CASES = [
    pytest.param("mobilenet_v1_025", "MobileNetV1_x0_25", {}, id="paddle-MobileNetV1_x0_25"),
    pytest.param("mobilenet_v2_035", "MobileNetV2_x0_25", {"alpha": 0.25},
                 id="paddle-MobileNetV2_x0_25"),
    pytest.param("shufflenet_v2_swish_100", "ShuffleNetV2_swish", {},
                 id="paddle-ShuffleNetV2_swish", marks=pytest.mark.heavy),
]
paddle_ref.request(*(case.values[1] for case in PADDLE_CASES))


@pytest.mark.parametrize("name,arch,kwargs", PADDLE_CASES)
def test_export_paddleclas_flavour(name, arch, kwargs, tmp_path):
    path, *_ = paddle_ref.reference(arch)
    entry = registry.get_entry(name)
    measured = harness.run_export_test(entry, tmp_path, SIZE, weights=str(path), **kwargs)
    print(f"\n{arch}: " + ", ".join(
        f"{kind} max rel diff {m['max_rel_diff']:.2g} cosine {m['cosine']:.4f}"
        for kind, m in measured.items()))


def test_export_check_catches_a_perturbed_int8_file(tmp_path):
    """An int8 file of the model with its kernels 10% off fails the check; the real one
    passes. The exporter, verifying the file against the model it was handed, cannot tell."""
    entry = registry.get_entry("mobilenet_v1_025")
    model, x = harness.export_model(entry, 64)
    fit, held = x[:harness.CALIBRATION_PHOTOS], x[harness.CALIBRATION_PHOTOS:]
    real, broken = tmp_path / "real.tflite", tmp_path / "broken.tflite"
    export.to_tflite(model, real, "int8", representative_data=fit, progress=False)
    good = harness.check_file(model, real, held, quantized=True)
    report = export.to_tflite(harness.perturbed(model, 0.1), broken, "int8",
                              representative_data=fit, verify_data=held, progress=False)
    assert report.cosine >= harness.INT8_COSINE, report
    with pytest.raises(AssertionError, match="broken.tflite"):
        harness.check_file(model, broken, held, quantized=True)
    reference = np.asarray(model(held, training=False))
    bad = harness.agreement(reference, harness.run_tflite(broken, held))
    print(f"\nint8 cosine: real file {good['cosine']:.4f}, kernels 10% off {bad['cosine']:.4f}")


def test_trained_like_measures_batch_norms_and_scales_logits():
    """Each batch norm holds the statistics of its input on the images, as the measured
    layers before it give it; the logits have std LOGIT_STD and mean 0 per class."""
    import keras

    entry = registry.get_entry("mobilenet_v2_035")
    model = entry.build(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    x = harness.export_photos(entry, model, 64, 16)
    harness.trained_like(model, x)
    norms = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    for layer in (norms[1], norms[len(norms) // 2], norms[-1]):
        seen = np.asarray(keras.Model(model.input, layer.input)(x, training=False))
        seen = seen.reshape(-1, seen.shape[-1]).astype("float64")
        scale = seen.std()
        np.testing.assert_allclose(np.asarray(layer.moving_mean), seen.mean(0), rtol=0,
                                   atol=1e-4 * scale)
        np.testing.assert_allclose(np.asarray(layer.moving_variance), seen.var(0), rtol=1e-3,
                                   atol=1e-6 * scale**2)
    logits = np.asarray(model(x, training=False)).astype("float64")
    assert np.std(logits) == pytest.approx(harness.LOGIT_STD, rel=1e-3)
    np.testing.assert_allclose(logits.mean(0), 0, atol=1e-3 * harness.LOGIT_STD)

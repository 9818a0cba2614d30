"""NASNet-A Mobile against keras.applications: layout, numerics, weight files, export form.

The registry-wide tests (test_models, test_models_export, test_optimize) run it through
the harness: safe-mode reload, prune -> strip, QAT -> int8 TFLite, TFLite and ONNX export.
"""

import functools
import re

import harness
import keras
import numpy as np
import pytest
from conftest import sample_photos
from test_weights import env, sha256, use_hashes, write_keras_h5  # noqa: F401 (env: fixture)

import keras_lightnets as kl
from keras_lightnets import weights as wl
from keras_lightnets.export import forms, passes
from keras_lightnets.models import nasnet

SIZE = 96
# Names Keras gives the layers keras.applications leaves unnamed.
AUTO_NAME = re.compile(r"(activation|zero_padding2d|cropping2d|concatenate|add|"
                       r"global_average_pooling2d|global_max_pooling2d|input_layer)(_\d+)?")


@functools.cache
def _keras_counts():
    top = keras.applications.NASNetMobile(weights=None)
    trainable = sum(int(np.prod(w.shape)) for w in top.trainable_weights)
    no_top = keras.applications.NASNetMobile(weights=None, include_top=False)
    return {"total_params": top.count_params(), "trainable_params": trainable,
            "no_top_total_params": no_top.count_params()}


def expected_params(entry):
    """The harness's reference counts: keras.applications' NASNetMobile at 224."""
    return _keras_counts()


def _layout(model):
    """Per layer, in order: class, name (None where Keras names it) and weight shapes."""
    return [(type(layer).__name__, None if AUTO_NAME.fullmatch(layer.name) else layer.name,
             [tuple(w.shape) for w in layer.weights]) for layer in model.layers]


@pytest.mark.parametrize("include_top", [True, False])
def test_layers_match_keras_applications(include_top):
    kwargs = dict(weights=None, include_top=include_top, input_shape=(SIZE, SIZE, 3))
    ref, ours = keras.applications.NASNetMobile(**kwargs), kl.NASNetMobile(**kwargs)
    expected = _layout(ref)
    got = [(kind, name if want is not None else None, shapes)
           for (kind, name, shapes), (_, want, _) in zip(_layout(ours), expected, strict=True)]
    assert got == expected
    assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in ref.weights]
    assert ours.name == ref.name == "nasnet_mobile"
    assert ours.output.shape[-1] == (1000 if include_top else 1056)
    # Every layer has a name of its own here (no Keras-generated names).
    assert not [la.name for la in ours.layers[1:] if AUTO_NAME.fullmatch(la.name)]


@pytest.fixture(scope="module")
def reference():
    """keras.applications' NASNetMobile at SIZE, logits out, trained-like; and photos."""
    keras.utils.set_random_seed(0)
    ref = keras.applications.NASNetMobile(weights=None, input_shape=(SIZE, SIZE, 3),
                                          classifier_activation=None)
    x, _ = sample_photos(SIZE, 24)
    x = np.asarray(nasnet.preprocess_input(x), dtype="float32")
    harness.trained_like(ref, x[:16])
    return ref, x[16:]


def test_keras_weights_give_keras_outputs(reference):
    ref, x = reference
    ours = kl.NASNetMobile(weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    ours.set_weights(ref.get_weights())
    want = np.asarray(ref(x, training=False))
    assert want.std() > 1  # logits that vary with the image
    np.testing.assert_allclose(np.asarray(ours(x, training=False)), want, atol=1e-5, rtol=0)


def test_keras_h5_files_load_with_and_without_top(reference, tmp_path):
    """keras-layout legacy files (the published files' layout) load through weights=<path>."""
    ref, x = reference
    full = write_keras_h5(ref, tmp_path / "NASNet-mobile.h5")
    ref_no_top = keras.applications.NASNetMobile(weights=None, include_top=False,
                                                 input_shape=(SIZE, SIZE, 3))
    ref_no_top.set_weights(ref.get_weights()[:len(ref_no_top.weights)])
    no_top = write_keras_h5(ref_no_top, tmp_path / "NASNet-mobile-no-top.h5")

    ours = kl.NASNetMobile(weights=str(full), input_shape=(SIZE, SIZE, 3),
                           classifier_activation=None)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(ref(x)), atol=1e-5, rtol=0)
    features = np.asarray(ref_no_top(x))
    for path in (no_top, full):  # the full file by layer name
        headless = kl.NASNetMobile(weights=str(path), include_top=False,
                                   input_shape=(SIZE, SIZE, 3))
        np.testing.assert_allclose(np.asarray(headless(x)), features, atol=1e-5, rtol=0)


def test_imagenet_weights_come_from_the_manifest(env, monkeypatch, reference):  # noqa: F811
    """`weights="imagenet"` fetches keras' file (here from a mirror), checks its hash, loads."""
    _, served = env
    ref, x = reference
    ref_no_top = keras.applications.NASNetMobile(weights=None, include_top=False,
                                                 input_shape=(SIZE, SIZE, 3))
    ref_no_top.set_weights(ref.get_weights()[:len(ref_no_top.weights)])
    name = "NASNet-mobile-no-top.h5"
    write_keras_h5(ref_no_top, served / name)
    monkeypatch.setenv(wl.MIRROR_ENV, served.as_uri())
    # keras' published md5 is not this file's: refused.
    with pytest.raises(ValueError, match="deleted and nothing was loaded"):
        kl.NASNetMobile(weights="imagenet", include_top=False, input_shape=(SIZE, SIZE, 3))
    use_hashes(monkeypatch, **{name: sha256(served / name)})
    model = kl.NASNetMobile(weights="imagenet", include_top=False, input_shape=(SIZE, SIZE, 3))
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(ref_no_top(x)), atol=1e-5)


def test_int8_average_pool_pass_leaves_same_pools_alone():
    """The cells' 3x3/1 'same' pools average only the pixels inside the map at its
    borders: no fixed depthwise kernel computes that, so the int8 pass keeps them; the
    'valid' pools (reductions, on explicitly padded maps) become depthwise convolutions."""
    model = kl.NASNetMobile(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    harness.randomize(model)
    export = passes.Export("int8", None)
    pools = [la for la in model.layers if isinstance(la, keras.layers.AveragePooling2D)]
    same = [la for la in pools if la.padding == "same"]
    valid = [la for la in pools if la.padding == "valid"]
    assert same and valid
    for layer in pools:
        form = passes.int8_average_pool(layer, 8, export)
        assert form is (None if layer.padding == "same" else forms.DepthwiseAveragePooling2D)

    # A 'same' pool as the depthwise form would be wrong at the borders.
    x = np.random.default_rng(0).uniform(0, 1, (1, 5, 5, 2)).astype("float32")
    pool = keras.layers.AveragePooling2D(3, strides=1, padding="same")
    as_depthwise = keras.ops.depthwise_conv(x, np.full((3, 3, 2, 1), 1 / 9, "float32"),
                                            padding="same")
    assert not np.allclose(np.asarray(pool(x))[0, 0, 0], np.asarray(as_depthwise)[0, 0, 0])

    rebuilt, outcomes = passes.run_keras(model, {"int8_average_pool"}, export)
    assert outcomes["int8_average_pool"] == passes.APPLIED
    kinds = {type(la).__name__ for la in rebuilt.layers}
    assert "DepthwiseAveragePooling2D" in kinds and "AveragePooling2D" in kinds
    images = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(rebuilt(images)), np.asarray(model(images)),
                               atol=1e-5, rtol=0)


def test_feature_taps_are_cell_outputs():
    model = kl.NASNetMobile(weights=None, include_top=False, input_shape=(128, 128, 3))
    strides = (2, 4, 8, 16, 32)
    names = kl.features.feature_layers(model, strides)
    assert names == ["stem_bn1", "reduction_concat_stem_1", "normal_concat_3",
                     "normal_concat_8", "relu"]
    outs = kl.feature_extractor(model, strides)(np.zeros((1, 128, 128, 3), "float32"))
    assert [tuple(o.shape[1:]) for o in outs] == [
        (63, 63, 32), (32, 32, 44), (16, 16, 264), (8, 8, 528), (4, 4, 1056)]


def test_arguments_and_defaults():
    assert kl.NASNetMobile(weights=None).input.shape == (None, 224, 224, 3)
    assert kl.NASNetMobile(weights=None, include_top=False).input.shape == (None, 224, 224, 3)
    # keras.applications' smallest input.
    small = kl.NASNetMobile(weights=None, include_top=False, input_shape=(32, 32, 3))
    assert small.output.shape == (None, 1, 1, 1056)
    with pytest.raises(ValueError, match=r"Received: input_shape=\(96, 96, 3\)"):
        kl.NASNetMobile(weights="imagenet", input_shape=(96, 96, 3))
    with pytest.raises(ValueError, match="static input size"):
        kl.NASNetMobile(weights=None, include_top=False, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="Received: classes=10"):
        kl.NASNetMobile(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="Received: input_shape"):
        kl.NASNetMobile(weights=None, include_top=False, input_shape=(31, 31, 3))
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(nasnet.preprocess_input(x.copy()),
                               keras.applications.nasnet.preprocess_input(x.copy()))

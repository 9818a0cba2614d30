"""NASNet-A Mobile against keras.applications: layout, numerics, weight files, export form.

The registry-wide tests (test_models, test_models_export, test_optimize) run it through
the harness: safe-mode reload, prune -> strip, QAT -> int8 TFLite, TFLite and ONNX export.
"""

import functools
import re
import types

import harness
import keras
import numpy as np
import pytest
from conftest import sample_photos
from test_optimize import _compile, _dataset, _int8, _prune_fit_strip
from test_weights import env, sha256, use_hashes, write_keras_h5  # noqa: F401 (env: fixture)

import keras_lightnets as kl
from keras_lightnets import graph as kl_graph
from keras_lightnets import layers, optimize
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


@pytest.mark.parametrize("include_top", [True, pytest.param(False, marks=pytest.mark.heavy)])
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


def test_keras_h5_file_loads_with_and_without_top(reference, tmp_path):
    """A keras-layout legacy file (the published files' layout) loads through weights=<path>,
    by layer order, and by layer name into a model without the top."""
    ref, x = reference
    full = write_keras_h5(ref, tmp_path / "NASNet-mobile.h5")
    ours = kl.NASNetMobile(weights=str(full), input_shape=(SIZE, SIZE, 3),
                           classifier_activation=None)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(ref(x)), atol=1e-5, rtol=0)
    headless = kl.NASNetMobile(weights=str(full), include_top=False, input_shape=(SIZE, SIZE, 3))
    features = keras.Model(ref.input, ref.get_layer("predictions").input)
    np.testing.assert_allclose(np.asarray(headless(x)).mean((1, 2)), np.asarray(features(x)),
                               atol=1e-5, rtol=0)


def test_imagenet_no_top_file_comes_from_the_manifest(env, monkeypatch, reference):  # noqa: F811
    """`weights="imagenet"` without the top fetches keras' no-top file (here from a mirror,
    its hash replaced by the test file's) and loads it by layer order."""
    _, served = env
    ref, x = reference
    ref_no_top = keras.applications.NASNetMobile(weights=None, include_top=False,
                                                 input_shape=(SIZE, SIZE, 3), pooling="avg")
    ref_no_top.set_weights(ref.get_weights()[:len(ref_no_top.weights)])
    name = "NASNet-mobile-no-top.h5"
    write_keras_h5(ref_no_top, served / name)
    monkeypatch.setenv(wl.MIRROR_ENV, served.as_uri())
    use_hashes(monkeypatch, **{name: sha256(served / name)})
    model = kl.NASNetMobile(weights="imagenet", include_top=False, input_shape=(SIZE, SIZE, 3),
                            pooling="avg")
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(ref_no_top(x)), atol=1e-5)


def test_int8_average_pool_pass_takes_same_pools_of_known_size():
    """The cells' 3x3/1 'same' pools average only the pixels inside the map at its
    borders: on a map of known size the int8 pass writes them as a depthwise convolution
    plus the border windows' correction (`x + x * c`, `c` 0 inside), exact; on a map of
    unknown size it keeps them. The 'valid' pools (reductions) become depthwise convolutions."""
    model = kl.NASNetMobile(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    harness.randomize(model)
    export = passes.Export("int8", None)
    pools = [la for la in model.layers if isinstance(la, keras.layers.AveragePooling2D)]
    assert {la.padding for la in pools} == {"same", "valid"}
    for layer in pools:
        assert passes.int8_average_pool(layer, 8, export) is forms.DepthwiseAveragePooling2D
    inputs = keras.Input((None, None, 8))
    dynamic = keras.Model(inputs, layers.AveragePooling2D(3, 1, padding="same")(inputs))
    assert passes.int8_average_pool(dynamic.layers[-1], 8, export) is None

    # The plain depthwise mean is wrong at the borders; the form's correction makes it exact.
    x = np.random.default_rng(0).uniform(0, 1, (1, 5, 5, 2)).astype("float32")
    pool = keras.layers.AveragePooling2D(3, strides=1, padding="same")
    as_depthwise = keras.ops.depthwise_conv(x, np.full((3, 3, 2, 1), 1 / 9, "float32"),
                                            padding="same")
    assert not np.allclose(np.asarray(pool(x))[0, 0, 0], np.asarray(as_depthwise)[0, 0, 0])
    form = forms.DepthwiseAveragePooling2D(3, strides=1, padding="same")
    np.testing.assert_allclose(np.asarray(form(x)), np.asarray(pool(x)), atol=1e-6, rtol=0)
    assert forms.same_pool_excess((3, 3), (1, 1), (5, 5))[0, 2, 2, 0] == 0.0
    assert forms.same_pool_excess((3, 3), (1, 1), (None, 5)) is None

    rebuilt, outcomes = passes.run_keras(model, {"int8_average_pool"}, export)
    assert outcomes["int8_average_pool"] == passes.APPLIED
    kinds = {type(la).__name__ for la in rebuilt.layers}
    assert "DepthwiseAveragePooling2D" in kinds and "AveragePooling2D" not in kinds
    images = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(rebuilt(images)), np.asarray(model(images)),
                               atol=1e-5, rtol=0)


def test_int8_relu_pass_takes_relus_of_shared_maps(tmp_path):
    """A ReLU of a map other ops also read cannot fuse into the op before it: the int8 pass
    writes it as a depthwise convolution with the ReLU fused (no standalone RELU left in the
    int8 file, which XNNPACK would leave to the built-in kernels); a ReLU its producer can
    take stays."""
    from keras_lightnets.export import tflite

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    shared = keras.layers.Activation("relu", name="shared_relu")(x)
    y = keras.layers.Conv2D(8, 1, name="conv_b")(shared)
    fused = keras.layers.Activation("relu", name="fused_relu")(y)
    model = keras.Model(inputs, keras.layers.Add(name="add")([x, fused]))
    harness.randomize(model)
    export = passes.Export("int8", None)
    rebuilt, outcomes = passes.run_keras(model, {"int8_relu"}, export)
    assert outcomes["int8_relu"] == passes.APPLIED
    assert type(rebuilt.get_layer("shared_relu")) is forms.DepthwiseReLU
    assert type(rebuilt.get_layer("fused_relu")) is keras.layers.Activation
    data = np.random.default_rng(0).normal(0, 1, (8, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(rebuilt(data)), np.asarray(model(data)))
    report = kl.export.to_tflite(model, tmp_path / "relu_int8.tflite", "int8", data,
                                 verify_data=data, progress=False)
    assert report.verified and report.passes["int8_relu"] == passes.APPLIED, report
    text = tflite.analyze((tmp_path / "relu_int8.tflite").read_bytes())[2]
    ops = re.findall(r"Op#\d+ (\w+)\(", text)
    assert "RELU" not in ops and ops.count("DEPTHWISE_CONV_2D") == 1, ops
    assert passes.run_keras(model, {"int8_relu"}, passes.Export("float32", None))[0] is model
    # Nothing to take: the model itself, even with operations as nodes (keras.applications'
    # MobileNetV3 writes `x + 3.0`), which a copy could not carry.
    plain = keras.Model(inputs, keras.layers.ReLU()(inputs + 3.0))
    assert passes.int8_relu(plain, export) is plain

    nasnet = kl.NASNetMobile(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    harness.randomize(nasnet)
    rebuilt, _ = passes.run_keras(nasnet, {"int8_relu"}, export)
    relus = [la.name for la in nasnet.layers if type(la) is keras.layers.Activation
             and kl_graph.activation_name(la) == "relu"]
    kept = {name for name in relus if type(rebuilt.get_layer(name)) is keras.layers.Activation}
    # Those after a separable convolution's batch norm fuse; the ReLUs of cell inputs (read
    # by several branches) and of cell outputs (concatenations: the head's) do not.
    assert kept == {n for n in relus if n.startswith("separable_relu_2_")}
    assert type(rebuilt.get_layer("relu")) is forms.DepthwiseReLU
    assert len(relus) - len(kept) > 40, len(relus) - len(kept)
    images = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(rebuilt(images)), np.asarray(nasnet(images)),
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
    # As keras.applications: 224x224 without the top too.
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


# NASNet-A of NASNetMobile's cells, its first four: every kind of layer and of adjustment
# of the previous state (none, reduction, projection) at a quarter of its layers (the
# registry's case of test_optimize, on NASNetMobile itself, runs with `-m heavy`).
SMALL = [("reduction", "stem_1", 4), ("reduction", "stem_2", 8), ("normal", "0", 16),
         ("reduction", "reduce_1", 32)]


def _small_nasnet(size=64, classes=10):
    inputs = keras.Input((size, size, 3))
    x, _ = nasnet._network(inputs, wl.flavour_for("NASNetMobile", None).bn, SMALL)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(classes, name="predictions")(x)
    return keras.Model(inputs, outputs, name="nasnet_small")


def test_separable_cells_prune_quantize_and_export_int8(tmp_path):
    """Twin, prune (SeparableConv2D's pointwise kernels too) -> strip, prune-preserving QAT
    with each SeparableConv2D split into named depthwise and 1x1 layers, int8 TFLite."""
    x, y = sample_photos(64, 40)
    x, y = np.asarray(nasnet.preprocess_input(x), dtype="float32"), y % 10
    model = harness.trained_like(_small_nasnet(), x[:16])
    twin = optimize.to_tf_keras(model)
    np.testing.assert_allclose(twin(x[:4], training=False).numpy(),
                               np.asarray(model(x[:4], training=False)), atol=1e-4, rtol=0)

    sparse = _prune_fit_strip(twin, x[:8], y[:8], tmp_path, "nasnet_small")
    separable = [la.name for la in sparse.layers
                 if isinstance(la, keras.layers.SeparableConv2D)]
    assert separable and set(separable) <= set(optimize.sparsity_report(sparse))

    qat = optimize.quantize_aware(sparse, preserve_sparsity=True, representative_data=x[:8])
    names = {getattr(la, "layer", la).name for la in qat.layers}
    assert {f"{n}_depthwise" for n in separable} <= names
    _compile(qat).fit(_dataset(x[:8], y[:8]), epochs=1, verbose=0)
    kept = optimize.sparsity_report(qat)
    assert set(separable) <= set(kept) and min(kept.values()) >= 0.5, kept
    report = _int8(qat, tmp_path / "nasnet_small_int8.tflite", x[:8], x[8:], False)
    assert report.samples == 32 and report.cosine >= 0.95, report


def test_separable_cells_export_to_tflite_and_onnx(tmp_path):
    """The harness's export check (float32 TFLite, ONNX, int8 TFLite) on the small NASNet-A;
    the registry's case, NASNetMobile itself, runs with `-m heavy` (test_models_export)."""
    def build(weights=None, input_shape=(96, 96, 3), classifier_activation=None):
        assert weights is None and classifier_activation is None
        return _small_nasnet(input_shape[0], classes=1000)

    entry = types.SimpleNamespace(name="nasnet_small", build=build,
                                  preprocess_input=nasnet.preprocess_input)
    measured = harness.run_export_test(entry, tmp_path, 96)
    assert measured["int8"]["cosine"] >= harness.INT8_COSINE

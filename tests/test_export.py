"""Export to SavedModel, TFLite and ONNX, verified numerically, for every family.

Float32 TFLite, ONNX and int8 TFLite of every family's default variant are the
harness's export check (`test_models_export.py`, trained-like weights); here
each default variant goes through float16 TFLite and SavedModel at 96x96 with
random weights, and the real MobileNet 0.25 weights check int8 top-1
agreement on the sample photos.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import ROOT, SAMPLE, WEIGHTS, sample_photos, shared_file
from harness import in_default_run, randomize, trained_like

from keras_lightnets import export, imagenet, registry
from keras_lightnets.export import _fold, _rounding, _route
from keras_lightnets.export import onnx as onnx_lib
from keras_lightnets.export import tflite as tflite_lib

SIZE = 96
DEFAULTS = [e for e in registry.entries() if e.default]
# Each family's default; the slow families' under `-m heavy` (`harness.in_default_run`).
DEFAULT_CASES = [pytest.param(e, id=e.name,
                              marks=() if in_default_run(e, export=True) else pytest.mark.heavy)
                 for e in DEFAULTS]

_MODELS = {}


def random_model(entry):
    """The entry's default variant at SIZE, random weights, logits (cached)."""
    if entry.name not in _MODELS:
        model = entry.build(weights=None, input_shape=(SIZE, SIZE, 3),
                            classifier_activation=None)
        _MODELS[entry.name] = randomize(model, seed=0)
    return _MODELS[entry.name]


def model_inputs(entry, model, pixels):
    """Raw [0, 255] photos in the model's input domain."""
    x = np.array(pixels, dtype="float32", copy=True)
    if export.expects_raw_pixels(model):
        return x
    return np.asarray(entry.preprocess_input(x), dtype="float32")


def assert_builtin_4d(path):
    """Only TFLite builtin ops, no tensor above 4-D, loadable by ai-edge-litert."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    ranks = {len(t["shape"]) for t in interp.get_tensor_details()}
    assert max(ranks) <= 4, ranks
    ops, _, _ = tflite_lib.analyze(open(path, "rb").read())
    assert ops and all(op.isupper() and not op.startswith(("FLEX", "CUSTOM")) for op in ops), ops
    return interp


@pytest.mark.parametrize("entry", DEFAULT_CASES)
def test_tflite_float16(entry, tmp_path):
    report = export.to_tflite(random_model(entry), tmp_path / "model.tflite", "float16")
    assert report.verified and report.max_rel_diff <= 1e-2, report
    assert report.inputs[0]["dtype"] == "float32"
    assert "DEQUANTIZE" in report.ops
    assert_builtin_4d(tmp_path / "model.tflite")


@pytest.mark.parametrize("entry", DEFAULT_CASES)
def test_saved_model(entry, tmp_path):
    import tensorflow as tf

    model = random_model(entry)
    path = tmp_path / "saved"
    report = export.to_saved_model(model, path)
    assert report.verified and report.max_rel_diff <= 1e-4, report
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    x = model_inputs(entry, model, sample_photos(SIZE, 2)[0])
    y = serve(input=tf.constant(x))["output"].numpy()
    np.testing.assert_allclose(y, np.asarray(model(x, training=False)), rtol=0,
                               atol=1e-4 * np.abs(y).max())


def test_tflite_dynamic_range_and_dynamic_batch(tmp_path):
    entry = registry.get_entry("mobilenet_v2_100")
    model = random_model(entry)
    report = export.to_tflite(model, tmp_path / "dynamic.tflite", "dynamic")
    assert report.verified and report.cosine >= 0.95, report
    assert report.size_bytes < 0.4 * model.count_params() * 4
    report = export.to_tflite(model, tmp_path / "batch.tflite", batch_size=None)
    assert report.inputs[0]["shape"] == [-1, SIZE, SIZE, 3]
    assert report.verified and report.max_rel_diff <= 1e-4
    x = model_inputs(entry, model, sample_photos(SIZE, 3)[0])
    (y,) = tflite_lib.run(str(tmp_path / "batch.tflite"), x)
    assert y.shape == (3, 1000)


def test_real_mobilenet_int8_agrees_with_float(tmp_path):
    """Full-integer MobileNet 0.25 (uint8 in/out) against its float model.

    Calibrated on 100 sample photos, evaluated on 200 others.
    """
    weights = shared_file(WEIGHTS / "mobilenet_1_0.25_224_keras.h5")
    import keras_lightnets as kl
    from keras_lightnets.models.mobilenet import preprocess_input

    photos, labels = sample_photos(224, 300)
    x = np.asarray(preprocess_input(np.array(photos)), dtype="float32")
    model = kl.MobileNet(alpha=0.25, weights=str(weights), classifier_activation=None)
    before = model.get_weights()
    report = export.to_tflite(
        model, tmp_path / "mobilenet_int8.tflite", "int8", representative_data=x[200:],
        io_dtype="uint8", verify_data=(x[:200], labels[:200]), min_top1_agreement=0.9,
        progress=False)
    print(f"\nMobileNet 0.25 int8 on 200 photos: {report.summary()}")
    assert report.inputs[0]["dtype"] == "uint8" and report.outputs[0]["dtype"] == "uint8"
    # Measured: cosine 0.9980, top-1 agreement 0.925 (the converter's own rounding:
    # 0.976 and 0.815; bias correction alone: 0.996 and 0.925). At this error level the
    # agreement on 200 photos hangs on a dozen near-ties and moves by +-0.03 with any
    # numerical detail (0.955 with the statistics summed in another order); 0.92-0.94
    # on other photo sets. The int8 activations alone, with float weights, give cosine
    # 0.9974 (0.95 here, 0.92 on 700 other photos): 0.95 is not a reliable bound.
    # The uint8 output itself cannot order logits closer than its step (0.16 over the
    # calibrated range -16.6..24.4) and 10% of these photos have a top-2 gap below 0.12:
    # the float logits rounded to that step agree 0.975. 14 int8 outputs tie at the top
    # and 9 of the 15 disagreements are such ties: counting a tie that includes the float
    # model's class as agreement gives 0.965.
    assert report.top1_agreement_with_ties >= 0.95, report
    assert report.cosine >= 0.997, report
    assert report.top1_agreement >= 0.9, report
    assert report.top1_accuracy >= report.reference_top1_accuracy - 0.02, report
    assert 0.55 <= report.reference_top1_accuracy <= 0.7  # real weights, wired right
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def _small_convnet(sequential=False):
    """Conv-BN-ReLU6, depthwise-BN-ReLU, a bare conv, then a dense head."""
    layers = [
        keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="c1"),
        keras.layers.BatchNormalization(name="c1_bn"),
        keras.layers.ReLU(6.0, name="c1_relu"),
        keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name="pad"),
        keras.layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2, use_bias=False,
                                     name="dw"),
        keras.layers.BatchNormalization(name="dw_bn"),
        keras.layers.ReLU(name="dw_relu"),
        keras.layers.Conv2D(12, 1, name="pw"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(5, name="fc"),
    ]
    if sequential:
        model = keras.Sequential([keras.Input((32, 32, 3)), *layers])
    else:
        inputs = x = keras.Input((32, 32, 3))
        for layer in layers:
            x = layer(x)
        model = keras.Model(inputs, x)
    return randomize(model, seed=3)


def _int8_steps(kernel, depthwise):
    """`kernel` in steps of its per-output-channel int8 grid (max |w| / 127)."""
    axes = (0, 1) if depthwise else tuple(range(kernel.ndim - 1))
    return kernel / (np.max(np.abs(kernel), axis=axes, keepdims=True) / 127), axes


@pytest.mark.parametrize("sequential", [False, True], ids=["functional", "sequential"])
def test_int8_rounding_works_on_a_folded_copy(sequential, tmp_path):
    model = _small_convnet(sequential)
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).uniform(-1, 1, (24, 32, 32, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))

    folded = _fold.fold(model)
    assert "BatchNormalization" not in {type(layer).__name__ for layer in folded.layers}
    np.testing.assert_allclose(np.asarray(folded(x, training=False)), expected, rtol=0,
                               atol=1e-5 * np.abs(expected).max())

    copy = _rounding.rounded(model, x[:16])
    assert copy is not model
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # Each fitted kernel sits on its int8 grid with a weight at 127 steps per channel,
    # so the converter, which scales by the largest weight, finds the same grid ...
    grids = {}
    for name in ("c1", "dw", "pw", "fc"):
        steps, axes = _int8_steps(np.asarray(copy.get_layer(name).kernel), name == "dw")
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
        np.testing.assert_allclose(np.max(np.abs(steps), axis=axes), 127, atol=1e-3)
        grids[name] = np.round(steps).astype("int8")
    # ... and keeps exactly those integers.
    path = tmp_path / "small.tflite"
    report = export.to_tflite(model, path, "int8", representative_data=x[:16],
                              verify_data=x[16:], progress=False)
    assert report.verified and report.cosine >= 0.99, report
    interp = tflite_lib.interpreter(str(path))
    stored = [interp.get_tensor(t["index"]) for t in interp.get_tensor_details()
              if t["dtype"] == np.int8 and len(t["quantization_parameters"]["scales"]) > 1]
    tflite_layout = {"c1": lambda q: q.transpose(3, 0, 1, 2),  # (out, rows, cols, in)
                     "dw": lambda q: q.reshape(1, 3, 3, -1),  # (1, rows, cols, channels)
                     "pw": lambda q: q.transpose(3, 0, 1, 2), "fc": lambda q: q.T}
    for name, grid in grids.items():
        want = tflite_layout[name](grid)
        assert any(s.shape == want.shape and np.array_equal(s, want) for s in stored), name


def test_fold_batch_norm_after_grouped_conv_concat():
    """A batch norm (and ReLU) after a split grouped conv's concat folds into each group's
    conv; one after a concat with another input, or a group conv used twice, does not."""
    from keras_lightnets import layers as kl_layers

    inputs = keras.Input((8, 8, 6))
    x = kl_layers.group_conv(inputs, 12, 1, 3, name="g")
    x = keras.layers.BatchNormalization(name="g_bn")(x)
    x = keras.layers.ReLU(6.0, name="g_relu")(x)
    other = keras.layers.Conv2D(4, 1, name="other")(x)
    y = keras.layers.Concatenate(name="mixed")([other, x])
    y = keras.layers.BatchNormalization(name="mixed_bn")(y)
    z = kl_layers.group_conv(y, 8, 1, 2, name="h")
    z = keras.layers.BatchNormalization(name="h_bn")(keras.layers.Add(name="sum")([z, z]))
    model = randomize(keras.Model(inputs, [z, y]), seed=5)

    plan = _fold.fold_plan(model)
    assert {name: entry for name, entry in plan.items() if entry is not None} == {
        f"g_g{i}": _fold.Fold("g_bn", 4 * i, 4 * i + 4, "g_relu") for i in range(3)}
    copy = _fold.fold_concatenated(model)
    names = {layer.name for layer in copy.layers}
    assert {"g_bn", "g_relu"}.isdisjoint(names) and {"mixed_bn", "h_bn"} <= names
    assert {f"g_g{i}_relu" for i in range(3)} <= names
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 6)).astype("float32")
    for got, want in zip(copy(x), model(x), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0,
                                   atol=1e-5 * np.abs(np.asarray(want)).max())
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 1)])
    assert _fold.fold_concatenated(plain) is plain


def _delegated_ops(path):
    """`(op counts, CONCATENATION input counts, XNNPACK partitions)` of a TFLite file."""
    from collections import Counter

    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    ops = interp._get_ops_details()  # the only view of the delegated plan
    kinds = Counter(op["op_name"] for op in ops)
    fan_in = [len(op["inputs"]) for op in ops if op["op_name"] == "CONCATENATION"]
    return kinds, fan_in, kinds.pop("DELEGATE", 0)


def _assert_same_outputs(copy, model, rel):
    """An export copy computes the model's function on 64 px images; the images."""
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    want = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(copy(x, training=False)), want, rtol=0,
                               atol=rel * np.abs(want).max())
    return x


def test_shufflenet_v2_shuffles_resolve_into_weights(tmp_path):
    """ShuffleNet V2's TFLite file has no shuffle or split: the convolutions read their
    channels where they lie, exactly, and XNNPACK runs the whole graph."""
    from keras_lightnets import get_model

    model = randomize(get_model("shufflenet_v2_050", weights=None, input_shape=(64, 64, 3),
                                classifier_activation=None), seed=3)
    copy = _route.routed(model)
    assert copy is not model
    _assert_same_outputs(copy, model, 1e-6)
    report = export.to_tflite(model, tmp_path / "model.tflite")
    assert report.verified and report.max_rel_diff <= 1e-4, report
    assert report.gpu_compatible, report
    kinds, fan_in, partitions = _delegated_ops(tmp_path / "model.tflite")
    assert not {"TRANSPOSE", "RESHAPE", "SPLIT"} & set(kinds), kinds
    assert kinds["CONCATENATION"] >= 13 and max(fan_in) <= _route.MAX_CONCAT, fan_in
    assert partitions == 1
    # Routing moves a small part of what the shuffles, concatenations and splits moved.
    _, moved, own = _route.plan(model)
    assert moved < 0.25 * own, (moved, own)


def test_routing_keeps_model_order_where_layers_need_it():
    """Shuffled channels reach an Add, a softmax and a model output in the model's own
    order; a Conv2D and batch norm read them permuted; results equal the model's."""
    from keras_lightnets import layers as kl_layers

    inputs = keras.Input((6, 6, 8))
    a = keras.layers.Conv2D(8, 1, name="a")(inputs)
    b = keras.layers.Conv2D(8, 1, name="b")(inputs)
    x = kl_layers.ChannelShuffle(4, name="shuffle")(
        keras.layers.Concatenate(name="cat")([a, b]))
    left, right = kl_layers.ChannelSplit(2, name="split")(x)
    left = keras.layers.BatchNormalization(name="bn")(left)
    right = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(right)
    y = keras.layers.Conv2D(8, 1, activation="relu", name="c")(
        keras.layers.Concatenate(name="cat2")([right, left]))
    y = keras.layers.Add(name="sum")([y, left])
    z = keras.layers.Activation("softmax", name="soft")(x)
    model = randomize(keras.Model(inputs, [y, z, right]), seed=4)
    copy = _route.routed(model, max_moved=None)
    assert copy is not model
    assert not any(type(layer).__name__ == "ChannelShuffle" for layer in copy.layers)
    x_in = np.random.default_rng(1).normal(size=(3, 6, 6, 8)).astype("float32")
    for got, want in zip(copy(x_in), model(x_in), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-5)


def test_routing_leaves_models_it_would_not_speed_up():
    from keras_lightnets import get_model

    for name in ("mobilenet_v2_035", "shufflenet_v1_g3_050"):
        model = get_model(name, weights=None, input_shape=(64, 64, 3))
        assert _route.routed(model) is model, name
    # Grouped convolutions read channels in the model's order: routing only adds gathers.
    native = get_model("shufflenet_v1_g3_050", weights=None, input_shape=(64, 64, 3),
                       group_conv="native")
    assert _route.routed(native, max_moved=None) is native


def test_int8_rounding_fits_layers_better_than_nearest():
    """On inputs carrying int8 rounding errors, the fitted weights and bias reproduce
    the float layer on unseen inputs better than rounding to nearest does."""
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(24, 24)) / 5
    x_float = np.clip(rng.normal(size=(8000, 24)) @ mixing + 0.3, 0, 6).astype("float32")
    step = 6 / 255  # a ReLU6 output's int8 step
    x_int = (np.floor(x_float / step) * step).astype("float32")  # biased: always down
    weights = rng.normal(size=(1, 24, 16)) / 5
    bias = rng.normal(size=(1, 16)) / 10
    fitted, fitted_bias = _rounding.fit(x_float[:4000, :, None], x_int[:4000, :, None],
                                        weights, bias)
    target = x_float[4000:] @ weights[0] + bias[0]

    def error(w, b):
        return np.mean((x_int[4000:] @ w[0] + b[0] - target) ** 2)

    assert error(fitted, fitted_bias) < 0.5 * error(_rounding._nearest(weights), bias)
    steps, _ = _int8_steps(fitted[0], depthwise=False)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)


def test_calibration_accepts_generators_and_limits():
    shape = (1, 8, 8, 3)
    batches = (np.full((5, 8, 8, 3), i, "float32") for i in range(3))
    calibration = tflite_lib.Calibration(batches, shape, limit=12, progress=False)
    assert calibration.head(2).shape == (2, 8, 8, 3)
    fed = list(calibration())
    assert len(fed) == 12 and all(b[0].shape == shape for b in fed)
    assert [float(b[0][0, 0, 0, 0]) for b in fed] == [0] * 5 + [1] * 5 + [2] * 2
    assert calibration.kept.shape == (12, 8, 8, 3)
    with pytest.raises(ValueError, match="representative_data"):
        list(tflite_lib.Calibration(np.zeros((2, 9, 9, 3)), shape, progress=False)())


def test_top1_measures_agreement_accuracy_and_ties():
    from keras_lightnets.export import verify

    reference = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.0, 0.4, 0.6]])
    # One exact tie at the top (a quantized output one step too coarse), one plain miss.
    actual = np.array([[0.5, 0.5, 0.0], [0.7, 0.2, 0.1], [0.4, 0.3, 0.3], [0.0, 0.4, 0.6]])
    measured = verify.measure([reference], [actual], labels=[1, 0, 2, 1])
    assert measured["top1_agreement"] == 0.5 and measured["top1_ties"] == 1
    assert measured["top1_agreement_with_ties"] == 0.75
    assert measured["top1_accuracy"] == 0.25 and measured["reference_top1_accuracy"] == 0.75


def test_multi_output_model_keeps_output_order(tmp_path):
    import keras_lightnets as kl

    backbone = kl.MobileNetV3Small(input_shape=(SIZE, SIZE, 3), include_top=False,
                                   weights=None)
    model = randomize(kl.feature_extractor(backbone, strides=(8, 16, 32)))
    report = export.to_tflite(model, tmp_path / "features.tflite")
    assert [o["name"] for o in report.outputs] == ["output_0", "output_1", "output_2"]
    assert [o["shape"][1] for o in report.outputs] == [SIZE // 8, SIZE // 16, SIZE // 32]
    assert report.verified and report.max_rel_diff <= 1e-4


def test_tf_keras_models_export(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    layers = tf_keras.layers
    inputs = tf_keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inputs, layers.Dense(10)(x))
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                       for w in model.get_weights()])
    x = rng.uniform(-1, 1, (16, 32, 32, 3)).astype("float32")
    for report in (
        export.to_tflite(model, tmp_path / "m.tflite"),
        export.to_tflite(model, tmp_path / "m8.tflite", "int8", representative_data=x,
                         progress=False),
        export.to_onnx(model, tmp_path / "m.onnx"),
        export.to_saved_model(model, tmp_path / "saved"),
    ):
        assert report.verified, report
        assert (report.cosine >= 0.95 if report.quantization else report.max_rel_diff <= 1e-4)


def test_int8_needs_representative_data(tmp_path):
    model = random_model(registry.get_entry("mobilenet_v1_025"))
    with pytest.raises(ValueError, match="representative_data"):
        export.to_tflite(model, tmp_path / "m.tflite", "int8")
    assert not os.listdir(tmp_path)


def test_native_grouped_convolutions_point_to_split(tmp_path):
    inputs = keras.Input((16, 16, 8))
    model = keras.Model(inputs, keras.layers.Conv2D(8, 1, groups=4, name="gconv")(inputs))
    with pytest.raises(ValueError, match='group_conv="split"') as info:
        export.to_onnx(model, tmp_path / "m.onnx")
    assert "gconv" in str(info.value)
    for entry in DEFAULTS:
        import inspect

        if "group_conv" in inspect.signature(entry.factory).parameters:
            native = entry.build(weights=None, input_shape=(SIZE, SIZE, 3),
                                 group_conv="native")
            with pytest.raises(ValueError, match='group_conv="split"'):
                export.to_onnx(native, tmp_path / "native.onnx")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"quantization": "int4"}, "quantization"),
    ({"io_dtype": "uint8"}, "io_dtype"),
    ({"batch_size": 0}, "batch_size"),
    ({"input_size": 64}, "input_size"),
    ({"quantization": "float16", "representative_data": np.zeros((1, SIZE, SIZE, 3))},
     "representative_data"),
    ({"quantization": "int8", "io_dtype": "float32",
      "representative_data": np.zeros((1, SIZE, SIZE, 3))}, "io_dtype"),
])
def test_bad_arguments_raise_value_error(kwargs, match, tmp_path):
    model = random_model(registry.get_entry("mobilenet_v1_025"))
    with pytest.raises(ValueError, match=match):
        export.to_tflite(model, tmp_path / "m.tflite", **kwargs)
    assert not os.listdir(tmp_path)


def test_bad_destinations_and_opsets(tmp_path):
    model = random_model(registry.get_entry("mobilenet_v1_025"))
    with pytest.raises(ValueError, match="directory"):
        export.to_tflite(model, tmp_path)
    with pytest.raises(ValueError, match="opset"):
        export.to_onnx(model, tmp_path / "m.onnx", opset=7)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing"):
        export.to_saved_model(model, tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_failed_verification_writes_nothing(tmp_path):
    model = random_model(registry.get_entry("mobilenet_v1_025"))
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous")
    with pytest.raises(export.ExportVerificationError, match="relative difference") as info:
        export.to_tflite(model, path, "float16", tolerance=1e-9)
    assert info.value.report.max_rel_diff > 1e-9
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["model.tflite"]  # no temporary left behind
    report = export.to_tflite(model, path, "float16", tolerance=1e-9, verify=False)
    assert not report.verified and path.read_bytes()[4:8] == b"TFL3"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_onnx_static_batch(tmp_path):
    model = random_model(registry.get_entry("mobilenet_v1_025"))
    report = export.to_onnx(model, tmp_path / "m.onnx", batch_size=2, opset=13)
    assert report.inputs[0]["shape"] == [2, SIZE, SIZE, 3]
    assert report.outputs[0]["shape"] == [2, 1000]
    assert report.verified and report.samples == 4 and report.max_rel_diff <= 1e-4


def test_onnx_nchw_input(tmp_path):
    """`input_layout="NCHW"` takes channels-first images with no transpose in the graph and
    gives the model's outputs (embedded per-channel preprocessing included)."""
    import onnx

    entry = registry.get_entry("mnasnet_050")
    model = randomize(entry.build(weights=None, input_shape=(SIZE, SIZE, 3),
                                  classifier_activation=None), seed=2)
    report = export.to_onnx(model, tmp_path / "m.onnx", input_layout="NCHW")
    assert report.verified and report.max_rel_diff <= 1e-4, report
    assert report.inputs[0]["shape"] == ["batch", 3, SIZE, SIZE]
    assert "Transpose" not in report.ops, report.ops
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.graph.node[0].op_type != "Transpose"
    x = model_inputs(entry, model, sample_photos(SIZE, 3)[0])
    (y,) = onnx_lib.run(tmp_path / "m.onnx", np.transpose(x, (0, 3, 1, 2)))
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    with pytest.raises(ValueError, match="input_layout"):
        export.to_onnx(model, tmp_path / "n.onnx", input_layout="CHW")


def test_saved_model_replaces_an_earlier_export(tmp_path):
    model = random_model(registry.get_entry("squeezenet_1_1"))
    path = tmp_path / "saved"
    export.to_saved_model(model, path, verify=False)
    report = export.to_saved_model(model, path, batch_size=2)
    assert report.inputs[0]["shape"] == [2, SIZE, SIZE, 3] and report.verified
    assert sorted(os.listdir(tmp_path)) == ["saved"]


def test_android_example_writes_a_litert_model(tmp_path):
    shared_file(SAMPLE / "jpeg")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tflite_android.py"), "--weights", "none",
         "--calibration-dir", str(SAMPLE / "jpeg"), "--limit", "16", "--input-size", "96",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from ai_edge_litert.interpreter import Interpreter

    model_path = tmp_path / "shufflenet_v2_100_int8.tflite"
    interp = Interpreter(model_path=str(model_path))
    runner = interp.get_signature_runner()
    (detail,) = runner.get_input_details().values()
    assert detail["dtype"] == np.uint8 and list(detail["shape"]) == [1, 96, 96, 3]
    photo = sample_photos(96, 1)[0].astype("uint8")
    (out,) = runner(input=photo).values()
    assert out.shape == (1, 1000) and out.dtype == np.uint8
    labels = (tmp_path / "labels.txt").read_text().splitlines()
    assert labels == [imagenet.class_index()[i][1] for i in range(1000)]
    assert "top-5" in result.stdout


@pytest.mark.heavy
@pytest.mark.parametrize("entry", registry.entries(), ids=[e.name for e in registry.entries()])
def test_every_variant_tflite_float(entry, tmp_path):
    model = entry.build(weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    randomize(model, seed=0)
    report = export.to_tflite(model, tmp_path / "model.tflite")
    assert report.verified and report.max_rel_diff <= 1e-4, report
    assert report.gpu_compatible and report.max_tensor_rank <= 4
    assert_builtin_4d(tmp_path / "model.tflite")


def test_int8_mobilenet_v3_traces_hard_swish_for_xnnpack(tmp_path):
    """int8: hard swish as ADD/MUL (XNNPACK runs them), float32 keeps HARD_SWISH."""

    model = keras_lightnets_v3_small()
    photos, _ = sample_photos(SIZE, 48)
    x = np.array(photos, dtype="float32")
    trained_like(model, x[:32])
    float_report = export.to_tflite(model, tmp_path / "f32.tflite")
    assert "HARD_SWISH" in float_report.ops, float_report.ops
    report = export.to_tflite(model, tmp_path / "int8.tflite", "int8", representative_data=x[:32],
                              verify_data=x[32:], io_dtype="uint8", progress=False)
    assert report.cosine >= 0.95, report
    assert "HARD_SWISH" not in report.ops and "MUL" in report.ops, report.ops
    assert report.inputs[0]["dtype"] == "uint8"
    # The Keras layer itself is unchanged outside the int8 trace.
    layer = next(lay for lay in model.layers if type(lay).__name__ == "HardSwish")
    v = np.linspace(-5, 5, 101, dtype="float32")
    np.testing.assert_array_equal(np.asarray(layer(v)),
                                  np.asarray(keras.activations.hard_swish(v)))


def keras_lightnets_v3_small():
    import keras_lightnets as kl

    return kl.MobileNetV3Small(weights=None, input_shape=(SIZE, SIZE, 3),
                               classifier_activation=None)


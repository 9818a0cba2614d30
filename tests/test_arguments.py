"""Property test over the factories' arguments.

Every combination either builds a model with the right output shape or raises
`ValueError` naming an argument and saying `Received:`; never anything else.
"""

from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_lightnets as kl

JUNK = st.sampled_from(["x", 1.5, -1, (1,), None])
SIZE = st.one_of(st.none(), st.integers(-3, 260))
INPUT_SHAPE = st.one_of(
    st.none(),
    st.tuples(SIZE, SIZE, st.sampled_from([1, 3, 4, 0, None])),
    st.sampled_from([(64, 64), (64, 64, 3, 1), "64,64,3", [96, 96, 3]]),
)
ALPHA = st.one_of(
    st.sampled_from([0.25, 0.35, 0.5, 0.75, 1.0, 1.3, 1.4]),
    st.floats(-0.5, 1.6),
    st.just(float("nan")),
    st.sampled_from(["1", True, None]),
)
COMMON = {
    "input_shape": INPUT_SHAPE,
    "alpha": ALPHA,
    "include_top": st.one_of(st.booleans(), st.sampled_from(["yes", None, 1])),
    "weights": st.sampled_from([None, None, "imagenet", "/no/such/file.h5", 3]),
    "pooling": st.sampled_from([None, "avg", "max", "mean", 1]),
    "classes": st.one_of(st.integers(-2, 1100), st.sampled_from([1000, 2.5, "10"])),
    "classifier_activation": st.sampled_from([None, "softmax", "relu", "nope", 3]),
    "name": st.one_of(st.none(), st.sampled_from(["my_model", 5])),
}
FAMILY_ARGS = {
    kl.MobileNet: {
        "depth_multiplier": st.one_of(st.integers(-1, 3), JUNK),
        "dropout": st.floats(-0.5, 1.5, allow_nan=False),
    },
    kl.MobileNetV2: {},
    kl.MobileNetV3Small: {
        "minimalistic": st.one_of(st.booleans(), st.just("yes")),
        "dropout_rate": st.floats(-0.5, 1.5, allow_nan=False),
        "include_preprocessing": st.one_of(st.booleans(), st.just(None)),
    },
    kl.MobileNetV3Large: {
        "minimalistic": st.booleans(),
        "include_preprocessing": st.booleans(),
    },
    kl.SqueezeNet: {
        "version": st.sampled_from(["1.0", "1.1", "1_1", 1.1, None]),
        "bypass": st.sampled_from([None, "simple", "complex", True]),
        "include_preprocessing": st.one_of(st.booleans(), st.just(None)),
    },
    kl.MnasNet: {
        "dropout_rate": st.floats(-0.5, 1.5, allow_nan=False),
        "include_preprocessing": st.booleans(),
    },
    kl.ShuffleNetV2: {
        "activation": st.sampled_from(["relu", "swish", "gelu", None]),
        "include_preprocessing": st.booleans(),
    },
    kl.ShuffleNetV1: {
        "groups": st.sampled_from([1, 2, 3, 4, 8, 5, 0, 3.0, "3"]),
        "group_conv": st.sampled_from(["split", "native", "grouped", None]),
        "include_preprocessing": st.booleans(),
    },
}
# Families without a width multiplier.
NO_ALPHA = (kl.SqueezeNet,)


def _kwargs(family):
    fields = {**COMMON, **FAMILY_ARGS[family]}
    if family in NO_ALPHA:
        del fields["alpha"]
    return st.fixed_dictionaries({}, optional=fields)


def check_outcome(factory, kwargs):
    """Builds `factory(**kwargs)`; asserts the shape or the error contract."""
    try:
        with mock.patch("keras_lightnets.weights.load_imagenet") as loader:
            model = factory(**kwargs)
    except ValueError as exc:
        message = str(exc)
        assert "Received:" in message, message
        shown = message.split("Received:", 1)[1]
        named = [k for k in (*kwargs, "input_shape", "alpha") if f"{k}=" in shown]
        assert named, f"the error names no argument: {message}"
        return None
    if kwargs.get("weights") == "imagenet":
        assert loader.called
    out = model.output.shape
    if kwargs.get("include_top", True):
        assert out == (None, kwargs.get("classes", 1000))
    elif kwargs.get("pooling") in ("avg", "max"):
        assert len(out) == 2
    else:
        assert len(out) == 4
    return model


@pytest.mark.parametrize("family", list(FAMILY_ARGS), ids=lambda f: f.__name__)
def test_arguments_build_or_raise_value_error(family):
    @settings(max_examples=80, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(_kwargs(family))
    def run(kwargs):
        check_outcome(family, kwargs)

    run()

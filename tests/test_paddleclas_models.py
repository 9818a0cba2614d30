"""PaddleClas's MobileNet V1, MobileNetV2 and ShuffleNetV2 (issue #20, item 4).

A `.pdparams` written by PaddleClas's own model code (random, trained-like weights;
`paddle_reference.py` in a subprocess) loads through `weights=<path>`, which builds
PaddleClas's flavour, and the model gives PaddleClas's logits on raw 0-255 RGB pixels.
One width per family runs by default, the others under `-m heavy`.
"""

import keras
import numpy as np
import paddle_ref
import pytest

import keras_lightnets as kl
from keras_lightnets.weights import load_state, pdparams, sources

# PaddleClas's architecture names. Columns: arch, factory, variant kwargs, registry name,
# default run.
ARCHS = [
    ("MobileNetV1_x0_25", "MobileNet", {"alpha": 0.25}, "mobilenet_v1_025", True),
    ("MobileNetV1_x0_5", "MobileNet", {"alpha": 0.5}, "mobilenet_v1_050", False),
    ("MobileNetV1_x0_75", "MobileNet", {"alpha": 0.75}, "mobilenet_v1_075", False),
    ("MobileNetV1", "MobileNet", {"alpha": 1.0}, "mobilenet_v1_100", False),
    ("MobileNetV2_x0_25", "MobileNetV2", {"alpha": 0.25}, None, True),
    ("MobileNetV2_x0_5", "MobileNetV2", {"alpha": 0.5}, "mobilenet_v2_050", False),
    ("MobileNetV2_x0_75", "MobileNetV2", {"alpha": 0.75}, "mobilenet_v2_075", False),
    ("MobileNetV2", "MobileNetV2", {"alpha": 1.0}, "mobilenet_v2_100", False),
    ("MobileNetV2_x1_5", "MobileNetV2", {"alpha": 1.5}, None, False),
    ("MobileNetV2_x2_0", "MobileNetV2", {"alpha": 2.0}, None, False),
    ("ShuffleNetV2_x0_25", "ShuffleNetV2", {"alpha": 0.25}, "shufflenet_v2_025", True),
    ("ShuffleNetV2_x0_33", "ShuffleNetV2", {"alpha": 0.33}, "shufflenet_v2_033", False),
    ("ShuffleNetV2_x0_5", "ShuffleNetV2", {"alpha": 0.5}, "shufflenet_v2_050", False),
    ("ShuffleNetV2_x1_0", "ShuffleNetV2", {"alpha": 1.0}, "shufflenet_v2_100", False),
    ("ShuffleNetV2_x1_5", "ShuffleNetV2", {"alpha": 1.5}, "shufflenet_v2_150", False),
    ("ShuffleNetV2_x2_0", "ShuffleNetV2", {"alpha": 2.0}, "shufflenet_v2_200", False),
    ("ShuffleNetV2_swish", "ShuffleNetV2", {"alpha": 1.0, "activation": "swish"},
     "shufflenet_v2_swish_100", True),
]
DEFAULT_ARCHS = paddle_ref.request(*(a for a, *_, default in ARCHS if default))
CASES = [pytest.param(a, f, kw, id=a, marks=() if default else pytest.mark.heavy)
         for a, f, kw, _, default in ARCHS]
SIZE = paddle_ref.SIZE
# PaddleClas's ImageNet normalization on [0, 1] pixels.
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _build(family, kwargs, weights, **extra):
    return getattr(kl, family)(weights=weights, input_shape=(SIZE, SIZE, 3),
                               classifier_activation=None, **kwargs, **extra)


def _reference64(arch):
    """`(pdparams path, raw images, PaddleClas's float64 logits)` of `arch`."""
    path, images, _, logits64 = paddle_ref.reference(arch)
    return path, images, logits64


# float32 rounding of the widest MobileNetV2s (a 1920- and 2560-channel head) alone
# reaches this; the float64 test holds them to 1e-6.
FLOAT32_ATOL = {"MobileNetV2_x1_5": 2e-4, "MobileNetV2_x2_0": 2e-4}


@pytest.mark.parametrize("arch,family,kwargs", CASES)
def test_pdparams_gives_paddleclas_logits(arch, family, kwargs):
    """float32, raw pixels, against PaddleClas at float64 (its float32 logits are off by
    about the tolerance themselves)."""
    path, images, expected = _reference64(arch)
    model = _build(family, kwargs, str(path))
    got = np.asarray(model(images, training=False))
    assert np.std(expected) > 1.0, "degenerate reference logits"
    np.testing.assert_allclose(got, expected, atol=FLOAT32_ATOL.get(arch, 1e-4), rtol=0)
    print(f"{arch}: max |diff| {np.abs(got - expected).max():.2e}, "
          f"logit std {np.std(expected):.3f}")


@pytest.mark.parametrize("arch,family,kwargs", CASES)
def test_float64_on_the_normalized_input_equals_paddleclas(arch, family, kwargs):
    """Both sides at float64 on the tensor PaddleClas's forward takes
    (`include_preprocessing=False`): equal to 1e-6, no rounding to hide behind."""
    path, images, expected = _reference64(arch)
    x = (images.astype("float64") / 255.0 - MEAN) / STD
    policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        model = _build(family, kwargs, str(path), include_preprocessing=False)
        got = np.asarray(model(x, training=False))
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy(policy)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", DEFAULT_ARCHS)
def test_every_tensor_of_the_file_is_used(arch):
    """The name map places every tensor of PaddleClas's file, and the whole model."""
    family, kwargs = next((f, kw) for a, f, kw, *_ in ARCHS if a == arch)
    path, *_ = paddle_ref.reference(arch)
    state = pdparams.load_state_dict(path)
    model = _build(family, kwargs, None)
    if family == "ShuffleNetV2":
        # PaddleClas's numerics are torchvision's: its default flavour holds the file.
        assert load_state(model, state, sources.PADDLE, family) == sorted(state)
    else:
        with pytest.raises(ValueError, match="is paddleclas's, for its flavour of"):
            kl.weights.load_file(model, path, family=family)
    model = _build(family, kwargs, str(path))
    assert load_state(model, state, sources.PADDLE, family) == sorted(state)


def test_paddleclas_flavours_differ_where_paddleclas_does():
    """MobileNet V1: ReLU, symmetric padding, a dense classifier; MobileNetV2: block 0
    expands, widths `int(c * alpha)`, the last conv 1280 below alpha 1 and scaled above."""
    with kl.models.common.weights_not_loaded():
        v1 = kl.MobileNet(alpha=0.25, weights="paddle")
        v2 = kl.MobileNetV2(alpha=0.25, weights="paddle")
        v2_wide = kl.MobileNetV2(alpha=1.5, weights="paddle")
    kinds = {type(la).__name__ for la in v1.layers}
    assert "Dense" in kinds and "Reshape" not in kinds
    assert {la.max_value for la in v1.layers if isinstance(la, keras.layers.ReLU)} == {None}
    assert v1.get_layer("conv1_pad").padding == ((1, 1), (1, 1))
    assert v1.layers[1].name == "rescaling"
    assert v2.get_layer("expanded_conv_expand").filters == 8  # int(32 * 0.25), ratio 1
    assert v2.get_layer("block_1_project").filters == 6  # int(24 * 0.25), not rounded to 8
    assert v2.get_layer("Conv_1").filters == 1280
    assert v2_wide.get_layer("Conv_1").filters == 1920
    assert [la.epsilon for la in v2.layers if isinstance(la, keras.layers.BatchNormalization)
            ][0] == 1e-5


def test_paddle_sets_are_listed_and_resolve_to_the_flavour():
    assert kl.list_weights("mobilenet_v1_100")[:3] == ["imagenet", "paddle", "paddle_ssld"]
    assert {"paddle", "paddle_ssld"} <= set(kl.list_weights("mobilenet_v2_100"))
    assert kl.list_weights("mobilenet_v2_050")[:2] == ["imagenet", "paddle"]
    assert kl.list_weights("shufflenet_v2_025") == ["paddle"]
    assert kl.list_weights("shufflenet_v2_swish_100") == ["paddle"]
    for family in ("MobileNet", "MobileNetV2", "ShuffleNetV2"):
        flavour = sources.flavour_for(family, "paddle")
        assert flavour is sources.PADDLE.flavours[family]
        assert flavour.normalization.embedded and flavour.padding == "symmetric"
    assert sources.flavour_for("MobileNet", "paddle_ssld") is sources.PADDLE.flavours["MobileNet"]

"""The registered layers and `group_conv`."""

import os
import tempfile

import keras
import numpy as np
import pytest
from harness import assert_no_lambda

import keras_lightnets as kl


def _relu6(x):
    return np.clip(x, 0, 6)


def test_hard_activations_use_keras_formula():
    x = np.linspace(-8, 8, 1001, dtype="float32").reshape(1, -1)
    np.testing.assert_allclose(np.asarray(kl.HardSigmoid()(x)), _relu6(x + 3) / 6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(kl.HardSwish()(x)), x * _relu6(x + 3) / 6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(kl.HardSwish()(x)),
                               np.asarray(keras.activations.hard_swish(x)), atol=0)
    np.testing.assert_allclose(np.asarray(kl.HardSigmoid()(x)),
                               np.asarray(keras.activations.hard_sigmoid(x)), atol=0)


def _torch_style_shuffle(x, groups):
    # NCHW reference: view(b, g, c/g, h, w).transpose(1, 2), applied channels-last.
    b, h, w, c = x.shape
    return x.reshape(b, h, w, groups, c // groups).transpose(0, 1, 2, 4, 3).reshape(b, h, w, c)


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("spatial", [(5, 7), (None, None)])
def test_channel_shuffle_matches_reference(groups, spatial):
    c = 24
    x = np.random.default_rng(0).normal(size=(2, 5, 7, c)).astype("float32")
    inp = keras.Input((*spatial, c))
    model = keras.Model(inp, kl.ChannelShuffle(groups)(inp))
    np.testing.assert_array_equal(np.asarray(model(x)), _torch_style_shuffle(x, groups))
    # Channel g * (C // groups) + i goes to i * groups + g.
    ramp = np.arange(c, dtype="float32").reshape(1, 1, 1, c)
    out = np.asarray(kl.ChannelShuffle(groups)(ramp))[0, 0, 0]
    expected = [g * (c // groups) + i for i in range(c // groups) for g in range(groups)]
    np.testing.assert_array_equal(out, expected)


def test_channel_split_and_errors():
    x = np.arange(12, dtype="float32").reshape(1, 1, 1, 12)
    parts = kl.ChannelSplit(3)(x)
    assert [np.asarray(p).ravel().tolist() for p in parts] == [
        [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    with pytest.raises(ValueError, match="Received: num_splits=5"):
        kl.ChannelSplit(5)(x)
    with pytest.raises(ValueError, match="Received: groups=5"):
        kl.ChannelShuffle(5)(x)
    with pytest.raises(ValueError, match="Received: num_splits=0"):
        kl.ChannelSplit(0)


@pytest.mark.parametrize("groups", [1, 2, 3, 4])
def test_group_conv_equals_native_grouped_conv(groups):
    cin, cout = 12, 24
    inp = keras.Input((9, 9, cin))
    split = keras.Model(inp, kl.group_conv(inp, cout, 3, groups, strides=2, name="gc"))
    native_conv = keras.layers.Conv2D(cout, 3, strides=2, padding="same", groups=groups,
                                      use_bias=False)
    native = keras.Model(inp, native_conv(inp))
    kernel = np.random.default_rng(0).normal(size=(3, 3, cin // groups, cout)).astype("float32")
    native_conv.set_weights([kernel])
    # Group i of the native kernel holds output channels [i * cout/g, (i + 1) * cout/g).
    per = cout // groups
    split_kernels = [kernel[..., i * per:(i + 1) * per] for i in range(groups)]
    names = ["gc"] if groups == 1 else [f"gc_g{i}" for i in range(groups)]
    for name, k in zip(names, split_kernels, strict=True):
        split.get_layer(name).set_weights([k])
    x = np.random.default_rng(1).normal(size=(2, 9, 9, cin)).astype("float32")
    np.testing.assert_allclose(np.asarray(split(x)), np.asarray(native(x)), atol=1e-5)
    assert_no_lambda(split)
    kinds = {type(layer).__name__ for layer in split.layers}
    assert "Conv2D" in kinds and (groups == 1 or "ChannelSplit" in kinds)


def test_group_conv_rejects_bad_groups():
    inp = keras.Input((4, 4, 6))
    with pytest.raises(ValueError, match="Received: groups=4"):
        kl.group_conv(inp, 6, 1, 4)


def test_layers_survive_safe_mode_round_trip():
    inp = keras.Input((6, 6, 8))
    a, b = kl.ChannelSplit(2, name="split")(inp)
    x = keras.layers.Concatenate()([kl.HardSwish()(a), kl.HardSigmoid()(b)])
    x = kl.ChannelShuffle(4, name="shuffle")(x)
    model = keras.Model(inp, x)
    data = np.random.default_rng(0).normal(size=(1, 6, 6, 8)).astype("float32")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.keras")
        model.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded(data)), np.asarray(model(data)))
    assert loaded.get_layer("shuffle").get_config()["groups"] == 4
    assert loaded.get_layer("split").get_config()["num_splits"] == 2

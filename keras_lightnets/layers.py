"""Registered layers of keras_lightnets models: real, serializable layers (no `Lambda`), so
safe-mode loading works and quantization and export see every op."""

import keras
from keras import ops

PACKAGE = "keras_lightnets"
CUSTOM_LAYERS = {}  # the registered layers by class name, filled by `_register`


def _register(cls):
    """Registers `cls`, which declares its `keras_lightnets.graph.traits` in `traits`."""
    CUSTOM_LAYERS[cls.__name__] = cls
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


def _positive(name, value):
    if int(value) < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")
    return int(value)


def _check_divides(input_shape, count, what, name):
    channels = input_shape[-1]
    if channels is not None and channels % count:
        raise ValueError(f"The channel count {channels} is not divisible by the number of "
                         f"{what}. Received: {name}={count}")


@_register
class HardSigmoid(keras.layers.Layer):
    """Hard sigmoid, `relu6(x + 3) / 6` (Keras 3's formula, exactly)."""

    traits = ("per_channel",)

    def call(self, inputs):
        return ops.hard_sigmoid(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@_register
class HardSwish(keras.layers.Layer):
    """Hard swish, `x * relu6(x + 3) / 6` (Keras 3's `hard_swish`, exactly)."""

    traits = ("per_channel",)

    def call(self, inputs):
        return ops.hard_silu(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@_register
class Rescaling(keras.layers.Rescaling):
    """`keras.layers.Rescaling`, marked so export can swap in its own form."""

    traits = ()


@_register
class ChannelSplit(keras.layers.Layer):
    """Splits a channels-last tensor into `num_splits` equal channel groups.

    Args:
        num_splits: number of groups; must divide the channel count.

    Returns a list of `num_splits` tensors, in channel order.
    """

    traits = ("routes_channels", "passes_quantized_values")

    def __init__(self, num_splits=2, **kwargs):
        super().__init__(**kwargs)
        self.num_splits = _positive("num_splits", num_splits)

    def build(self, input_shape):
        _check_divides(input_shape, self.num_splits, "splits", "num_splits")

    def call(self, inputs):
        if self.num_splits == 1:
            return [inputs]
        return ops.split(inputs, self.num_splits, axis=-1)

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        part = None if channels is None else channels // self.num_splits
        return [tuple(input_shape[:-1]) + (part,)] * self.num_splits

    def get_config(self):
        return {**super().get_config(), "num_splits": self.num_splits}


def shuffle_channels(inputs, groups, backend):
    """ChannelShuffle's computation with `backend` (`keras.ops` or `tensorflow`)."""
    if groups == 1:
        return inputs
    channels = inputs.shape[-1]
    height, width = inputs.shape[1], inputs.shape[2]
    x = backend.reshape(inputs, (-1, groups, channels // groups))
    x = backend.transpose(x, (0, 2, 1))
    if height is None or width is None:
        dynamic = backend.shape(inputs)
        height, width = dynamic[1], dynamic[2]
    return backend.reshape(x, (-1, height, width, channels))


@_register
class ChannelShuffle(keras.layers.Layer):
    """Channel shuffle of ShuffleNet on a channels-last tensor.

    Channel `g * (C // groups) + i` moves to position `i * groups + g`, as in the reference
    implementations, by reshape-transpose-reshape, never above 4-D.

    Args:
        groups: number of channel groups to interleave.
    """

    traits = ("routes_channels", "passes_quantized_values")

    def __init__(self, groups=2, **kwargs):
        super().__init__(**kwargs)
        self.groups = _positive("groups", groups)

    def build(self, input_shape):
        _check_divides(input_shape, self.groups, "groups", "groups")

    def call(self, inputs):
        return shuffle_channels(inputs, self.groups, ops)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


def group_conv(x, filters, kernel_size, groups, strides=1, padding="same", use_bias=False,
               name=None, **conv_kwargs):
    """Grouped convolution as channels-last split, per-group `Conv2D`, concat
    (portable, unlike `Conv2D(groups=g)`); with `groups=1` one `Conv2D` `name`.

    Args:
        x: channels-last input tensor.
        filters: total output channels; must be divisible by `groups`.
        kernel_size: convolution kernel size.
        groups: number of groups; must divide the input channels.
        strides, padding, use_bias: as in `Conv2D`.
        name: base name: layers are `{name}_split`, `{name}_g{i}`, `{name}_concat`.

    Returns:
        The output tensor.
    """
    if groups < 1 or filters % groups:
        raise ValueError(
            f"`filters` ({filters}) must be divisible by `groups`. Received: groups={groups}"
        )
    def conv(width, layer_name):
        return keras.layers.Conv2D(width, kernel_size, strides=strides, padding=padding,
                                   use_bias=use_bias, name=layer_name, **conv_kwargs)

    if groups == 1:
        return conv(filters, name)(x)
    base = name or "group_conv"
    parts = ChannelSplit(groups, name=f"{base}_split")(x)
    outs = [conv(filters // groups, f"{base}_g{i}")(part) for i, part in enumerate(parts)]
    return keras.layers.Concatenate(axis=-1, name=f"{base}_concat")(outs)


@_register
class AveragePooling2D(keras.layers.AveragePooling2D):
    """`keras.layers.AveragePooling2D`, marked so export can swap in its own form."""

    traits = ("per_channel",)


@_register
class ChannelSlice(keras.layers.Layer):
    """Channels `[start, stop)` of a channels-last tensor.

    Args:
        start, stop: the first channel and the one after the last.
    """

    traits = ("passes_quantized_values",)

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, inputs):
        # Static sizes (-1 only where unknown), so it stays a plain slice.
        sizes = [-1 if d is None else int(d) for d in inputs.shape[:-1]]
        return ops.slice(inputs, [0] * len(sizes) + [self.start],
                         sizes + [self.stop - self.start])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}



@_register
class ResizeNearest(keras.layers.Layer):
    """Resizes the first input to the rows and columns of the second, with PyTorch's
    `F.interpolate(size=..., mode="nearest")` rule: output row `d` reads input row
    `floor(d * in / out)` (twice each for an even `out = 2 * in`; for an odd `2 * in + 1`,
    the first row three times). The second input gives only its shape.
    """

    traits = ("passes_quantized_values",)

    def call(self, inputs):
        x, like = inputs
        for axis in (1, 2):
            size_in, size_out = x.shape[axis], like.shape[axis]
            if size_in is None or size_out is None:
                size_in, size_out = ops.shape(x)[axis], ops.shape(like)[axis]
            x = ops.take(x, (ops.arange(size_out) * size_in) // size_out, axis=axis)
        return x

    def compute_output_shape(self, input_shape):
        x, like = input_shape
        return (x[0], like[1], like[2], x[3])


@_register
class LayerScale(keras.layers.Layer):
    """Learned per-channel scale of a channels-last tensor, `x * gamma` (timm's
    `LayerScale2d`, which MobileNetV4-Hybrid puts on every block's residual branch).

    Args:
        init_value: the initial value of every channel's `gamma`.
    """

    traits = ("per_channel",)

    def __init__(self, init_value=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma", shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_value))

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


def multi_query_attention(query, key, value, key_dim, backend, softmax):
    """MultiQueryAttentionCore's computation with `backend` (`keras.ops` or `tensorflow`) and
    its `softmax` function."""
    dynamic = backend.shape(query)
    batch, rows, cols = (dynamic[i] if query.shape[i] is None else query.shape[i]
                         for i in range(3))
    value_dim = value.shape[-1]
    heads = query.shape[-1] // key_dim
    # Head-major query channels: position p, head h is row p * heads + h.
    q = backend.reshape(query, (batch, -1, key_dim)) * (key_dim ** -0.5)
    k = backend.reshape(key, (batch, -1, key_dim))
    v = backend.reshape(value, (batch, -1, value_dim))
    attention = softmax(backend.matmul(q, backend.transpose(k, (0, 2, 1))))
    return backend.reshape(backend.matmul(attention, v), (batch, rows, cols, heads * value_dim))


@_register
class MultiQueryAttentionCore(keras.layers.Layer):
    """The core of multi-query attention on channels-last maps (MobileNetV4's Mobile MQA):
    `softmax(q k^T / sqrt(key_dim)) v` for every query head, all heads sharing one key and
    value head. The projections (and any key/value downsampling) are the model's own layers.

    Inputs `[query, key, value]`: `(batch, rows, cols, heads * key_dim)` with head-major
    channels, `(batch, r, c, key_dim)` and `(batch, r, c, value_dim)`. Output:
    `(batch, rows, cols, heads * value_dim)`, head-major. One shared key/value head lets the
    query heads fold into the query axis: two 3-D matmuls and a softmax, nothing above 4-D.

    Args:
        key_dim: channels per query and key head.
    """

    traits = ()

    def __init__(self, key_dim, **kwargs):
        super().__init__(**kwargs)
        self.key_dim = _positive("key_dim", key_dim)

    def build(self, input_shape):
        query, key, _ = input_shape
        if query[-1] is not None and query[-1] % self.key_dim:
            raise ValueError(f"The query channels {query[-1]} are not a multiple of the head "
                             f"size. Received: key_dim={self.key_dim}")
        if key[-1] is not None and key[-1] != self.key_dim:
            raise ValueError(f"The key has {key[-1]} channels, one head of `key_dim`. "
                             f"Received: key_dim={self.key_dim}")

    def call(self, inputs):
        query, key, value = inputs
        return multi_query_attention(query, key, value, self.key_dim, ops,
                                     lambda x: ops.softmax(x, axis=-1))

    def compute_output_shape(self, input_shape):
        query, _, value = input_shape
        heads = None if query[-1] is None else query[-1] // self.key_dim
        channels = None if heads is None or value[-1] is None else heads * value[-1]
        return (query[0], query[1], query[2], channels)

    def get_config(self):
        return {**super().get_config(), "key_dim": self.key_dim}

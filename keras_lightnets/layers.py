"""Registered layers used by keras_lightnets models.

Every op in a keras_lightnets graph is a real, serializable Keras layer: no
`Lambda`, no raw arithmetic on symbolic tensors. That keeps
`keras.models.load_model(..., safe_mode=True)` working and lets quantization
and export see and annotate every op.
"""

import keras
from keras import ops

PACKAGE = "keras_lightnets"


# The registered layers by class name, filled by `_register`.
CUSTOM_LAYERS = {}


def _register(cls):
    """Registers `cls`, which declares its `keras_lightnets.graph.traits` in `traits`."""
    CUSTOM_LAYERS[cls.__name__] = cls
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


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
    """`keras.layers.Rescaling` (`x * scale + offset`): the embedded preprocessing.

    Same arguments, config and values; export swaps in its own form of a
    per-channel one.
    """

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
        if int(num_splits) < 1:
            raise ValueError(
                f"`num_splits` must be a positive integer. Received: num_splits={num_splits}"
            )
        self.num_splits = int(num_splits)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels % self.num_splits:
            raise ValueError(
                f"The channel count {channels} is not divisible by the number of splits. "
                f"Received: num_splits={self.num_splits}"
            )

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
    """ChannelShuffle's computation with `backend`'s reshape/transpose/shape.

    `backend` is `keras.ops`, or `tensorflow` for the tf_keras twin: both
    spell the three ops the same way.
    """
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

    Channel `g * (C // groups) + i` moves to position `i * groups + g`, as in
    the reference implementations. The graph is reshape-transpose-reshape on a
    3-D view (pixels, groups, channels per group), never above 4-D, so
    GPU delegates accept it.

    Args:
        groups: number of channel groups to interleave.
    """

    traits = ("routes_channels", "passes_quantized_values")

    def __init__(self, groups=2, **kwargs):
        super().__init__(**kwargs)
        if int(groups) < 1:
            raise ValueError(f"`groups` must be a positive integer. Received: groups={groups}")
        self.groups = int(groups)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels % self.groups:
            raise ValueError(
                f"The channel count {channels} is not divisible by the number of groups. "
                f"Received: groups={self.groups}"
            )

    def call(self, inputs):
        return shuffle_channels(inputs, self.groups, ops)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


def group_conv(
    x,
    filters,
    kernel_size,
    groups,
    strides=1,
    padding="same",
    use_bias=False,
    name=None,
    **conv_kwargs,
):
    """Grouped convolution as channels-last split, per-group `Conv2D`, concat.

    Portable to every runtime and delegate, unlike `Conv2D(groups=g)`, which
    compiles through XLA and which not every converter takes. With
    `groups=1` it is a single `Conv2D` called `name`.

    Args:
        x: channels-last input tensor.
        filters: total output channels; must be divisible by `groups`.
        kernel_size: convolution kernel size.
        groups: number of groups; must divide the input channels.
        strides, padding, use_bias: as in `Conv2D`.
        name: base name: layers are `{name}_split`, `{name}_g{i}`,
            `{name}_concat`.

    Returns:
        The output tensor.
    """
    if groups < 1 or filters % groups:
        raise ValueError(
            f"`filters` ({filters}) must be divisible by `groups`. Received: groups={groups}"
        )
    if groups == 1:
        return keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding=padding,
            use_bias=use_bias, name=name, **conv_kwargs,
        )(x)
    base = name or "group_conv"
    parts = ChannelSplit(groups, name=f"{base}_split")(x)
    outs = [
        keras.layers.Conv2D(
            filters // groups, kernel_size, strides=strides, padding=padding,
            use_bias=use_bias, name=f"{base}_g{i}", **conv_kwargs,
        )(part)
        for i, part in enumerate(parts)
    ]
    return keras.layers.Concatenate(axis=-1, name=f"{base}_concat")(outs)


@_register
class AveragePooling2D(keras.layers.AveragePooling2D):
    """`keras.layers.AveragePooling2D`: ShuffleNet V1's shortcut pools.

    Same arguments, config and values; export swaps in its own form.
    """

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
        # A slice of static size (-1, "the rest", only where a dimension is unknown),
        # which runtimes run as a plain SLICE.
        sizes = [-1 if d is None else int(d) for d in inputs.shape[:-1]]
        return ops.slice(inputs, [0] * len(sizes) + [self.start],
                         sizes + [self.stop - self.start])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


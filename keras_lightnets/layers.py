"""Registered layers used by keras_lightnets models.

Every op in a keras_lightnets graph is a real, serializable Keras layer: no
`Lambda`, no raw arithmetic on symbolic tensors. That keeps
`keras.models.load_model(..., safe_mode=True)` working, lets TF-MOT annotate
every op and keeps TFLite/ONNX graphs free of stray ops.
"""

import contextlib
import contextvars

import keras
import numpy as np
from keras import ops

PACKAGE = "keras_lightnets"

_INTEGER_TRACE = contextvars.ContextVar("keras_lightnets_integer_trace", default=False)
# 1/6 one float32 step up: the TFLite converter then does not fuse `x * (relu6(x + 3) * c)`
# into HARD_SWISH, which LiteRT's XNNPACK runs in float only (an int8 HARD_SWISH goes to
# a reference kernel slower than the float32 file); XNNPACK does fuse the ADD/MUL/MUL
# chain into one pass. The 1e-8 change is far below any int8 step.
_ONE_SIXTH_UNFUSED = float(np.nextafter(np.float32(1 / 6), np.float32(1)))


@contextlib.contextmanager
def integer_trace():
    """Within it, `HardSwish` and `AveragePooling2D` trace as ops LiteRT runs fast in int8.

    Used by the full-integer TFLite export around tracing; the float graph
    keeps the form the converter fuses into HARD_SWISH (faster in float).
    """
    token = _INTEGER_TRACE.set(True)
    try:
        yield
    finally:
        _INTEGER_TRACE.reset(token)


def integer_tracing():
    """Whether an `integer_trace` is active."""
    return _INTEGER_TRACE.get()


def hard_swish_gate(inputs, backend):
    """Hard swish's gate for an integer trace, `relu6(x + 3) * ~1/6`.

    `backend` is `keras.ops`, or `tensorflow.nn` for the tf_keras twin.
    """
    return backend.relu6(inputs + 3.0) * _ONE_SIXTH_UNFUSED


def _register(cls):
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


@_register
class HardSigmoid(keras.layers.Layer):
    """Hard sigmoid, `relu6(x + 3) / 6` (Keras 3's formula, exactly)."""

    def call(self, inputs):
        return ops.hard_sigmoid(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@_register
class HardSwish(keras.layers.Layer):
    """Hard swish, `x * relu6(x + 3) / 6` (Keras 3's `hard_swish`, exactly)."""

    def call(self, inputs):
        if _INTEGER_TRACE.get():
            return inputs * hard_swish_gate(inputs, ops)
        return ops.hard_silu(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@_register
class Rescaling(keras.layers.Rescaling):
    """`keras.layers.Rescaling` (`x * scale + offset`) that exports fast per channel.

    Same arguments, config and values. With a scale or offset per channel
    (the embedded mean/std preprocessing), the plain layer becomes MUL and
    ADD by a 3-element constant broadcast over the innermost axis, which
    XNNPACK (TFLite) and ONNX Runtime process a pixel at a time: at 224x224
    on one core the pair takes 0.3-0.6 ms in TFLite and 1.7 ms in ONNX
    Runtime, more than ShuffleNet V2's first convolution and a quarter of its
    int8 latency.
    Here it is one 1x1 convolution with a constant diagonal kernel and a bias
    (exact: the off-diagonal terms add zeros), a single fast op in both.
    Scalar scale and offset keep the plain layer's graph.
    """

    def call(self, inputs):
        conv = rescaling_as_conv(self.scale, self.offset, inputs.shape[-1])
        if conv is None:
            return super().call(inputs)
        dtype = self.compute_dtype
        kernel, bias = conv
        return ops.conv(ops.cast(inputs, dtype), ops.cast(kernel, dtype)) + ops.cast(bias, dtype)


def rescaling_as_conv(scale, offset, channels):
    """`(kernel, bias)` of the 1x1 convolution computing `x * scale + offset`.

    None for a scalar scale and offset (or ones that do not match
    `channels`), which stay MUL and ADD.
    """
    scale = np.asarray(scale, dtype="float32")
    offset = np.asarray(offset, dtype="float32")
    if (scale.ndim == 0 and offset.ndim == 0) or channels is None or (
            scale.size not in (1, channels) or offset.size not in (1, channels)):
        return None
    kernel = np.diag(np.broadcast_to(scale.reshape(-1), (channels,)))[None, None]
    return kernel, np.broadcast_to(offset.reshape(-1), (channels,)).copy()


@_register
class ChannelSplit(keras.layers.Layer):
    """Splits a channels-last tensor into `num_splits` equal channel groups.

    Args:
        num_splits: number of groups; must divide the channel count.

    Returns a list of `num_splits` tensors, in channel order.
    """

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
    3-D view (pixels, groups, channels per group), never above 4-D, so the
    TFLite GPU delegate accepts it.

    Args:
        groups: number of channel groups to interleave.
    """

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

    Portable to every runtime (TFLite and its delegates, ONNX), unlike
    `Conv2D(groups=g)`, which compiles through XLA and which tf2onnx cannot
    convert. With `groups=1` it is a single `Conv2D` called `name`.

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
    """`keras.layers.AveragePooling2D` that full-integer TFLite files run fast.

    Same arguments, config and values. LiteRT's XNNPACK delegate takes float
    AVERAGE_POOL_2D only: in an int8 file each pool goes to a reference
    kernel and splits the delegated graph (ShuffleNet V1's three shortcut
    pools: 0.4 ms of 4.2, four XNNPACK partitions). Within an
    `integer_trace` a 'valid' pool is a depthwise convolution with a
    constant `1 / (pool_h * pool_w)` kernel, exact in int8 (the kernel
    quantizes to 127 steps of its own scale), which XNNPACK runs in int8.
    Float files keep AVERAGE_POOL_2D; 'same' pools, whose border windows
    leave the padding out of the mean, are never rewritten.
    """

    def call(self, inputs):
        kernel = average_kernel(self.pool_size, self.padding, self.data_format, inputs.shape[-1])
        if kernel is None or not _INTEGER_TRACE.get():
            return super().call(inputs)
        kernel = ops.cast(kernel, self.compute_dtype)
        return ops.depthwise_conv(inputs, kernel, strides=self.strides, padding="valid")


def average_kernel(pool_size, padding, data_format, channels):
    """The depthwise kernel `(h, w, channels, 1)` computing a 'valid' channels-last mean.

    None for other pools, which keep the pooling op.
    """
    if padding != "valid" or data_format != "channels_last" or channels is None:
        return None
    height, width = pool_size
    return np.full((height, width, channels, 1), 1.0 / (height * width), dtype="float32")

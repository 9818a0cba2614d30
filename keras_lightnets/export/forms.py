"""Export-time forms of the package's layers, swapped in by `passes` (export graphs only).

- `UnfusedHardSwish`: `x * (relu6(x + 3) * c)`, `c` one float32 step above 1/6, so the
  converter keeps the ADD/MUL chain XNNPACK runs in int8, not HARD_SWISH (float only there).
- `DepthwiseAveragePooling2D`: an average pool as a depthwise convolution (exact): XNNPACK
  takes float AVERAGE_POOL_2D only. A 'same' pool of a map of known size also gets
  `x + x * c`, `c` the border windows' `pool area / pixels inside - 1` (0 inside the map,
  so the interior stays exact in int8; a MUL by the whole factor would round its 1).
- `ConvRescaling`: a per-channel `x * scale + offset` as one diagonal 1x1 convolution.
- `DepthwiseReLU`: a ReLU the converter cannot fuse into the op before it (that op's output
  has other readers) as a 1x1 identity depthwise convolution with the ReLU fused: XNNPACK
  runs that in int8, a standalone int8 RELU it leaves to the built-in kernels.
- `ErfGelu`: the exact GELU as `x * (1 + erf(x / sqrt(2))) / 2`: TensorFlow writes it with
  `erfc`, which ONNX lacks (the ONNX export writes a tf_keras model's as `1 - erf`, two ops
  more).
- `StaticFlatten`, `StaticReshape`: a `Flatten` or `Reshape` of a map of static size as a
  reshape to `(-1, ...)`, so a dynamic batch leaves no shape computation in the graph.

The tf_keras twins take the same forms while `active(name)`, set by the TFLite export.
"""

import contextlib
import contextvars
import math

import keras
import numpy as np
from keras import ops

ONE_SIXTH_UNFUSED = float(np.nextafter(np.float32(1 / 6), np.float32(1)))

_ACTIVE = contextvars.ContextVar("keras_lightnets_export_forms", default=frozenset())


@contextlib.contextmanager
def activated(names):
    """Within it, `active(name)` is True for each of `names` (pass names)."""
    token = _ACTIVE.set(frozenset(names))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active(name):
    """Whether the tf_keras twins trace the form of pass `name`."""
    return name in _ACTIVE.get()


def hard_swish_gate(inputs, backend):
    """`relu6(x + 3) * c`; `backend` is `keras.ops`, or `tensorflow.nn` for the twin."""
    return backend.relu6(inputs + 3.0) * ONE_SIXTH_UNFUSED


def rescaling_as_conv(scale, offset, channels):
    """`(kernel, bias)` of the 1x1 convolution computing `x * scale + offset`; None for
    scalars (or sizes other than `channels`), which stay MUL and ADD."""
    scale = np.asarray(scale, dtype="float32")
    offset = np.asarray(offset, dtype="float32")
    if (scale.ndim == 0 and offset.ndim == 0) or channels is None or (
            scale.size not in (1, channels) or offset.size not in (1, channels)):
        return None
    kernel = np.diag(np.broadcast_to(scale.reshape(-1), (channels,)))[None, None]
    return kernel, np.broadcast_to(offset.reshape(-1), (channels,)).copy()


def average_kernel(pool_size, padding, data_format, channels):
    """The depthwise kernel `(h, w, channels, 1)` computing a 'valid' channels-last mean;
    None for other pools ('same' border windows leave the padding out of the mean)."""
    if padding != "valid" or data_format != "channels_last" or channels is None:
        return None
    height, width = pool_size
    return np.full((height, width, channels, 1), 1.0 / (height * width), dtype="float32")


class UnfusedHardSwish(keras.layers.Layer):
    """Hard swish that the converter keeps as ADD (RELU6), MUL, MUL."""

    def call(self, inputs):
        return inputs * hard_swish_gate(inputs, ops)

    def compute_output_shape(self, input_shape):
        return input_shape


def same_pool_excess(pool_size, strides, size):
    """`(1, rows, cols, 1)` of `area / pixels inside - 1` per window of a 'same' pool of a
    `size` map (TensorFlow's padding: the smaller half before); None if `size` is unknown
    or no window crosses the border."""
    if size is None or None in tuple(size):
        return None
    factors = []
    for k, s, n in zip(pool_size, strides, size, strict=True):
        out = -(-n // s)
        starts = np.arange(out) * s - max((out - 1) * s + k - n, 0) // 2
        factors.append(k / (np.minimum(starts + k, n) - np.maximum(starts, 0)))
    excess = np.outer(*factors) - 1.0
    return excess[None, :, :, None].astype("float32") if excess.any() else None


class DepthwiseAveragePooling2D(keras.layers.AveragePooling2D):
    """A channels-last `AveragePooling2D` as a depthwise convolution ('same': of a map of
    known size, with its border correction)."""

    def call(self, inputs):
        kernel = average_kernel(self.pool_size, "valid", self.data_format, inputs.shape[-1])
        kernel = ops.cast(kernel, self.compute_dtype)
        x = ops.depthwise_conv(inputs, kernel, strides=self.strides, padding=self.padding)
        if self.padding == "same":
            excess = same_pool_excess(self.pool_size, self.strides, inputs.shape[1:3])
            if excess is not None:
                x = x + x * ops.cast(excess, self.compute_dtype)
        return x


class ConvRescaling(keras.layers.Rescaling):
    """A per-channel `Rescaling` as a 1x1 convolution and a bias."""

    def call(self, inputs):
        kernel, bias = rescaling_as_conv(self.scale, self.offset, inputs.shape[-1])
        dtype = self.compute_dtype
        return ops.conv(ops.cast(inputs, dtype), ops.cast(kernel, dtype)) + ops.cast(bias, dtype)


class DepthwiseReLU(keras.layers.Layer):
    """`max(x, 0)` of a channels-last map as a 1x1 depthwise convolution of ones, ReLU fused."""

    def call(self, inputs):
        kernel = ops.ones((1, 1, inputs.shape[-1], 1), self.compute_dtype)
        return ops.relu(ops.depthwise_conv(inputs, kernel, strides=1, padding="valid"))

    def compute_output_shape(self, input_shape):
        return input_shape


class ErfGelu(keras.layers.Layer):
    """The exact GELU of an `Activation("gelu")` (its config), written with `erf`."""

    def __init__(self, activation="gelu", **kwargs):
        super().__init__(**kwargs)

    def call(self, inputs):
        return 0.5 * inputs * (1.0 + ops.erf(inputs * float(np.sqrt(0.5))))

    def compute_output_shape(self, input_shape):
        return input_shape


class StaticFlatten(keras.layers.Flatten):
    """A channels-last `Flatten` of a map of static size as a reshape to `(-1, size)`."""

    def call(self, inputs):
        return ops.reshape(inputs, (-1, math.prod(inputs.shape[1:])))


class StaticReshape(keras.layers.Reshape):
    """A `Reshape` of a map of static size as a reshape to `(-1, *target_shape)`."""

    def call(self, inputs):
        return ops.reshape(inputs, (-1, *self.compute_output_shape(inputs.shape)[1:]))

"""tf_keras twins of `keras_lightnets.layers` (same names, configs and values) for TF-MOT;
`quantize_config` names a twin's `QuantizeConfig`."""

import tensorflow as tf
import tf_keras

from keras_lightnets.export import forms
from keras_lightnets.layers import multi_query_attention, shuffle_channels

PACKAGE = "keras_lightnets"
CUSTOM_LAYERS = {}  # the twins by class name, filled by `_register`


def _register(cls):
    CUSTOM_LAYERS[cls.__name__] = cls
    return tf_keras.saving.register_keras_serializable(package=PACKAGE)(cls)


@_register
class HardSigmoid(tf_keras.layers.Layer):
    """Hard sigmoid, `relu6(x + 3) / 6` (Keras 3's formula, not tf_keras')."""

    quantize_config = "OutputQuantizeConfig"

    def call(self, inputs):
        return tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@_register
class HardSwish(tf_keras.layers.Layer):
    """Hard swish, `x * gate(relu6(x + 3) / 6)`, `gate` the identity: a real
    activation so QAT quantizes the gate and int8 avoids the slow fused op."""

    quantize_config = "HardSwishQuantizeConfig"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gate = tf_keras.activations.linear

    def call(self, inputs):
        if forms.active("int8_hard_swish"):  # a plain (not QAT) twin exported to int8
            return inputs * self.gate(forms.hard_swish_gate(inputs, tf.nn))
        return inputs * self.gate(tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0))

    def compute_output_shape(self, input_shape):
        return input_shape


@_register
class Rescaling(tf_keras.layers.Rescaling):
    """`x * scale + offset`, per channel as one 1x1 convolution (as `export.forms` has it)."""

    def call(self, inputs):
        conv = forms.rescaling_as_conv(self.scale, self.offset, inputs.shape[-1])
        if conv is None:
            return super().call(inputs)
        kernel, bias = conv
        dtype = self.compute_dtype
        x = tf.nn.conv2d(tf.cast(inputs, dtype), tf.constant(kernel, dtype), 1, "VALID")
        return x + tf.constant(bias, dtype)


@_register
class ChannelSplit(tf_keras.layers.Layer):
    """Splits a channels-last tensor into `num_splits` equal channel groups."""

    def __init__(self, num_splits=2, **kwargs):
        super().__init__(**kwargs)
        self.num_splits = int(num_splits)

    def call(self, inputs):
        if self.num_splits == 1:
            return [inputs]
        return tf.split(inputs, self.num_splits, axis=-1)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        part = None if shape[-1] is None else shape[-1] // self.num_splits
        return [tf.TensorShape(shape[:-1] + [part])] * self.num_splits

    def get_config(self):
        return {**super().get_config(), "num_splits": self.num_splits}


@_register
class ChannelSlice(tf_keras.layers.Layer):
    """Channels `[start, stop)` of a channels-last tensor (a routed ShuffleNet V2's reads)."""

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, inputs):
        sizes = [-1 if d is None else int(d) for d in inputs.shape[:-1]]
        return tf.slice(inputs, [0] * len(sizes) + [self.start],
                        sizes + [self.stop - self.start])

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape(shape[:-1] + [self.stop - self.start])

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@_register
class ChannelShuffle(tf_keras.layers.Layer):
    """Channel shuffle of ShuffleNet (reshape-transpose-reshape, never above 4-D)."""

    def __init__(self, groups=2, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, inputs):
        return shuffle_channels(inputs, self.groups, tf)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@_register
class AveragePooling2D(tf_keras.layers.AveragePooling2D):
    """`AveragePooling2D`; in an int8 export, a depthwise convolution (`export.forms`)."""

    def call(self, inputs):
        kernel = forms.average_kernel(self.pool_size, self.padding, self.data_format,
                                      inputs.shape[-1])
        if kernel is None or not forms.active("int8_average_pool"):
            return super().call(inputs)
        kernel = tf.constant(kernel, self.compute_dtype)
        return tf.nn.depthwise_conv2d(inputs, kernel, (1, *self.strides, 1), "VALID")


@_register
class ResizeNearest(tf_keras.layers.Layer):
    """The first input at the second's rows and columns, PyTorch's nearest rule (a gather)."""

    def call(self, inputs):
        x, like = inputs
        for axis in (1, 2):
            size_in, size_out = x.shape[axis], like.shape[axis]
            if size_in is None or size_out is None:
                size_in, size_out = tf.shape(x)[axis], tf.shape(like)[axis]
            x = tf.gather(x, (tf.range(size_out) * size_in) // size_out, axis=axis)
        return x

    def compute_output_shape(self, input_shape):
        x, like = (tf.TensorShape(s).as_list() for s in input_shape)
        return tf.TensorShape([x[0], like[1], like[2], x[3]])


@_register
class LayerScale(tf_keras.layers.Layer):
    """Learned per-channel scale, `x * gamma`."""

    quantize_config = "OutputQuantizeConfig"

    def __init__(self, init_value=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma", shape=(int(input_shape[-1]),),
            initializer=tf_keras.initializers.Constant(self.init_value))
        super().build(input_shape)

    def call(self, inputs):
        return inputs * tf.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


@_register
class MultiQueryAttentionCore(tf_keras.layers.Layer):
    """`softmax(q k^T / sqrt(key_dim)) v`, query heads sharing one key/value head."""

    quantize_config = "OutputQuantizeConfig"

    def __init__(self, key_dim, **kwargs):
        super().__init__(**kwargs)
        self.key_dim = int(key_dim)

    def call(self, inputs):
        query, key, value = inputs
        return multi_query_attention(query, key, value, self.key_dim, tf,
                                     lambda x: tf.nn.softmax(x, axis=-1))

    def compute_output_shape(self, input_shape):
        query, _, value = (tf.TensorShape(s).as_list() for s in input_shape)
        return tf.TensorShape([*query[:3], query[3] // self.key_dim * value[3]])

    def get_config(self):
        return {**super().get_config(), "key_dim": self.key_dim}


def custom_objects():
    """The twins by class name and by registered name, for tf_keras deserialization."""
    return {
        **CUSTOM_LAYERS,
        **{f"{PACKAGE}>{name}": cls for name, cls in CUSTOM_LAYERS.items()},
    }

"""The package's TF-MOT `QuantizeConfig`s (importing this imports TF-MOT)."""

import tf_keras

from keras_lightnets.optimize import pruning

tfmot = pruning.tfmot_module()
qkeras = tfmot.quantization.keras
# After `tfmot_module()`, which imports TF-MOT without switching TensorFlow's Keras.
from tensorflow_model_optimization.python.core.quantization.keras import (  # noqa: E402
    quant_ops,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_registry,
)


def _output_quantizer():
    return qkeras.quantizers.MovingAverageQuantizer(
        num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


class OutputQuantizeConfig(qkeras.QuantizeConfig):
    """Quantizes a layer's output only (no weights, no inner activations)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_output_quantizer()]

    def get_config(self):
        return {}


class HardSwishQuantizeConfig(OutputQuantizeConfig):
    """Quantizes `HardSwish`'s gate and output, so int8 keeps the ADD/MUL chain (`forms`)."""

    def get_activations_and_quantizers(self, layer):
        return [(layer.gate, _output_quantizer())]

    def set_quantize_activations(self, layer, quantize_activations):
        layer.gate = quantize_activations[0]


class NoOpQuantizeConfig(OutputQuantizeConfig):
    """Quantizes nothing: for layers that only move values around."""

    def get_output_quantizers(self, layer):
        return []


class DepthwiseKernelQuantizer(qkeras.quantizers.LastValueQuantizer):
    """Per-channel int8 quantizer of a depthwise kernel `(kh, kw, C, M)`, viewed as TFLite's
    `(kh, kw, 1, C * M)` (TF-MOT's is per last axis: one range for the whole kernel)."""

    def __init__(self):
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

    def build(self, tensor_shape, name, layer):
        channels = int(tensor_shape[-2]) * int(tensor_shape[-1])
        return {f"{suffix}_var": layer.add_weight(
            f"{name}_{suffix}", shape=(channels,),
            initializer=tf_keras.initializers.Constant(value), trainable=False)
            for suffix, value in (("min", -6.0), ("max", 6.0))}

    def __call__(self, inputs, training, weights, **kwargs):
        import tensorflow as tf

        shape = inputs.shape
        flat = tf.reshape(inputs, (shape[0], shape[1], 1, shape[2] * shape[3]))
        quantized = quant_ops.LastValueQuantize(
            flat, weights["min_var"], weights["max_var"], is_training=training,
            num_bits=8, per_channel=True, symmetric=True, narrow_range=True)
        return tf.reshape(quantized, shape)

    def get_config(self):
        return {}


class DepthwiseQuantizeConfig(default_8bit_quantize_registry.Default8BitConvQuantizeConfig):
    """TF-MOT's DepthwiseConv2D config with the per-channel kernel quantizer."""

    def __init__(self, weight_attrs=("depthwise_kernel",), activation_attrs=("activation",),
                 quantize_output=False):
        super().__init__(list(weight_attrs), list(activation_attrs), quantize_output)
        self.weight_quantizer = DepthwiseKernelQuantizer()


QUANTIZE_CONFIGS = {
    "OutputQuantizeConfig": OutputQuantizeConfig,
    "NoOpQuantizeConfig": NoOpQuantizeConfig,
    "HardSwishQuantizeConfig": HardSwishQuantizeConfig,
    "DepthwiseQuantizeConfig": DepthwiseQuantizeConfig,
}

"""Multi-scale feature extraction for detection and segmentation heads."""

import math

from keras_lightnets import spec
from keras_lightnets.profile import _layer_outputs, _with_static_input

_PROBE_SIZE = 256


def feature_layers(model, strides=(8, 16, 32)):
    """Names of the layers giving the last feature map at each stride.

    A model built from a block table (`keras_lightnets.spec`) names them in
    its rows marked `tap`. Otherwise the stride of a 4-D output is the input
    size over its spatial size, rounded to a power of two (ceil-mode pools
    make it inexact), measured on a copy of the model built at 256x256.
    Padding layers are passed over.
    """
    taps = spec.taps_of(model)
    if all(s in taps for s in strides):
        return [taps[s] for s in strides]
    probe = _with_static_input(model, _PROBE_SIZE)
    size = probe.inputs[0].shape[1]
    found = {}
    for layer in probe.layers:
        if type(layer).__name__ == "ZeroPadding2D":
            # Padding only prepares the next strided layer; it is not a feature map.
            continue
        outputs = _layer_outputs(layer)
        if len(outputs) != 1 or len(outputs[0].shape) != 4:
            continue
        rows = outputs[0].shape[1]
        if not rows:
            continue
        stride = 2 ** round(math.log2(size / rows))
        if stride in strides:
            found[stride] = layer.name
    missing = [s for s in strides if s not in found]
    if missing:
        raise ValueError(
            f"Model {model.name!r} has no feature map at stride(s) {missing}; available "
            f"strides are {sorted(found)}. Received: strides={tuple(strides)}"
        )
    return [found[s] for s in strides]


def feature_extractor(model, strides=(8, 16, 32), name=None):
    """A multi-output model of `model`'s last feature map at each stride.

    What an SSDLite or FPN head needs: for each requested output stride (the
    input size over the map size), the output of the last layer working at
    that resolution. Works on any keras_lightnets model, with or without its
    top; the returned model shares `model`'s layers and weights.

    Args:
        model: a functional Keras model.
        strides: output strides, e.g. `(8, 16, 32)`.
        name: name of the returned model.

    Returns:
        A `keras.Model` with one output per stride, in the order given.
    """
    import keras

    if not strides or any(not isinstance(s, int) or s < 1 for s in strides):
        raise ValueError(f"`strides` must be positive integers. Received: strides={strides!r}")
    names = feature_layers(model, strides)
    outputs = [model.get_layer(n).output for n in names]
    return keras.Model(model.inputs, outputs, name=name or f"{model.name}_features")

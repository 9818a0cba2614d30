"""Model complexity: parameters, multiply-accumulates, activation memory, size."""

import math

import numpy as np


def _layer_outputs(layer):
    out = layer.output
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _layer_inputs(layer):
    inp = layer.input
    return list(inp) if isinstance(inp, (list, tuple)) else [inp]


def _numel(shape):
    return int(np.prod([d for d in shape[1:]], dtype=np.int64))


def _class_name(layer):
    return type(layer).__name__


def layer_macs(layer):
    """Multiply-accumulates of one layer call at batch 1 (convolutions and dense only)."""
    name = _class_name(layer)
    if name in ("Conv2D", "DepthwiseConv2D", "Dense"):
        out_shape = _layer_outputs(layer)[0].shape
        # Keras 3 calls every kernel `kernel`; tf_keras' depthwise one differs.
        kernel = getattr(layer, "depthwise_kernel", None)
        kernel = tuple(int(d) for d in (kernel if kernel is not None else layer.kernel).shape)
        if name == "Dense":
            return math.prod(kernel) * _numel(out_shape) // kernel[-1]
        # Conv2D (kh, kw, in / groups, out) or depthwise (kh, kw, in, multiplier):
        # one MAC per kernel tap per output pixel.
        return int(out_shape[1]) * int(out_shape[2]) * math.prod(kernel)
    if name == "SeparableConv2D":  # the depthwise then the pointwise kernel, per output pixel
        out_shape = _layer_outputs(layer)[0].shape
        taps = sum(math.prod(int(d) for d in k.shape)
                   for k in (layer.depthwise_kernel, layer.pointwise_kernel))
        return int(out_shape[1]) * int(out_shape[2]) * taps
    return 0


def _with_static_input(model, input_size):
    """`model` itself if its input is static, else a copy built at `input_size`."""
    shape = model.inputs[0].shape
    if all(d is not None for d in shape[1:3]) and input_size is None:
        return model
    size = input_size or 224
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            cfg = layer["config"]
            key = "batch_shape" if "batch_shape" in cfg else "batch_input_shape"
            cfg[key] = [None, size, size, cfg[key][-1]]
    return type(model).from_config(config)


def profile(model, input_size=None):
    """Complexity figures of a Keras model.

    Args:
        model: a functional `keras.Model` with one image input.
        input_size: spatial size for MACs and activations; defaults to the
            model's own static size, else 224.

    Returns:
        A dict with `params`, `trainable_params`, `non_trainable_params`,
        `macs` (multiply-accumulates of conv and dense layers, batch 1),
        `peak_activation_bytes` (largest float32 working set of live
        activations when layers run one at a time, batch 1), `size_bytes`
        (bytes of all weights as stored) and `input_size`.
    """
    params = int(sum(math.prod(w.shape) for w in model.weights))
    trainable = int(sum(math.prod(w.shape) for w in model.trainable_weights))
    size = int(sum(math.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights))
    static = _with_static_input(model, input_size)
    macs = sum(layer_macs(layer) for layer in static.layers)
    return {
        "params": params,
        "trainable_params": trainable,
        "non_trainable_params": params - trainable,
        "macs": int(macs),
        "peak_activation_bytes": peak_activation_bytes(static),
        "size_bytes": size,
        "input_size": tuple(static.inputs[0].shape[1:]),
    }


def peak_activation_bytes(model, itemsize=4):
    """Peak bytes of live activations when the layers run in order (batch 1).

    A tensor is live from the layer that makes it until its last consumer has
    run; the working set of a step is its inputs, its outputs and whatever
    else is still live.
    """
    layers = model.layers
    last_use = {}
    for step, layer in enumerate(layers):
        for t in _layer_inputs(layer):
            last_use[id(t)] = step
    for t in model.outputs:
        last_use[id(t)] = len(layers)
    live = {}
    peak = 0
    for step, layer in enumerate(layers):
        for t in _layer_outputs(layer):
            live[id(t)] = _numel(t.shape) * itemsize
        peak = max(peak, sum(live.values()))
        for key in [k for k in live if last_use.get(k, -1) <= step]:
            del live[key]
    return int(peak)

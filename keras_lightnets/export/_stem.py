"""A stem max pool's padding computed by the convolution before it, on a copy of a Keras 3 model.

ShuffleNet V1 and V2 start with preprocessing, a strided convolution with
PyTorch's padding, batch norm, ReLU and PyTorch's 3x3/2 max pool with
`padding=1`. PyTorch centres those pool windows on even rows and columns,
TF's SAME on odd ones, so the pool's padding is a PAD op before a VALID pool,
which XNNPACK runs as a copy of the whole map (the convolution's PAD it fuses
into the convolution): 0.2 ms of ShuffleNetV2 1.0's 3.7 ms float32 file at
224 px. The copy below runs 0.11 ms faster than the model's graph (the extra
channel costs the rest; benchmarks/split_cost.py).

Here the convolution yields the pool's padding itself. Its input is padded
`pool padding * stride` more rows and columns at the top and left, so it
makes as many more output rows and columns there, from padding only. The
preprocessing (one 1x1 convolution) makes one more channel, 1 at every pixel
and 0 in the padding, whose kernel holds the convolution's bias (batch norm
folded in) on the centre tap only: those extra rows and columns come out as
exactly the activation of 0, which is 0, the pool's padding value, and every
other output is the model's. The copy computes the same function (up to
float32 rounding); the model is not changed.

int8 files keep the PAD: the bias would take the kernel's int8 scale.
"""

import keras
import numpy as np

from keras_lightnets import layers
from keras_lightnets.export import _fold


def unpadded(model):
    """A copy of `model` with its stem pool's PAD gone (see the module docstring),
    or `model` itself when its graph does not start that way."""
    graph = _fold.graph(model)
    if graph is None or isinstance(model, keras.Sequential) or len(graph.inputs) != 1:
        return model
    nodes = _fold.nodes(model)
    stem = _match(graph.inputs[0], nodes)
    if stem is None:
        return model
    return _rebuild(model, graph, nodes, stem)


def _kind(layer):
    return type(layer).__name__


def _chain(tensor, consumers):
    """The nodes that each take the one output of the node before, from `tensor`."""
    chain = []
    while len(consumers.get(id(tensor), ())) == 1:
        node = consumers[id(tensor)][0]
        if len(node.input_tensors) != 1 or len(node.outputs) != 1:
            break
        chain.append(node)
        tensor = node.outputs[0]
        if len(chain) == 7:
            break
    return chain


def _symmetric(padding):
    """`(rows, cols)` of a ZeroPadding2D padding the same on both sides, else None."""
    (top, bottom), (left, right) = padding
    return (top, left) if (top, left) == (bottom, right) else None


def _zero_preserving(layer):
    """Whether an activation layer maps 0 to exactly 0 (its output is the pool's padding)."""
    if _kind(layer) not in ("ReLU", "Activation", "HardSwish"):
        return False
    zeros = np.zeros((1, 1, 1, 4), "float32")
    return not np.any(np.asarray(layer(zeros)))


def _match(source, nodes):
    """`dict` of the stem's layers and sizes when the graph starts with preprocessing,
    ZeroPadding2D, Conv2D, [BatchNormalization], activation, ZeroPadding2D and
    MaxPooling2D as described in the module docstring, else None."""
    chain = _chain(source, _fold.consumers(nodes))
    if [_kind(node.operation) for node in chain[3:4]] != ["BatchNormalization"]:
        chain.insert(3, None)  # no batch norm
    stem = [node and node.operation for node in chain[:7]]
    kinds = [layer and _kind(layer) for layer in stem]
    if len(stem) < 7 or [kinds[i] for i in (0, 1, 2, 5, 6)] != [
            "Rescaling", "ZeroPadding2D", "Conv2D", "ZeroPadding2D", "MaxPooling2D"]:
        return None
    scale, pad, conv, bn, act, pool_pad, pool = stem
    channels = source.shape[-1]
    if channels is None or any(d is None for d in source.shape[1:3]):
        return None
    if any(getattr(layer, "data_format", "channels_last") != "channels_last"
           for layer in (pad, conv, pool_pad, pool)):
        return None
    if bn is not None and bn.axis not in (-1, 3):
        return None
    if (conv.groups != 1 or tuple(conv.dilation_rate) != (1, 1) or conv.padding != "valid"
            or not _fold.is_linear(conv) or not _zero_preserving(act)
            or pool.padding != "valid"):
        return None
    conv_pad, pool_padding = _symmetric(pad.padding), _symmetric(pool_pad.padding)
    if conv_pad is None or pool_padding is None:
        return None
    for size, kernel, stride, p, q, window, step in zip(
            source.shape[1:3], conv.kernel_size, conv.strides, conv_pad, pool_padding,
            pool.pool_size, pool.strides, strict=True):
        # The centre tap marks real outputs: the convolution pads kernel // 2, and an
        # extra output row reads padding only (p < stride).
        if kernel % 2 != 1 or p != kernel // 2 or p >= stride:
            return None
        rows = (size + 2 * p - kernel) // stride + 1
        # The pool must not read its padding after the map, which stays a PAD.
        if (rows + q - window) // step != (rows + 2 * q - window) // step:
            return None
    return {"scale": scale, "conv": conv, "bn": bn, "act": act, "pool": pool,
            "conv_pad": conv_pad, "pool_pad": pool_padding, "channels": channels,
            "end": chain[6].outputs[0]}


def _rescaling_kernel(layer, channels):
    """`(kernel, bias)` of the preprocessing as a 1x1 convolution with one more output
    channel, constant 1."""
    kernel, bias = layers.rescaling_as_conv(
        *(np.broadcast_to(np.asarray(v, "float32").reshape(-1), (channels,))
          for v in (layer.scale, layer.offset)), channels)
    ones = np.zeros((1, 1, channels, 1), "float32")
    return np.concatenate([kernel, ones], -1), np.append(bias, 1.0).astype("float32")


def _stem_kernel(conv, bn, channels):
    """The convolution's kernel with batch norm folded in and the bias on the ones channel."""
    kernel, bias = _fold.folded_weights(conv, bn)
    rows, cols = kernel.shape[:2]
    extended = np.zeros((rows, cols, channels + 1, kernel.shape[-1]))
    extended[:, :, :channels] = kernel
    extended[rows // 2, cols // 2, channels] = bias
    return extended.astype("float32")


def _clone(layer):
    return layer.__class__.from_config(layer.get_config())


def _rebuild(model, graph, nodes, stem):
    source = graph.inputs[0]
    inputs = keras.Input(batch_shape=source.shape, dtype=source.dtype, name=source.name)
    channels = stem["channels"]
    conv = stem["conv"]

    preprocess = keras.layers.Conv2D(channels + 1, 1, name=f"{stem['scale'].name}_ones")
    x = preprocess(inputs)
    preprocess.set_weights(list(_rescaling_kernel(stem["scale"], channels)))
    (p_rows, p_cols), (q_rows, q_cols) = stem["conv_pad"], stem["pool_pad"]
    s_rows, s_cols = conv.strides
    x = keras.layers.ZeroPadding2D(
        ((p_rows + q_rows * s_rows, p_rows), (p_cols + q_cols * s_cols, p_cols)),
        name=f"{conv.name}_pad_pool")(x)
    stem_conv = keras.layers.Conv2D(conv.filters, conv.kernel_size, strides=conv.strides,
                                    padding="valid", use_bias=False, name=f"{conv.name}_ones")
    x = stem_conv(x)
    stem_conv.set_weights([_stem_kernel(conv, stem["bn"], channels)])
    x = _clone(stem["act"])(x)
    x = _clone(stem["pool"])(x)

    tensors = {id(stem["end"]): x}
    layers = {}
    start = next(i for i, node in enumerate(nodes) if stem["end"] in node.outputs) + 1
    for node in nodes[start:]:
        layer = node.operation
        if layer.name not in layers:
            layers[layer.name] = _clone(layer)
            copy, fresh = layers[layer.name], True
        else:
            copy, fresh = layers[layer.name], False
        args, kwargs = node.arguments.fill_in(
            {id(t): tensors[id(t)] for t in node.input_tensors})
        y = copy(*args, **kwargs)
        if fresh and layer.weights:
            copy.set_weights(layer.get_weights())
        for t, value in zip(node.outputs, keras.tree.flatten(y), strict=True):
            tensors[id(t)] = value
    outputs = [tensors[id(t)] for t in graph.outputs]
    return keras.Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name=model.name)

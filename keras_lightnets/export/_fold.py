"""Batch norm folded into the layers before it, on a copy of a Keras 3 model.

The converter leaves a batch norm after a concatenation of convolutions as MUL + ADD and
its ReLU as an op of its own; here both move into each convolution.
"""

import collections

import keras
import numpy as np

from keras_lightnets.graph import activation_name, consumers, copy_layer, nodes, producers, traits
from keras_lightnets.graph import functional as graph

# Layers a batch norm folds into (and whose weights int8 rounding fits).
FITTED = ("Conv2D", "DepthwiseConv2D", "Dense")


def fittable(layer, calls):
    kind = type(layer).__name__
    if (kind not in FITTED or calls[id(layer)] != 1 or activation_name(layer) != "linear"
            or getattr(layer, "lora_enabled", False) or layer.dtype_policy.quantization_mode):
        return False
    if kind != "Dense" and (layer.data_format != "channels_last"
                            or getattr(layer, "groups", 1) != 1):
        return False
    return len(layer.kernel.shape) in (2, 4)


def _foldable_bn(node, calls):
    layer = node.operation
    return (type(layer).__name__ == "BatchNormalization" and calls[id(layer)] == 1
            and layer.axis in (-1, len(node.outputs[0].shape) - 1))


# A batch norm folded into a layer: its name, the layer's channels in it, the ReLU moved.
Fold = collections.namedtuple("Fold", "bn start end relu")


def fold_plan(model):
    """`{fitted layer name: Fold or None}`: a batch norm folds into the layer alone feeding
    it or, split by channel with its ReLU, into every layer of a concatenation of them."""
    graph_nodes = nodes(model)
    calls = collections.Counter(id(node.operation) for node in graph_nodes)
    takers = consumers(graph_nodes)
    makers = producers(graph_nodes)

    def only_consumer(tensor):
        after = takers.get(id(tensor), [])
        return after[0] if len(after) == 1 else None

    plan = {}
    for node in graph_nodes:
        layer = node.operation
        if not fittable(layer, calls):
            continue
        plan[layer.name] = None
        after = only_consumer(node.outputs[0])
        if after is not None and _foldable_bn(after, calls):
            plan[layer.name] = Fold(after.operation.name, 0, out_channels(layer), None)
    for node in graph_nodes:
        if type(node.operation).__name__ != "Concatenate":
            continue
        bn = only_consumer(node.outputs[0])
        parents = [makers[id(t)].operation if id(t) in makers else None
                   for t in node.input_tensors]
        if (bn is None or not _foldable_bn(bn, calls)
                or node.operation.axis not in (-1, len(node.outputs[0].shape) - 1)
                or any(p is None or p.name not in plan or plan[p.name] is not None for p in parents)
                or any(only_consumer(t) is not node for t in node.input_tensors)):
            continue
        relu = only_consumer(bn.outputs[0])
        relu = (relu.operation.name if relu is not None and "relu" in traits(relu.operation)
                and calls[id(relu.operation)] == 1 else None)
        start = 0
        for parent in parents:
            end = start + out_channels(parent)
            plan[parent.name] = Fold(bn.operation.name, start, end, relu)
            start = end
    return plan


def fold(model, plan=None):
    """A copy of `model` with batch norm folded into the fitted layers of `plan`
    (default `fold_plan(model)`); each gets a bias, a moved ReLU is `{layer}_relu`."""
    plan = fold_plan(model) if plan is None else plan
    folds = {name: entry for name, entry in plan.items() if entry is not None}
    folded = {entry.bn for entry in folds.values()} | {
        entry.relu for entry in folds.values() if entry.relu is not None}
    originals = {layer.name: layer for layer in model.layers}

    def clone(layer):
        if layer.name in folded:
            return keras.layers.Identity(name=layer.name)
        return copy_layer(layer, {"use_bias": True} if layer.name in plan else None)

    def call(layer, *args, **kwargs):
        if layer.name in folded:
            return args[0]
        y = layer(*args, **kwargs)
        relu = folds[layer.name].relu if layer.name in folds else None
        if relu is not None:
            y = copy_layer(originals[relu], {"name": f"{layer.name}_relu"})(y)
        return y

    sequential = isinstance(model, keras.Sequential)  # its layers take no call arguments
    copy = keras.models.clone_model(model, clone_function=clone,
                                    call_function=None if sequential else call)
    for layer in copy.layers:
        if layer.name in folded or not layer.weights:
            continue
        source = originals[layer.name]
        if layer.name not in plan:
            layer.set_weights(source.get_weights())
            continue
        if plan[layer.name] is not None:
            bn, start, end, _ = plan[layer.name]
            kernel, bias = folded_weights(source, originals[bn], slice(start, end))
        else:
            kernel, bias = folded_weights(source)
        layer.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return copy


def folded_weights(layer, bn=None, part=slice(None)):
    """`(kernel, bias)` of `layer` in float64, channels `part` of batch norm `bn` folded in."""
    f64 = lambda w: np.asarray(w, "float64")  # noqa: E731
    kernel = f64(layer.kernel)
    bias = f64(layer.bias) if layer.use_bias else np.zeros(out_channels(layer))
    if bn is not None:
        scale = 1.0 / np.sqrt(f64(bn.moving_variance)[part] + bn.epsilon)
        if bn.scale:
            scale = scale * f64(bn.gamma)[part]
        bias = (bias - f64(bn.moving_mean)[part]) * scale
        if bn.center:
            bias = bias + f64(bn.beta)[part]
        kernel = kernel * scale.reshape(kernel.shape[-2:] if depthwise(layer) else -1)
    return kernel, bias


def depthwise(layer):
    return type(layer).__name__ == "DepthwiseConv2D"


def out_channels(layer):
    shape = layer.kernel.shape
    return int(shape[-2] * shape[-1]) if depthwise(layer) else int(shape[-1])


def fold_concatenated(model):
    """`model` with the batch norms after concatenations folded (the converter folds others)."""
    if graph(model) is None or isinstance(model, keras.Sequential):
        return model
    plan = fold_plan(model)
    shared = collections.Counter(entry.bn for entry in plan.values() if entry is not None)
    plan = {name: entry for name, entry in plan.items()
            if entry is not None and shared[entry.bn] > 1}
    return fold(model, plan) if plan else model

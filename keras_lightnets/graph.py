"""The functional graph of a Keras 3 model: walk, producers, consumers, rebuild.

Keras exposes a functional model's nodes only through private attributes
(`_nodes_by_depth`, `node.arguments`); this is the one module that reads
them (and the few private tf_keras attributes QAT calibration reads). Export
and optimization passes walk and rebuild models through it, and ask
`traits(layer)` how to treat each layer.
"""

import collections
import sys

import keras

from keras_lightnets import layers as package_layers


def functional(model):
    """The functional graph of `model` (a Sequential model's inner one), or None."""
    if hasattr(model, "_nodes_by_depth"):
        return model
    inner = getattr(model, "_functional", None)
    return inner if hasattr(inner, "_nodes_by_depth") else None


def nodes(model):
    """The computing nodes of `model`'s graph in execution order."""
    by_depth = functional(model)._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]
            if not node.is_input]


def consumers(graph_nodes):
    """`{id(tensor): [nodes that take it]}`."""
    found = collections.defaultdict(list)
    for node in graph_nodes:
        for t in node.input_tensors:
            found[id(t)].append(node)
    return found


def producers(graph_nodes):
    """`{id(tensor): node that makes it}`."""
    return {id(t): node for node in graph_nodes for t in node.outputs}


def kind(layer):
    """The class name of `layer` (of the layer inside a quantization wrapper)."""
    return type(getattr(layer, "layer", layer)).__name__


def copy_layer(layer, changes=None):
    """A new layer with `layer`'s config (updated with `changes`), no weights.

    A `Lambda` layer is rebuilt outside safe mode: its function is the
    caller's own code, taken from the model in memory, not from a file.
    """
    config = {**layer.get_config(), **(changes or {})}
    if isinstance(layer, keras.layers.Lambda):
        return layer.__class__.from_config(config, safe_mode=False)
    return layer.__class__.from_config(config)


def arguments(node, values):
    """`(args, kwargs)` of `node`'s call with its tensors taken from `values`
    (`{id(tensor): value}`)."""
    return node.arguments.fill_in(values)


def call_node(node, values, layer=None):
    """Calls `layer` (default: the node's own) on the node's arguments taken
    from `values` (`{id(tensor): value}`); returns the flat outputs."""
    args, kwargs = arguments(node, values)
    return keras.tree.flatten((layer or node.operation)(*args, **kwargs))


def input_name(tensor):
    """The name of the `Input` layer that makes `tensor`."""
    return tensor._keras_history.operation.name


def is_tf_keras(model):
    """Whether `model` is a tf_keras model (never imports tf_keras)."""
    tf_keras = sys.modules.get("tf_keras")
    return tf_keras is not None and isinstance(model, tf_keras.Model)


def tf_keras_node_index(model, layer):
    """The index of tf_keras `layer`'s node in `model`'s graph (a layer may serve
    other models too), or None."""
    for index in range(len(layer._inbound_nodes)):
        if f"{layer.name}_ib-{index}" in model._network_nodes:
            return index
    return None


def tf_keras_call_kwargs(layer):
    """The keyword arguments of each call of tf_keras `layer`."""
    return [node.call_kwargs or {} for node in layer._inbound_nodes]


def run(model, x, call):
    """Runs `model` (one input) on `x` node by node: `call(node, args, kwargs)`
    computes each node. Values are dropped after their last use; returns the
    outputs."""
    graph_nodes = nodes(model)
    graph = functional(model)
    uses = collections.Counter(id(t) for node in graph_nodes for t in node.input_tensors)
    for t in graph.outputs:
        uses[id(t)] += 1
    values = {id(graph.inputs[0]): x}
    for node in graph_nodes:
        if any(id(t) not in values for t in node.input_tensors):
            continue
        args, kwargs = arguments(node, values)
        outputs = keras.tree.flatten(call(node, args, kwargs))
        for t in node.input_tensors:
            uses[id(t)] -= 1
            if uses[id(t)] <= 0:
                values.pop(id(t), None)
        for t, y in zip(node.outputs, outputs, strict=True):
            if uses[id(t)] > 0:
                values[id(t)] = y
        del args, kwargs, outputs  # hold no tensor past its last use
    return [values[id(t)] for t in graph.outputs]


def rebuild(model, substitute=None, name=None):
    """A copy of functional `model`, its nodes optionally substituted.

    `substitute(node, args, kwargs)` is called for each computing node with
    its arguments in the copy; it returns the node's output tensor(s) built
    from them (with new layers of its own), or None to keep the node: a copy
    of its layer (one per shared layer) with the same weights. Returns
    `model` itself when no node was substituted.
    """
    graph = functional(model)
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name)
              for t in graph.inputs]
    values = {id(t): new for t, new in zip(graph.inputs, inputs, strict=True)}
    copies = {}
    changed = False
    for node in nodes(model):
        args, kwargs = arguments(node, values)
        outputs = substitute(node, args, kwargs) if substitute else None
        if outputs is None:
            layer = node.operation
            if id(layer) not in copies:
                copies[id(layer)] = copy_layer(layer)
                fresh = True
            else:
                fresh = False
            outputs = copies[id(layer)](*args, **kwargs)
            if fresh and layer.weights:
                copies[id(layer)].set_weights(layer.get_weights())
        else:
            changed = True
        for t, value in zip(node.outputs, keras.tree.flatten(outputs), strict=True):
            values[id(t)] = value
    if not changed:
        return model
    outputs = [values[id(t)] for t in graph.outputs]
    return keras.Model(inputs if len(inputs) > 1 else inputs[0],
                       outputs if len(outputs) > 1 else outputs[0], name=name or model.name)


# How a layer is treated, by property (a layer class declares its own in `traits`):
# - "per_channel": each output channel is computed from the same input channel alone;
# - "passes_quantized_values": int8 values pass unchanged (same scale in and out);
# - "routes_channels": only moves whole channels (along the last axis); run on
#   channel indices, it says where each channel goes;
# - "relu": `max(x, 0)`, capped at 6 or not (fuses into the layer before it).
# The built-in Keras layers, by class name (Keras 3 and tf_keras alike); a function
# of the layer where its config decides.
ELEMENTWISE = ("linear", "relu", "relu6", "sigmoid", "hard_sigmoid", "silu", "swish",
               "hard_silu", "hard_swish", "tanh", "elu", "gelu")


def activation_name(layer):
    """The name of `layer`'s activation function ("linear" without one)."""
    return getattr(getattr(layer, "activation", None), "__name__", "linear")


def _activation(layer):
    name = activation_name(layer)
    return ((("per_channel",) if name in ELEMENTWISE else ())
            + (("relu",) if name in ("relu", "relu6") else ())
            + (("passes_quantized_values",) if name == "linear" else ()))


def _relu(layer):
    plain = (float(layer.negative_slope) == 0 and float(layer.threshold) == 0
             and layer.max_value in (None, 6))
    return ("per_channel", "relu") if plain else ("per_channel",)


_PASSING = ("passes_quantized_values",)
_PER_CHANNEL_PASSING = ("per_channel", "passes_quantized_values")
BUILT_IN_TRAITS = {
    "InputLayer": _PASSING, "Reshape": _PASSING, "Flatten": _PASSING,
    "SpatialDropout2D": _PASSING, "GaussianDropout": _PASSING, "GaussianNoise": _PASSING,
    "Identity": _PER_CHANNEL_PASSING, "Dropout": _PER_CHANNEL_PASSING,
    "ZeroPadding2D": _PER_CHANNEL_PASSING, "MaxPooling2D": _PER_CHANNEL_PASSING,
    "BatchNormalization": ("per_channel",), "AveragePooling2D": ("per_channel",),
    "GlobalAveragePooling2D": ("per_channel",), "GlobalMaxPooling2D": ("per_channel",),
    "Concatenate": ("routes_channels",),
    "Activation": _activation, "ReLU": _relu,
    "DepthwiseConv2D": lambda layer: ("per_channel",) if layer.depth_multiplier == 1
    and activation_name(layer) in ELEMENTWISE else (),
}


def traits(layer):
    """The properties of `layer` (a frozenset of the names above).

    A class of `keras_lightnets.layers` declares them in its `traits`
    attribute; a tf_keras twin answers as the package layer of its name.
    """
    declared = getattr(type(layer), "traits", None)
    if declared is None:
        name = type(layer).__name__
        declared = BUILT_IN_TRAITS.get(name) or getattr(
            package_layers.CUSTOM_LAYERS.get(name), "traits", ())
    return frozenset(declared(layer) if callable(declared) else declared)

"""The functional graph of a Keras 3 model: walk, producers, consumers, rebuild.

Keras exposes a functional model's nodes only through private attributes
(`_nodes_by_depth`, `node.arguments`); this is the one module that reads
them. Export and optimization passes walk and rebuild models through it.
"""

import collections

import keras


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


def call_node(node, values, layer=None):
    """Calls `layer` (default: the node's own) on the node's arguments taken
    from `values` (`{id(tensor): value}`); returns the flat outputs."""
    args, kwargs = node.arguments.fill_in(values)
    return keras.tree.flatten((layer or node.operation)(*args, **kwargs))


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
        args, kwargs = node.arguments.fill_in(values)
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
        args, kwargs = node.arguments.fill_in(values)
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

"""A stem max pool without its PAD op, on a copy of a Keras 3 model.

ShuffleNet V1 and V2 start with a strided convolution with PyTorch's
padding, batch norm, ReLU and PyTorch's 3x3/2 max pool with `padding=1`.
PyTorch pads the pool on both sides; TF's SAME pads an even-sized map after
it only, so the model pads explicitly (ZeroPadding2D, then a VALID pool): a
PAD op, which XNNPACK runs as a copy of the whole map (a PAD before a
convolution it fuses into the convolution): 0.2 ms of ShuffleNetV2 1.0's
3.7 ms float32 file at 224 px.

Here the pool is a SAME pool, padded by TF on both sides of an odd-sized
map: where the map is even, the stem convolution makes one more row and
column at the bottom and right (its input padded `stride` more there, a PAD
XNNPACK fuses). TF pads a max pool with -inf where the model pads 0: the
same maximum after an activation that is never negative. The extra rows and
columns (junk, read by no output of the model) go on through per-pixel
layers until a strided layer's zero padding takes their place: windows that
never read the padding after the map never read the junk. The copy computes
the same function, the same values; the model is not changed.
"""

import keras
import numpy as np

from keras_lightnets.export import _fold, _model

# Layers whose output at a pixel depends on their inputs at that pixel only (1x1
# convolutions with stride 1 too: see `_per_pixel`).
PER_PIXEL = ("BatchNormalization", "ReLU", "Activation", "HardSwish", "HardSigmoid",
             "Dropout", "Identity", "ChannelSplit", "ChannelShuffle", "Concatenate", "Add",
             "Multiply", "Rescaling")
WINDOWED = ("Conv2D", "DepthwiseConv2D", "MaxPooling2D", "AveragePooling2D")


def unpadded(model):
    """A copy of `model` with its stem pool's PAD gone (see the module docstring),
    or `model` itself when its graph does not allow it."""
    graph = _fold.graph(model)
    if graph is None or isinstance(model, keras.Sequential) or len(graph.inputs) != 1:
        return model
    nodes = _fold.nodes(model)
    plan = _plan(graph, nodes)
    if plan is None:
        return model
    return _rebuild(model, graph, nodes, plan)


def _kind(layer):
    return type(layer).__name__


def _spatial(tensor):
    """`(rows, cols)` of a 4-D channels-last tensor, or None."""
    shape = tensor.shape
    if len(shape) != 4 or any(d is None for d in shape[1:3]):
        return None
    return tuple(int(d) for d in shape[1:3])


def _non_negative(layer):
    """Whether an activation layer never outputs a negative value."""
    if _kind(layer) not in ("ReLU", "Activation"):
        return False
    x = np.linspace(-100, 100, 401, dtype="float32").reshape(1, 1, -1, 1)
    return bool(np.min(np.asarray(layer(x))) >= 0)


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _window(layer):
    """`(kernel, strides)` of a windowed layer taking the map as it is (VALID), or None."""
    if _kind(layer) not in WINDOWED or not _channels_last(layer):
        return None
    if getattr(layer, "padding", "valid") != "valid":
        return None
    if tuple(getattr(layer, "dilation_rate", (1, 1))) != (1, 1):
        return None
    size = getattr(layer, "kernel_size", None) or layer.pool_size
    return tuple(size), tuple(layer.strides)


def _per_pixel(layer):
    kind = _kind(layer)
    if kind in ("Conv2D", "DepthwiseConv2D"):
        return (tuple(layer.kernel_size) == (1, 1) and tuple(layer.strides) == (1, 1)
                and _channels_last(layer))
    if kind == "Concatenate":
        return layer.axis in (-1, 3)
    if kind == "BatchNormalization":
        return layer.axis in (-1, 3)
    return kind in PER_PIXEL


def _stem(source, nodes):
    """`(conv pad node, conv node, pool pad node, pool node)` when the graph starts
    with per-pixel layers (preprocessing), ZeroPadding2D, a VALID Conv2D, batch norm
    and activation layers ending in a never-negative one, ZeroPadding2D and a VALID
    MaxPooling2D, one after the other; else None."""
    consumers = _fold.consumers(nodes)
    chain, tensor = [], source
    while len(consumers.get(id(tensor), ())) == 1 and len(chain) < 12:
        node = consumers[id(tensor)][0]
        if len(node.input_tensors) != 1 or len(node.outputs) != 1:
            break
        chain.append(node)
        tensor = node.outputs[0]
    kinds = [_kind(node.operation) for node in chain]
    start = next((i for i, kind in enumerate(kinds) if kind == "ZeroPadding2D"), None)
    if start is None or not all(_per_pixel(node.operation) for node in chain[:start]):
        return None
    end = next((i for i in range(start + 1, len(chain)) if kinds[i] == "ZeroPadding2D"), None)
    if end is None or end + 1 >= len(chain) or kinds[end + 1] != "MaxPooling2D":
        return None
    pad, conv, pool_pad, pool = chain[start], chain[start + 1], chain[end], chain[end + 1]
    between = [node.operation for node in chain[start + 2:end]]
    if (_kind(conv.operation) != "Conv2D" or conv.operation.groups != 1
            or _window(conv.operation) is None or _window(pool.operation) is None
            or not between or not _non_negative(between[-1])
            or not all(_kind(layer) in ("BatchNormalization", "ReLU", "Activation")
                       for layer in between)):
        return None
    return pad, conv, pool_pad, pool


def _junk_rows(size, padding, kernel, stride, junk):
    """`(new padding after the map, junk rows out)` of a VALID windowed layer after
    zero padding `(before, after)` of a map of `size` rows plus `junk` ones, giving the
    layer's outputs; None when a window the model computes reads padding after the map."""
    before, after = padding
    outputs = (size + before + after - kernel) // stride + 1
    if junk == 0:
        return after, 0
    if (outputs - 1) * stride + kernel > before + size:
        return None
    after = max(after - junk, 0)
    return after, (size + junk + before + after - kernel) // stride + 1 - outputs


def _absorbed(tensor, padding, layer, junk):
    """`(padding, junk out)` per axis of windowed `layer` reading `tensor` after zero
    `padding` (`((before, after), (before, after))`), or None."""
    sizes = _spatial(tensor)
    (kernels, strides) = _window(layer)
    found = [_junk_rows(sizes[axis], padding[axis], kernels[axis], strides[axis], junk[axis])
             for axis in range(2)]
    if None in found:
        return None
    return (tuple((padding[axis][0], found[axis][0]) for axis in range(2)),
            tuple(rows for _, rows in found))


def _stem_plan(pad, conv, pool_pad, pool):
    """`(stem conv padding, junk rows and columns out of the pool)`, or None."""
    sizes = _spatial(pad.input_tensors[0])
    maps = _spatial(pool_pad.input_tensors[0])
    if sizes is None or maps is None:
        return None
    kernels, strides = _window(conv.operation)
    windows, steps = _window(pool.operation)
    conv_padding, junk_out = [], []
    for axis in range(2):
        (before, after) = pad.operation.padding[axis]
        q_before, q_after = pool_pad.operation.padding[axis]
        rows, window, step = maps[axis], windows[axis], steps[axis]
        outputs = (rows + q_before + q_after - window) // step + 1
        for extra in range(step):
            # TF's SAME padding of a map of `rows + extra` rows.
            same = -(-(rows + extra) // step)
            total = max((same - 1) * step + window - rows - extra, 0)
            reads_after = (outputs - 1) * step + window > q_before + rows
            if total // 2 == q_before and same >= outputs and not (extra and reads_after):
                break
        else:
            return None
        conv_padding.append((before, after + extra * strides[axis]))
        junk_out.append(same - outputs)
    return tuple(conv_padding), tuple(junk_out)


def _plan(graph, nodes):
    """`{layer name: config changes}` (None: the pool's padding layer, dropped), or None."""
    stem = _stem(graph.inputs[0], nodes)
    if stem is None:
        return None
    pad, conv, pool_pad, pool = stem
    found = _stem_plan(pad, conv, pool_pad, pool)
    if found is None:
        return None
    conv_padding, junk_out = found
    plan = {pad.operation.name: {"padding": conv_padding}, pool_pad.operation.name: None,
            pool.operation.name: {"padding": "same"}}
    junk = {id(pool.outputs[0]): junk_out}
    consumers = _fold.consumers(nodes)
    decided = {}
    start = nodes.index(pool) + 1
    for node in nodes[start:]:
        layer = node.operation
        ins = [junk.get(id(t), (0, 0)) for t in node.input_tensors]
        if id(node) in decided:
            out = decided.pop(id(node))
        elif not any(any(j) for j in ins):
            continue
        elif layer.name in plan:
            return None  # a layer called twice
        elif _per_pixel(layer):
            if any(j != ins[0] for j in ins):
                return None
            out = ins[0]
        elif _kind(layer) == "ZeroPadding2D":
            readers = consumers.get(id(node.outputs[0]), [])
            if len(readers) != 1 or _window(readers[0].operation) is None:
                return None
            found = _absorbed(node.input_tensors[0], layer.padding, readers[0].operation,
                              ins[0])
            if found is None:
                return None
            plan[layer.name] = {"padding": found[0]}
            decided[id(readers[0])] = found[1]
            continue
        elif _window(layer) is not None:
            found = _absorbed(node.input_tensors[0], ((0, 0), (0, 0)), layer, ins[0])
            if found is None:
                return None
            out = found[1]
        else:
            return None
        for t in node.outputs:
            junk[id(t)] = tuple(out)
    if any(any(junk.get(id(t), (0, 0))) for t in graph.outputs):
        return None
    return plan


def _clone(layer, changes=None):
    return _model.copy_layer(layer, changes)


def _rebuild(model, graph, nodes, plan):
    source = graph.inputs[0]
    inputs = keras.Input(batch_shape=source.shape, dtype=source.dtype, name=source.name)
    tensors = {id(source): inputs}
    layers = {}
    for node in nodes:
        layer = node.operation
        if layer.name in plan and plan[layer.name] is None:
            tensors[id(node.outputs[0])] = tensors[id(node.input_tensors[0])]
            continue
        fresh = layer.name not in layers
        if fresh:
            layers[layer.name] = _clone(layer, plan.get(layer.name))
        args, kwargs = node.arguments.fill_in(
            {id(t): tensors[id(t)] for t in node.input_tensors})
        y = layers[layer.name](*args, **kwargs)
        if fresh and layer.weights:
            layers[layer.name].set_weights(layer.get_weights())
        for t, value in zip(node.outputs, keras.tree.flatten(y), strict=True):
            tensors[id(t)] = value
    outputs = [tensors[id(t)] for t in graph.outputs]
    return keras.Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name=model.name)

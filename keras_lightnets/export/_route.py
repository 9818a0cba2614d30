"""Channel shuffles resolved into the weights, on a copy of a Keras 3 model.

A 1x1 convolution reads its input channels in any order (kept in its kernel), so the
shuffle copies are paid once, where a convolution reads several tensors. Each convolution
writes its outputs in the order its readers want; per-channel layers keep their input's
order; other layers get the model's order. The copy computes the same function exactly.
"""

import collections

import keras
import numpy as np

from keras_lightnets import graph
from keras_lightnets.layers import ChannelSlice

# The most inputs of a CONCATENATION that LiteRT's XNNPACK delegate takes.
MAX_CONCAT = 5
# At most this part of what the model's routing moves (small pieces cost more per element).
MAX_MOVED = 0.5


def _kind(layer):
    return type(layer).__name__


def _last_axis(axis, node):
    return axis in (-1, len(node.outputs[0].shape) - 1)


def _per_channel(layer, node):
    """Whether `layer` computes each output channel from the same input channel alone."""
    if "per_channel" not in graph.traits(layer):
        return False
    if _kind(layer) == "BatchNormalization":
        return _last_axis(layer.axis, node)
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _mixing(layer, node):
    """Whether `layer` reads its input channels in any order (through its kernel)."""
    if (_kind(layer) not in ("Conv2D", "Dense")
            or graph.activation_name(layer) not in graph.ELEMENTWISE):
        return False
    if _kind(layer) == "Conv2D":
        return layer.groups == 1 and layer.data_format == "channels_last"
    return _kind(layer) == "Dense" and len(node.input_tensors[0].shape) == 2


def _routing(layer, node):
    """Whether `layer` only moves channels (along the last axis)."""
    if "routes_channels" not in graph.traits(layer):
        return False
    return _kind(layer) != "Concatenate" or _last_axis(layer.axis, node)


class _Walk:
    """One pass over the graph, tracking where each channel lives: a value is one `(tensor
    id, channel key)` per channel; a tensor stores key k at `positions[group][k]`."""

    def __init__(self, model, positions=None, build=False):
        self.model = model
        self.build = build
        self.positions = positions or {}
        self.group = {}       # tensor id -> group
        self.tensor = {}      # tensor id -> KerasTensor (second pass)
        self.size = {}        # tensor id -> channels
        self.spatial = {}     # tensor id -> elements per channel
        self.readers = collections.defaultdict(list)  # (group, key) -> reads
        self.gathers = {}
        self.moved = 0        # elements copied by the slices and concatenations
        self.next_id = self.slices = self.concats = 0
        self.layers = {}

    def new(self, tensor, shape, group=None):
        tid = self.next_id
        self.next_id += 1
        self.group[tid] = tid if group is None else group
        self.tensor[tid] = tensor
        self.size[tid] = int(shape[-1])
        self.spatial[tid] = int(np.prod([d for d in shape[1:-1] if d is not None] or [1]))
        return tid

    def position(self, tid, key):
        group = self.group[tid]
        return self.positions[group][key] if group in self.positions else key

    def identity(self, tid):
        return tuple((tid, k) for k in range(self.size[tid]))

    def order(self, tid):
        """The keys of tensor `tid` by position."""
        return self.group_order(self.group[tid], self.size[tid])

    def group_order(self, group, size):
        """The keys of a group's `size` channels by position."""
        if group not in self.positions:
            return list(range(size))
        keys = [None] * size
        for k, p in self.positions[group].items():
            keys[p] = k
        return keys

    def whole(self, value):
        """The tensor id when `value` is all of one tensor in some order, else None."""
        tids = {tid for tid, _ in value}
        if len(tids) != 1:
            return None
        tid = next(iter(tids))
        return tid if len(value) == self.size[tid] and len(set(value)) == len(value) else None

    def gather(self, value, ordered):
        """`(tensor id, channel of value at each position)`, copying where needed;
        `ordered` asks for the model's channel order, else pieces stay few."""
        tid = self.whole(value)
        if tid is not None:
            at = [self.position(tid, k) for _, k in value]
            if not ordered or at == sorted(at):
                by_position = sorted(range(len(value)), key=lambda c: at[c])
                return tid, by_position
        channels = list(range(len(value)))
        if not ordered:
            # Runs of positions, smallest first (gathered first past MAX_CONCAT inputs).
            channels.sort(key=lambda c: (value[c][0], self.position(*value[c])))
            pieces = sorted(self.pieces([value[c] for c in channels], channels),
                            key=lambda piece: len(piece[3]))
            channels = [c for piece in pieces for c in piece[3]]
        key = (ordered, tuple(value[c] for c in channels))
        if key not in self.gathers:
            self.gathers[key] = self._copy([value[c] for c in channels], len(self.gathers))
        return self.gathers[key], channels

    def pieces(self, entries, payloads):
        """`[tid, first, last position, payloads]` per run of positions in `entries`."""
        runs = []
        for (tid, k), payload in zip(entries, payloads, strict=True):
            at = self.position(tid, k)
            if runs and runs[-1][0] == tid and runs[-1][2] == at - 1:
                runs[-1][2] = at
                runs[-1][3].append(payload)
            else:
                runs.append([tid, at, at, [payload]])
        return runs

    def _copy(self, entries, index):
        if not self.build:
            for tid, k in entries:
                self.readers[(self.group[tid], k)].append(index)
        pieces = self.pieces(entries, entries)
        spatial = self.spatial[entries[0][0]]
        parts, sizes = [], []
        for tid, first, last, _ in pieces:
            sizes.append(last + 1 - first)
            if sizes[-1] == self.size[tid]:
                parts.append(self.tensor[tid])
                continue
            self.moved += sizes[-1] * spatial
            self.slices += 1
            if self.build:
                parts.append(ChannelSlice(first, last + 1, name=f"route_slice_{self.slices}")(
                    self.tensor[tid]))
        while len(parts) > 1:
            # At most MAX_CONCAT inputs per concatenation: the first (smallest) go first.
            count = len(parts) - MAX_CONCAT + 1 if len(parts) > MAX_CONCAT else len(parts)
            count = min(count, MAX_CONCAT)
            self.moved += sum(sizes[:count]) * spatial
            self.concats += 1
            joined = (keras.layers.Concatenate(name=f"route_concat_{self.concats}")(
                parts[:count]) if self.build else None)
            parts = [joined, *parts[count:]]
            sizes = [sum(sizes[:count]), *sizes[count:]]
        tensor = parts[0] if self.build else None
        return self.new(tensor, (1, spatial, len(entries)))

    def clone(self, layer):
        if layer.name not in self.layers:
            self.layers[layer.name] = graph.copy_layer(layer)
        return self.layers[layer.name]

    def apply(self, layer, inputs, node, weights=None):
        """`layer`'s copy on `inputs` (KerasTensors) with `weights`; the flat outputs."""
        if not self.build:
            return None
        copy = self.clone(layer)
        y = graph.call_node(
            node, {id(t): x for t, x in zip(node.input_tensors, inputs, strict=True)}, copy)
        if weights is not None:
            copy.set_weights(weights)
        elif layer.weights:
            copy.set_weights(layer.get_weights())
        return y

    def per_channel(self, node, value):
        layer = node.operation
        tid, channels = self.gather(value, ordered=False)
        weights = None
        if layer.weights:  # weights move to the positions of their channels
            order = np.asarray(channels)
            weights = [w[:, :, order, :] if _kind(layer) == "DepthwiseConv2D" and w.ndim == 4
                       else w[order] for w in layer.get_weights()]
        y = self.apply(layer, [self.tensor[tid]], node, weights)
        out = self.new(y and y[0], node.outputs[0].shape, group=self.group[tid])
        return tuple((out, k) for k in self._keys_by_channel(tid, channels))

    def _keys_by_channel(self, tid, channels):
        keys = self.order(tid)
        by_channel = [None] * len(channels)
        for position, c in enumerate(channels):
            by_channel[c] = keys[position]
        return by_channel

    def mixing(self, node, value):
        layer = node.operation
        tid, channels = self.gather(value, ordered=False)
        output_shape = node.outputs[0].shape
        group = None if _kind(layer) == "Dense" else f"conv:{id(node)}"
        weights = None
        if self.build:
            weights = layer.get_weights()
            order = np.asarray(channels)
            kernel = weights[0][order] if weights[0].ndim == 2 else weights[0][:, :, order, :]
            weights[0] = kernel
            if group is not None and group in self.positions:
                out_order = np.asarray(self.group_order(group, int(output_shape[-1])))
                weights = [w[..., out_order] if w.ndim > 1 else w[out_order] for w in weights]
        y = self.apply(layer, [self.tensor[tid]], node, weights)
        out = self.new(y and y[0], output_shape, group=group)
        return self.identity(out)

    def other(self, node, values):
        inputs = []
        for value in values:
            tid, _ = self.gather(value, ordered=True)
            inputs.append(self.tensor[tid])
        outs = self.apply(node.operation, inputs, node) or [None] * len(node.outputs)
        return [self.identity(self.new(t, s.shape)) for t, s in zip(outs, node.outputs,
                                                                    strict=True)]

    def run(self):
        (source,) = graph.functional(self.model).inputs
        inp = keras.Input(batch_shape=source.shape, dtype=source.dtype, name=source.name) \
            if self.build else None
        values = {id(source): self.identity(self.new(inp, source.shape))}
        for node in graph.nodes(self.model):
            layer = node.operation
            ins = [values[id(t)] for t in node.input_tensors]
            if _routing(layer, node):
                outs = route(node, ins)
            elif len(ins) == 1 and len(node.outputs) == 1 and _per_channel(layer, node):
                outs = [self.per_channel(node, ins[0])]
            elif len(ins) == 1 and len(node.outputs) == 1 and _mixing(layer, node):
                outs = [self.mixing(node, ins[0])]
            else:
                outs = self.other(node, ins)
            for t, v in zip(node.outputs, outs, strict=True):
                values[id(t)] = v
        outputs = [self.gather(values[id(t)], ordered=True)[0]
                   for t in graph.functional(self.model).outputs]
        if not self.build:
            return None
        tensors = [self.tensor[tid] for tid in outputs]
        return keras.Model(inp, tensors[0] if len(tensors) == 1 else tensors,
                           name=self.model.name)


def route(node, values):
    """The values after a routing node, from the layer run on each channel's index."""
    flat = [entry for value in values for entry in value]
    starts = np.cumsum([0, *map(len, values[:-1])])
    indices = {id(t): np.arange(start, start + len(value), dtype="float32").reshape(
        (1,) * (len(t.shape) - 1) + (-1,))
        for t, start, value in zip(node.input_tensors, starts, values, strict=True)}
    return [tuple(flat[int(i)] for i in np.asarray(y).reshape(-1))
            for y in graph.call_node(node, indices)]


def _positions(walk):
    """Per convolution, each output channel's position: those read together side by side."""
    reads = collections.defaultdict(dict)
    for (group, key), readers in walk.readers.items():
        if isinstance(group, str):  # a convolution's output (see `_Walk.mixing`)
            reads[group][key] = tuple(readers)
    sizes = {walk.group[tid]: size for tid, size in walk.size.items()}
    positions = {}
    for group, keys in reads.items():
        ranked = sorted(range(sizes[group]), key=lambda k: (keys.get(k, ()), k))
        positions[group] = {k: p for p, k in enumerate(ranked)}
    return positions


def routed(model, max_moved=MAX_MOVED):
    """A copy of `model` with its channel shuffles resolved, or `model` itself when it has
    none or the copy would move over `max_moved` times what its routing moves (None: any)."""
    functional = graph.functional(model)
    if functional is None or isinstance(model, keras.Sequential) or len(functional.inputs) != 1:
        return model
    nodes = graph.nodes(model)
    if not any(_kind(node.operation) == "ChannelShuffle" for node in nodes):
        return model
    # A grouped Conv2D reads channels in the model's order: gathering them back is slower.
    if any(_kind(node.operation) == "Conv2D" and node.operation.groups > 1 for node in nodes):
        return model
    positions, moved, own = plan(model)
    if max_moved is not None and moved > own * max_moved:
        return model
    return _Walk(model, positions, build=True).run()


def plan(model):
    """`(positions, elements the copy moves, elements the model's own routing moves)`."""
    first = _Walk(model)
    first.run()
    positions = _positions(first)
    estimate = _Walk(model, positions)
    estimate.run()
    return positions, estimate.moved, moved_by_routing(graph.nodes(model))


def moved_by_routing(graph_nodes):
    """Elements the model's own routing layers copy (a shuffle copies twice)."""
    total = 0
    for node in graph_nodes:
        layer = node.operation
        if not _routing(layer, node):
            continue
        copies = 2 if _kind(layer) == "ChannelShuffle" else 1
        for t in node.outputs:
            total += copies * int(np.prod([d for d in t.shape[1:] if d is not None]))
    return total

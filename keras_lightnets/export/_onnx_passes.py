"""Post-passes on tf2onnx's graph, so ONNX Runtime runs it as fast as a native NCHW export.

Each pass matches exact patterns (op types, attributes, constant values), leaves anything
else as it is and is exact up to float rounding; `optimize` checks the result.
"""

import contextlib

import numpy as np

NHWC_TO_NCHW = [0, 3, 1, 2]
NCHW_TO_NHWC = [0, 2, 3, 1]


@contextlib.contextmanager
def fixed_transpose_optimizer():
    """Lets tf2onnx's transpose optimizer pass `Add(x, scalar)`, whose handler raises."""
    from tf2onnx.optimizer import transpose_optimizer

    cls = transpose_optimizer.TransposeOptimizer
    original = getattr(cls, "_add_handler", None)
    if original is None:  # another tf2onnx: nothing to fix
        yield
        return

    def add_handler(self, trans, node):
        const = node.inputs[1]
        if const.is_const() and const.get_tensor_value(as_list=False).ndim == 0:
            return self._handle_node_having_branches(trans, node)
        return original(self, trans, node)

    cls._add_handler = add_handler
    try:
        yield
    finally:
        cls._add_handler = original


class _Graph:
    """Producer/consumer maps, constants and static shapes of an ONNX graph."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph = graph
        self.consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and len(node.attribute) == 1 \
                    and node.attribute[0].name == "value":
                self.consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.outputs = {o.name for o in graph.output}
        self.dims = {v.name: [d.dim_value if d.HasField("dim_value") else None
                              for d in v.type.tensor_type.shape.dim]
                     for v in (*graph.input, *graph.value_info, *graph.output)
                     if v.type.tensor_type.HasField("shape")}
        self.ranks = {name: len(dims) for name, dims in self.dims.items()}
        self.refresh()
        self._names = {o for n in graph.node for o in n.output} | set(self.consts)
        self._counter = 0

    def refresh(self):
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def unique(self, base):
        while True:
            self._counter += 1
            name = f"{base}__kl{self._counter}"
            if name not in self._names:
                self._names.add(name)
                return name

    def only_consumer(self, name):
        """The single node reading `name` (not a graph output), else None."""
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def reads_only(self, name, node):
        """Whether `node` is the single reader of `name`, by outputs (not by identity)."""
        user = self.only_consumer(name)
        return user is not None and list(user.output) == list(node.output)

    def scalar(self, name, rank_of=None):
        """The value of a constant that broadcasts as a scalar onto `rank_of`, else None."""
        value = self.consts.get(name)
        if value is None or value.size != 1 or value.dtype != np.float32:
            return None
        if value.ndim > 0 and (rank_of is None or self.ranks.get(rank_of, 0) < value.ndim):
            return None  # a [1, 1, 1, 1] constant would raise the rank of a lower-rank x
        return float(value.reshape(()))

    def add_const(self, base, value):
        from onnx import numpy_helper

        name = self.unique(base)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        self.consts[name] = np.asarray(value)
        return name

    def add(self, op, inputs, outputs, base, **attrs):
        """Appends a node named after `base` (`optimize` sorts the graph afterwards)."""
        from onnx import helper

        self.graph.node.append(helper.make_node(op, inputs, outputs, name=self.unique(base),
                                                **attrs))

    def replace_uses(self, old, new):
        for node in self.consumers.get(old, []):
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new


def _attrs(node):
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _attr(node, name, default=None):
    return _attrs(node).get(name, default)


def _is(node, name, default):
    """Whether string attribute `name` of `node` is `default`, or absent."""
    return _attr(node, name, default.encode()) in (default.encode(), default)


def _is_transpose(node, perm):
    return node.op_type == "Transpose" and list(_attr(node, "perm", [])) == perm


def _other_input(node, name):
    """The input of a binary node that is not `name` (None if both are)."""
    a, b = node.input
    return b if a == name else a if b == name else None


def _hard_sigmoid_of(g, node):
    """`(x, [nodes])` if `node` ends `clip(x + 3, 0, 6) * (1/6)` (or `/ 6`), else None."""
    if node.op_type == "Mul":
        candidates, want = [tuple(node.input), tuple(node.input)[::-1]], 1.0 / 6.0
    elif node.op_type == "Div":
        candidates, want = [tuple(node.input)], 6.0
    else:
        return None
    for clipped, const in candidates:
        value = g.scalar(const, clipped)
        clip = g.producer.get(clipped)
        if value is None or abs(value - want) > 1e-6 * want or clip is None:
            continue
        if clip.op_type != "Clip" or len(clip.input) != 3 or not g.reads_only(clipped, node):
            continue
        if g.scalar(clip.input[1]) != 0.0 or g.scalar(clip.input[2]) != 6.0:
            continue
        add = g.producer.get(clip.input[0])
        if add is None or add.op_type != "Add" or not g.reads_only(add.output[0], clip):
            continue
        for x, three in [(add.input[0], add.input[1]), (add.input[1], add.input[0])]:
            if g.scalar(three, x) == 3.0 and x not in g.consts:
                return x, [add, clip, node]
    return None


def fuse_hard_activations(graph, swish=True):
    """`x * clip(x + 3, 0, 6) / 6` -> HardSwish, `clip(x + 3, 0, 6) / 6` -> HardSigmoid
    (HardSigmoid only with `swish=False`, for opset < 14). Returns the number fused."""
    from onnx import helper

    g = _Graph(graph)
    fused = {}  # output of a pattern's last node -> the fused node
    taken = set()
    for node in graph.node:
        match = _hard_sigmoid_of(g, node)
        if match is None or node.output[0] in taken:
            continue
        x, nodes = match
        out, op, attrs = node.output[0], "HardSigmoid", {"alpha": 1.0 / 6.0, "beta": 0.5}
        user = g.only_consumer(out)
        if swish and user is not None and user.op_type == "Mul" and _other_input(user, out) == x:
            nodes, out, op, attrs = [*nodes, user], user.output[0], "HardSwish", {}
        fused[out] = helper.make_node(op, [x], [out], name=g.unique(nodes[-1].name or op),
                                      **attrs)
        taken.update(n.output[0] for n in nodes)
    kept = [fused.get(n.output[0], n) for n in graph.node
            if n.output[0] in fused or n.output[0] not in taken]
    del graph.node[:]
    graph.node.extend(kept)
    return len(fused)


def _nhwc_shuffle_at(g, head):
    """`(groups, (H, W, C), nodes)` if tf2onnx's ChannelShuffle starts at `head`, else None."""
    if not _is_transpose(head, NCHW_TO_NHWC):
        return None
    nodes = [head]
    for op in ("Reshape", "Transpose", "Reshape"):
        nxt = g.only_consumer(nodes[-1].output[0])
        if nxt is None or nxt.op_type != op or nxt.input[0] != nodes[-1].output[0]:
            return None
        nodes.append(nxt)
    first, last = (g.consts.get(n.input[1]) if len(n.input) == 2 else None
                   for n in (nodes[1], nodes[3]))
    if first is None or last is None or first.size != 3 or last.size != 4 or \
            not _is_transpose(nodes[2], [0, 2, 1]):
        return None
    _, groups, per_group = (int(v) for v in first.reshape(-1))
    _, height, width, channels = (int(v) for v in last.reshape(-1))
    if min(groups, per_group, height, width) <= 0 or groups * per_group != channels:
        return None
    return groups, (height, width, channels), nodes


def nchw_channel_shuffle(graph):
    """ChannelShuffle (and the split after it) in NCHW, as torchvision writes it, without
    tf2onnx's layout transposes. Returns the number of rewritten shuffles."""
    g = _Graph(graph)
    rewritten = 0
    for head in list(graph.node):
        match = _nhwc_shuffle_at(g, head)
        if match is None:
            continue
        groups, (height, width, channels), nodes = match
        base = nodes[2].name or "shuffle"
        split5 = g.add_const(base + "_shape5", np.array(
            [-1, groups, channels // groups, height, width], dtype=np.int64))
        shape4 = g.add_const(base + "_shape4", np.array(
            [-1, channels, height, width], dtype=np.int64))
        a, b, y = (g.unique(base + suffix) for suffix in ("_r5", "_t5", "_nchw"))
        g.add("Reshape", [head.input[0], split5], [a], base)
        g.add("Transpose", [a], [b], base, perm=[0, 2, 1, 3, 4])
        g.add("Reshape", [b, shape4], [y], base)
        _retarget_nhwc_users(g, nodes[-1].output[0], y)
        g.refresh()
        rewritten += 1
    return rewritten


def _is_channel_split(g, node, nhwc):
    return node.op_type == "Split" and node.input[0] == nhwc and _attr(node, "axis") in (3, -1)


def nchw_channel_splits(graph):
    """`Transpose(to NHWC) -> Split(channels) -> Transposes(to NCHW)` -> one NCHW Split,
    where no transpose is added. Returns the number of rewritten splits."""
    g = _Graph(graph)
    rewritten = 0
    for head in list(graph.node):
        nhwc = head.output[0]
        if not _is_transpose(head, NCHW_TO_NHWC) or nhwc in g.outputs:
            continue
        readers = g.consumers.get(nhwc, [])
        if not any(r.op_type == "Split" for r in readers) or not all(
                _is_transpose(r, NHWC_TO_NCHW) or (
                    _is_channel_split(g, r, nhwc) and not any(o in g.outputs for o in r.output)
                    and all(_is_transpose(u, NHWC_TO_NCHW)
                            for o in r.output for u in g.consumers.get(o, [])))
                for r in readers):
            continue
        _retarget_nhwc_users(g, nhwc, head.input[0])
        g.refresh()
        rewritten += 1
    return rewritten


def _retarget_nhwc_users(g, nhwc, y):
    """Feeds the readers of NHWC `nhwc` from its NCHW twin `y`."""
    def feed(old, new):
        readers = list(g.consumers.get(old, []))
        for reader in readers:
            if _is_transpose(reader, NHWC_TO_NCHW):
                _bypass(g, reader.output[0], new)
        others = [r for r in readers if not _is_transpose(r, NHWC_TO_NCHW)]
        if others or old in g.outputs:
            back = g.unique(old + "_nhwc")
            g.add("Transpose", [new], [back], "to_nhwc", perm=NCHW_TO_NHWC)
            g.consumers[old] = others
            g.replace_uses(old, back)
            if old in g.outputs:
                _rename_output(g, old, back)

    readers = []
    for user in list(g.consumers.get(nhwc, [])):
        if not _is_channel_split(g, user, nhwc):
            readers.append(user)
            continue
        halves = [g.unique(o) for o in user.output]
        g.add("Split", [y, *user.input[1:]], halves, user.name or "split",
              **{**_attrs(user), "axis": 1})
        for old, new in zip(user.output, halves, strict=True):
            feed(old, new)
        g.graph.node.remove(user)
    g.consumers[nhwc] = readers
    feed(nhwc, y)


def _bypass(g, old, new):
    """Points every reader of `old` at `new` (dead producers are swept later)."""
    g.replace_uses(old, new)
    if old in g.outputs:
        _rename_output(g, old, new)


def _rename_output(g, old, new):
    """Graph output `old` becomes an Identity of `new`, replacing a single-output producer."""
    producer = next((n for n in g.graph.node if old in n.output), None)
    if producer is not None and len(producer.output) == 1:
        g.graph.node.remove(producer)
    g.add("Identity", [new], [old], "output")


def transposed_pads(graph):
    """`Transpose(p) -> Pad -> Transpose(p^-1)` -> one permuted Pad; returns the number."""
    g = _Graph(graph)
    rewritten = 0
    for head in list(graph.node):
        perm = list(_attr(head, "perm", [])) if head.op_type == "Transpose" else []
        pad = g.only_consumer(head.output[0]) if perm else None
        if pad is None or pad.op_type != "Pad" or pad.input[0] != head.output[0] \
                or not _is(pad, "mode", "constant"):
            continue
        pads = g.consts.get(pad.input[1]) if len(pad.input) > 1 else None
        if pads is None or pads.size != 2 * len(perm) or len(pad.input) > 3 or (
                len(pad.input) == 3 and pad.input[2] and pad.input[2] not in g.consts):
            continue
        readers = g.consumers.get(pad.output[0], [])
        if not readers or pad.output[0] in g.outputs or not all(
                _is_transpose(r, list(np.argsort(perm))) for r in readers):
            continue
        rank, pads = len(perm), pads.reshape(-1)
        moved = np.zeros_like(pads)
        for i, axis in enumerate(perm):
            moved[axis], moved[rank + axis] = pads[i], pads[rank + i]
        out = g.unique(pad.output[0])
        g.add("Pad", [head.input[0], g.add_const(pad.input[1], moved), *pad.input[2:]], [out],
              pad.name or "pad", mode="constant")
        for reader in readers:
            _bypass(g, reader.output[0], out)
        g.refresh()
        rewritten += 1
    return rewritten


def _non_negative(g, name):
    """Whether `name` is the output of an op that never gives a negative value."""
    node = g.producer.get(name)
    if node is None or node.op_type in ("Relu", "HardSigmoid"):
        return node is not None
    low = g.scalar(node.input[1]) if node.op_type == "Clip" and len(node.input) > 1 else None
    return low is not None and low >= 0


def zero_pads_into_max_pool(graph):
    """`Pad(0) -> MaxPool` on a non-negative tensor -> MaxPool with `pads`; returns the number."""
    g = _Graph(graph)
    folded = 0
    for pad in list(graph.node):
        if pad.op_type != "Pad" or not _is(pad, "mode", "constant"):
            continue
        pads = g.consts.get(pad.input[1]) if len(pad.input) > 1 else None
        value = g.consts.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else 0.0
        readers = g.consumers.get(pad.output[0], [])
        if pads is None or pads.size != 8 or value is None or np.any(np.asarray(value) != 0):
            continue
        pads = [int(v) for v in pads.reshape(-1)]
        if any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0 or pad.output[0] in g.outputs:
            continue
        if not _non_negative(g, pad.input[0]) or not readers or any(
                r.op_type != "MaxPool" or len(r.output) != 1 or not _is(r, "auto_pad", "NOTSET")
                or any(_attr(r, "pads", [0, 0, 0, 0])) or
                any(k <= p for k, p in zip(_attr(r, "kernel_shape", []) * 2,
                                           pads[2:4] + pads[6:8], strict=False))
                for r in readers):
            continue
        for pool in readers:
            g.add("MaxPool", [pad.input[0]], list(pool.output), pool.name or "pool",
                  **{**_attrs(pool), "pads": pads[2:4] + pads[6:8]})
            graph.node.remove(pool)
        folded += 1
    return folded


def _diagonal_scale(g, conv):
    """The per-channel scale of a 1x1 convolution with a diagonal kernel, else None."""
    kernel = g.consts.get(conv.input[1]) if conv.op_type == "Conv" else None
    if kernel is None or kernel.ndim != 4 or kernel.shape[2:] != (1, 1) or \
            kernel.shape[0] != kernel.shape[1] or kernel.dtype != np.float32:
        return None
    if _attr(conv, "group", 1) != 1 or any(_attr(conv, "pads", [])) or \
            any(v != 1 for v in _attr(conv, "strides", [])) or not _is(conv, "auto_pad", "NOTSET"):
        return None
    scale = np.diag(kernel[:, :, 0, 0])
    return None if np.any(kernel[:, :, 0, 0] != np.diag(scale)) else scale


def channel_affine(graph):
    """A diagonal 1x1 convolution (per-channel Rescaling) -> Mul and Add per channel (for
    `affine_into_conv`). Returns the number rewritten."""
    g = _Graph(graph)
    rewritten = 0
    for conv in list(graph.node):
        scale = _diagonal_scale(g, conv)
        if scale is None or g.ranks.get(conv.input[0]) != 4:
            continue
        shape = (1, scale.size, 1, 1)
        bias = g.consts.get(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else \
            np.zeros(scale.size, np.float32)
        if bias is None or bias.size != scale.size:
            continue
        scaled = g.unique(conv.output[0] + "_scaled")
        base = conv.name or "rescaling"
        g.add("Mul", [conv.input[0], g.add_const(base + "_scale", scale.reshape(shape))],
              [scaled], base)
        offset = g.add_const(base + "_offset", bias.astype(np.float32).reshape(shape))
        g.add("Add", [scaled, offset], list(conv.output), base)
        graph.node.remove(conv)
        g.refresh()
        rewritten += 1
    return rewritten


def _channel_const(g, name, channels):
    """A float constant as `(C,)` if it is a scalar or a `[1, C, 1, 1]`-like one, else None."""
    value = g.consts.get(name)
    if value is None or value.dtype != np.float32:
        return None
    if value.size == 1 and value.ndim <= 4:  # x is 4-D: broadcasting keeps its shape
        return np.full(channels, float(value.reshape(())), np.float32)
    dims = list(value.shape)
    if len(dims) in (3, 4) and dims[-3] == channels and value.size == channels \
            and all(d == 1 for d in dims[:-3] + dims[-2:]):
        return value.reshape(channels)
    return None


def _is_input_image(g, name):
    """Whether `name` is a graph input, or a Transpose of one."""
    inputs = {i.name for i in g.graph.input} - set(g.consts)
    node = g.producer.get(name)
    return name in inputs or (node is not None and node.op_type == "Transpose"
                              and node.input[0] in inputs)


def affine_into_conv(graph):
    """`Conv(x * s + b)` -> `Conv'(x + b / s)`, `s` in the kernel (a padded zero stays zero),
    on the graph input, through its Transpose for scalars only. Returns the number folded."""
    g = _Graph(graph)
    folded = 0
    for mul in list(graph.node):
        add = g.only_consumer(mul.output[0]) if mul.op_type == "Mul" else None
        if add is None or add.op_type != "Add":
            continue
        transpose, conv = None, g.only_consumer(add.output[0])
        if conv is not None and conv.op_type == "Transpose":
            transpose, conv = conv, g.only_consumer(conv.output[0])
        if conv is None or conv.op_type != "Conv" or _attr(conv, "group", 1) != 1:
            continue
        kernel = g.consts.get(conv.input[1])
        if kernel is None or kernel.ndim != 4 or kernel.dtype != np.float32 or \
                conv.input[0] != (transpose or add).output[0]:
            continue
        channels = kernel.shape[1]
        x, s_name = (mul.input[0], mul.input[1]) if mul.input[1] in g.consts else \
            (mul.input[1], mul.input[0])
        b_name = _other_input(add, mul.output[0])
        scale, offset = _channel_const(g, s_name, channels), _channel_const(g, b_name, channels)
        if not _is_input_image(g, x) or scale is None or offset is None or np.any(scale == 0):
            continue
        if g.ranks.get(x) != 4 or (transpose is not None and (
                np.ptp(scale) or np.ptp(offset) or not _is_transpose(transpose, NHWC_TO_NCHW))):
            continue
        base, source = conv.name or "conv", x
        if transpose is not None:
            source = g.unique(x + "_nchw")
            g.add("Transpose", [x], [source], base, perm=NHWC_TO_NCHW)
        shifted = g.unique(add.output[0] + "_shifted")
        shift = (offset / scale).reshape(1, channels, 1, 1).astype(np.float32)
        g.add("Add", [source, g.add_const(base + "_shift", shift)], [shifted], base)
        weights = (kernel * scale.reshape(1, channels, 1, 1)).astype(np.float32)
        g.add("Conv", [shifted, g.add_const(conv.input[1], weights), *conv.input[2:]],
              list(conv.output), base, **_attrs(conv))
        graph.node.remove(conv)
        g.refresh()
        folded += 1
    return folded


def identity_reshapes(graph):
    """Removes Reshapes to their input's shape (after keepdims means); returns the number."""
    g = _Graph(graph)
    removed = 0
    for node in list(graph.node):
        if node.op_type != "Reshape" or _attr(node, "allowzero", 0):
            continue
        target, have = g.consts.get(node.input[1]), g.dims.get(node.input[0])
        if target is None or have is None or target.size != len(have) or \
                node.output[0] in g.outputs:
            continue
        target = [int(v) for v in target.reshape(-1)]
        same = all(t in (0, -1) or (t == d and d is not None)
                   for t, d in zip(target, have, strict=True))
        if same and target.count(-1) <= 1:
            _bypass(g, node.output[0], node.input[0])
            removed += 1
    return removed


# How far from integers a kernel's int8 steps may be (the BN scale folded in after QAT).
GRID_TOLERANCE = 1e-3
_INT8_STEPS = np.arange(127, 0, -1, dtype=np.float64)


def _int8_grid(values):
    """`(q, scale)` with `q * scale == values` (int8 `q`, scale > 0), else None."""
    flat = values.reshape(-1).astype(np.float64)
    top = float(np.max(np.abs(flat))) if flat.size else 0.0
    if top == 0:
        return np.zeros(values.shape, np.int8), 1.0
    # The largest value sits on step K <= 127; K are weeded out a slice at a time.
    steps = _INT8_STEPS
    for start in range(0, flat.size, 256):
        ratios = flat[None, start:start + 256] * (steps[:, None] / top)
        steps = steps[np.max(np.abs(ratios - np.round(ratios)), axis=1) <= GRID_TOLERANCE]
        if not steps.size:
            return None
    k = steps[0]  # the finest grid that fits
    return np.round(values * (k / top)).astype(np.int8), top / k


def _int8_kernel(kernel, axis):
    """`(q, scale)` of a kernel on one int8 grid, or one per index of `axis`, else None."""
    whole = _int8_grid(kernel)
    if whole is not None:
        return whole[0], np.float32(whole[1])
    grids = [_int8_grid(channel) for channel in np.moveaxis(kernel, axis, 0)]
    if any(grid is None for grid in grids):
        return None
    q = np.moveaxis(np.stack([grid[0] for grid in grids]), 0, axis)
    return q, np.array([grid[1] for grid in grids], np.float32)


def quantized_kernels(graph):
    """Float kernels on an int8 grid -> int8 kernels behind a DequantizeLinear, in QDQ graphs:
    ONNX Runtime would requantize a float one per tensor. Returns the number stored."""
    if not any(node.op_type == "DequantizeLinear" for node in graph.node):
        return 0
    g = _Graph(graph)
    done = {}
    for node in list(graph.node):
        axis = {"Conv": 0, "MatMul": 1}.get(node.op_type)
        if node.op_type == "Gemm" and not _attr(node, "transA", 0):
            axis = 0 if _attr(node, "transB", 0) else 1
        if axis is None:
            continue
        name = node.input[1]
        kernel = g.consts.get(name)
        if name not in done:
            if kernel is None or kernel.dtype != np.float32 or kernel.ndim < 2:
                continue
            found = _int8_kernel(kernel, axis)
            if found is None:
                continue
            q, scale = found
            out = g.unique(name + "_dequantized")
            g.add("DequantizeLinear",
                  [g.add_const(name + "_int8", q), g.add_const(name + "_scale", scale),
                   g.add_const(name + "_zero_point", np.zeros(scale.shape, np.int8))],
                  [out], name + "_dequantize", **({"axis": axis} if scale.ndim else {}))
            done[name] = out
        node.input[1] = done[name]
    return len(done)


def remove_dead(graph):
    """Drops nodes whose outputs nothing reads, and unused initializers."""
    while True:
        used = {o.name for o in graph.output} | {i for n in graph.node for i in n.input}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def topological_sort(graph):
    """Orders nodes so every input is produced before it is read."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:
            raise ValueError("the ONNX graph has a cycle or an undefined input")
        pending = [n for n in pending if not all(i in ready for i in n.input)]
        ready.update(o for n in done for o in n.output)
        ordered.extend(done)
    del graph.node[:]
    graph.node.extend(ordered)


def optimize(proto, passes=None):
    """`(new ModelProto, {pass: rewrites})` after the `passes.ONNX` named in `passes` (None:
    all); graphs with subgraphs or without the default domain are returned as they are."""
    import onnx

    from keras_lightnets.export import passes as passes_lib

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                            for n in proto.graph.node for a in n.attribute):
        return proto, {}
    # Ranks, so that a [1, 1, 1, 1] constant is only taken as a scalar where it is one.
    proto = onnx.shape_inference.infer_shapes(proto)
    counts = {p.name: p.run(proto.graph, opset) for p in passes_lib.ONNX
              if passes is None or p.name in passes}
    remove_dead(proto.graph)
    topological_sort(proto.graph)
    del proto.graph.value_info[:]
    onnx.checker.check_model(proto)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    return proto, counts

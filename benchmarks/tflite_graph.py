"""Cutting TFLite files into smaller graphs for timing (flatbuffer edits, no conversion).

`cut_ops` gives one file per operator (investigations/op_profile.py);
`keep_ops` one file with only the operators of some types, in their order
(investigations/int8_latency.py's lower bound: the convolutions alone, in the
same timing context as the whole file). An operator whose input is made by a
dropped operator reads it as a graph input, set once before timing. `read`
serves run.py's same-graph check too.
"""

import copy

# The ops no int8 graph of the architecture can do without.
CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _schema():
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    return schema, flatbuffer_utils


def op_names(model):
    """Builtin operator name of every operator code of a `ModelT`."""
    schema, utils = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return [names.get(utils.get_builtin_code_from_operator_code(c), "CUSTOM")
            for c in model.operatorCodes]


def read(content):
    """`(ModelT, builtin operator name of every operator code)` of a TFLite file's bytes."""
    _, utils = _schema()
    model = utils.read_model_from_bytearray(bytearray(content))
    return model, op_names(model)


def op_counts(content):
    """`{operator name: how many}` of a TFLite file's bytes, sorted by name."""
    model, names = read(content)
    counts = {}
    for op in model.subgraphs[0].operators:
        counts[names[op.opcodeIndex]] = counts.get(names[op.opcodeIndex], 0) + 1
    return dict(sorted(counts.items()))


def _is_constant(model, tensor):
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    return data is not None and len(data) > 0


def _only_buffers(model, buffers, ops):
    """`buffers` with every buffer but the constants of `ops` emptied."""
    tensors = model.subgraphs[0].tensors
    used = {tensors[t].buffer for op in ops for t in op.inputs if t >= 0}
    empty = type(buffers[0])()
    return [b if i in used else empty for i, b in enumerate(buffers)]


def cut_ops(content, copies):
    """Yields `(index, op_type, input_shape, output_shape, one_op_file)` per operator.

    Each one-op file computes `copies` copies of the operator from the same
    inputs into separate outputs, all of them graph outputs (a runtime may
    drop work whose result nobody reads).
    """
    _, utils = _schema()
    model, names = read(content)
    graph = model.subgraphs[0]
    ops, tensors = graph.operators, graph.tensors
    saved = (graph.operators, graph.inputs, graph.outputs, list(tensors), model.signatureDefs,
             model.buffers)
    model.signatureDefs = []
    try:
        for index, op in enumerate(ops):
            inputs = [t for t in op.inputs if t >= 0 and not _is_constant(model, tensors[t])]
            graph.tensors = list(saved[3])
            cut, outputs = [op], list(op.outputs)
            for _ in range(copies - 1):
                twin = copy.copy(op)
                twin.outputs = []
                for t in op.outputs:
                    tensor = copy.copy(graph.tensors[t])
                    tensor.name = (tensor.name or b"") + b"_copy%d" % len(graph.tensors)
                    graph.tensors.append(tensor)
                    twin.outputs.append(len(graph.tensors) - 1)
                cut.append(twin)
                outputs.extend(twin.outputs)
            graph.operators, graph.inputs, graph.outputs = cut, inputs, outputs
            # Only this op's constants: a file per op holding every weight runs out of memory.
            model.buffers = _only_buffers(model, saved[5], [op])
            shape_in = list(tensors[inputs[0]].shape) if inputs else []
            shape_out = list(tensors[op.outputs[0]].shape)
            yield (index, names[op.opcodeIndex], shape_in, shape_out,
                   bytes(utils.convert_object_to_bytearray(model)))
    finally:
        (graph.operators, graph.inputs, graph.outputs, graph.tensors, model.signatureDefs,
         model.buffers) = saved


def keep_ops(content, types=CONVOLUTIONS):
    """The file with only its operators of `types`, in their order, as bytes.

    Kept operators still feed each other where they did; an input made by a
    dropped operator becomes a graph input, and every kept output nobody
    reads becomes a graph output (so that nothing is pruned as dead). Such
    inputs of one shape and type share one tensor: a whole graph reuses its
    buffers, and a file holding every one of them at once reads memory the
    whole file does not (MobileNetV3 Small float32: 11% slower than the whole
    file with one input each, 5% shared). A convolution may then read another
    tensor's quantization parameters, which changes its values, not its work.
    """
    _, utils = _schema()
    model, names = read(content)
    graph = model.subgraphs[0]
    kept = [op for op in graph.operators if names[op.opcodeIndex] in types]
    if not kept:
        raise ValueError(f"no operator of types {types} in the file")
    made = {t for op in kept for t in op.outputs}
    shared = {}
    for op in kept:
        for i, t in enumerate(op.inputs):
            if t < 0 or t in made or _is_constant(model, graph.tensors[t]):
                continue
            tensor = graph.tensors[t]
            op.inputs[i] = shared.setdefault((tuple(tensor.shape), tensor.type), t)
    graph.operators, graph.inputs = kept, list(shared.values())
    consumed = {t for op in kept for t in op.inputs if t >= 0}
    graph.outputs = [t for op in kept for t in op.outputs if t not in consumed]
    model.signatureDefs = []
    model.buffers = _only_buffers(model, model.buffers, kept)
    return bytes(utils.convert_object_to_bytearray(model))


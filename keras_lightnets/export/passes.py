"""The export passes, in the order they run, and what each one buys.

`KERAS` passes rewrite a copy of a Keras 3 model before the TFLite converter traces it
(`ONNX_KERAS` before tf2onnx); `ONNX` passes rewrite tf2onnx's graph (`_onnx_passes`).
Each computes the same function. `passes=` of `to_tflite` and `to_onnx` names those to
run (None: all); the report gives each one's outcome: "applied", "not applicable", "off".

What each pass bought when it came in (machine and run in CHANGELOG.md and
benchmarks/investigations/FINDINGS.md; 1 thread, 224 px):

| pass | files | measured |
|---|---|---|
| rounding | int8 | real MobileNet 0.25 top-1 agreement with float 0.94 (0.91 without) |
| fold | all | ShuffleNetV1 g3 float32 ~8% faster, int8/float32 0.73x -> 0.60x |
| route | all | ShuffleNetV2 float32 ~12%, int8 ~14% faster |
| int8_hard_swish | int8 | MobileNetV3 int8/float32 1.4-2.2x -> 0.55-0.64x |
| int8_average_pool | int8 | ShuffleNetV1 int8/float32 0.80x -> 0.72x (split); NASNet: FINDINGS |
| int8_relu | int8 | NASNetMobile int8/float32 1.40x -> 0.90x |
| rescaling_conv | all | MUL + ADD took 0.3-0.6 ms (TFLite), 1.7 ms (ONNX Runtime) |
| erf_gelu | ONNX | exact GELU as one `Erf` (tf_keras models: `Erfc` written as `1 - Erf`) |
| static_reshapes | ONNX | constant flatten shape: tf2onnx folded a computed one in some runs only |
| hard_activations to max_pool_pads | ONNX | 0.98-1.02x torchvision's ONNX (1.15-1.24x before) |
| quantized_kernels | ONNX QDQ | int8 kernels, not ones ONNX Runtime quantizes per tensor |
"""

import collections

import keras

from keras_lightnets import graph, layers
from keras_lightnets._utils import check
from keras_lightnets.export import _fold, _model, _onnx_passes, _route, forms

APPLIED, NOT_APPLICABLE, OFF = "applied", "not applicable", "off"

# `run(model, export)` returns the new model (or `model`), or `substitute(layer, channels,
# export)` the class of the layer's export form or None (all in one `graph.rebuild`, last).
Pass = collections.namedtuple("Pass", "name run substitute", defaults=(None, None))
# The export's quantization and, for `rounding`, a callable giving calibration images.
Export = collections.namedtuple("Export", "quantization rounding_images")


def rounding(model, export):
    """int8 weights rounded to reproduce each layer's float output (`_rounding`)."""
    if export.rounding_images is None or export.quantization != "int8":
        return model
    from keras_lightnets.export import _rounding

    return _rounding.rounded(model, export.rounding_images())


def fold(model, export):
    """Batch norm and ReLU after split grouped convolutions folded into each (`_fold`)."""
    return _fold.fold_concatenated(model)


def route(model, export):
    """Channel shuffles and splits resolved into the weights (`_route`)."""
    return _route.routed(model)


def int8_hard_swish(layer, channels, export):
    """int8: hard swish as the ADD/MUL chain XNNPACK runs in int8 (`forms`)."""
    if export.quantization == "int8" and type(layer) is layers.HardSwish:
        return forms.UnfusedHardSwish
    return None


def _input_shape(layer):
    """The shape of `layer`'s input; None for a layer called more than once."""
    try:
        return tuple(layer.input.shape)
    except (AttributeError, ValueError):
        return None


def int8_average_pool(layer, channels, export):
    """int8: an average pool as a depthwise convolution XNNPACK runs (`forms`); a 'same'
    pool only on a map of known size (its border correction needs it)."""
    if export.quantization != "int8" or type(layer) is not layers.AveragePooling2D or (
            layer.data_format != "channels_last" or channels is None):
        return None
    if layer.padding == "valid":
        return forms.DepthwiseAveragePooling2D
    shape = _input_shape(layer)
    if shape is not None and None not in shape[1:3]:
        return forms.DepthwiseAveragePooling2D
    return None


def int8_relu(model, export):
    """int8: a ReLU of a map other ops also read as a depthwise convolution with the ReLU
    fused, which XNNPACK runs in int8 (`forms`)."""
    if export.quantization != "int8" or graph.functional(model) is None:
        return model
    chosen = _unfused_relus(model)
    if not chosen:
        return model
    return _replaced(model, lambda node: forms.DepthwiseReLU(name=node.operation.name)
                     if id(node) in chosen else None)


def _unfused_relus(model):
    """`{id(node)}` of the plain ReLUs of 4-D maps whose input has other readers too or
    comes from a concatenation (the converter fuses a ReLU into neither), over `model`'s
    graph and nested models."""
    found = set()
    graph_nodes = graph.nodes(model)
    readers, makers = graph.consumers(graph_nodes), graph.producers(graph_nodes)
    for node in graph_nodes:
        layer = node.operation
        if isinstance(layer, keras.Model) and graph.functional(layer) is not None:
            found |= _unfused_relus(layer)
            continue
        if type(layer) is not keras.layers.Activation or graph.activation_name(layer) != "relu":
            continue
        (x,) = node.input_tensors
        maker = makers.get(id(x))
        concatenated = maker is not None and isinstance(maker.operation,
                                                        keras.layers.Concatenate)
        if len(x.shape) == 4 and x.shape[-1] is not None and (
                len(readers[id(x)]) > 1 or concatenated):
            found.add(id(node))
    return found


def rescaling_conv(layer, channels, export):
    """Per-channel preprocessing as one 1x1 convolution (`forms`)."""
    if type(layer) is layers.Rescaling and forms.rescaling_as_conv(
            layer.scale, layer.offset, channels) is not None:
        return forms.ConvRescaling
    return None


KERAS = (
    Pass("rounding", rounding),
    Pass("fold", fold),
    Pass("route", route),
    Pass("int8_hard_swish", substitute=int8_hard_swish),
    Pass("int8_average_pool", substitute=int8_average_pool),
    Pass("int8_relu", int8_relu),
    Pass("rescaling_conv", substitute=rescaling_conv),
)
def erf_gelu(layer, channels, export):
    """ONNX: the exact GELU with `erf` (TensorFlow's `erfc` has no ONNX op) (`forms`)."""
    if type(layer) is keras.layers.Activation and graph.activation_name(layer) == "gelu":
        return forms.ErfGelu
    return None


def static_reshapes(layer, channels, export):
    """ONNX: a `Flatten` or `Reshape` of a map of static size as a reshape to a constant
    shape with the batch `-1`, not one computed from the input's shape (`forms`)."""
    kind = type(layer)
    if kind not in (keras.layers.Flatten, keras.layers.Reshape):
        return None
    shape = _input_shape(layer)
    if shape is None or None in shape[1:]:
        return None
    if kind is keras.layers.Flatten:
        flat = len(shape) <= 2 or layer.data_format == "channels_last"
        return forms.StaticFlatten if flat else None
    return forms.StaticReshape if None not in layer.compute_output_shape(shape)[1:] else None


# The Keras-graph passes of an ONNX export, before tf2onnx.
ONNX_KERAS = (*(p for p in KERAS if p.name == "rescaling_conv"),
              Pass("erf_gelu", substitute=erf_gelu),
              Pass("static_reshapes", substitute=static_reshapes))
# tf_keras twins take these forms themselves when `forms.active(name)` (see `forms`).
TWIN_FORMS = {"int8_hard_swish": "HardSwish", "int8_average_pool": "AveragePooling2D"}

# `run(graph, opset)` returns the number of rewrites (looked up in `_onnx_passes` per call).
ONNX = (
    Pass("hard_activations", lambda g, opset: _onnx_passes.fuse_hard_activations(
        g, swish=opset >= 14)),
    Pass("channel_affine", lambda g, opset: _onnx_passes.channel_affine(g)),
    Pass("affine_into_conv", lambda g, opset: _onnx_passes.affine_into_conv(g)),
    Pass("channel_shuffle", lambda g, opset: _onnx_passes.nchw_channel_shuffle(g)),
    Pass("channel_splits", lambda g, opset: _onnx_passes.nchw_channel_splits(g)),
    Pass("identity_reshapes", lambda g, opset: _onnx_passes.identity_reshapes(g)),
    Pass("pads", lambda g, opset: _onnx_passes.transposed_pads(g)),
    Pass("max_pool_pads", lambda g, opset: _onnx_passes.zero_pads_into_max_pool(g)),
    # Last: the passes above read float kernels.
    Pass("quantized_kernels", lambda g, opset: _onnx_passes.quantized_kernels(g)),
)


def selected(passes, pipeline):
    """The names of `pipeline` that `passes` (None: all, or a collection of names) selects."""
    names = [p.name for p in pipeline]
    if passes is None:
        return frozenset(names)
    check(not isinstance(passes, (str, bytes)) and hasattr(passes, "__iter__"),
          "`passes` must be None or a collection of pass names.", passes=passes)
    passes = passes if isinstance(passes, (list, tuple, set, frozenset)) else list(passes)
    unknown = sorted({str(name) for name in passes} - set(names))
    check(not unknown, f"Unknown export passes {unknown}; the passes are {names}.",
          passes=passes)
    return frozenset(passes)


def run_keras(model, chosen, export, pipeline=KERAS):
    """`(model after the chosen passes of `pipeline`, {name: outcome})`."""
    outcomes = {}
    if _model.is_tf_keras(model):
        kinds = {graph.kind(layer) for layer in _model.all_layers(model)}
        for p in pipeline:
            twin = p.name in TWIN_FORMS and export.quantization == "int8" \
                and TWIN_FORMS[p.name] in kinds
            outcomes[p.name] = OFF if p.name not in chosen else (
                APPLIED if twin else NOT_APPLICABLE)
        return model, outcomes
    for p in pipeline:
        if p.run is not None and p.name in chosen:
            new = p.run(model, export)
            outcomes[p.name] = NOT_APPLICABLE if new is model else APPLIED
            model = new
    substitutions = [p for p in pipeline if p.substitute is not None and p.name in chosen]
    found = _forms(model, substitutions, export) if graph.functional(model) else {}
    if found:
        model = _replaced(model, lambda node: found[id(node)][1].from_config(
            node.operation.get_config()) if id(node) in found else None)
    fired = {name for name, _ in found.values()}
    outcomes.update({p.name: APPLIED if p.name in fired else NOT_APPLICABLE
                     for p in substitutions})
    return model, {p.name: outcomes.get(p.name, OFF) for p in pipeline}


def _replaced(model, replacement):
    """A copy of functional `model` with each node for which `replacement(node)` gives a
    layer computed by that layer instead, in nested models (backbones) too."""

    def substitute(node, args, kwargs):
        layer = node.operation
        if isinstance(layer, keras.Model) and graph.functional(layer) is not None:
            inner = graph.rebuild(layer, substitute)
            return None if inner is layer else inner(*args, **kwargs)
        new = replacement(node)
        return None if new is None else new(*args, **kwargs)

    return graph.rebuild(model, substitute)


def _forms(model, substitutions, export):
    """`{id(node): (pass name, form class)}` over `model`'s graph and nested models."""
    found = {}
    for node in graph.nodes(model):
        layer = node.operation
        if isinstance(layer, keras.Model) and graph.functional(layer) is not None:
            found.update(_forms(layer, substitutions, export))
            continue
        channels = node.input_tensors[0].shape[-1] if node.input_tensors else None
        for p in substitutions:
            form = p.substitute(layer, channels, export)
            if form is not None:
                found[id(node)] = (p.name, form)
                break
    return found


def twin_forms(outcomes):
    """The forms a tf_keras model traces (`forms.activated`), from its outcomes."""
    return [name for name in TWIN_FORMS if outcomes.get(name) == APPLIED]

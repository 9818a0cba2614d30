"""The flavour a built model has: measured on its layers, checked against a source's.

Batch-norm epsilon and momentum, the padding of strided convolutions, the
classifier's form (with the top), the embedded normalization (when present) and
whether channel shuffles follow a batch norm are measured; the SE gate, block-0
expansion and shuffle order are built by the factory and not measured.
"""

import os

import keras
import numpy as np

from keras_lightnets import graph
from keras_lightnets.blocks import correct_pad
from keras_lightnets.weights.sources import weighted_layers


def _padding_ok(flavour, conv, size, pads):
    """Whether strided `conv` on a `size` map, after zero padding `pads` (or None), pads
    as `flavour` does."""
    k = conv.kernel_size[0]
    if pads is None:
        if conv.padding == "valid":
            return True  # an unpadded convolution in every flavour (SqueezeNet's conv1)
        if flavour.padding != "symmetric":
            return True  # TF "same": keras stems
        return None not in size and all(d % 2 for d in size)  # "same" is symmetric then
    if flavour.padding == "symmetric":
        return pads == ((k // 2, k // 2),) * 2
    if flavour.padding == "bottom_right":
        return pads == ((0, 1), (0, 1))
    return pads == correct_pad(size, k)


def _layer_mismatch(layer, flavour):
    """Batch norm and embedded normalization."""
    if isinstance(layer, keras.layers.BatchNormalization):
        have = (layer.epsilon, layer.momentum)
        if flavour.bn_epsilon is None or not np.allclose(
                have, (flavour.bn_epsilon, flavour.bn_momentum), rtol=1e-6, atol=0):
            return (f"batch norm {layer.name!r} has epsilon, momentum {have}; the flavour "
                    f"{(flavour.bn_epsilon, flavour.bn_momentum)}")
    if isinstance(layer, keras.layers.Rescaling):
        if not flavour.normalization.embedded:
            return (f"it embeds an input normalization {layer.name!r}; the flavour's input is "
                    f"normalized by `preprocess_input`")
        want = flavour.normalization.scale_offset()
        if not all(np.allclose(np.broadcast_to(h, 3), np.broadcast_to(w, 3), rtol=1e-6, atol=1e-7)
                   for h, w in zip((layer.scale, layer.offset), want, strict=True)):
            return (f"its input normalization {layer.name!r} is x * {layer.scale} + "
                    f"{layer.offset}; the flavour's x * {want[0]} + {want[1]}")
    return None


def _padding_mismatch(model, flavour):
    if graph.functional(model) is None:
        return None  # a subclassed model: no graph to read
    nodes = graph.nodes(model)
    producers = graph.producers(nodes)
    for node in nodes:
        conv = node.operation
        if (isinstance(conv, keras.layers.Conv2D | keras.layers.DepthwiseConv2D
                       | keras.layers.SeparableConv2D)
                and max(conv.strides) > 1 and conv.kernel_size[0] > 1):
            before = producers.get(id(node.input_tensors[0]))
            pads, size = None, tuple(node.input_tensors[0].shape[1:3])
            if before is not None and isinstance(before.operation, keras.layers.ZeroPadding2D):
                pads = tuple(tuple(p) for p in before.operation.padding)
                size = tuple(before.input_tensors[0].shape[1:3])
            if not _padding_ok(flavour, conv, size, pads):
                shown = pads if pads is not None else f"padding={conv.padding!r}"
                return f"strided {conv.name!r} pads {shown}, not {flavour.padding!r}"
    return None


def _classifier_mismatch(model, flavour):
    """The classifier: the last weighted layer, a Dense or 1x1 conv making the outputs."""
    layer = (weighted_layers(model) or [None])[-1]
    if isinstance(layer, keras.layers.Dense):
        form, units = "dense", layer.units
    elif isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1):
        form, units = "conv1x1", layer.filters
    else:
        return None  # no top
    if units != model.outputs[0].shape[-1]:
        return None
    if (form, layer.use_bias) != (flavour.classifier, flavour.classifier_bias):
        return (f"its classifier {layer.name!r} is {form} (bias {layer.use_bias}); the "
                f"flavour's {flavour.classifier} (bias {flavour.classifier_bias})")
    return None


def _shuffle_mismatch(model, flavour):
    """ShuffleNet V1's shuffle after the depthwise conv's batch norm, or before the conv."""
    if graph.functional(model) is None:
        return None
    nodes = graph.nodes(model)
    producers = graph.producers(nodes)
    for node in nodes:
        if type(node.operation).__name__ != "ChannelShuffle":
            continue
        before = producers.get(id(node.input_tensors[0]))
        after = before is not None and isinstance(before.operation,
                                                  keras.layers.BatchNormalization)
        if after != flavour.shuffle_after_depthwise:
            if after:
                return (f"channel shuffle {node.operation.name!r} follows the depthwise "
                        f"conv's batch norm; the flavour's shuffles precede the conv")
            return (f"channel shuffle {node.operation.name!r} precedes the depthwise conv; "
                    f"the flavour's shuffles follow its batch norm")
    return None


def flavour_mismatch(model, flavour):
    """What of `flavour` the built `model` lacks (a sentence), or None."""
    for layer in model.layers:
        problem = _layer_mismatch(layer, flavour)
        if problem:
            return problem
    return (_padding_mismatch(model, flavour) or _classifier_mismatch(model, flavour)
            or _shuffle_mismatch(model, flavour))


def check_flavour(model, source, family, weights, flavour=None):
    """ValueError unless `model` is built in `flavour` (None: `source`'s flavour of
    `family`)."""
    flavour = flavour or source.flavours.get(family)
    problem = "the source has no flavour of it" if flavour is None else flavour_mismatch(
        model, flavour)
    if problem:
        raise ValueError(
            f"The weights file {os.fspath(weights)!r} is {source.name}'s, for its flavour of "
            f"{family}, which model {model.name!r} is not built in: {problem}. Build the model "
            f"with its factory and `weights=<path>`, which builds the flavour the file needs. "
            f"Received: weights={os.fspath(weights)!r}"
        )

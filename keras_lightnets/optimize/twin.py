"""The tf_keras twin of a Keras 3 model, and weights moved between the two.

Configs do not carry between Keras 3 and tf_keras, so the twin is rebuilt layer by layer
from attributes; weights move by layer name (hence deterministic layer names).
"""

import weakref

import keras

from keras_lightnets import graph
from keras_lightnets import layers as package_layers
from keras_lightnets._utils import received
from keras_lightnets.graph import is_tf_keras

# The Keras 3 model each twin came from (an attribute would be tracked by tf_keras).
_SOURCES = weakref.WeakKeyDictionary()


def tf_keras_module():
    """`tf_keras`, or an ImportError saying how to install it."""
    try:
        import tf_keras
    except ImportError as exc:  # an optional dependency
        raise ImportError(
            "keras_lightnets.optimize needs tf_keras and TF-MOT: "
            "pip install keras-lightnets[optimize]"
        ) from exc
    return tf_keras


def remember_source(twin, model):
    """Records that tf_keras `twin` stands for Keras 3 `model`."""
    _SOURCES[twin] = model
    return twin


def source_of(twin):
    """The Keras 3 model `twin` was made from, or None."""
    return _SOURCES.get(twin)


def build_tf_keras(model, **kwargs):
    """Builds a registered architecture as a tf_keras model.

    Args:
        model: a registry name (`"mobilenet_v3_small_100"`) or a factory.
        **kwargs: factory arguments, weights included.

    Returns:
        The tf_keras twin of the Keras 3 model the factory builds.
    """
    from keras_lightnets import registry

    if isinstance(model, str):
        entry = registry.get_entry(model)
        factory, kwargs = entry.factory, {**entry.kwargs, **kwargs}
    elif callable(model):
        factory = model
    else:
        raise ValueError(received("`model` must be a registry name or a model factory.",
                                  model=model))
    if kwargs.get("input_tensor") is not None:
        raise ValueError(received("The tf_keras twin makes its own input; pass `input_shape`.",
                                  input_tensor=kwargs["input_tensor"]))
    keras3 = factory(**kwargs)
    return remember_source(to_tf_keras(keras3), keras3)


def to_tf_keras(model):
    """The tf_keras twin of a Keras 3 functional (or Sequential) model.

    Nested models are inlined, shared layers stay shared, call arguments are
    kept. Supported layers: those of `TRANSLATIONS` and `keras_lightnets.layers`.

    Args:
        model: a built Keras 3 `keras.Model` (a tf_keras model is returned as it is).

    Returns:
        A `tf_keras.Model` with the same layer names and weights.

    Raises:
        ValueError: for a layer with no tf_keras translation, or colliding layer names.
    """
    if is_tf_keras(model):
        return model
    if not isinstance(model, keras.Model):
        raise ValueError(received("`model` must be a Keras 3 `keras.Model`.",
                                  model=type(model).__name__))
    tf_keras = tf_keras_module()
    functional = _graph(model)
    names = [layer.name for layer in leaf_layers(model)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(received(
            "Weights move between Keras 3 and tf_keras by layer name, and the model's "
            "nested models share layer names; rename them.", duplicates=duplicates))
    inputs = [tf_keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=graph.input_name(t))
              for t in functional.inputs]
    outputs = _Translator(tf_keras).run(functional, inputs)
    twin = tf_keras.Model(inputs if len(inputs) > 1 else inputs[0],
                          outputs if len(outputs) > 1 else outputs[0], name=model.name)
    copy_weights(model, twin)
    return remember_source(twin, model)


def to_keras3(model, like):
    """A clone of the Keras 3 model `like` with the weights of tf_keras `model`.

    Args:
        model: a tf_keras model with `like`'s layer names (a twin, a pruned model, ...).
        like: the Keras 3 model it was made from.

    Returns:
        A new Keras 3 model.
    """
    if not isinstance(like, keras.Model):
        raise ValueError(received("`like` must be the Keras 3 model the twin came from.",
                                  like=type(like).__name__))
    # Fresh inputs under the original names (clone_model would rename them).
    inputs = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=graph.input_name(t))
              for t in _graph(like).inputs]
    if isinstance(like, keras.Sequential):
        clone = keras.models.clone_model(like)
    else:
        clone = keras.models.clone_model(
            like, input_tensors=keras.tree.pack_sequence_as(like.input, inputs))
    return copy_weights(model, clone)


def leaf_layers(model):
    """Every layer of `model`, nested models inlined, TF-MOT wrappers opened."""
    for layer in model.layers:
        if getattr(layer, "layers", None) is not None and hasattr(layer, "inputs"):
            yield from leaf_layers(layer)
        else:
            while getattr(layer, "layer", None) is not None:  # prune/quantize wrappers
                layer = layer.layer
            yield layer


def copy_weights(source, target):
    """Copies weights by layer name from `source` into `target` (either Keras); returns it."""
    by_name = {layer.name: layer for layer in leaf_layers(source) if layer.weights}
    staged = []
    for layer in leaf_layers(target):
        if not layer.weights:
            continue
        other = by_name.get(layer.name)
        values = None if other is None else other.get_weights()
        shapes = [tuple(w.shape) for w in layer.weights]
        if values is None or [tuple(v.shape) for v in values] != shapes:
            raise ValueError(received(
                f"Model {source.name!r} has no weights of the shapes {shapes} for layer "
                f"{layer.name!r} of {target.name!r}; were they built from the same model?",
                layer=layer.name))
        staged.append((layer, values))
    for layer, values in staged:
        layer.set_weights(values)
    return target


def _graph(model):
    """The functional graph of `model` (a built Sequential has one inside)."""
    functional = graph.functional(model)
    if functional is None and isinstance(model, keras.Sequential):
        raise ValueError(received(
            "Build the Sequential model with an `Input` first.", model=model.name))
    if functional is None:
        raise ValueError(received(
            "Only functional and Sequential Keras 3 models can be translated (a subclassed "
            "model has no graph to walk).", model=type(model).__name__))
    return functional


class _Translator:
    """Rebuilds Keras 3 graphs with tf_keras layers, one layer at a time."""

    def __init__(self, tf_keras):
        from keras_lightnets.optimize import tf_keras_layers

        self.tfk = tf_keras
        self.twins = tf_keras_layers
        self.layers = {}  # id(Keras 3 layer) -> tf_keras layer (shared layers stay shared)

    def run(self, model, inputs, call_kwargs=None):
        """Calls `model`'s graph on tf_keras tensors; returns the flat outputs."""
        from keras import tree

        functional = _graph(model)
        tensors = {id(k): v for k, v in zip(functional.inputs, inputs, strict=True)}
        for node in graph.nodes(functional):
            if any(id(t) not in tensors for t in node.input_tensors):
                continue
            args, kwargs = graph.arguments(node, tensors)
            if call_kwargs:
                kwargs = {**call_kwargs, **kwargs}
            op = node.operation
            if isinstance(op, keras.Model):
                outer = {k: v for k, v in kwargs.items() if k == "training"}
                outs = self.run(op, tree.flatten(args), {**(call_kwargs or {}), **outer})
            else:
                outs = self.layer(op)(*args, **kwargs)
            for ref, value in zip(node.outputs, tree.flatten(outs), strict=True):
                tensors[id(ref)] = value
        return [tensors[id(t)] for t in functional.outputs]

    def layer(self, layer):
        twin = self.layers.get(id(layer))
        if twin is None:
            make = TRANSLATIONS.get(type(layer))
            if make is None and type(layer) in package_layers.CUSTOM_LAYERS.values():
                make = _package_twin
            if make is None:
                raise ValueError(received(
                    f"Layer {layer.name!r} has no tf_keras translation; the supported layers "
                    "are listed in `to_tf_keras`'s docstring.", layer=type(layer).__name__))
            twin = make(self, layer)
            twin.trainable = layer.trainable
            self.layers[id(layer)] = twin
        return twin

    def activation(self, fn, layer):
        name = getattr(fn, "__name__", None)
        if name in _SAME_ACTIVATIONS:
            return _SAME_ACTIVATIONS[name]
        raise ValueError(received(
            f"The fused activation of layer {layer.name!r} has no exact tf_keras equivalent; "
            "use a separate activation layer (HardSwish, HardSigmoid, ReLU, Activation).",
            activation=name))

    def regularizer(self, reg, layer):
        if reg is None:
            return None
        kinds = {keras.regularizers.L1L2: "L1L2", keras.regularizers.L2: "L2",
                 keras.regularizers.L1: "L1"}
        kind = kinds.get(type(reg))
        if kind is None:
            raise ValueError(received(
                f"The regularizer of layer {layer.name!r} has no tf_keras translation.",
                regularizer=type(reg).__name__))
        return getattr(self.tfk.regularizers, kind)(**reg.get_config())


# Fused activations that compute the same in both (Keras 3 name -> tf_keras name).
_SAME_ACTIVATIONS = {
    name: name for name in ("linear", "relu", "sigmoid", "softmax", "tanh", "elu", "selu",
                            "softplus", "softsign", "exponential", "swish", "gelu")
}
_SAME_ACTIVATIONS["silu"] = "swish"


def _activation_layer(t, layer):
    name = getattr(layer.activation, "__name__", None)
    named = {"hard_silu": t.twins.HardSwish, "hard_swish": t.twins.HardSwish,
             "hard_sigmoid": t.twins.HardSigmoid}
    if name in named:
        return named[name](name=layer.name)
    if name == "relu6":
        return t.tfk.layers.ReLU(6.0, name=layer.name)
    return t.tfk.layers.Activation(t.activation(layer.activation, layer), name=layer.name)


def _weighted(t, layer, kernel="kernel"):
    """Arguments every weighted layer takes: activation, bias, regularizers, name."""
    return {"activation": t.activation(layer.activation, layer), "use_bias": layer.use_bias,
            f"{kernel}_regularizer": t.regularizer(getattr(layer, f"{kernel}_regularizer"), layer),
            "bias_regularizer": t.regularizer(layer.bias_regularizer, layer), "name": layer.name}


def _conv(t, layer):
    return t.tfk.layers.Conv2D(
        layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
        data_format=layer.data_format, dilation_rate=layer.dilation_rate, groups=layer.groups,
        **_weighted(t, layer))


def _depthwise(t, layer):
    return t.tfk.layers.DepthwiseConv2D(
        layer.kernel_size, strides=layer.strides, padding=layer.padding,
        depth_multiplier=layer.depth_multiplier, data_format=layer.data_format,
        dilation_rate=layer.dilation_rate, **_weighted(t, layer, "depthwise"))


def _separable(t, layer):
    return t.tfk.layers.SeparableConv2D(
        layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
        data_format=layer.data_format, dilation_rate=layer.dilation_rate,
        depth_multiplier=layer.depth_multiplier,
        pointwise_regularizer=t.regularizer(layer.pointwise_regularizer, layer),
        **_weighted(t, layer, "depthwise"))


def _dense(t, layer):
    return t.tfk.layers.Dense(layer.units, **_weighted(t, layer))


def _same(cls_name, *attrs):
    """Builds tf_keras `cls_name` from the layer's `attrs`, passed by keyword."""
    def make(t, layer):
        return getattr(t.tfk.layers, cls_name)(
            **{a: getattr(layer, a) for a in attrs}, name=layer.name)
    return make


# Config entries of Keras 3 layers that tf_keras layers do not take.
_KERAS3_ONLY = ("dtype", "autocast", "activity_regularizer")


def _package_twin(t, layer):
    """The twin class of the same name, its config's arguments read from the layer."""
    config = {key: getattr(layer, key, value) for key, value in layer.get_config().items()
              if key not in _KERAS3_ONLY}
    return t.twins.CUSTOM_LAYERS[type(layer).__name__](**config)


L = keras.layers
_POOL = ("pool_size", "strides", "padding", "data_format")
# Keras 3 layer class -> its tf_keras twin, built from the layer's attributes.
TRANSLATIONS = {
    L.Conv2D: _conv,
    L.DepthwiseConv2D: _depthwise,
    L.SeparableConv2D: _separable,
    L.Dense: _dense,
    L.BatchNormalization: _same("BatchNormalization", "axis", "momentum", "epsilon", "center",
                                "scale"),
    L.ReLU: _same("ReLU", "max_value", "negative_slope", "threshold"),
    L.Activation: _activation_layer,
    L.Softmax: _same("Softmax", "axis"),
    **{getattr(L, kind): _same(kind) for kind in (
        "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")},
    L.Concatenate: _same("Concatenate", "axis"),
    L.ZeroPadding2D: _same("ZeroPadding2D", "padding", "data_format"),
    L.Cropping2D: _same("Cropping2D", "cropping", "data_format"),
    L.GlobalAveragePooling2D: _same("GlobalAveragePooling2D", "data_format", "keepdims"),
    L.GlobalMaxPooling2D: _same("GlobalMaxPooling2D", "data_format", "keepdims"),
    L.AveragePooling2D: _same("AveragePooling2D", *_POOL),
    L.MaxPooling2D: _same("MaxPooling2D", *_POOL),
    L.Dropout: _same("Dropout", "rate", "noise_shape", "seed"),
    L.Reshape: _same("Reshape", "target_shape"),
    L.Flatten: _same("Flatten", "data_format"),
    L.Permute: _same("Permute", "dims"),
    L.Identity: lambda t, layer: t.tfk.layers.Activation("linear", name=layer.name),
    L.Rescaling: _same("Rescaling", "scale", "offset"),
}
del L

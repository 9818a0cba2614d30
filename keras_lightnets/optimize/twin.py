"""The tf_keras twin of a Keras 3 model, and weights moved between the two.

TF-MOT only takes tf_keras (Keras 2) models, and a Keras 3 config does not
deserialize in tf_keras (nor the reverse), so the twin is rebuilt layer by
layer from each Keras 3 layer's attributes:

- `to_tf_keras(model)` walks any Keras 3 functional graph (nested functional
  and Sequential models are inlined) and translates each layer explicitly;
- `build_tf_keras(name_or_factory, ...)` builds a registered architecture
  in Keras 3 and translates it with `to_tf_keras`;
- `to_keras3(tf_keras_model, like=model)` copies weights back, by layer name,
  into a fresh clone of the Keras 3 model `like`.

Weights always move by layer name, which is why every layer of a
keras_lightnets model has a deterministic name.
"""

import weakref

import keras

from keras_lightnets import graph
from keras_lightnets import layers as package_layers
from keras_lightnets._utils import received
from keras_lightnets.graph import is_tf_keras

# The Keras 3 model each twin came from, so `strip` can go back to it without
# setting an attribute on the tf_keras model (which it would track).
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

    The Keras 3 model is built by its factory and translated by
    `to_tf_keras`, weights included.

    Args:
        model: a registry name (`"mobilenet_v3_small_100"`) or a factory
            (`keras_lightnets.MobileNetV3Small`).
        **kwargs: factory arguments. Weights (`"imagenet"` or a file) are
            loaded into the Keras 3 model and copied over by layer name.

    Returns:
        The tf_keras model; `strip` and `to_keras3` go back to the Keras 3
        model built from the same arguments.
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

    Walks the graph in order and translates each layer from its attributes
    (never through `get_config`, which does not carry between Keras 3 and
    tf_keras); nested models are inlined, shared layers stay shared, and call
    arguments (`training=False` on a frozen backbone) are kept. Weights are
    then copied by layer name, so the twin computes what `model` computes
    (to float32 rounding).

    Supported layers: InputLayer, Conv2D (with `groups`), DepthwiseConv2D,
    Dense, BatchNormalization, ReLU, Activation, Softmax, Add, Subtract,
    Multiply, Average, Maximum, Minimum, Concatenate, ZeroPadding2D,
    GlobalAverage/MaxPooling2D, Average/MaxPooling2D, Dropout, Reshape,
    Flatten, Permute, Identity, Rescaling, and every layer of
    `keras_lightnets.layers` (as its tf_keras twin of the same name).

    Args:
        model: a built Keras 3 `keras.Model`. A tf_keras model is returned
            as it is.

    Returns:
        A `tf_keras.Model` with the same layer names and weights.

    Raises:
        ValueError: for a layer with no tf_keras translation, or nested
            models whose layer names collide.
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
    """The Keras 3 model `like` with the weights of the tf_keras `model`.

    `like` is cloned (`keras.models.clone_model`) and every weighted layer of
    the clone takes the weights of the layer of `model` with its name
    (TF-MOT wrappers are looked through).

    Args:
        model: a tf_keras model with `like`'s layer names (a twin, a stripped
            pruned model, ...).
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
    """Copies weights layer by layer, by name, from `source` into `target`.

    Either model may be Keras 3 or tf_keras. Every weighted layer of
    `target` must have a same-named layer in `source` with weights of the
    same shapes.

    Returns:
        `target`.
    """
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

    # Helpers for the translation table.

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


# Fused activations that compute the same in both (name in Keras 3 -> tf_keras).
# Not here: hard_sigmoid (tf_keras has 0.2x + 0.5), gelu (the default
# approximation differs), hard_silu and relu6 (tf_keras has none).
_SAME_ACTIVATIONS = {
    name: name for name in ("linear", "relu", "sigmoid", "softmax", "tanh", "elu", "selu",
                            "softplus", "softsign", "exponential", "swish")
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


def _conv(t, layer):
    return t.tfk.layers.Conv2D(
        layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
        data_format=layer.data_format, dilation_rate=layer.dilation_rate, groups=layer.groups,
        activation=t.activation(layer.activation, layer), use_bias=layer.use_bias,
        kernel_regularizer=t.regularizer(layer.kernel_regularizer, layer),
        bias_regularizer=t.regularizer(layer.bias_regularizer, layer), name=layer.name)


def _depthwise(t, layer):
    return t.tfk.layers.DepthwiseConv2D(
        layer.kernel_size, strides=layer.strides, padding=layer.padding,
        depth_multiplier=layer.depth_multiplier, data_format=layer.data_format,
        dilation_rate=layer.dilation_rate, activation=t.activation(layer.activation, layer),
        use_bias=layer.use_bias,
        depthwise_regularizer=t.regularizer(layer.depthwise_regularizer, layer),
        bias_regularizer=t.regularizer(layer.bias_regularizer, layer), name=layer.name)


def _dense(t, layer):
    return t.tfk.layers.Dense(
        layer.units, activation=t.activation(layer.activation, layer), use_bias=layer.use_bias,
        kernel_regularizer=t.regularizer(layer.kernel_regularizer, layer),
        bias_regularizer=t.regularizer(layer.bias_regularizer, layer), name=layer.name)


def _batch_norm(t, layer):
    return t.tfk.layers.BatchNormalization(
        axis=layer.axis, momentum=layer.momentum, epsilon=layer.epsilon, center=layer.center,
        scale=layer.scale, name=layer.name)


def _pool(cls_name):
    def make(t, layer):
        return getattr(t.tfk.layers, cls_name)(
            layer.pool_size, strides=layer.strides, padding=layer.padding,
            data_format=layer.data_format, name=layer.name)
    return make


def _global_pool(cls_name):
    def make(t, layer):
        return getattr(t.tfk.layers, cls_name)(
            data_format=layer.data_format, keepdims=layer.keepdims, name=layer.name)
    return make


def _plain(cls_name):
    def make(t, layer):
        return getattr(t.tfk.layers, cls_name)(name=layer.name)
    return make


# Config entries of Keras 3 layers that tf_keras layers do not take.
_KERAS3_ONLY = ("dtype", "autocast", "activity_regularizer")


def _package_twin(t, layer):
    """The tf_keras twin of a `keras_lightnets.layers` layer: the twin class of its
    name, with its config's arguments (their values read from the layer)."""
    config = {key: getattr(layer, key, value) for key, value in layer.get_config().items()
              if key not in _KERAS3_ONLY}
    return t.twins.CUSTOM_LAYERS[type(layer).__name__](**config)


L = keras.layers
# Keras 3 layer class -> its tf_keras twin, built from the layer's attributes.
TRANSLATIONS = {
    L.Conv2D: _conv,
    L.DepthwiseConv2D: _depthwise,
    L.Dense: _dense,
    L.BatchNormalization: _batch_norm,
    L.ReLU: lambda t, layer: t.tfk.layers.ReLU(
        layer.max_value, negative_slope=layer.negative_slope, threshold=layer.threshold,
        name=layer.name),
    L.Activation: _activation_layer,
    L.Softmax: lambda t, layer: t.tfk.layers.Softmax(axis=layer.axis, name=layer.name),
    L.Add: _plain("Add"),
    L.Subtract: _plain("Subtract"),
    L.Multiply: _plain("Multiply"),
    L.Average: _plain("Average"),
    L.Maximum: _plain("Maximum"),
    L.Minimum: _plain("Minimum"),
    L.Concatenate: lambda t, layer: t.tfk.layers.Concatenate(axis=layer.axis, name=layer.name),
    L.ZeroPadding2D: lambda t, layer: t.tfk.layers.ZeroPadding2D(
        layer.padding, data_format=layer.data_format, name=layer.name),
    L.GlobalAveragePooling2D: _global_pool("GlobalAveragePooling2D"),
    L.GlobalMaxPooling2D: _global_pool("GlobalMaxPooling2D"),
    L.AveragePooling2D: _pool("AveragePooling2D"),
    L.MaxPooling2D: _pool("MaxPooling2D"),
    L.Dropout: lambda t, layer: t.tfk.layers.Dropout(
        layer.rate, noise_shape=layer.noise_shape, seed=layer.seed, name=layer.name),
    L.Reshape: lambda t, layer: t.tfk.layers.Reshape(layer.target_shape, name=layer.name),
    L.Flatten: lambda t, layer: t.tfk.layers.Flatten(data_format=layer.data_format,
                                                     name=layer.name),
    L.Permute: lambda t, layer: t.tfk.layers.Permute(layer.dims, name=layer.name),
    L.Identity: lambda t, layer: t.tfk.layers.Activation("linear", name=layer.name),
    L.Rescaling: lambda t, layer: t.tfk.layers.Rescaling(layer.scale, offset=layer.offset,
                                                         name=layer.name),
}
del L

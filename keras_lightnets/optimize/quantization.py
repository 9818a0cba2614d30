"""Quantization-aware training with TF-MOT, on the tf_keras twin of a model.

TF-MOT's 8-bit scheme plus a `QuantizeConfig` for every other layer (`quantize_config_for`),
with TF-MOT 0.8.1's gaps to the int8 kernels closed: per-channel depthwise kernels, fixed ReLU
and concat transforms (`_scheme`), shared concat scales, calibration with bias correction.
"""

import collections

import numpy as np

from keras_lightnets import export, graph
from keras_lightnets._utils import received
from keras_lightnets.optimize import pruning as prune_lib
from keras_lightnets.optimize import tf_keras_layers
from keras_lightnets.optimize import twin as twin_lib

# Activations TF-MOT's `Activation` config accepts; others get an output quantizer.
_TFMOT_ACTIVATIONS = ("relu", "swish", "gelu", "relu6", "linear", "softmax", "sigmoid", "tanh")


def _tfmot():
    return prune_lib.tfmot_module()


def quantize_scope():
    """TF-MOT's `quantize_scope` with the package's layers and configs."""
    from keras_lightnets.optimize import quantize_configs

    return _tfmot().quantization.keras.quantize_scope(
        {**tf_keras_layers.custom_objects(), **quantize_configs.QUANTIZE_CONFIGS})


def quantize_config_for(layer, follows_conv=True):
    """The `QuantizeConfig` of a tf_keras layer (None: TF-MOT's); `follows_conv`: a folded BN."""
    from keras_lightnets.optimize.quantize_configs import QUANTIZE_CONFIGS, OutputQuantizeConfig

    name = type(layer).__name__
    declared = getattr(type(layer), "quantize_config", None)  # a package layer's twin
    if declared is None and "passes_quantized_values" in graph.traits(layer):
        declared = "NoOpQuantizeConfig" if name in tf_keras_layers.CUSTOM_LAYERS else None
    if declared is not None:
        return QUANTIZE_CONFIGS[declared]()
    # By name: TF-MOT's clone turns plain Rescaling/AveragePooling2D into the package's.
    if name in ("Multiply", "Subtract", "Average", "Maximum", "Minimum", "Rescaling",
                "AveragePooling2D"):
        return OutputQuantizeConfig()
    if name == "Activation" and layer.activation.__name__ not in _TFMOT_ACTIVATIONS:
        return OutputQuantizeConfig()
    if name == "BatchNormalization" and not follows_conv:
        return OutputQuantizeConfig()
    return None


def _config_graph(model):
    """`(inbound, consumers)` layer names from the config (a layer's nodes hold other models)."""
    inbound = {c["name"]: [n[0] for node in c["inbound_nodes"] for n in node]
               for c in model.get_config()["layers"]}
    consumers = collections.defaultdict(list)
    for name, sources in inbound.items():
        for source in sources:
            consumers[source].append(name)
    return inbound, consumers


def _configs(model, tf_keras):
    """Layer name -> `QuantizeConfig` (or None) for every layer of `model`."""
    inbound, consumers = _config_graph(model)
    convs = (tf_keras.layers.Conv2D, tf_keras.layers.DepthwiseConv2D)

    def follows_conv(name):
        if len(inbound[name]) != 1:
            return False
        conv = model.get_layer(inbound[name][0])
        return (type(conv) in convs and len(consumers[conv.name]) == 1
                and conv.activation.__name__ == "linear")

    return {layer.name: quantize_config_for(layer, follows_conv(layer.name))
            for layer in model.layers}


def _scheme(preserve_sparsity):
    """TF-MOT's 8-bit scheme (prune-preserving or not) with the fixed transforms."""
    tfmot = _tfmot()  # first: the private modules below must not import it unguarded
    from tensorflow_model_optimization.python.core.quantization.keras import (
        quantize_aware_activation,
    )
    from tensorflow_model_optimization.python.core.quantization.keras import (
        utils as quantize_utils,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs as configs,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_layout_transform as layout,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_transforms as transforms,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (  # noqa: E501
        model_transformer,
    )

    from keras_lightnets.optimize import quantize_configs

    def _no_op_activation():
        return quantize_utils.serialize_activation(
            quantize_aware_activation.NoOpActivation(), use_legacy_format=True)

    class LayerReLUQuantize(transforms.LayerReLUQuantize):
        """Layer -> ReLU: no fake quantization between them, kernels still quantized."""

        def replacement(self, match_layer):
            producer = match_layer.input_layers[0]
            config = producer.layer["config"]
            if producer.layer["class_name"] == "Add":
                producer.metadata["quantize_config"] = configs.NoOpQuantizeConfig()
            elif config.get("activation") == "linear":  # as TF-MOT's Conv+BN transform
                config["activation"] = _no_op_activation()
            return match_layer

        def custom_objects(self):
            return {"NoOpQuantizeConfig": configs.NoOpQuantizeConfig,
                    "NoOpActivation": quantize_aware_activation.NoOpActivation}

    class LayerReluActivationQuantize(LayerReLUQuantize):
        def pattern(self):
            return transforms.LayerReluActivationQuantize.pattern(self)

    class ConcatFix:
        """A conv feeding a concat keeps the scheme's config (TF-MOT gives it the
        default registry's, which drops `preserve_sparsity`), its output skipped."""

        def replacement(self, match_layer):
            convs = [node for node in match_layer.input_layers
                     if node.layer["class_name"] in ("Conv2D", "DepthwiseConv2D", "Dense")
                     and node.layer["config"].get("activation") == "linear"
                     and node.metadata.get("quantize_config") is None]
            result = super().replacement(match_layer)
            for node in convs:
                if node.metadata.get("quantize_config") is not None:  # set just now
                    node.metadata["quantize_config"] = None
                    node.layer["config"]["activation"] = _no_op_activation()
            return result

        def custom_objects(self):
            return {**super().custom_objects(),
                    "NoOpActivation": quantize_aware_activation.NoOpActivation}

    fixed = {transforms.LayerReLUQuantize: LayerReLUQuantize,
             transforms.LayerReluActivationQuantize: LayerReluActivationQuantize}
    for concat in (transforms.ConcatTransform, transforms.ConcatTransform3Inputs,
                   transforms.ConcatTransform4Inputs, transforms.ConcatTransform5Inputs,
                   transforms.ConcatTransform6Inputs):
        fixed[concat] = type(concat.__name__, (ConcatFix, concat), {})

    class LayoutTransform(layout.Default8BitQuantizeLayoutTransform):
        def apply(self, model, layer_quantize_map):
            # TF-MOT 0.8.1's list, in its order, with the two ReLU transforms fixed.
            steps = [
                transforms.InputLayerQuantize, transforms.SeparableConv1DQuantize,
                transforms.SeparableConvQuantize,
                transforms.Conv2DReshapeBatchNormReLUQuantize,
                transforms.Conv2DReshapeBatchNormActivationQuantize,
                transforms.Conv2DBatchNormReLUQuantize,
                transforms.Conv2DBatchNormActivationQuantize,
                transforms.Conv2DReshapeBatchNormQuantize, transforms.Conv2DBatchNormQuantize,
                transforms.ConcatTransform6Inputs, transforms.ConcatTransform5Inputs,
                transforms.ConcatTransform4Inputs, transforms.ConcatTransform3Inputs,
                transforms.ConcatTransform, transforms.DenseBatchNormQuantize,
                transforms.DenseBatchNormReLUQuantize,
                transforms.DenseBatchNormActivationQuantize,
                transforms.LayerReLUQuantize, transforms.LayerReluActivationQuantize,
            ]
            return model_transformer.ModelTransformer(
                model, [fixed.get(step, step)() for step in steps],
                set(layer_quantize_map.keys()), layer_quantize_map,
            ).transform()

    if preserve_sparsity:
        base = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme
    else:
        base = tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme

    class Registry:
        """The scheme's registry, with per-channel depthwise kernels."""

        def __init__(self, registry):
            self._registry = registry

        def supports(self, layer):
            return self._registry.supports(layer)

        def get_quantize_config(self, layer):
            if type(layer).__name__ == "DepthwiseConv2D":
                return quantize_configs.DepthwiseQuantizeConfig()
            return self._registry.get_quantize_config(layer)

        def __getattr__(self, name):
            return getattr(self._registry, name)

    class Scheme(base):
        def get_layout_transformer(self):
            return LayoutTransform()

        def get_quantize_registry(self):
            return Registry(super().get_quantize_registry())

    return Scheme()


def quantize_aware(model, preserve_sparsity=False, representative_data=None):
    """A quantization-aware (QAT) tf_keras model for int8 deployment (TF-MOT).

    A Keras 3 model is folded and routed as `to_tflite` exports it, translated to its
    tf_keras twin and annotated. Embedded preprocessing stays in the graph. Train and
    export in the same process: shared concat ranges live in the wrappers.

    Args:
        model: a Keras 3 model (keras_lightnets model, or a backbone with your own head)
            or a tf_keras model (e.g. the one `prune` gave).
        preserve_sparsity: keep the zeros of a pruned model through QAT (TF-MOT's
            prune-preserving scheme): use on the model `strip` returned.
        representative_data: optional images in the model's input domain (array, a
            `tf.data.Dataset` or an iterable of batches or `(x, y)` pairs) to calibrate
            activation ranges on instead of TF-MOT's [-6, 6].

    Returns:
        The QAT tf_keras model: compile and `fit` it, then export it with
        `keras_lightnets.export.to_tflite(qat, path, "int8")` or `to_onnx`.
    """
    if not isinstance(preserve_sparsity, bool):
        raise ValueError(received("`preserve_sparsity` must be True or False.",
                                  preserve_sparsity=preserve_sparsity))
    tf_keras = twin_lib.tf_keras_module()
    if graph.is_tf_keras(model):
        source, base = twin_lib.source_of(model), model
    else:  # the graph the int8 file of a Keras 3 model runs
        source = model
        base = twin_lib.to_tf_keras(
            _split_separable(export.routed(export.fold_concatenated(model))))
    if any(hasattr(layer, "pruning_vars") for layer in base.layers):
        raise ValueError(received(
            "The model still has pruning wrappers; call `strip` first.",
            model=base.name))
    configs = _configs(base, tf_keras)

    qkeras = _tfmot().quantization.keras

    def annotate(layer):
        return qkeras.quantize_annotate_layer(layer, quantize_config=configs[layer.name])

    frozen = _inference_mode_batch_norms(base, tf_keras)
    try:
        with quantize_scope():
            annotated = tf_keras.models.clone_model(base, clone_function=annotate)
            qat = qkeras.quantize_apply(annotated, _scheme(preserve_sparsity))
    finally:
        for layer in frozen:
            layer.trainable = True
    if source is not None:
        twin_lib.remember_source(qat, source)
    _init_weight_ranges(qat)
    _init_gate_ranges(qat)
    _share_concat_ranges(qat)
    if representative_data is not None:
        calibrate(qat, base, representative_data)
    return qat


def _split_separable(model):
    """`model` with each SeparableConv2D as a DepthwiseConv2D `{name}_depthwise` and a 1x1
    Conv2D `{name}` (its weights): the int8 tensor between them gets a calibrated range.
    TF-MOT splits them too, but into layers of generated names that calibration misses."""
    import keras

    def substitute(node, args, kwargs):
        layer = node.operation
        if type(layer) is not keras.layers.SeparableConv2D or layer.activation.__name__ != (
                "linear") or layer.use_bias or layer.depth_multiplier != 1:
            return None
        depthwise = keras.layers.DepthwiseConv2D(
            layer.kernel_size, strides=layer.strides, padding=layer.padding,
            dilation_rate=layer.dilation_rate, use_bias=False, name=f"{layer.name}_depthwise")
        pointwise = keras.layers.Conv2D(layer.filters, 1, use_bias=False, name=layer.name)
        y = pointwise(depthwise(*args, **kwargs))
        kernels = layer.get_weights()
        depthwise.set_weights(kernels[:1])
        pointwise.set_weights(kernels[1:])
        return y

    return graph.rebuild(model, substitute) if graph.functional(model) else model


def _inference_mode_batch_norms(model, tf_keras):
    """Freezes (returns) BNs always called with `training=False`: TF-MOT drops call args."""
    changed = []
    for layer in model.layers:
        if not isinstance(layer, tf_keras.layers.BatchNormalization) or not layer.trainable:
            continue
        calls = graph.tf_keras_call_kwargs(layer)
        if calls and all(kwargs.get("training") is False for kwargs in calls):
            layer.trainable = False
            changed.append(layer)
    return changed


# Range variables of TF-MOT's activation quantizers in its wrappers.
_RANGE_PREFIXES = ("output", "post_activation")


def _range_variables(qat):
    """`{float layer name: (min_var, max_var)}` of every calibrated tensor."""
    found = {}
    for layer in qat.layers:
        if type(layer).__name__ == "QuantizeLayer":
            key, prefixes = layer.inbound_nodes[0].inbound_layers.name, (layer.name,)
        elif getattr(layer, "layer", None) is not None:
            key, prefixes = layer.layer.name, _RANGE_PREFIXES
        else:
            continue
        live = getattr(layer, "_output_quantizer_vars", None)
        if live:  # the variables the wrapper uses (shared ones included)
            found[key] = (live["min_var"], live["max_var"])
            continue
        by_prefix = {}
        for w in layer.weights:
            base = w.name.split("/")[-1].split(":")[0]
            prefix, _, end = base.rpartition("_")
            if prefix in prefixes and end in ("min", "max"):
                by_prefix.setdefault(prefix, {})[end] = w
        # A HardSwish wrapper has both: `post_activation` is its gate, in [0, 1].
        pair = next((by_prefix[p] for p in ("output", *prefixes) if p in by_prefix), None)
        if pair:
            found[key] = (pair["min"], pair["max"])
    return found


def _share_concat_ranges(qat):
    """One int8 scale per concat (TF-MOT misses inputs from multi-output layers): a quantized
    input passed unchanged lends it its ranges; inputs feeding only it lose their quantizer."""
    by_name = {layer.name: layer for layer in qat.layers}
    inbound, consumers = _config_graph(qat)

    def passes(layer):
        return "passes_quantized_values" in graph.traits(getattr(layer, "layer", layer))

    def passed_through(name):
        """The quantized layer whose values reach `name`'s output unchanged, or None."""
        if not passes(by_name[name]):
            return None
        while passes(by_name[name]) and len(inbound[name]) == 1:
            name = inbound[name][0]
        layer = by_name[name]
        return layer if getattr(layer, "_output_quantizer_vars", None) else None

    for concat in qat.layers:
        if (graph.kind(concat) != "Concatenate"
                or not getattr(concat, "_output_quantizer_vars", None)):
            continue
        sources = {id(s): s for s in map(passed_through, inbound[concat.name]) if s is not None}
        if len(sources) > 1:
            continue
        if sources:
            (shared,) = sources.values()
            concat._output_quantizer_vars = shared._output_quantizer_vars
        for name in inbound[concat.name]:
            producer = by_name[name]
            if (passed_through(name) is None and len(consumers[name]) == 1
                    and getattr(producer, "_output_quantizers", None)):
                producer._output_quantizers = []
    return qat


def _init_gate_ranges(qat):
    """HardSwish gates lie in [0, 1]: their ranges start there, data or not."""
    for layer in qat.layers:
        if isinstance(getattr(layer, "layer", None), tf_keras_layers.HardSwish):
            for w in layer.weights:
                base = w.name.split("/")[-1].split(":")[0]
                if base in ("post_activation_min", "post_activation_max"):
                    w.assign(0.0 if base.endswith("min") else 1.0)
    return qat


def _batches(data, batch_size=16):
    """Float32 image batches from an array, a tf.data.Dataset or an iterable."""
    if hasattr(data, "shape") and len(data.shape) == 4:
        x = np.asarray(data, dtype="float32")
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size]
        return
    for item in data:
        if isinstance(item, (tuple, list)):  # (x, y) pairs
            item = item[0]
        x = np.asarray(item, dtype="float32")
        yield x[None] if x.ndim == 3 else x


def _init_weight_ranges(qat):
    """Sets weight ranges now, not at the first training step: a training-mode call records."""
    for layer in qat.layers:
        for weight, quantizer, variables in getattr(layer, "_weight_vars", ()):
            quantizer(weight, True, variables)
    return qat


def _output_in(model, layer):
    """`layer`'s output in `model`'s graph (the layer may serve other models too)."""
    index = graph.tf_keras_node_index(model, layer)
    return layer.output if index is None else layer.get_output_at(index)


def _corrections(qat, float_model):
    """`{layer name: (float input, kernel error, (kind, bias or BN mean), layer)}` to correct."""
    _, consumers = _config_graph(float_model)
    found = {}
    for wrapper in qat.layers:
        inner = getattr(wrapper, "layer", None)
        if inner is None:
            continue
        for weight, quantizer, variables in getattr(wrapper, "_weight_vars", ()):
            if weight.name.split("/")[-1].split(":")[0] not in ("kernel", "depthwise_kernel"):
                continue
            delta = np.asarray(quantizer(weight, False, variables)) - np.asarray(weight)
            after = consumers[inner.name]
            bn = (qat.get_layer(f"quant_{after[0]}").layer if len(after) == 1
                  and type(float_model.get_layer(after[0])).__name__ == "BatchNormalization"
                  else None)
            if bn is not None:
                target = ("moving_mean", bn.moving_mean)
            elif getattr(inner, "use_bias", False):
                target = ("bias", inner.bias)
            else:
                continue
            layer = float_model.get_layer(inner.name)
            tensor = layer.get_input_at(graph.tf_keras_node_index(float_model, layer) or 0)
            found[inner.name] = (tensor, delta, target, inner)
    return found


def _shift(delta, mean, layer):
    """Per output channel: the mean error `sum(delta * E[input])` of a quantized kernel."""
    kind = type(layer).__name__
    if kind == "DepthwiseConv2D":  # (kh, kw, C, M): channel c * M + m reads input c
        return np.einsum("hwcm,c->cm", delta, mean).reshape(-1)
    if kind == "Dense":
        return mean @ delta
    groups = getattr(layer, "groups", 1)  # Conv2D (kh, kw, C / groups, out)
    per_group = delta.shape[-1] // groups
    width = delta.shape[-2]
    return np.concatenate([
        np.einsum("hwio,i->o", delta[..., g * per_group:(g + 1) * per_group],
                  mean[g * width:(g + 1) * width])
        for g in range(groups)])


def calibrate(qat, float_model, data):
    """Calibrates a QAT model on images, as post-training quantization does (in place).

    Activation ranges become the [min, max] (holding 0) of `float_model`'s tensors over
    `data`; each quantized kernel's mean output shift leaves its bias or next BN's mean.

    Returns:
        `qat`.
    """
    tf_keras = twin_lib.tf_keras_module()
    ranges = _range_variables(qat)
    names = [layer.name for layer in float_model.layers if layer.name in ranges]
    corrections = _corrections(qat, float_model)
    tensors = [_output_in(float_model, float_model.get_layer(n)) for n in names]
    tensors += [tensor for tensor, *_ in corrections.values()]
    probe = tf_keras.Model(float_model.inputs, tensors)
    low = {n: 0.0 for n in names}
    high = {n: 0.0 for n in names}
    sums = {n: 0.0 for n in corrections}
    seen = 0
    for x in _batches(data):
        outputs = probe(x, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for n, y in zip(names, outputs[:len(names)], strict=True):
            y = np.asarray(y)
            low[n] = min(low[n], float(y.min()))
            high[n] = max(high[n], float(y.max()))
        for n, y in zip(corrections, outputs[len(names):], strict=True):
            y = np.asarray(y, dtype="float64")
            sums[n] = sums[n] + y.reshape(len(x), -1, y.shape[-1]).mean(1).sum(0)
        seen += len(x)
    if not seen:
        raise ValueError(received("`representative_data` holds no images.",
                                  images=seen))
    shared = {}  # tensors sharing range variables get the union of their ranges
    for n in names:
        lo, hi = ranges[n]
        old_low, old_high = shared.get(id(lo), (0.0, 0.0))
        shared[id(lo)] = (min(old_low, low[n]), max(old_high, high[n]))
    for n in names:
        lo, hi = ranges[n]
        union_low, union_high = shared[id(lo)]
        lo.assign(union_low)
        hi.assign(max(union_high, union_low + 1e-6))
    for n, (_, delta, (kind, variable), layer) in corrections.items():
        shift = _shift(delta, sums[n] / seen, layer).astype("float32")
        # The quantized layer's outputs run `shift` too high: take it out.
        variable.assign(variable + shift if kind == "moving_mean" else variable - shift)
    return qat

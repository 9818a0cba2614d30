"""Quantization-aware training with TF-MOT, on the tf_keras twin of a model.

TF-MOT's default 8-bit scheme knows the standard layers; this module adds a
`QuantizeConfig` for everything else a keras_lightnets graph holds:

- `HardSigmoid`, the squeeze-excite `Multiply`, the embedded
  preprocessing (`Rescaling`) and the package's `AveragePooling2D` (a
  depthwise convolution in the int8 file): output quantized;
- `HardSwish`: its gate (in [0, 1]) and its output quantized, so that the
  int8 graph is an ADD/MUL chain that LiteRT's XNNPACK runs, not the fused
  int8 HARD_SWISH op it leaves to a kernel slower than float32;
- `ChannelSplit`, `ChannelShuffle`: nothing (they move int8 values as they
  are, so they keep their input's scale);
- a `BatchNormalization` that does not follow a convolution: output
  quantized. (The twin of a Keras 3 model has none after ShuffleNet V1's
  split grouped convolutions: it is built from a copy with those batch
  norms, and the ReLUs after them, moved into each group's convolution, as
  the TFLite export does; see `keras_lightnets.export.fold_concatenated`.)

Conv/DepthwiseConv + BN (+ ReLU) chains are left to TF-MOT's transforms: no
fake quantization between them, so the TFLite converter folds BN into the
convolution. Where TF-MOT 0.8.1 falls short of what the int8 kernels do, it
is corrected here, each time with the measured reason next to the code:

- depthwise kernels are quantized per channel (`DepthwiseKernelQuantizer`),
  not with one range per kernel;
- a Conv2D/Dense feeding a ReLU keeps its kernel quantizer, and a conv
  feeding a concat keeps the scheme's config (`preserve_sparsity` held
  nowhere else), see `_scheme`;
- a concat and its inputs share one scale (`_share_concat_ranges`), so the
  int8 file has no requantizing ops;
- kernel ranges are set from the weights at once, and `representative_data`
  calibrates activation ranges and corrects biases as post-training
  quantization does (`calibrate`).
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
    """The `QuantizeConfig` for a tf_keras layer; None leaves it to TF-MOT.

    `follows_conv`: whether the layer is a BN that TF-MOT's Conv+BN
    transforms will take care of (it directly follows a linear convolution
    that feeds nothing else).
    """
    from keras_lightnets.optimize.quantize_configs import QUANTIZE_CONFIGS, OutputQuantizeConfig

    name = type(layer).__name__
    declared = getattr(type(layer), "quantize_config", None)  # a package layer's twin
    if declared is None and "passes_quantized_values" in graph.traits(layer):
        declared = "NoOpQuantizeConfig" if name in tf_keras_layers.CUSTOM_LAYERS else None
    if declared is not None:
        return QUANTIZE_CONFIGS[declared]()
    # By name: TF-MOT's clone turns a plain Rescaling or AveragePooling2D into the
    # package's (same class name), which its registry does not know.
    if name in ("Multiply", "Subtract", "Average", "Maximum", "Minimum", "Rescaling",
                "AveragePooling2D"):
        return OutputQuantizeConfig()
    if name == "Activation" and layer.activation.__name__ not in _TFMOT_ACTIVATIONS:
        return OutputQuantizeConfig()
    if name == "BatchNormalization" and not follows_conv:
        return OutputQuantizeConfig()
    return None


def _config_graph(model):
    """`({layer name: names of the layers it takes}, {layer name: names of the
    layers that take it})`, one entry per use, read from tf_keras `model`'s own
    config, not from the layers' nodes, which other models built on the same
    layers add to."""
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

    class LayerReLUQuantize(transforms.LayerReLUQuantize):
        """Layer -> ReLU: no fake quantization between them, kernels still quantized."""

        def replacement(self, match_layer):
            producer = match_layer.input_layers[0]
            config = producer.layer["config"]
            if producer.layer["class_name"] == "Add":
                producer.metadata["quantize_config"] = configs.NoOpQuantizeConfig()
            elif config.get("activation") == "linear":
                # What TF-MOT's Conv+BN transform does to the conv: the registry's
                # config still quantizes the kernel, the no-op activation skips
                # the output.
                config["activation"] = quantize_utils.serialize_activation(
                    quantize_aware_activation.NoOpActivation(), use_legacy_format=True)
            return match_layer

        def custom_objects(self):
            return {"NoOpQuantizeConfig": configs.NoOpQuantizeConfig,
                    "NoOpActivation": quantize_aware_activation.NoOpActivation}

    class LayerReluActivationQuantize(LayerReLUQuantize):
        def pattern(self):
            return transforms.LayerReluActivationQuantize.pattern(self)

    class ConcatFix:
        """TF-MOT's concat transforms give a conv feeding a concat the *default*
        registry's config (no output quantizer), bypassing the scheme's registry:
        under `preserve_sparsity` its kernel lost its zeros (ShuffleNet V1's split
        grouped convolutions). Here such a conv keeps the scheme's config and
        skips its output through a no-op activation instead."""

        def replacement(self, match_layer):
            convs = [node for node in match_layer.input_layers
                     if node.layer["class_name"] in ("Conv2D", "DepthwiseConv2D", "Dense")
                     and node.layer["config"].get("activation") == "linear"
                     and node.metadata.get("quantize_config") is None]
            result = super().replacement(match_layer)
            for node in convs:
                if node.metadata.get("quantize_config") is not None:  # set just now
                    node.metadata["quantize_config"] = None
                    node.layer["config"]["activation"] = quantize_utils.serialize_activation(
                        quantize_aware_activation.NoOpActivation(), use_legacy_format=True)
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

    The model is translated to its tf_keras twin and every layer is annotated
    with TF-MOT's default 8-bit scheme plus the package's `QuantizeConfig`s
    (see the module docstring); BN is folded into the preceding convolution
    at conversion. A Keras 3 ShuffleNet V2 is first routed as `to_tflite`
    routes it (its shuffles resolved into the weights, channels read through
    `ChannelSlice` layers): the same function, and the graph the int8 file
    runs. Embedded preprocessing stays in the graph, so the int8
    TFLite file of a `include_preprocessing=True` model still takes raw
    pixels (`io_dtype="uint8"` takes the image bytes as they are).

    TF-MOT starts every activation range at [-6, 6] and moves it by a 0.999
    moving average, which a short fine-tune never gets away from: pass
    `representative_data` to start from the ranges measured on real images
    and from bias-corrected weights, as post-training quantization does
    (`calibrate`). Then even an untrained QAT model exports as well as
    post-training quantization, and a short fine-tune starts from there.

    Train and export in the same process: a few of the corrections (shared
    concat ranges) live in the wrappers, not in their configs, so a QAT model
    saved and reloaded still exports correctly but with requantizing ops.

    Args:
        model: a Keras 3 model (keras_lightnets model, or a backbone with
            your own head) or a tf_keras model (e.g. the one `prune` gave).
        preserve_sparsity: keep the zeros of a pruned model through QAT
            (TF-MOT's prune-preserving 8-bit scheme): use on the model `strip`
            returned after `prune`.
        representative_data: optional images in the model's input domain
            (array `(n, rows, cols, 3)`, a `tf.data.Dataset` or an iterable
            of batches or `(x, y)` pairs) to calibrate on.

    Returns:
        The QAT tf_keras model: compile and `fit` it, then export it with
        `keras_lightnets.export.to_tflite(qat, path, "int8")` or `to_onnx`.
    """
    if not isinstance(preserve_sparsity, bool):
        raise ValueError(received("`preserve_sparsity` must be True or False.",
                                  preserve_sparsity=preserve_sparsity))
    tf_keras = twin_lib.tf_keras_module()
    if graph.is_tf_keras(model):
        # Shared layers are fine: `quantize_apply` works on a copy with the weights.
        source, base = twin_lib.source_of(model), model
    else:
        # TF-MOT folds batch norm only into the convolution right before it.
        # The channel shuffles resolved into the weights, as `to_tflite` exports a Keras 3
        # model: the QAT graph is the one the int8 file runs.
        source = model
        base = twin_lib.to_tf_keras(export.routed(export.fold_concatenated(model)))
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


def _inference_mode_batch_norms(model, tf_keras):
    """Marks non-trainable the BN layers `model` always calls with `training=False`.

    A backbone called with `training=False` (the fine-tuning recipe) keeps
    that argument in the twin, but TF-MOT's transforms rebuild the graph
    without call arguments. A non-trainable tf_keras BN runs in inference
    mode whatever `training` says, so that is what the QAT model keeps.
    Returns the layers changed, to be restored on `model`.
    """
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
    """`{float layer name: (min_var, max_var)}` of every calibrated tensor.

    A wrapper `quant_{name}` quantizes the output of layer `{name}` (range
    variables `output_*`, or `post_activation_*` for a layer's fused
    activation); a `QuantizeLayer` (`{its name}_*`) quantizes the model input.
    """
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
    """One int8 scale per concat: its inputs take its range instead of their own.

    TF-MOT's concat transform does that, but not when an input comes from a
    multi-output layer (ShuffleNet V2's ChannelSplit). Otherwise every such
    concat (and the split before it) gets requantizing QUANTIZE ops, which
    XNNPACK leaves out: ShuffleNet V2 QAT int8 ran at 0.8x float32 against
    0.4x for post-training quantization, which shares scales along concats.

    Here, for each concat: an input that comes, through layers that pass
    int8 values unchanged (split, shuffle, padding, max pooling), from
    another quantized tensor lends the concat its range variables (shared:
    the moving averages then cover both); other inputs that feed only this
    concat lose their own output quantizer and take the concat's scale.
    """
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
    """Sets every weight quantizer's range from its weights (in place).

    TF-MOT starts them at [-6, 6] and sets them on the first training step
    only, so a QAT model that has not trained yet would run (and export) with
    kernels quantized on that range. A last-value quantizer called in
    training mode records the current weights' range, nothing else.
    """
    for layer in qat.layers:
        for weight, quantizer, variables in getattr(layer, "_weight_vars", ()):
            quantizer(weight, True, variables)
    return qat


def _output_in(model, layer):
    """`layer`'s output in `model`'s graph (the layer may serve other models too)."""
    index = graph.tf_keras_node_index(model, layer)
    return layer.output if index is None else layer.get_output_at(index)


def _corrections(qat, float_model):
    """`{layer name: (float input tensor, delta_kernel, target)}` for bias correction.

    For every layer whose kernel the QAT model quantizes: the quantization
    error of its kernel, and where the matching bias goes: the layer's own
    bias, or the moving mean of the BatchNormalization right after it.
    """
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

    - Each activation range becomes [min, max] (always holding 0) of the
      matching tensor of `float_model` (the float tf_keras model `qat` was
      made from) over `data`. TF-MOT's moving averages carry on from there
      during training.
    - Bias correction: rounding a kernel to int8 shifts the mean of its
      outputs by `sum(delta_kernel * E[input])` per channel; that shift is
      taken out of the layer's bias (or of the moving mean of the batch norm
      that follows, which folds into that bias), as TFLite's post-training
      quantizer does. Without it a short fine-tune ends a few points below
      post-training quantization.

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

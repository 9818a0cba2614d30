"""Moving a state dict (PyTorch-style tensors) onto a Keras model through its source.

The source's name map gives each weighted Keras layer's tensor-name prefix;
the layer type says how each tensor is laid out.
"""

import re

import numpy as np

from keras_lightnets.weights import sources


def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch tensor, when the caller has torch
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype="float32")


class _StateDict:
    def __init__(self, state_dict, key_prefixes=()):
        self.tensors = {}
        for key, value in state_dict.items():
            if key.endswith("num_batches_tracked"):
                continue
            for prefix in key_prefixes:
                key = key.removeprefix(prefix)
            self.tensors[key] = value
        self.used = set()

    def take(self, key, shape, layer):
        if key not in self.tensors:
            raise ValueError(
                f"The state dict has no tensor {key!r} for Keras layer {layer.name!r}; "
                f"is it the state dict of the same variant? Received: state_dict "
                f"with {len(self.tensors)} tensors"
            )
        value = _to_numpy(self.tensors[key])
        if value.shape != tuple(shape):
            raise ValueError(
                f"Tensor {key!r} has shape {value.shape} but Keras layer {layer.name!r} needs "
                f"{tuple(shape)} after conversion; is it the state dict of the same variant? "
                f"Received: {key}.shape={value.shape}"
            )
        self.used.add(key)
        return value


# A part of a split grouped convolution (`layers.group_conv`): `{name}_g{i}`.
_GROUP_PART = re.compile(r".*_g(\d+)")


def _conv_kernel(sd, prefix, layer, kernel_shape, dense_layout):
    # PyTorch (out, in / groups, kh, kw) -> Keras (kh, kw, in / groups, out).
    kh, kw, cin, cout = kernel_shape
    key = f"{prefix}.weight"
    if (kh, kw) == (1, 1) and len(getattr(sd.tensors.get(key), "shape", ())) == 2:
        # A linear layer on the pooled map, which the Keras model runs as a 1x1 conv.
        return _dense_kernel(sd, prefix, layer, (cin, cout), dense_layout).reshape(kernel_shape)
    part = _GROUP_PART.fullmatch(layer.name)
    if part and key in sd.tensors and np.shape(sd.tensors[key])[0] != cout:
        # Part i of a grouped conv computes output channels [i * cout, (i + 1) * cout).
        parts = np.shape(sd.tensors[key])[0] // cout
        value = sd.take(key, (parts * cout, cin, kh, kw), layer)
        index = int(part.group(1))
        if index >= parts:
            raise ValueError(
                f"Tensor {key!r} holds {parts} groups of {cout} output channels, but Keras "
                f"layer {layer.name!r} is part {index}; is it the state dict of the same "
                f"variant? Received: {key}.shape={value.shape}")
        value = value[index * cout:(index + 1) * cout]
    else:
        value = sd.take(key, (cout, cin, kh, kw), layer)
    return value.transpose(2, 3, 1, 0)


def _dense_kernel(sd, prefix, layer, kernel_shape, dense_layout):
    cin, cout = kernel_shape
    if dense_layout == "in_out":
        return sd.take(f"{prefix}.weight", (cin, cout), layer)
    return sd.take(f"{prefix}.weight", (cout, cin), layer).T


def _depthwise_kernel(sd, prefix, layer, kernel_shape):
    # PyTorch (in * m, 1, kh, kw) -> Keras (kh, kw, in, m); output channel c*m + j.
    kh, kw, cin, mult = kernel_shape
    value = sd.take(f"{prefix}.weight", (cin * mult, 1, kh, kw), layer)
    return value.reshape(cin, mult, kh, kw).transpose(2, 3, 0, 1)


def _layer_values(sd, layer, prefix, source):
    kind = type(layer).__name__
    shapes = {w.path.split("/")[-1]: tuple(w.shape) for w in layer.weights}
    values = {}
    if kind == "Conv2D":
        values["kernel"] = _conv_kernel(sd, prefix, layer, shapes["kernel"], source.dense_layout)
    elif kind == "DepthwiseConv2D":
        key = "kernel" if "kernel" in shapes else "depthwise_kernel"
        values[key] = _depthwise_kernel(sd, prefix, layer, shapes[key])
    elif kind == "Dense":
        values["kernel"] = _dense_kernel(sd, prefix, layer, shapes["kernel"], source.dense_layout)
    elif kind == "BatchNormalization":
        for keras_name, key in zip(("gamma", "beta", "moving_mean", "moving_variance"),
                                   source.bn_keys, strict=True):
            if keras_name in shapes:
                values[keras_name] = sd.take(f"{prefix}.{key}", shapes[keras_name], layer)
    else:
        raise ValueError(
            f"No {source.name} conversion for layer {layer.name!r} of type {kind}. "
            f"Received: layer={layer.name!r}"
        )
    if kind != "BatchNormalization" and "bias" in shapes:
        values["bias"] = sd.take(f"{prefix}.bias", shapes["bias"], layer)
    return [values[w.path.split("/")[-1]] for w in layer.weights]


def load_state(model, state_dict, source, family, flavour=None):
    """Loads `source`'s state dict of `family` into the Keras model of the same variant.

    `flavour`: the one the weights were trained in (None: the source's of `family`).

    Returns the sorted state-dict keys used (after `source.key_prefixes` are
    stripped); unused tensors (a classifier the model lacks) are allowed.
    Nothing is assigned until every tensor converted cleanly. Weights trained
    on BGR input (the flavour's `normalization.order`) get the first
    convolution's input channels reversed: the model takes RGB like every other.
    The flavour's `folds` scale the kernels and biases of the layers they name.

    Raises:
        ValueError: naming the first layer the name map does not know, or the
            first missing or mis-shaped tensor.
    """
    sd = _StateDict(state_dict, source.key_prefixes)
    staged = [(layer, _layer_values(sd, layer, sources.state_prefix(source, family, layer.name),
                                    source))
              for layer in sources.weighted_layers(model)]
    flavour = flavour or source.flavours[family]
    if flavour.normalization.order == "BGR":
        stem = next(values for layer, values in staged if type(layer).__name__ == "Conv2D")
        stem[0] = stem[0][:, :, ::-1, :]
    for pattern, kernel_factor, bias_factor in flavour.folds:
        for layer, values in staged:
            if re.fullmatch(pattern, layer.name):
                factors = {"kernel": kernel_factor, "bias": bias_factor}
                for i, w in enumerate(layer.weights):
                    values[i] = values[i] * np.float32(factors[w.path.split("/")[-1]])
    for layer, values in staged:
        layer.set_weights(values)
    return sorted(sd.used)


def load_torch_state_dict(model, state_dict, skip_classifier=None):
    """Loads a torchvision state dict into the Keras model of the same variant.

    Args:
        model: a keras_lightnets model of a torchvision-sourced family
            (ShuffleNetV2, SqueezeNet, MnasNet), with or without its top; the
            family is the one whose name map places every weighted layer.
        state_dict: mapping of torchvision tensor names to arrays (NumPy
            arrays or torch tensors), e.g. `torchvision_model.state_dict()`.
        skip_classifier: ignored tensors of the classifier are always
            allowed; kept for symmetry with the loaders.

    Returns:
        The list of state-dict keys that were used.

    Raises:
        ValueError: naming the first unmapped layer or missing or mis-shaped
            tensor.
    """
    del skip_classifier
    source = sources.TORCHVISION
    return load_state(model, state_dict, source, sources.family_of(model, source))

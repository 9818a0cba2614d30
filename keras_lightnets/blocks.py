"""Block builders shared by the model families.

Each builder takes the layer namespace `L` first (Keras 3 by default, tf_keras
for the TF-MOT twin) and a `prefix` from which every layer name is derived.
Name suffixes come from a `names` mapping so that one builder serves families
whose published weights use different layer names.
"""

from keras_lightnets.layers import default_namespace


def make_divisible(value, divisor=8, min_value=None):
    """Rounds a channel count to a multiple of `divisor`.

    Rounds to the nearest multiple, but never below `min_value` (default
    `divisor`) and never more than 10% below `value`, as in the MobileNet
    reference code.
    """
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def correct_pad(input_size, kernel_size):
    """Zero padding that makes a stride-2 'valid' conv match TF 'same'.

    Same as keras.applications' `correct_pad`, from the static spatial size
    (`(rows, cols)`, entries may be None).
    """
    rows = input_size[0]
    adjust = (1, 1) if rows is None else (1 - input_size[0] % 2, 1 - input_size[1] % 2)
    half = kernel_size // 2
    return ((half - adjust[0], half), (half - adjust[1], half))


def activation(L, kind, name=None):
    """The layer for activation `kind`; None gives None.

    Kinds: "relu", "relu6", "hard_swish", "hard_sigmoid", "swish", "sigmoid".
    """
    if kind is None:
        return None
    if kind == "relu":
        return L.ReLU(name=name)
    if kind == "relu6":
        return L.ReLU(6.0, name=name)
    if kind == "hard_swish":
        return L.HardSwish(name=name)
    if kind == "hard_sigmoid":
        return L.HardSigmoid(name=name)
    if kind in ("swish", "sigmoid"):
        return L.Activation(kind, name=name)
    raise ValueError(f"Unknown activation. Received: activation={kind}")


def apply_activation(L, x, kind, name):
    layer = activation(L, kind, name)
    return x if layer is None else layer(x)


def pad_for_stride(L, x, kernel_size, stride, mode, name):
    """Explicit padding before a strided 'valid' conv; returns (x, padding).

    Modes: "keras" (keras.applications' `correct_pad`), "bottom_right"
    (MobileNet V1: one row and column after), "symmetric" (PyTorch:
    `kernel_size // 2` on every side, used for every stride).
    """
    if mode == "symmetric":
        half = kernel_size // 2
        if half == 0:
            return x, "valid"
        return L.ZeroPadding2D(((half, half), (half, half)), name=name)(x), "valid"
    if stride == 1:
        return x, "same"
    if mode == "bottom_right":
        pad = ((0, 1), (0, 1))
    else:
        pad = correct_pad(x.shape[1:3], kernel_size)
    return L.ZeroPadding2D(pad, name=name)(x), "valid"


def conv_bn_act(
    x,
    filters,
    kernel_size,
    strides=1,
    act="relu",
    prefix="conv",
    names=None,
    bn=None,
    use_bias=False,
    pad_mode="same",
    L=None,
):
    """Conv2D, BatchNormalization, activation.

    `names` maps "conv", "bn", "act" and "pad" to full layer names (default
    `{prefix}`, `{prefix}_bn`, `{prefix}_{act}`, `{prefix}_pad`). `pad_mode`
    "same" uses TF padding; other modes are those of `pad_for_stride`.
    """
    L = L or default_namespace()
    names = {
        "conv": prefix, "bn": f"{prefix}_bn", "act": f"{prefix}_{act}",
        "pad": f"{prefix}_pad", **(names or {}),
    }
    padding = "same"
    if pad_mode != "same":
        x, padding = pad_for_stride(L, x, kernel_size, strides, pad_mode, names["pad"])
    x = L.Conv2D(
        filters, kernel_size, strides=strides, padding=padding,
        use_bias=use_bias, name=names["conv"],
    )(x)
    x = L.BatchNormalization(name=names["bn"], **(bn or {}))(x)
    return apply_activation(L, x, act, names["act"])


def depthwise_separable(
    x,
    filters,
    strides=1,
    depth_multiplier=1,
    kernel_size=3,
    act="relu6",
    block_id=1,
    names=None,
    bn=None,
    pad_mode="bottom_right",
    L=None,
):
    """Depthwise 3x3 + BN + act, pointwise 1x1 + BN + act (MobileNet V1).

    Default names follow keras.applications: `conv_pad_{i}`, `conv_dw_{i}`,
    `conv_dw_{i}_bn`, `conv_dw_{i}_relu`, `conv_pw_{i}`, `conv_pw_{i}_bn`,
    `conv_pw_{i}_relu`.
    """
    L = L or default_namespace()
    n = {
        "pad": "conv_pad_{}", "dw": "conv_dw_{}", "dw_bn": "conv_dw_{}_bn",
        "dw_act": "conv_dw_{}_relu", "pw": "conv_pw_{}", "pw_bn": "conv_pw_{}_bn",
        "pw_act": "conv_pw_{}_relu", **(names or {}),
    }
    n = {k: v.format(block_id) for k, v in n.items()}
    x, padding = pad_for_stride(L, x, kernel_size, strides, pad_mode, n["pad"])
    x = L.DepthwiseConv2D(
        kernel_size, strides=strides, padding=padding,
        depth_multiplier=depth_multiplier, use_bias=False, name=n["dw"],
    )(x)
    x = L.BatchNormalization(name=n["dw_bn"], **(bn or {}))(x)
    x = apply_activation(L, x, act, n["dw_act"])
    x = L.Conv2D(filters, 1, padding="same", use_bias=False, name=n["pw"])(x)
    x = L.BatchNormalization(name=n["pw_bn"], **(bn or {}))(x)
    return apply_activation(L, x, act, n["pw_act"])


def squeeze_excite(
    x, se_filters, gate="hard_sigmoid", act="relu", prefix="se_", names=None, L=None
):
    """Squeeze-and-excitation: pool, 1x1 reduce + act, 1x1 expand + gate, scale.

    Default names follow keras.applications' MobileNetV3
    (`{prefix}squeeze_excite_avg_pool`, `..._conv`, `..._relu`, `..._conv_1`,
    `..._mul`).
    """
    L = L or default_namespace()
    n = {
        "pool": "squeeze_excite_avg_pool", "reduce": "squeeze_excite_conv",
        "act": "squeeze_excite_relu", "expand": "squeeze_excite_conv_1",
        "gate": "squeeze_excite_gate", "mul": "squeeze_excite_mul", **(names or {}),
    }
    n = {k: prefix + v for k, v in n.items()}
    filters = x.shape[-1]
    s = L.GlobalAveragePooling2D(keepdims=True, name=n["pool"])(x)
    s = L.Conv2D(se_filters, 1, padding="same", name=n["reduce"])(s)
    s = apply_activation(L, s, act, n["act"])
    s = L.Conv2D(filters, 1, padding="same", name=n["expand"])(s)
    s = apply_activation(L, s, gate, n["gate"])
    return L.Multiply(name=n["mul"])([x, s])


# Layer-name suffixes of the inverted residual, per published weight layout.
IR_NAMES_KERAS_V2 = {
    "expand": "expand", "expand_bn": "expand_BN", "expand_act": "expand_relu",
    "pad": "pad", "dw": "depthwise", "dw_bn": "depthwise_BN", "dw_act": "depthwise_relu",
    "project": "project", "project_bn": "project_BN", "add": "add",
}
IR_NAMES_KERAS_V3 = {
    "expand": "expand", "expand_bn": "expand_bn", "expand_act": "expand_{act}",
    "pad": "depthwise_pad", "dw": "depthwise", "dw_bn": "depthwise_bn",
    "dw_act": "depthwise_{act}", "project": "project", "project_bn": "project_bn",
    "add": "add",
}


def inverted_residual(
    x,
    filters,
    expand_filters,
    kernel_size=3,
    strides=1,
    act="relu6",
    se_filters=None,
    se=None,
    prefix="block_",
    names=IR_NAMES_KERAS_V2,
    bn=None,
    pad_mode="keras",
    residual=True,
    L=None,
):
    """Inverted residual (MobileNetV2/V3, MnasNet).

    1x1 expansion (skipped when `expand_filters` is None), depthwise conv,
    optional squeeze-and-excitation, linear 1x1 projection and, when shapes
    allow and `residual` is set, an identity shortcut.

    Args:
        filters: output channels.
        expand_filters: channels after expansion, or None for no expansion.
        se_filters: channels of the SE bottleneck, or None for no SE.
        se: keyword arguments for `squeeze_excite` (gate, act, names).
        names: layer-name suffixes after `prefix` (`{act}` is replaced by the
            activation kind).
        pad_mode: padding of the depthwise conv, see `pad_for_stride`.
    """
    L = L or default_namespace()
    n = {k: prefix + v.format(act=act) for k, v in names.items()}
    shortcut = x
    in_filters = x.shape[-1]
    if expand_filters is not None:
        x = L.Conv2D(expand_filters, 1, padding="same", use_bias=False, name=n["expand"])(x)
        x = L.BatchNormalization(name=n["expand_bn"], **(bn or {}))(x)
        x = apply_activation(L, x, act, n["expand_act"])
    x, padding = pad_for_stride(L, x, kernel_size, strides, pad_mode, n["pad"])
    x = L.DepthwiseConv2D(
        kernel_size, strides=strides, padding=padding, use_bias=False, name=n["dw"]
    )(x)
    x = L.BatchNormalization(name=n["dw_bn"], **(bn or {}))(x)
    x = apply_activation(L, x, act, n["dw_act"])
    if se_filters:
        x = squeeze_excite(x, se_filters, prefix=prefix, L=L, **(se or {}))
    x = L.Conv2D(filters, 1, padding="same", use_bias=False, name=n["project"])(x)
    x = L.BatchNormalization(name=n["project_bn"], **(bn or {}))(x)
    if residual and strides == 1 and in_filters == filters:
        x = L.Add(name=n["add"])([shortcut, x])
    return x


def max_pool_ceil(x, pool_size=3, strides=2, name="pool", L=None):
    """Max pooling with PyTorch's `ceil_mode=True` and no padding.

    PyTorch keeps a last, partial window when the input does not tile
    exactly: `ceil((size - pool_size) / strides) + 1` outputs. Here that is
    zero padding after the map (bottom/right) and a 'valid' pool: the
    `(pool_size - size) % strides` missing rows/cols when the size is static
    (no padding layer when none are missing), `strides - 1` when it is
    dynamic (a surplus row is never read by a window). PyTorch ignores the
    missing cells; zero padding is the same only on non-negative maps, so
    callers pool post-ReLU activations (as SqueezeNet does).

    Layers: `{name}_pad` (when needed) and `{name}`.
    """
    L = L or default_namespace()
    if pool_size < strides:
        raise ValueError(
            f"Ceil-mode pooling needs `pool_size >= strides`. Received: pool_size={pool_size}"
        )
    pads = [strides - 1 if size is None else (pool_size - size) % strides
            for size in x.shape[1:3]]
    if any(pads):
        x = L.ZeroPadding2D(((0, pads[0]), (0, pads[1])), name=f"{name}_pad")(x)
    return L.MaxPooling2D(pool_size, strides=strides, padding="valid", name=name)(x)


def fire(
    x,
    squeeze_filters,
    expand1x1_filters,
    expand3x3_filters,
    bypass=False,
    prefix="fire",
    names=None,
    L=None,
):
    """Fire module (SqueezeNet): 1x1 squeeze + ReLU, then 1x1 and 3x3 expand
    convs + ReLU, concatenated (1x1 channels first).

    With `bypass`, the paper's simple bypass: the input is added to the
    output, which needs equal input and output channels.

    `names` maps "squeeze", "squeeze_act", "expand1x1", "expand1x1_act",
    "expand3x3", "expand3x3_act", "concat" and "bypass" to suffixes after
    `{prefix}_`; the defaults are torchvision's `Fire` attribute names
    (`{prefix}_squeeze`, `{prefix}_squeeze_activation`, ...).
    """
    L = L or default_namespace()
    n = {
        "squeeze": "squeeze", "squeeze_act": "squeeze_activation",
        "expand1x1": "expand1x1", "expand1x1_act": "expand1x1_activation",
        "expand3x3": "expand3x3", "expand3x3_act": "expand3x3_activation",
        "concat": "concat", "bypass": "bypass", **(names or {}),
    }
    n = {k: f"{prefix}_{v}" for k, v in n.items()}
    in_filters = x.shape[-1]
    out_filters = expand1x1_filters + expand3x3_filters
    if bypass and in_filters != out_filters:
        raise ValueError(
            f"The simple bypass needs equal input and output channels ({in_filters} in, "
            f"{out_filters} out). Received: bypass={bypass}"
        )
    s = L.Conv2D(squeeze_filters, 1, name=n["squeeze"])(x)
    s = L.ReLU(name=n["squeeze_act"])(s)
    e1 = L.Conv2D(expand1x1_filters, 1, name=n["expand1x1"])(s)
    e1 = L.ReLU(name=n["expand1x1_act"])(e1)
    # "same" on a stride-1 3x3 is PyTorch's padding=1.
    e3 = L.Conv2D(expand3x3_filters, 3, padding="same", name=n["expand3x3"])(s)
    e3 = L.ReLU(name=n["expand3x3_act"])(e3)
    out = L.Concatenate(axis=-1, name=n["concat"])([e1, e3])
    if bypass:
        out = L.Add(name=n["bypass"])([x, out])
    return out

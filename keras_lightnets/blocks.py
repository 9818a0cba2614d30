"""Block builders shared by the model families; layer names come from a `prefix` and a
`names` mapping of suffixes, so one builder serves families with different weight names."""

from keras import layers

from keras_lightnets import layers as kl
from keras_lightnets.layers import group_conv


def make_divisible(value, divisor=8, min_value=None):
    """`value` to the nearest multiple of `divisor`, at least `min_value` (default
    `divisor`) and not more than 10% below `value` (the MobileNet reference code)."""
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def correct_pad(input_size, kernel_size):
    """keras.applications' `correct_pad` from the static `(rows, cols)` (may be None)."""
    rows = input_size[0]
    adjust = (1, 1) if rows is None else (1 - input_size[0] % 2, 1 - input_size[1] % 2)
    half = kernel_size // 2
    return ((half - adjust[0], half), (half - adjust[1], half))


def activation(kind, name=None):
    """The layer for `kind` (relu, relu6, hard_swish, hard_sigmoid, swish, sigmoid, gelu) or
    None; gelu is the exact (erf) one, PyTorch's default."""
    if kind is None:
        return None
    if kind == "relu":
        return layers.ReLU(name=name)
    if kind == "relu6":
        return layers.ReLU(6.0, name=name)
    if kind == "hard_swish":
        return kl.HardSwish(name=name)
    if kind == "hard_sigmoid":
        return kl.HardSigmoid(name=name)
    if kind in ("swish", "sigmoid", "gelu"):
        return layers.Activation(kind, name=name)
    raise ValueError(f"Unknown activation. Received: activation={kind}")


def apply_activation(x, kind, name):
    layer = activation(kind, name)
    return x if layer is None else layer(x)


def _bn_act(x, bn_name, bn, act=None, act_name=None):
    x = layers.BatchNormalization(name=bn_name, **(bn or {}))(x)
    return apply_activation(x, act, act_name)


def _pointwise(x, filters, name, bn_name, bn, act=None, act_name=None, padding="same"):
    """1x1 Conv2D without bias, batch norm, activation."""
    x = layers.Conv2D(filters, 1, padding=padding, use_bias=False, name=name)(x)
    return _bn_act(x, bn_name, bn, act, act_name)


def pad_for_stride(x, kernel_size, stride, mode, name):
    """Explicit padding before a strided 'valid' conv; returns (x, padding). Modes: "keras"
    (`correct_pad`), "bottom_right" (MobileNet V1), "symmetric" (PyTorch's, any stride),
    "same" (none: the conv's own TF 'same', exact at any input size)."""
    if mode == "symmetric":
        half = kernel_size // 2
        if half == 0:
            return x, "valid"
        return layers.ZeroPadding2D(((half, half), (half, half)), name=name)(x), "valid"
    if stride == 1 or mode == "same":
        return x, "same"
    if mode == "bottom_right":
        pad = ((0, 1), (0, 1))
    else:
        pad = correct_pad(x.shape[1:3], kernel_size)
    return layers.ZeroPadding2D(pad, name=name)(x), "valid"


def conv_bn_act(x, filters, kernel_size, strides=1, act="relu", prefix="conv", names=None, bn=None,
                use_bias=False, pad_mode="same"):
    """Conv2D, BatchNormalization, activation.

    `names` maps "conv", "bn", "act", "pad" to layer names (default `{prefix}`, `{prefix}_bn`,
    `{prefix}_{act}`, `{prefix}_pad`); `pad_mode` is "same" or one of `pad_for_stride`'s.
    """
    names = {"conv": prefix, "bn": f"{prefix}_bn", "act": f"{prefix}_{act}",
             "pad": f"{prefix}_pad", **(names or {})}
    padding = "same"
    if pad_mode != "same":
        x, padding = pad_for_stride(x, kernel_size, strides, pad_mode, names["pad"])
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                      use_bias=use_bias, name=names["conv"])(x)
    return _bn_act(x, names["bn"], bn, act, names["act"])


def depthwise_separable(x, filters, strides=1, depth_multiplier=1, kernel_size=3, act="relu6",
                        block_id=1, names=None, bn=None, pad_mode="bottom_right"):
    """Depthwise 3x3 + BN + act, pointwise 1x1 + BN + act (MobileNet V1).

    Default names follow keras.applications: `conv_pad_{i}`, `conv_dw_{i}`, `conv_dw_{i}_bn`,
    `conv_dw_{i}_relu`, `conv_pw_{i}`, `conv_pw_{i}_bn`, `conv_pw_{i}_relu`.
    """
    n = {
        "pad": "conv_pad_{}", "dw": "conv_dw_{}", "dw_bn": "conv_dw_{}_bn",
        "dw_act": "conv_dw_{}_relu", "pw": "conv_pw_{}", "pw_bn": "conv_pw_{}_bn",
        "pw_act": "conv_pw_{}_relu", **(names or {}),
    }
    n = {k: v.format(block_id) for k, v in n.items()}
    x, padding = pad_for_stride(x, kernel_size, strides, pad_mode, n["pad"])
    x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding=padding,
                               depth_multiplier=depth_multiplier, use_bias=False, name=n["dw"])(x)
    x = _bn_act(x, n["dw_bn"], bn, act, n["dw_act"])
    return _pointwise(x, filters, n["pw"], n["pw_bn"], bn, act, n["pw_act"])


def squeeze_excite(x, se_filters, gate="hard_sigmoid", act="relu", prefix="se_", names=None):
    """Squeeze-and-excitation: pool, 1x1 reduce + act, 1x1 expand + gate, scale.

    Default names follow keras.applications' MobileNetV3 (`{prefix}squeeze_excite_avg_pool`,
    `..._conv`, `..._relu`, `..._conv_1`, `..._mul`).
    """
    n = {
        "pool": "squeeze_excite_avg_pool", "reduce": "squeeze_excite_conv",
        "act": "squeeze_excite_relu", "expand": "squeeze_excite_conv_1",
        "gate": "squeeze_excite_gate", "mul": "squeeze_excite_mul", **(names or {}),
    }
    n = {k: prefix + v for k, v in n.items()}
    filters = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=n["pool"])(x)
    s = layers.Conv2D(se_filters, 1, padding="same", name=n["reduce"])(s)
    s = apply_activation(s, act, n["act"])
    s = layers.Conv2D(filters, 1, padding="same", name=n["expand"])(s)
    s = apply_activation(s, gate, n["gate"])
    return layers.Multiply(name=n["mul"])([x, s])


# Layer-name suffixes of the inverted residual in keras.applications' MobileNetV2.
IR_NAMES_KERAS_V2 = {
    "expand": "expand", "expand_bn": "expand_BN", "expand_act": "expand_relu",
    "pad": "pad", "dw": "depthwise", "dw_bn": "depthwise_BN", "dw_act": "depthwise_relu",
    "project": "project", "project_bn": "project_BN", "add": "add",
}


def inverted_residual(x, filters, expand_filters, kernel_size=3, strides=1, act="relu6",
                      se_filters=None, se=None, prefix="block_", names=IR_NAMES_KERAS_V2, bn=None,
                      pad_mode="keras", residual=True):
    """Inverted residual (MobileNetV2/V3, MnasNet): 1x1 expansion, depthwise conv, optional
    squeeze-and-excitation, linear 1x1 projection, identity shortcut if `residual` and shapes allow.

    Args:
        filters: output channels.
        expand_filters: channels after expansion, or None for no expansion.
        se_filters: channels of the SE bottleneck, or None for no SE.
        se: keyword arguments for `squeeze_excite` (gate, act, names).
        names: layer-name suffixes after `prefix` (`{act}`: the activation kind).
        pad_mode: padding of the depthwise conv, see `pad_for_stride`.
    """
    n = {k: prefix + v.format(act=act) for k, v in names.items()}
    shortcut = x
    in_filters = x.shape[-1]
    if expand_filters is not None:
        x = _pointwise(x, expand_filters, n["expand"], n["expand_bn"], bn, act, n["expand_act"])
    x, padding = pad_for_stride(x, kernel_size, strides, pad_mode, n["pad"])
    x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding=padding, use_bias=False,
                               name=n["dw"])(x)
    x = _bn_act(x, n["dw_bn"], bn, act, n["dw_act"])
    if se_filters:
        x = squeeze_excite(x, se_filters, prefix=prefix, **(se or {}))
    x = _pointwise(x, filters, n["project"], n["project_bn"], bn)
    if residual and strides == 1 and in_filters == filters:
        x = layers.Add(name=n["add"])([shortcut, x])
    return x


def max_pool_ceil(x, pool_size=3, strides=2, name="pool"):
    """Max pooling with PyTorch's `ceil_mode=True` on a non-negative (post-ReLU) map:
    zero padding after the map (`{name}_pad`, if needed), then a 'valid' pool `{name}`."""
    if pool_size < strides:
        raise ValueError(f"Ceil-mode pooling needs `pool_size >= strides`. "
                         f"Received: pool_size={pool_size}")
    pads = [strides - 1 if size is None else (pool_size - size) % strides
            for size in x.shape[1:3]]
    if any(pads):
        x = layers.ZeroPadding2D(((0, pads[0]), (0, pads[1])), name=f"{name}_pad")(x)
    return layers.MaxPooling2D(pool_size, strides=strides, padding="valid", name=name)(x)


def fire(x, squeeze_filters, expand1x1_filters, expand3x3_filters, bypass=False, prefix="fire",
         names=None):
    """Fire module (SqueezeNet): 1x1 squeeze + ReLU, 1x1 and 3x3 expand + ReLU concatenated,
    plus the input with `bypass`. `names`: suffixes after `{prefix}_` (torchvision's)."""
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
        raise ValueError(f"The simple bypass needs equal input and output channels "
                         f"({in_filters} in, {out_filters} out). Received: bypass={bypass}")
    s = layers.Conv2D(squeeze_filters, 1, name=n["squeeze"])(x)
    s = layers.ReLU(name=n["squeeze_act"])(s)
    e1 = layers.Conv2D(expand1x1_filters, 1, name=n["expand1x1"])(s)
    e1 = layers.ReLU(name=n["expand1x1_act"])(e1)
    # "same" on a stride-1 3x3 is PyTorch's padding=1.
    e3 = layers.Conv2D(expand3x3_filters, 3, padding="same", name=n["expand3x3"])(s)
    e3 = layers.ReLU(name=n["expand3x3_act"])(e3)
    out = layers.Concatenate(axis=-1, name=n["concat"])([e1, e3])
    if bypass:
        out = layers.Add(name=n["bypass"])([x, out])
    return out


def torch_pool(x, kind="max", pool_size=3, strides=2, name="pool", nonnegative=False):
    """PyTorch's `MaxPool2d` / `AvgPool2d(pool_size, strides, padding=pool_size // 2)`.

    "max" on a `nonnegative` map pads with zeros (`{name}_pad`, `{name}`), else runs a 'same'
    pool `{name}` then a 1x1 `{name}_subsample`; "avg" counts the padding (`count_include_pad`).
    """
    if kind == "max" and nonnegative:
        half = pool_size // 2
        x = layers.ZeroPadding2D(((half, half), (half, half)), name=f"{name}_pad")(x)
        return layers.MaxPooling2D(pool_size, strides=strides, padding="valid", name=name)(x)
    if kind == "max":
        x = layers.MaxPooling2D(pool_size, strides=1, padding="same", name=name)(x)
        return layers.MaxPooling2D(1, strides=strides, name=f"{name}_subsample")(x)
    if kind == "avg":
        half = pool_size // 2
        x = layers.ZeroPadding2D(((half, half), (half, half)), name=f"{name}_pad")(x)
        return kl.AveragePooling2D(pool_size, strides=strides, padding="valid", name=name)(x)
    raise ValueError(f"`kind` must be 'max' or 'avg'. Received: kind={kind!r}")


def _torch_depthwise(x, strides, pad_name, name):
    # PyTorch's 3x3 padding=1: 'same' at stride 1, explicit symmetric zeros when strided.
    padding = "same"
    if strides > 1:
        x, padding = pad_for_stride(x, 3, strides, "symmetric", pad_name)
    return layers.DepthwiseConv2D(3, strides=strides, padding=padding, use_bias=False, name=name)(x)


GROUP_CONV_MODES = ("split", "native")


def grouped_pointwise(x, filters, groups, mode="split", name="gconv"):
    """1x1 grouped convolution without bias: "split" is the portable `group_conv`,
    "native" one `Conv2D(groups=groups)`; with `groups=1` both are one `Conv2D`."""
    if mode == "native" or groups == 1:
        return layers.Conv2D(filters, 1, groups=groups, use_bias=False, name=name)(x)
    return group_conv(x, filters, 1, groups, use_bias=False, name=name)


SHUFFLE_ORDERS = ("paper", "inverse")


def shufflenet_v1_unit(x, filters, groups, strides=1, pw_groups=None, mode="split",
                       prefix="stage2_unit1", bn=None, shuffle_order="paper",
                       shuffle_after_depthwise=False):
    """ShuffleNet V1 unit (paper Fig. 2b/2c).

    Grouped 1x1 to `filters // 4` + BN + ReLU, channel shuffle, 3x3 depthwise + BN, grouped
    1x1 + BN, then an identity shortcut added and ReLU (stride 1), or ReLU and a 3x3/2
    average-pool shortcut concatenated first (stride 2; the branch makes `filters - in`).

    Args:
        pw_groups: groups of the first 1x1 (default `groups`; the paper uses 1 on the
            first unit of stage 2, whose input is narrow).
        mode: grouped 1x1 convolutions, see `grouped_pointwise`.
        shuffle_order: "paper" (`ChannelShuffle(groups)`) or "inverse", its inverse
            permutation (megvii's), which is `ChannelShuffle(filters // 4 // groups)`.
        shuffle_after_depthwise: shuffle after the depthwise conv and its batch norm
            (megvii's), not before them.

    Layers: `{prefix}_gconv1`, `_bn1`, `_relu1`, `_shuffle`, `_dw_pad`, `_dw`, `_dw_bn`
    (`_shuffle` here with `shuffle_after_depthwise`), `_gconv2`, `_bn2`, `_pool_pad`, `_pool`,
    `_concat` or `_add`, `_relu`.
    """
    bn = bn or {}
    in_filters = x.shape[-1]
    bottleneck = filters // 4
    branch_filters = filters - in_filters if strides > 1 else filters
    shortcut = x
    if shuffle_order not in SHUFFLE_ORDERS:
        raise ValueError(f"`shuffle_order` must be one of {list(SHUFFLE_ORDERS)}. "
                         f"Received: shuffle_order={shuffle_order!r}")
    # Reshaping to (C / g, g) and transposing, megvii's form, is the paper's form with
    # C / g groups.
    shuffle = kl.ChannelShuffle(groups if shuffle_order == "paper" else bottleneck // groups,
                                name=f"{prefix}_shuffle") if groups > 1 else None
    x = grouped_pointwise(x, bottleneck, pw_groups or groups, mode, f"{prefix}_gconv1")
    x = _bn_act(x, f"{prefix}_bn1", bn, "relu", f"{prefix}_relu1")
    if shuffle and not shuffle_after_depthwise:
        x = shuffle(x)
    x = _torch_depthwise(x, strides, f"{prefix}_dw_pad", f"{prefix}_dw")
    x = layers.BatchNormalization(name=f"{prefix}_dw_bn", **bn)(x)
    if shuffle and shuffle_after_depthwise:
        x = shuffle(x)
    x = grouped_pointwise(x, branch_filters, groups, mode, f"{prefix}_gconv2")
    x = layers.BatchNormalization(name=f"{prefix}_bn2", **bn)(x)
    if strides > 1:
        # ReLU on the branch alone (the pooled shortcut is never negative): it then
        # fuses into the branch's last op instead of standing after the concat.
        x = layers.ReLU(name=f"{prefix}_relu")(x)
        shortcut = torch_pool(shortcut, "avg", 3, strides, f"{prefix}_pool")
        return layers.Concatenate(axis=-1, name=f"{prefix}_concat")([shortcut, x])
    x = layers.Add(name=f"{prefix}_add")([shortcut, x])
    return layers.ReLU(name=f"{prefix}_relu")(x)


# Layer-name suffixes of the ShuffleNet V2 unit: torchvision's module paths
# (`branch1.0` -> `branch1_0`) for weighted layers, descriptive for the rest.
SHUFFLE_V2_NAMES_TORCH = {
    "split": "split", "b1_pad": "branch1_pad", "b1_dw": "branch1_0", "b1_dw_bn": "branch1_1",
    "b1_pw": "branch1_2", "b1_pw_bn": "branch1_3", "b1_act": "branch1_{act}",
    "b2_pw1": "branch2_0", "b2_pw1_bn": "branch2_1", "b2_act1": "branch2_{act}_a",
    "b2_pad": "branch2_pad", "b2_dw": "branch2_3", "b2_dw_bn": "branch2_4",
    "b2_pw2": "branch2_5", "b2_pw2_bn": "branch2_6", "b2_act2": "branch2_{act}_b",
    "concat": "concat", "shuffle": "shuffle",
}


def shufflenet_v2_unit(x, filters, strides=1, act="relu", prefix="stage2_0_",
                       names=SHUFFLE_V2_NAMES_TORCH, bn=None):
    """ShuffleNet V2 unit (paper Fig. 3c/3d), in torchvision's channel order.

    Stride 1: the first half passes, the second goes through 1x1 + BN + act, 3x3 depthwise +
    BN, 1x1 + BN + act. Stride 2: branch 1 (3x3/2 depthwise + BN, 1x1 + BN + act) and branch 2
    both see the whole input. The halves are concatenated and shuffled with 2 groups.

    Args:
        filters: output channels (even); each branch makes half.
        names: layer-name suffixes after `prefix` (`{act}`: the activation kind).
    """
    bn = bn or {}
    n = {k: prefix + v.format(act=act) for k, v in names.items()}
    branch = filters // 2
    if strides == 1:
        x1, x2 = kl.ChannelSplit(2, name=n["split"])(x)
    else:
        x1 = _torch_depthwise(x, strides, n["b1_pad"], n["b1_dw"])
        x1 = _bn_act(x1, n["b1_dw_bn"], bn)
        x1 = _pointwise(x1, branch, n["b1_pw"], n["b1_pw_bn"], bn, act, n["b1_act"], "valid")
        x2 = x
    x2 = _pointwise(x2, branch, n["b2_pw1"], n["b2_pw1_bn"], bn, act, n["b2_act1"], "valid")
    x2 = _torch_depthwise(x2, strides, n["b2_pad"], n["b2_dw"])
    x2 = _bn_act(x2, n["b2_dw_bn"], bn)
    x2 = _pointwise(x2, branch, n["b2_pw2"], n["b2_pw2_bn"], bn, act, n["b2_act2"], "valid")
    x = layers.Concatenate(axis=-1, name=n["concat"])([x1, x2])
    return kl.ChannelShuffle(2, name=n["shuffle"])(x)


def _depthwise_bn(x, kernel_size, strides, pad_mode, n, key, bn, act=None):
    """Depthwise conv (explicit `pad_mode` padding when strided, else "same"), batch norm,
    `act`; layers `n[key]` and `n[key + suffix]` for suffixes "_pad", "_bn", "_act"."""
    padding = "same"
    if strides > 1:
        x, padding = pad_for_stride(x, kernel_size, strides, pad_mode, n[f"{key}_pad"])
    x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding=padding, use_bias=False,
                               name=n[key])(x)
    return _bn_act(x, n[f"{key}_bn"], bn, act, n.get(f"{key}_act"))


# Layer-name suffixes of the universal inverted residual: timm's module paths
# (`blocks.2.0.dw_start.conv` -> `blocks_2_0_dw_start_conv`) for weighted layers.
UIR_NAMES_TIMM = {
    "start": "dw_start_conv", "start_bn": "dw_start_bn", "start_pad": "dw_start_pad",
    "expand": "pw_exp_conv", "expand_bn": "pw_exp_bn", "expand_act": "pw_exp_{act}",
    "dw": "dw_mid_conv", "dw_bn": "dw_mid_bn", "dw_act": "dw_mid_{act}", "dw_pad": "dw_mid_pad",
    "project": "pw_proj_conv", "project_bn": "pw_proj_bn", "layer_scale": "layer_scale",
    "add": "add",
}


def universal_inverted_residual(x, filters, expand_filters, start_kernel=0, mid_kernel=3,
                                strides=1, act="relu", prefix="blocks_0_0_",
                                names=UIR_NAMES_TIMM, bn=None, pad_mode="symmetric",
                                layer_scale=None):
    """Universal inverted residual (MobileNetV4's UIB): optional depthwise conv + BN
    (`start_kernel`, 0 for none), 1x1 expansion + BN + act, optional depthwise conv + BN +
    act (`mid_kernel`), linear 1x1 projection + BN, identity shortcut when shapes allow.

    Both kernels set: ExtraDW; mid only: the inverted residual; start only: ConvNeXt-like;
    neither: FFN. The stride goes to the middle depthwise conv, else to the start one.

    Args:
        filters: output channels.
        expand_filters: channels after the expansion.
        names: layer-name suffixes after `prefix` (`{act}`: the activation kind).
        pad_mode: padding of strided depthwise convs, see `pad_for_stride`.
        layer_scale: None, or the initial value of a `LayerScale` on the projection
            (MobileNetV4-Hybrid's), before the shortcut.
    """
    if strides > 1 and not (start_kernel or mid_kernel):
        raise ValueError(f"A strided universal inverted residual needs a depthwise conv. "
                         f"Received: start_kernel={start_kernel}, mid_kernel={mid_kernel}")
    n = {k: prefix + v.format(act=act) for k, v in names.items()}
    shortcut = x
    in_filters = x.shape[-1]
    if start_kernel:
        x = _depthwise_bn(x, start_kernel, 1 if mid_kernel else strides, pad_mode, n, "start", bn)
    x = _pointwise(x, expand_filters, n["expand"], n["expand_bn"], bn, act, n["expand_act"])
    if mid_kernel:
        x = _depthwise_bn(x, mid_kernel, strides, pad_mode, n, "dw", bn, act)
    x = _pointwise(x, filters, n["project"], n["project_bn"], bn)
    if layer_scale is not None:
        x = kl.LayerScale(layer_scale, name=n["layer_scale"])(x)
    if strides == 1 and in_filters == filters:
        x = layers.Add(name=n["add"])([shortcut, x])
    return x


# Layer-name suffixes of the mobile multi-query attention block: timm's module paths
# (`blocks.2.4.attn.key.down_conv` -> `blocks_2_4_attn_key_down_conv`) for weighted layers.
MQA_NAMES_TIMM = {
    "norm": "norm", "query": "attn_query_proj", "down_pad": "attn_{part}_pad",
    "down": "attn_{part}_down_conv", "down_bn": "attn_{part}_norm", "proj": "attn_{part}_proj",
    "core": "attn_core", "output": "attn_output_proj", "layer_scale": "layer_scale",
    "add": "add",
}


def mobile_attention(x, heads, key_dim, kv_stride=1, kernel_size=3, prefix="blocks_2_4_",
                     names=MQA_NAMES_TIMM, bn=None, pad_mode="symmetric", layer_scale=1e-5):
    """Mobile multi-query attention (MobileNetV4-Hybrid's Mobile MQA), as timm's
    `MobileAttention(use_multi_query=True)`.

    Batch norm, then attention: a 1x1 query projection to `heads * key_dim`; keys and
    values each through a strided `kernel_size` depthwise conv + batch norm when
    `kv_stride > 1` and a 1x1 projection to one shared head of `key_dim`;
    `MultiQueryAttentionCore`; a 1x1 output projection to the input's channels. Then an
    optional `LayerScale` and the identity shortcut. Convolutions have no bias.

    Args:
        names: layer-name suffixes after `prefix` (`{part}`: "key" or "value").
        pad_mode: padding of the strided depthwise convs, see `pad_for_stride`.
        layer_scale: None, or the initial value of the `LayerScale`.
    """
    n = {k: prefix + v for k, v in names.items()}
    channels = x.shape[-1]
    shortcut = x
    x = layers.BatchNormalization(name=n["norm"], **(bn or {}))(x)
    query = layers.Conv2D(heads * key_dim, 1, use_bias=False, name=n["query"])(x)
    key_value = []
    for part in ("key", "value"):
        h = x
        if kv_stride > 1:
            h, padding = pad_for_stride(h, kernel_size, kv_stride, pad_mode,
                                        n["down_pad"].format(part=part))
            h = layers.DepthwiseConv2D(kernel_size, strides=kv_stride, padding=padding,
                                       use_bias=False, name=n["down"].format(part=part))(h)
            h = layers.BatchNormalization(name=n["down_bn"].format(part=part), **(bn or {}))(h)
        key_value.append(layers.Conv2D(key_dim, 1, use_bias=False,
                                       name=n["proj"].format(part=part))(h))
    x = kl.MultiQueryAttentionCore(key_dim, name=n["core"])([query, *key_value])
    x = layers.Conv2D(channels, 1, use_bias=False, name=n["output"])(x)
    if layer_scale is not None:
        x = kl.LayerScale(layer_scale, name=n["layer_scale"])(x)
    return layers.Add(name=n["add"])([shortcut, x])


# Layer-name suffixes of the edge residual (fused inverted residual): timm's module paths.
ER_NAMES_TIMM = {
    "pad": "conv_exp_pad", "expand": "conv_exp", "expand_bn": "bn1", "expand_act": "bn1_{act}",
    "project": "conv_pwl", "project_bn": "bn2", "add": "add",
}


def edge_residual(x, filters, expand_filters, kernel_size=3, strides=1, act="relu",
                  prefix="blocks_0_0_", names=ER_NAMES_TIMM, bn=None, pad_mode="symmetric"):
    """Edge residual (FusedIB, EfficientNet-EdgeTPU): `kernel_size` conv to `expand_filters`
    + BN + act, linear 1x1 projection + BN, identity shortcut when shapes allow.

    Args:
        names: layer-name suffixes after `prefix` (`{act}`: the activation kind).
        pad_mode: padding of the strided conv, see `pad_for_stride`.
    """
    n = {k: prefix + v.format(act=act) for k, v in names.items()}
    shortcut = x
    in_filters = x.shape[-1]
    padding = "same"
    if strides > 1:
        x, padding = pad_for_stride(x, kernel_size, strides, pad_mode, n["pad"])
    x = layers.Conv2D(expand_filters, kernel_size, strides=strides, padding=padding,
                      use_bias=False, name=n["expand"])(x)
    x = _bn_act(x, n["expand_bn"], bn, act, n["expand_act"])
    x = _pointwise(x, filters, n["project"], n["project_bn"], bn)
    if strides == 1 and in_filters == filters:
        x = layers.Add(name=n["add"])([shortcut, x])
    return x


def _torch_conv(x, filters, kernel_size, strides=1, depthwise=False, use_bias=False, name="conv"):
    """PyTorch's `Conv2d(padding=(k - 1) // 2)` (per axis): 'same' at stride 1 (odd kernels),
    explicit symmetric zeros (`{name}_pad`) before a strided 'valid' one."""
    kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    padding = "same"
    if strides > 1 and max(kernel) > 1:
        pads = tuple(((k - 1) // 2,) * 2 for k in kernel)
        x, padding = layers.ZeroPadding2D(pads, name=f"{name}_pad")(x), "valid"
    if depthwise:
        return layers.DepthwiseConv2D(kernel, strides=strides, padding=padding, use_bias=use_bias,
                                      name=name)(x)
    return layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=use_bias,
                         name=name)(x)


def ghost_module(x, filters, act="relu", attention=False, ratio=2, dw_size=3, prefix="ghost1_",
                 bn=None):
    """Ghost module (GhostNet): a 1x1 primary conv makes `ceil(filters / ratio)` channels, a
    cheap depthwise `dw_size` conv makes the rest from them; both with BN (+ `act`), then
    concatenated and sliced to `filters`.

    With `attention` (GhostNetV2's DFC attention), the output is multiplied by a gate computed
    from the module's input: 2x2 average pool, 1x1 conv + BN, depthwise (1, 5) conv + BN,
    depthwise (5, 1) conv + BN, sigmoid, resized back with PyTorch's nearest rule.

    Layers after `prefix`: timm's module paths (`primary_conv_0`..`_2`,
    `cheap_operation_0`..`_2`, `short_conv_0`..`_5`), `concat`, `slice`, `pool`, `gate`,
    `resize`, `mul`.
    """
    bn = bn or {}
    init = -(-filters // ratio)
    inputs = x
    x1 = layers.Conv2D(init, 1, use_bias=False, name=f"{prefix}primary_conv_0")(x)
    x1 = _bn_act(x1, f"{prefix}primary_conv_1", bn, act, f"{prefix}primary_conv_2")
    x2 = layers.DepthwiseConv2D(dw_size, padding="same", depth_multiplier=ratio - 1,
                                use_bias=False, name=f"{prefix}cheap_operation_0")(x1)
    x2 = _bn_act(x2, f"{prefix}cheap_operation_1", bn, act, f"{prefix}cheap_operation_2")
    out = layers.Concatenate(axis=-1, name=f"{prefix}concat")([x1, x2])
    if init * ratio != filters:
        out = kl.ChannelSlice(0, filters, name=f"{prefix}slice")(out)
    if not attention:
        return out
    s = kl.AveragePooling2D(2, strides=2, padding="valid", name=f"{prefix}pool")(inputs)
    s = layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}short_conv_0")(s)
    s = layers.BatchNormalization(name=f"{prefix}short_conv_1", **bn)(s)
    s = layers.DepthwiseConv2D((1, 5), padding="same", use_bias=False,
                               name=f"{prefix}short_conv_2")(s)
    s = layers.BatchNormalization(name=f"{prefix}short_conv_3", **bn)(s)
    s = layers.DepthwiseConv2D((5, 1), padding="same", use_bias=False,
                               name=f"{prefix}short_conv_4")(s)
    s = layers.BatchNormalization(name=f"{prefix}short_conv_5", **bn)(s)
    s = layers.Activation("sigmoid", name=f"{prefix}gate")(s)
    s = kl.ResizeNearest(name=f"{prefix}resize")([s, out])
    return layers.Multiply(name=f"{prefix}mul")([out, s])


def ghost_bottleneck(x, filters, mid_filters, kernel_size=3, strides=1, se_filters=None,
                     attention=False, prefix="blocks_0_0_", bn=None):
    """Ghost bottleneck (GhostNet V1/V2), as timm's `GhostBottleneck`.

    Ghost module to `mid_filters` with ReLU (GhostNetV2's DFC `attention` optional), a strided
    depthwise `kernel_size` conv + BN when `strides > 1`, squeeze-and-excitation (ReLU, hard
    sigmoid gate) with `se_filters`, a linear ghost module to `filters`, plus the input, or
    when the shape changes a depthwise conv + BN, 1x1 conv + BN of it.

    Layers after `prefix`: timm's module paths (`ghost1_*`, `conv_dw`, `bn_dw`, `se_*`,
    `ghost2_*`, `shortcut_0`..`_3`), and `add`.
    """
    bn = bn or {}
    in_filters = x.shape[-1]
    shortcut = x
    x = ghost_module(x, mid_filters, "relu", attention, prefix=f"{prefix}ghost1_", bn=bn)
    if strides > 1:
        x = _torch_conv(x, None, kernel_size, strides, depthwise=True, name=f"{prefix}conv_dw")
        x = layers.BatchNormalization(name=f"{prefix}bn_dw", **bn)(x)
    if se_filters:
        x = squeeze_excite(x, se_filters, "hard_sigmoid", "relu", prefix=f"{prefix}se_", names={
            "pool": "pool", "reduce": "conv_reduce", "act": "act1", "expand": "conv_expand",
            "gate": "gate", "mul": "mul"})
    x = ghost_module(x, filters, None, prefix=f"{prefix}ghost2_", bn=bn)
    if strides > 1 or in_filters != filters:
        shortcut = _torch_conv(shortcut, None, kernel_size, strides, depthwise=True,
                               name=f"{prefix}shortcut_0")
        shortcut = layers.BatchNormalization(name=f"{prefix}shortcut_1", **bn)(shortcut)
        shortcut = layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}shortcut_2")(shortcut)
        shortcut = layers.BatchNormalization(name=f"{prefix}shortcut_3", **bn)(shortcut)
    return layers.Add(name=f"{prefix}add")([x, shortcut])

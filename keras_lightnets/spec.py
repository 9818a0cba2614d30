"""Block tables of the inverted-residual families and their one decoder.

An architecture (MobileNetV2, MobileNetV3, MnasNet) is a module-level list of
`Block` rows in the order of its paper's table, stem and head included.
`build` walks it: it scales and rounds every width (here only), names every
layer after the family's scheme and records the feature taps that
`feature_extractor` reads.
"""

import collections
import weakref

from keras_lightnets import blocks

# kind: "conv" (conv + BN + act), "ir" (inverted residual: no expansion conv
#   when `expand` is 1), "ds" (depthwise separable: no expansion, no skip),
#   "uir" (universal inverted residual; `kernel` is its (start, middle)
#   depthwise kernels, 0 for none), "er" (edge residual: a full `kernel`
#   conv expands) or "mqa" (mobile multi-query attention; `kernel` is the
#   key/value downsampling depthwise kernel, `attn` its
#   (heads, key_dim, kv_stride); `filters` stays the input's).
# filters: output channels at alpha 1; None on a conv row for `expand` times
#   its input channels.
# expand: expansion ratio. se: squeeze-excite channels as a fraction of the
#   expanded ones (0: none). repeats: the first has `stride`, the rest 1.
# scale: "alpha" (scaled and rounded), "fixed", or "up" (scaled above 1 only).
# tap: the last row at its resolution, a feature map for `feature_extractor`.
# name: a conv row's "conv bn act" layer names; an inverted residual's prefix
#   (default: the family's), `{b}` the block index, `{i}` the repeat, `{j}`
#   the block's index among the rows of the same name (a timm stage).
Block = collections.namedtuple(
    "Block", "kind kernel stride filters expand se act repeats scale tap name attn",
    defaults=(1, 0, None, 1, "alpha", False, None, None),
)

# Per model: `{stride: layer name}` of its tapped rows.
_TAPS = weakref.WeakKeyDictionary()


def width(filters, alpha, scale="alpha", truncate=False, rule="make_divisible"):
    """`filters` scaled by `alpha` and rounded by `make_divisible`.

    `truncate`: keras.applications' MobileNetV2 truncates block widths before
    rounding, and its weights depend on it. `rule="truncate"`: truncation
    only, no rounding to 8 (PaddleClas' MobileNetV2).
    """
    if scale == "fixed" or (scale == "up" and alpha <= 1.0):
        return filters
    if rule == "truncate":
        return int(filters * alpha)
    return blocks.make_divisible(int(filters * alpha) if truncate else filters * alpha)


def build(x, table, alpha, *, names, prefix, bn, pad="keras", se=None, truncate=False,
          flavour=None, layer_scale=None):
    """Builds the rows of `table` on `x`; returns `(x, taps)`.

    Args:
        names: layer-name suffixes of the block rows
            (see `blocks.IR_NAMES_KERAS_V2`), or a dict of them by row kind.
        prefix: default name prefix of the inverted residuals.
        bn: BatchNormalization keyword arguments.
        pad: "keras" (TF 'same' padding by `correct_pad`), "same" (the
            convolutions' own TF 'same', at any input size) or "symmetric"
            (PyTorch's).
        se: keyword arguments of `blocks.squeeze_excite`.
        truncate: truncate inverted-residual widths before rounding.
        flavour: the `sources.Flavour` whose `block0_expand`, `stem_scaled`,
            `expand_from_alpha`, `se_round` and `width_rule` apply (None:
            keras.applications').
        layer_scale: None, or the initial value of the `LayerScale` on the
            residual branch of "uir" and "mqa" rows (MobileNetV4-Hybrid's).

    Returns:
        The output tensor and `{stride: layer name}` of the tapped rows: the
        last layer at each tapped resolution (the next block's expansion when
        that block downsamples).
    """
    taps, scale, block = {}, 1, 0
    stage_index = collections.Counter()
    block0_expand, stem_scaled, from_alpha, se_round, rule = (
        (False, False, False, True, "make_divisible") if flavour is None else
        (flavour.block0_expand, flavour.stem_scaled, flavour.expand_from_alpha,
         flavour.se_round, flavour.width_rule))
    base = None  # the input's channels at alpha 1

    def expanded(in_filters, ratio):
        if from_alpha:
            return blocks.make_divisible(alpha * round(base * ratio))
        if rule == "truncate":
            return int(round(in_filters * ratio))
        return blocks.make_divisible(in_filters * ratio)

    for row in table:
        for i in range(row.repeats):
            stride = row.stride if i == 0 else 1
            in_filters = x.shape[-1]
            if row.kind == "conv":
                conv, bn_name, act = row.name.format(act=row.act).split()
                row_scale = "alpha" if stem_scaled and base is None else row.scale
                filters = (expanded(in_filters, row.expand) if row.filters is None
                           else width(row.filters, alpha, row_scale, rule=rule))
                mode = "symmetric" if pad == "symmetric" and row.kernel > 1 else "same"
                x = blocks.conv_bn_act(
                    x, filters, row.kernel, stride, row.act, bn=bn, pad_mode=mode,
                    names={"conv": conv, "bn": bn_name, "act": act, "pad": f"{conv}_pad"},
                )
                last = act
            else:
                filters = width(row.filters, alpha, row.scale, truncate, rule)
                expand = None
                if row.kind in ("uir", "er"):
                    expand = blocks.make_divisible(in_filters * row.expand)
                elif row.kind == "ir" and (row.expand != 1 or (block == 0 and block0_expand)):
                    expand = expanded(in_filters, row.expand)
                suffixes = names.get(row.kind, names)
                template = prefix if row.name is None else row.name
                p = template.format(b=block, i=i, j=stage_index[template])
                stage_index[template] += 1
                # The expansion runs at the previous resolution when a later conv strides.
                if (stride > 1 and expand and scale in taps
                        and (row.kind == "ir" or row.kind == "uir" and row.kernel[1])):
                    taps[scale] = p + suffixes["expand_act"].format(act=row.act)
                if row.kind == "uir":
                    x = blocks.universal_inverted_residual(
                        x, filters, expand, *row.kernel, stride, row.act, p, suffixes, bn, pad,
                        layer_scale)
                elif row.kind == "mqa":
                    if stride != 1 or filters != in_filters:
                        raise ValueError(f"A mobile attention row keeps its input's shape "
                                         f"({in_filters} channels). Received: row={row}")
                    x = blocks.mobile_attention(x, *row.attn, row.kernel, p, suffixes, bn, pad,
                                                layer_scale)
                elif row.kind == "er":
                    x = blocks.edge_residual(x, filters, expand, row.kernel, stride, row.act, p,
                                             suffixes, bn, pad)
                else:
                    se_filters = (expand or in_filters) * row.se
                    se_filters = row.se and (blocks.make_divisible(se_filters) if se_round
                                             else int(se_filters))
                    x = blocks.inverted_residual(
                        x, filters, expand, row.kernel, stride, row.act, se_filters or None, se,
                        p, suffixes, bn, pad, residual=row.kind == "ir",
                    )
                skip = row.kind != "ds" and stride == 1 and in_filters == filters
                scaled = layer_scale is not None and row.kind == "uir"
                last = p + suffixes["add" if skip else "layer_scale" if scaled else "project_bn"]
                block += 1
            base = row.filters or round(base * row.expand)
            scale *= stride
        if row.tap:
            taps[scale] = last
    return x, taps


def remember_taps(model, taps, img_input, inputs):
    """Records `taps` for `feature_extractor` when `model` starts at the image."""
    # Strides count from the image: not so when `input_tensor` follows other layers.
    if inputs is img_input or (len(inputs) == 1 and inputs[0] is img_input):
        _TAPS[model] = dict(taps)
    return model


def taps_of(model):
    """`{stride: layer name}` recorded for `model` (empty if none)."""
    return _TAPS.get(model, {})

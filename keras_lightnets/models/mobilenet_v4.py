"""MobileNetV4 Conv-Small, Conv-Medium, Conv-Large, Hybrid-Medium and Hybrid-Large,
numerically identical to timm's.

Reference:
- [MobileNetV4: Universal Models for the Mobile Ecosystem](
  https://arxiv.org/abs/2404.10518) (ECCV 2024)

Weighted layers are named after timm's module paths (`blocks.2.0.dw_start.conv`
-> `blocks_2_0_dw_start_conv`), so timm's `.safetensors` files load through
`weights=<path>`.
"""

from keras import layers

from keras_lightnets import blocks, imagenet, spec
from keras_lightnets import layers as kl
from keras_lightnets.models import common
from keras_lightnets.spec import Block
from keras_lightnets.weights import sources

# timm's `_gen_mobilenet_v4` arch_def (the paper's Tables 10-12), stem and the
# last 1x1 conv included. Columns: kind, kernel ((start, middle) depthwise
# kernels of a "uir" row, 0 for none), stride, filters, expansion; repeats.
# Stage s's blocks are `blocks_{s}_{j}_`. The stem does not shrink below alpha 1
# (timm's `fix_stem`).
STEM = "conv_stem bn1 bn1_{act}"


def _conv(stage, index, kernel, stride, filters, tap=False):
    """timm's `ConvBnAct` block `blocks.{stage}.{index}`."""
    p = f"blocks_{stage}_{index}_"
    return Block("conv", kernel, stride, filters, act="relu", tap=tap,
                 name=f"{p}conv {p}bn1 {p}bn1_{{act}}")


def _uir(stage, start, mid, stride, filters, expand, repeats=1, tap=False):
    return Block("uir", (start, mid), stride, filters, expand, act="relu", repeats=repeats,
                 tap=tap, name=f"blocks_{stage}_{{j}}_")


def _mqa(stage, heads, key_dim, kv_stride, filters):
    """timm's `mqa` row: mobile multi-query attention, 3x3 key/value downsampling."""
    return Block("mqa", 3, 1, filters, name=f"blocks_{stage}_{{j}}_",
                 attn=(heads, key_dim, kv_stride))


def _with_activation(table, act):
    return [row._replace(act=act) for row in table]


SMALL = [
    Block("conv", 3, 2, 32, act="relu", scale="up", tap=True, name=STEM),
    _conv(0, 0, 3, 2, 32),
    _conv(0, 1, 1, 1, 32, tap=True),
    _conv(1, 0, 3, 2, 96),
    _conv(1, 1, 1, 1, 64, tap=True),
    _uir(2, 5, 5, 2, 96, 3),
    _uir(2, 0, 3, 1, 96, 2, repeats=4),
    _uir(2, 3, 0, 1, 96, 4, tap=True),
    _uir(3, 3, 3, 2, 128, 6),
    _uir(3, 5, 5, 1, 128, 4),
    _uir(3, 0, 5, 1, 128, 4),
    _uir(3, 0, 5, 1, 128, 3),
    _uir(3, 0, 3, 1, 128, 4, repeats=2),
    _conv(4, 0, 1, 1, 960, tap=True),
]
MEDIUM = [
    Block("conv", 3, 2, 32, act="relu", scale="up", tap=True, name=STEM),
    Block("er", 3, 2, 48, 4, act="relu", tap=True, name="blocks_0_{j}_"),
    _uir(1, 3, 5, 2, 80, 4),
    _uir(1, 3, 3, 1, 80, 2, tap=True),
    _uir(2, 3, 5, 2, 160, 6),
    _uir(2, 3, 3, 1, 160, 4, repeats=2),
    _uir(2, 3, 5, 1, 160, 4),
    _uir(2, 3, 3, 1, 160, 4),
    _uir(2, 3, 0, 1, 160, 4),
    _uir(2, 0, 0, 1, 160, 2),
    _uir(2, 3, 0, 1, 160, 4, tap=True),
    _uir(3, 5, 5, 2, 256, 6),
    _uir(3, 5, 5, 1, 256, 4),
    _uir(3, 3, 5, 1, 256, 4, repeats=2),
    _uir(3, 0, 0, 1, 256, 4),
    _uir(3, 3, 0, 1, 256, 4),
    _uir(3, 3, 5, 1, 256, 2),
    _uir(3, 5, 5, 1, 256, 4),
    _uir(3, 0, 0, 1, 256, 4, repeats=2),
    _uir(3, 5, 0, 1, 256, 2),
    _conv(4, 0, 1, 1, 960, tap=True),
]
LARGE = [
    Block("conv", 3, 2, 24, act="relu", scale="up", tap=True, name=STEM),
    Block("er", 3, 2, 48, 4, act="relu", tap=True, name="blocks_0_{j}_"),
    _uir(1, 3, 5, 2, 96, 4),
    _uir(1, 3, 3, 1, 96, 4, tap=True),
    _uir(2, 3, 5, 2, 192, 4),
    _uir(2, 3, 3, 1, 192, 4, repeats=3),
    _uir(2, 3, 5, 1, 192, 4),
    _uir(2, 5, 3, 1, 192, 4, repeats=5),
    _uir(2, 3, 0, 1, 192, 4, tap=True),
    _uir(3, 5, 5, 2, 512, 4, repeats=4),
    _uir(3, 5, 0, 1, 512, 4),
    _uir(3, 5, 3, 1, 512, 4),
    _uir(3, 5, 0, 1, 512, 4, repeats=2),
    _uir(3, 5, 3, 1, 512, 4),
    _uir(3, 5, 5, 1, 512, 4),
    _uir(3, 5, 0, 1, 512, 4, repeats=3),
    _conv(4, 0, 1, 1, 960, tap=True),
]
# The hybrids (the paper's Tables 13-14): attention rows between the blocks of
# the last two stages (keys and values downsampled twice at stride 16).
HYBRID_MEDIUM = [
    Block("conv", 3, 2, 32, act="relu", scale="up", tap=True, name=STEM),
    Block("er", 3, 2, 48, 4, act="relu", tap=True, name="blocks_0_{j}_"),
    _uir(1, 3, 5, 2, 80, 4),
    _uir(1, 3, 3, 1, 80, 2, tap=True),
    _uir(2, 3, 5, 2, 160, 6),
    _uir(2, 0, 0, 1, 160, 2),
    _uir(2, 3, 3, 1, 160, 4),
    _uir(2, 3, 5, 1, 160, 4),
    _mqa(2, 4, 64, 2, 160),
    _uir(2, 3, 3, 1, 160, 4),
    _mqa(2, 4, 64, 2, 160),
    _uir(2, 3, 0, 1, 160, 4),
    _mqa(2, 4, 64, 2, 160),
    _uir(2, 3, 3, 1, 160, 4),
    _mqa(2, 4, 64, 2, 160),
    _uir(2, 3, 0, 1, 160, 4, tap=True),
    _uir(3, 5, 5, 2, 256, 6),
    _uir(3, 5, 5, 1, 256, 4),
    _uir(3, 3, 5, 1, 256, 4, repeats=2),
    _uir(3, 0, 0, 1, 256, 2),
    _uir(3, 3, 5, 1, 256, 2),
    _uir(3, 0, 0, 1, 256, 2),
    _uir(3, 0, 0, 1, 256, 4),
    _mqa(3, 4, 64, 1, 256),
    _uir(3, 3, 0, 1, 256, 4),
    _mqa(3, 4, 64, 1, 256),
    _uir(3, 5, 5, 1, 256, 4),
    _mqa(3, 4, 64, 1, 256),
    _uir(3, 5, 0, 1, 256, 4),
    _mqa(3, 4, 64, 1, 256),
    _uir(3, 5, 0, 1, 256, 4),
    _conv(4, 0, 1, 1, 960, tap=True),
]
HYBRID_LARGE = _with_activation([
    Block("conv", 3, 2, 24, act="relu", scale="up", tap=True, name=STEM),
    Block("er", 3, 2, 48, 4, act="relu", tap=True, name="blocks_0_{j}_"),
    _uir(1, 3, 5, 2, 96, 4),
    _uir(1, 3, 3, 1, 96, 4, tap=True),
    _uir(2, 3, 5, 2, 192, 4),
    _uir(2, 3, 3, 1, 192, 4, repeats=3),
    _uir(2, 3, 5, 1, 192, 4),
    _uir(2, 5, 3, 1, 192, 4, repeats=2),
    _mqa(2, 8, 48, 2, 192),
    _uir(2, 5, 3, 1, 192, 4),
    _mqa(2, 8, 48, 2, 192),
    _uir(2, 5, 3, 1, 192, 4),
    _mqa(2, 8, 48, 2, 192),
    _uir(2, 5, 3, 1, 192, 4),
    _mqa(2, 8, 48, 2, 192),
    _uir(2, 3, 0, 1, 192, 4, tap=True),
    _uir(3, 5, 5, 2, 512, 4, repeats=4),
    _uir(3, 5, 0, 1, 512, 4),
    _uir(3, 5, 3, 1, 512, 4),
    _uir(3, 5, 0, 1, 512, 4, repeats=2),
    _uir(3, 5, 3, 1, 512, 4),
    _uir(3, 5, 5, 1, 512, 4),
    _mqa(3, 8, 64, 1, 512),
    _uir(3, 5, 0, 1, 512, 4),
    _mqa(3, 8, 64, 1, 512),
    _uir(3, 5, 0, 1, 512, 4),
    _mqa(3, 8, 64, 1, 512),
    _uir(3, 5, 0, 1, 512, 4),
    _mqa(3, 8, 64, 1, 512),
    _uir(3, 5, 0, 1, 512, 4),
    _conv(4, 0, 1, 1, 960, tap=True),
], "gelu")
# Per family: block table, model name prefix, activation, initial layer scale of the
# residual branches (None: none).
SPECS = {
    "MobileNetV4ConvSmall": (SMALL, "mobilenet_v4_conv_small", "relu", None),
    "MobileNetV4ConvMedium": (MEDIUM, "mobilenet_v4_conv_medium", "relu", None),
    "MobileNetV4ConvLarge": (LARGE, "mobilenet_v4_conv_large", "relu", None),
    "MobileNetV4HybridMedium": (HYBRID_MEDIUM, "mobilenet_v4_hybrid_medium", "relu", 1e-5),
    "MobileNetV4HybridLarge": (HYBRID_LARGE, "mobilenet_v4_hybrid_large", "gelu", 1e-5),
}
# Channels of the head's 1x1 conv on the pooled map (not scaled by alpha).
HEAD_FILTERS = 1280
NAMES = {"uir": blocks.UIR_NAMES_TIMM, "er": blocks.ER_NAMES_TIMM, "mqa": blocks.MQA_NAMES_TIMM}


def _mobilenet_v4(family, input_shape, alpha, include_top, weights, input_tensor, pooling,
                  classes, dropout_rate, classifier_activation, include_preprocessing, name):
    args = {k: v for k, v in locals().items() if k != "family"}
    classes = common.check_common(args)
    alpha = common.check_positive("alpha", alpha, upper=common.MAX_ALPHA)
    common.check_fraction("dropout_rate", dropout_rate)
    shape = common.resolve_input_shape(input_shape, input_tensor, include_top)
    variant = {"alpha": alpha} if family == "MobileNetV4ConvSmall" else {}
    common.check_published(family, variant, weights)
    flavour = sources.flavour_for(family, weights, variant)

    table, prefix, act, layer_scale = SPECS[family]
    img_input, inputs = common.make_input(shape, input_tensor)
    x = img_input
    if include_preprocessing and flavour.normalization.embedded:
        x = kl.Rescaling(*flavour.normalization.scale_offset(), name="normalization")(x)
    x, taps = spec.build(x, table, alpha, names=NAMES, prefix="", bn=flavour.bn,
                         pad=flavour.padding, layer_scale=layer_scale)
    if include_top:
        # timm's head: pool, 1x1 conv + BN + act on the pooled map, linear classifier.
        x = layers.GlobalAveragePooling2D(keepdims=True, name="global_pool")(x)
        x = blocks.conv_bn_act(x, HEAD_FILTERS, 1, act=act, bn=flavour.bn,
                               names={"conv": "conv_head", "bn": "norm_head",
                                      "act": f"norm_head_{act}"})
        x = layers.Flatten(name="flatten")(x)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="classifier")(x)
    else:
        x = common.globally_pool(x, pooling)
    default_name = prefix + (f"_{int(round(alpha * 100)):03d}" if variant else "")
    model = common.finish(inputs, x, name or default_name, weights, family, variant,
                          include_top)
    return spec.remember_taps(model, taps, img_input, inputs)


DOCSTRING = """Instantiates the MobileNetV4 {size} architecture.

    Reference:
    - [MobileNetV4: Universal Models for the Mobile Ecosystem](
      https://arxiv.org/abs/2404.10518) (ECCV 2024)

    Computes exactly what timm's `{timm}` computes (PyTorch's symmetric
    padding included); weighted layers carry timm's module paths, and
    `weights=<path>` loads timm's `.safetensors` files. With
    `include_preprocessing=True` (default) the model takes float RGB pixels
    in `[0, 255]` and embeds the normalization its weight set was trained
    with (timm's ImageNet mean/std; `[-1, 1]` for the sets whose manifest
    entry says so), and `preprocess_input` is the identity; without it,
    pixels normalised that way.

    Args:
        input_shape: optional `(rows, cols, channels)`; defaults to
            `(None, None, 3)`.{alpha}
        include_top: whether to include the classifier.
        weights: `None`, `"imagenet"` (= `"timm"`, timm's default tag), another
            weight set (`"timm_<tag>"`) or the path to a timm `.safetensors` file.
        input_tensor: optional Keras tensor to use as the model input.
        pooling: `None`, `"avg"` or `"max"` global pooling when
            `include_top=False`.
        classes: number of classes with the top.
        dropout_rate: dropout rate before the classifier.
        classifier_activation: activation of the top layer (`None` for
            logits).
        include_preprocessing: whether to embed the input normalization.
        name: model name.

    Returns:
        A `keras.Model`.
    """
ALPHA_DOC = """
        alpha: width multiplier, at most 4 (timm builds 0.35, 0.5 and 1.0;
            0.5 and 1.0 have ImageNet weights here)."""


def MobileNetV4ConvSmall(
    input_shape=None,
    alpha=1.0,
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    pooling=None,
    classes=1000,
    dropout_rate=0.2,
    classifier_activation="softmax",
    include_preprocessing=True,
    name=None,
):
    return _mobilenet_v4("MobileNetV4ConvSmall", input_shape, alpha, include_top, weights,
                         input_tensor, pooling, classes, dropout_rate, classifier_activation,
                         include_preprocessing, name)


def _fixed_width(family):
    """The factory of a family built at one width (the same arguments, without `alpha`)."""

    def factory(
        input_shape=None,
        include_top=True,
        weights="imagenet",
        input_tensor=None,
        pooling=None,
        classes=1000,
        dropout_rate=0.2,
        classifier_activation="softmax",
        include_preprocessing=True,
        name=None,
    ):
        return _mobilenet_v4(family, input_shape, 1.0, include_top, weights, input_tensor,
                             pooling, classes, dropout_rate, classifier_activation,
                             include_preprocessing, name)

    factory.__name__ = factory.__qualname__ = family
    return factory


MobileNetV4ConvMedium = _fixed_width("MobileNetV4ConvMedium")
MobileNetV4ConvLarge = _fixed_width("MobileNetV4ConvLarge")
MobileNetV4HybridMedium = _fixed_width("MobileNetV4HybridMedium")
MobileNetV4HybridLarge = _fixed_width("MobileNetV4HybridLarge")


MobileNetV4ConvSmall.__doc__ = DOCSTRING.format(size="Conv-Small", timm="mobilenetv4_conv_small",
                                                alpha=ALPHA_DOC)
MobileNetV4ConvMedium.__doc__ = DOCSTRING.format(size="Conv-Medium",
                                                 timm="mobilenetv4_conv_medium", alpha="")
MobileNetV4ConvLarge.__doc__ = DOCSTRING.format(size="Conv-Large", timm="mobilenetv4_conv_large",
                                                alpha="")
# The hybrids' "timm" set is timm's best ImageNet-1k tag (timm's default tag of
# Hybrid-Medium was pretrained on ImageNet-12k).
HYBRID_NOTE = """(ECCV 2024)

    Mobile multi-query attention blocks (`MultiQueryAttentionCore`, keys and
    values downsampled by strided depthwise convs in the stride-16 stage) sit
    between the universal inverted residuals of the last two stages; both
    kinds of block end in a `LayerScale`. `"timm"` is timm's `{tag}`."""
for _factory, _size, _tag in ((MobileNetV4HybridMedium, "Hybrid-Medium", "ix_e550_r256_in1k"),
                              (MobileNetV4HybridLarge, "Hybrid-Large", "ix_e600_r384_in1k")):
    _factory.__doc__ = DOCSTRING.format(
        size=_size, timm=f"mobilenetv4_{_size.lower().replace('-', '_')}", alpha="").replace(
        "(ECCV 2024)", HYBRID_NOTE.format(tag=_tag), 1)


def preprocess_input(x, data_format=None):
    """Identity: MobileNetV4 models embed their preprocessing."""
    return x


def decode_predictions(preds, top=5):
    return imagenet.decode_predictions(preds, top=top)


decode_predictions.__doc__ = "Decodes ImageNet predictions; see `imagenet.decode_predictions`."

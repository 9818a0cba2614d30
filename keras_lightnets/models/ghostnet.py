"""GhostNet (V1) and GhostNetV2, numerically identical to timm's.

References:
- [GhostNet: More Features from Cheap Operations](https://arxiv.org/abs/1911.11907)
  (CVPR 2020)
- [GhostNetV2: Enhance Cheap Operation with Long-Range Attention](
  https://arxiv.org/abs/2211.12905) (NeurIPS 2022)

Weighted layers are named after timm's module paths (`conv_stem`,
`blocks_3_0_ghost1_primary_conv_0`, `conv_head`, `classifier`), so a timm
state dict (`ghostnet_100.in1k`, `ghostnetv2_100.in1k`) loads through
`weights=<path.safetensors>`.
"""

from keras import layers

from keras_lightnets import blocks, imagenet, spec
from keras_lightnets.models import common
from keras_lightnets.weights import sources

# The paper's Table 1 as timm's `cfgs`: one list per stage (timm's `blocks.{i}`).
# Columns: kernel, expansion channels, output channels, squeeze-excite ratio,
# stride; channels at alpha 1, rounded to multiples of 4.
STAGES = [
    [(3, 16, 16, 0, 1)],
    [(3, 48, 24, 0, 2)],
    [(3, 72, 24, 0, 1)],
    [(5, 72, 40, 0.25, 2)],
    [(5, 120, 40, 0.25, 1)],
    [(3, 240, 80, 0, 2)],
    [(3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1),
     (3, 672, 112, 0.25, 1)],
    [(5, 672, 160, 0.25, 2)],
    [(5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)],
]
STEM_FILTERS = 16
HEAD_FILTERS = 1280  # the hidden 1x1 conv after global pooling (not scaled)
VERSIONS = (1, 2)
# GhostNetV2 puts DFC attention in the first ghost module of every block from this one on.
ATTENTION_FROM = 2
IMAGENET_ALPHAS = {1: (1.0,), 2: (1.0, 1.3, 1.6)}
FAMILY = "GhostNet"


def round_width(value):
    """timm's `make_divisible(value, 4)` (the 10% rule of `blocks.make_divisible`)."""
    return blocks.make_divisible(value, 4)


def GhostNet(
    input_shape=None,
    version=1,
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
    """Instantiates the GhostNet or GhostNetV2 architecture.

    References:
    - [GhostNet: More Features from Cheap Operations](
      https://arxiv.org/abs/1911.11907) (CVPR 2020)
    - [GhostNetV2: Enhance Cheap Operation with Long-Range Attention](
      https://arxiv.org/abs/2211.12905) (NeurIPS 2022)

    Computes exactly what timm's `ghostnet_{alpha x 100}` (version 1) and
    `ghostnetv2_{alpha x 100}` (version 2) compute (PyTorch's symmetric
    padding, and its nearest-neighbour resize of the DFC attention on odd
    sizes, included); weighted layers carry timm's module paths. With
    `include_preprocessing=True` (default) the model takes float RGB pixels
    in `[0, 255]` and `preprocess_input` is the identity; without it, pixels
    normalised as timm does (`x / 255`, ImageNet mean and std).

    Args:
        input_shape: optional `(rows, cols, channels)`; defaults to
            `(None, None, 3)`; at least 32x32 (33x33 for version 2).
        version: 1 (GhostNet) or 2 (GhostNetV2, with DFC attention).
        alpha: width multiplier, at most 4 (timm publishes ImageNet weights
            for version 1 at 1.0, version 2 at 1.0, 1.3 and 1.6).
        include_top: whether to include the classifier (global pooling, a
            1x1 conv to 1280 channels with ReLU, dropout, dense).
        weights: `None`, `"imagenet"` or the path to a weights file (timm's
            `model.safetensors`).
        input_tensor: optional Keras tensor to use as the model input.
        pooling: `None`, `"avg"` or `"max"` global pooling when
            `include_top=False`.
        classes: number of classes with the top.
        dropout_rate: dropout rate before the classifier.
        classifier_activation: activation of the top layer (`None` for
            logits).
        include_preprocessing: whether to include the normalisation layer.
        name: model name.

    Returns:
        A `keras.Model`.
    """
    # GhostNetV2's attention pools its last maps 2x2: at least 2x2 of them (PyTorch's too).
    min_size = 33 if version == 2 else 32
    classes = common.check_common(locals(), min_size)
    version = common.check_choice("version", version, VERSIONS)
    alpha = common.check_positive("alpha", alpha, upper=common.MAX_ALPHA)
    common.check_fraction("dropout_rate", dropout_rate)
    flavour = sources.flavour_for(FAMILY, weights)
    shape = common.resolve_input_shape(input_shape, input_tensor, include_top, min_size=min_size)
    if weights == "imagenet":
        common.check_choice("alpha", alpha, IMAGENET_ALPHAS[version])

    img_input, inputs = common.make_input(shape, input_tensor)
    x = img_input
    if include_preprocessing:
        x = common.normalization(flavour.normalization.mean, flavour.normalization.std)(x)
    x = blocks.conv_bn_act(x, round_width(STEM_FILTERS * alpha), 3, 2, "relu", bn=flavour.bn,
                           pad_mode=flavour.padding,
                           names={"conv": "conv_stem", "bn": "bn1", "act": "act1",
                                  "pad": "conv_stem_pad"})
    taps, scale, last, index = {}, 2, "act1", 0
    for stage, rows in enumerate(STAGES):
        for i, (kernel, expand, filters, se, stride) in enumerate(rows):
            if stride > 1:
                taps[scale] = last
                scale *= stride
            mid = round_width(expand * alpha)
            prefix = f"blocks_{stage}_{i}_"
            x = blocks.ghost_bottleneck(
                x, round_width(filters * alpha), mid, kernel, stride,
                se_filters=round_width(mid * se) if se else None,
                attention=version == 2 and index >= ATTENTION_FROM, prefix=prefix,
                bn=flavour.bn)
            last, index = f"{prefix}add", index + 1
    # timm's last stage: one ConvBnAct to the last expansion width.
    head = f"blocks_{len(STAGES)}_0_"
    x = blocks.conv_bn_act(x, round_width(STAGES[-1][-1][1] * alpha), 1, 1, "relu",
                           bn=flavour.bn, names={"conv": f"{head}conv", "bn": f"{head}bn1",
                                                 "act": f"{head}bn1_act"})
    taps[scale] = f"{head}bn1_act"
    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True, name="global_pool")(x)
        x = layers.Conv2D(HEAD_FILTERS, 1, name="conv_head")(x)
        x = layers.ReLU(name="act2")(x)
        x = layers.Flatten(name="flatten")(x)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="classifier")(x)
    else:
        x = common.globally_pool(x, pooling)
    default_name = f"ghostnet_v{version}_{int(round(alpha * 100)):03d}"
    model = common.finish(inputs, x, name or default_name, weights, FAMILY,
                          {"version": version, "alpha": alpha}, include_top)
    return spec.remember_taps(model, taps, img_input, inputs)


def preprocess_input(x, data_format=None):
    """Identity: GhostNet models embed their preprocessing."""
    return x


def decode_predictions(preds, top=5):
    return imagenet.decode_predictions(preds, top=top)


decode_predictions.__doc__ = "Decodes ImageNet predictions; see `imagenet.decode_predictions`."

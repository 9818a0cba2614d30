"""ShuffleNet V2, weight-compatible with torchvision's `shufflenet_v2_x*`.

Reference:
- [ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design](
  https://arxiv.org/abs/1807.11164) (ECCV 2018)

Every weighted layer is named after its torchvision module path (`stage2.0.branch2.3`
-> `stage2_0_branch2_3`), so `keras_lightnets.weights.load_torch_state_dict` moves a
torchvision state dict onto the model. Padding, pooling, channel split and shuffle
follow torchvision, so converted weights give torchvision's logits.
"""


from keras_lightnets import blocks, imagenet
from keras_lightnets.models import common
from keras_lightnets.weights import sources

# Output channels per width multiplier: paper Table 5 (0.5x-2.0x, as torchvision)
# and PaddleClas (0.25x, 0.33x). Columns: alpha, stage2, stage3, stage4, conv5.
WIDTHS = [
    (0.25, 24, 48, 96, 512),
    (0.33, 32, 64, 128, 512),
    (0.5, 48, 96, 192, 1024),
    (1.0, 116, 232, 464, 1024),
    (1.5, 176, 352, 704, 1024),
    (2.0, 244, 488, 976, 2048),
]
# Stages after the stem (3x3/2 conv, 3x3/2 max pool). Columns: name, repeats; the
# first unit of each stage has stride 2.
STAGES = [("stage2", 4), ("stage3", 8), ("stage4", 4)]
STEM_FILTERS = 24
ACTIVATIONS = ("relu", "swish")
# Variants with published ImageNet weights (torchvision). Columns: alpha, activation.


def decode_units(alpha):
    """One `(prefix, filters, stride)` row per unit, and the conv5 channels."""
    row = next(r for r in WIDTHS if r[0] == alpha)
    units = []
    for (stage, repeats), filters in zip(STAGES, row[1:4], strict=True):
        units += [(f"{stage}_{i}_", filters, 2 if i == 0 else 1) for i in range(repeats)]
    return units, row[4]


def ShuffleNetV2(
    input_shape=None,
    alpha=1.0,
    activation="relu",
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    name=None,
):
    """Instantiates the ShuffleNet V2 architecture.

    Reference:
    - [ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design](
      https://arxiv.org/abs/1807.11164) (ECCV 2018)

    Numerically identical to torchvision's `shufflenet_v2_x0_5` ... `x2_0`
    for the same weights; weighted layers carry torchvision's module paths
    (`conv1_0`, `stage2_0_branch1_0`, ..., `fc`). With
    `include_preprocessing=True` (default) the model takes float RGB pixels
    in `[0, 255]` and embeds torchvision's mean/std normalization, and
    `preprocess_input` is the identity; without it, inputs are normalized
    as `imagenet.preprocess_input(x, mode="torch")` does.

    Args:
        input_shape: optional `(rows, cols, channels)`; defaults to
            `(None, None, 3)`.
        alpha: width multiplier, one of 0.25, 0.33, 0.5, 1.0, 1.5, 2.0
            (0.5 to 2.0 have ImageNet weights).
        activation: `"relu"` (the paper) or `"swish"` (PaddleClas' variant).
        include_top: whether to include the classifier.
        weights: `None`, `"imagenet"`, a weight set's name
            (`keras_lightnets.list_weights`) or the path to a weights file.
        input_tensor: optional Keras tensor to use as the model input.
        pooling: `None`, `"avg"` or `"max"` global pooling when
            `include_top=False`.
        classes: number of classes with the top.
        classifier_activation: activation of the top layer (`None` for
            logits).
        include_preprocessing: whether to embed the input normalization.
        name: model name.

    Returns:
        A `keras.Model`.
    """
    classes = common.check_common(locals())
    flavour = sources.flavour_for("ShuffleNetV2", weights)
    alpha = common.check_choice("alpha", alpha, [row[0] for row in WIDTHS])
    activation = common.check_choice("activation", activation, ACTIVATIONS)
    if common.is_pretrained(weights):
        common.check_published("ShuffleNetV2", {"alpha": alpha, "activation": activation},
                               weights)
    shape = common.resolve_input_shape(input_shape, input_tensor, include_top)

    img_input, inputs = common.make_input(shape, input_tensor)
    x = img_input
    if include_preprocessing:
        x = common.normalization(flavour.normalization.mean, flavour.normalization.std)(x)
    x = blocks.conv_bn_act(
        x, STEM_FILTERS, 3, strides=2, act=activation, pad_mode=flavour.padding,
        names={"conv": "conv1_0", "bn": "conv1_1", "act": f"conv1_{activation}",
               "pad": "conv1_pad"}, bn=flavour.bn,
    )
    x = blocks.torch_pool(x, "max", 3, 2, name="maxpool",
                          nonnegative=activation == "relu")
    units, last_filters = decode_units(alpha)
    for prefix, filters, stride in units:
        x = blocks.shufflenet_v2_unit(x, filters, stride, activation, prefix, bn=flavour.bn)
    x = blocks.conv_bn_act(
        x, last_filters, 1, act=activation,
        names={"conv": "conv5_0", "bn": "conv5_1", "act": f"conv5_{activation}"}, bn=flavour.bn,
    )
    x = common.head(x, include_top, pooling, classes, classifier_activation, dense="fc")
    suffix = "" if activation == "relu" else f"_{activation}"
    return common.finish(inputs, x, name or f"shufflenetv2_{alpha:0.2f}{suffix}", weights,
                         "ShuffleNetV2", {"alpha": alpha, "activation": activation},
                         include_top)


def preprocess_input(x, data_format=None):
    """Identity: ShuffleNet V2 models embed their preprocessing."""
    return x


def decode_predictions(preds, top=5):
    return imagenet.decode_predictions(preds, top=top)


decode_predictions.__doc__ = "Decodes ImageNet predictions; see `imagenet.decode_predictions`."

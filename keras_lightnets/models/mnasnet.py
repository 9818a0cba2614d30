"""MnasNet (B1), numerically identical to torchvision's.

Reference:
- [MnasNet: Platform-Aware Neural Architecture Search for Mobile](
  https://arxiv.org/abs/1807.11626) (CVPR 2019)

Weighted layers are named after torchvision's module paths (`layers_0`,
`layers_8_0_layers_3`, `classifier_1`), so a torchvision state dict loads
through `keras_lightnets.weights.load_torch_state_dict`.
"""

from keras_lightnets import blocks, imagenet
from keras_lightnets.models import common

# The stacks of inverted residuals after the stem (torchvision `layers.8` ...
# `layers.13`). Columns: expansion, filters (at alpha 1), kernel, stride of
# the first repeat, repeats.
STACKS = [
    (3, 24, 3, 2, 3),
    (3, 40, 5, 2, 3),
    (6, 80, 5, 2, 3),
    (6, 96, 3, 1, 2),
    (6, 192, 5, 2, 4),
    (6, 320, 3, 1, 1),
]
STEM_FILTERS = 32  # 3x3/2 conv, then a depthwise-separable conv to SEPARABLE_FILTERS.
SEPARABLE_FILTERS = 16
FIRST_STACK = 8  # torchvision `layers` index of the first stack.
LAST_FILTERS = 1280  # not scaled by alpha.
# PyTorch momentum 1 - 0.9997 is Keras momentum 0.9997.
BN = {"epsilon": 1e-5, "momentum": 0.9997}
IMAGENET_ALPHAS = (0.5, 0.75, 1.0, 1.3)
# torchvision `_InvertedResidual.layers` indices, after `layers_{i}_{j}_`.
IR_NAMES = {
    "expand": "layers_0", "expand_bn": "layers_1", "expand_act": "layers_2",
    "pad": "layers_3_pad", "dw": "layers_3", "dw_bn": "layers_4", "dw_act": "layers_5",
    "project": "layers_6", "project_bn": "layers_7", "add": "add",
}
# The stem's depthwise-separable conv (`layers.3` ... `layers.7`): no
# expansion and no skip, so no names for them.
STEM_NAMES = {
    "pad": "layers_3_pad", "dw": "layers_3", "dw_bn": "layers_4", "dw_act": "layers_5",
    "project": "layers_6", "project_bn": "layers_7",
}


def round_depth(value):
    """torchvision's `_round_to_multiple_of(value, 8, round_up_bias=0.9)`.

    That is `make_divisible`'s rule (nearest multiple of 8, never below 8,
    and up again when more than 10% was dropped), written once there.
    """
    return blocks.make_divisible(value, 8)


def decode_blocks(alpha):
    """One `(torchvision prefix, expansion, filters, kernel, stride)` per block."""
    rows = []
    for s, (expansion, filters, kernel, stride, repeats) in enumerate(STACKS):
        out = round_depth(filters * alpha)
        for i in range(repeats):
            prefix = f"layers_{FIRST_STACK + s}_{i}_"
            rows.append((prefix, expansion, out, kernel, stride if i == 0 else 1))
    return rows


def MnasNet(
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
    *,
    _layers=None,
):
    """Instantiates the MnasNet (B1) architecture.

    Reference:
    - [MnasNet: Platform-Aware Neural Architecture Search for Mobile](
      https://arxiv.org/abs/1807.11626) (CVPR 2019)

    Computes exactly what torchvision's `mnasnet0_5`, `mnasnet0_75`,
    `mnasnet1_0` and `mnasnet1_3` compute (PyTorch's symmetric padding
    included); weighted layers carry torchvision's module paths. With
    `include_preprocessing=True` (default) the model takes float RGB pixels
    in `[0, 255]` and `preprocess_input` is the identity; without it, pixels
    normalised as torchvision does (`x / 255`, ImageNet mean and std).

    Args:
        input_shape: optional `(rows, cols, channels)`; defaults to
            `(None, None, 3)`.
        alpha: width multiplier, at most 4 (0.5, 0.75, 1.0 and 1.3 have
            ImageNet weights).
        include_top: whether to include the classifier.
        weights: `None`, `"imagenet"` or the path to a weights file.
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
    classes = common.check_common(
        include_top=include_top, weights=weights, input_tensor=input_tensor,
        input_shape=input_shape, pooling=pooling, classes=classes,
        classifier_activation=classifier_activation,
        include_preprocessing=include_preprocessing, name=name,
    )
    alpha = common.check_positive("alpha", alpha, upper=common.MAX_ALPHA)
    common.check_fraction("dropout_rate", dropout_rate)
    shape = common.resolve_input_shape(input_shape, input_tensor, include_top, 224,
                                       static_top=False)
    if weights == "imagenet":
        common.check_choice("alpha", alpha, IMAGENET_ALPHAS)

    L = _layers
    Ls = L or common.default_namespace()
    img_input, inputs = common.make_input(shape, input_tensor, L)
    x = img_input
    if include_preprocessing:
        x = common.normalization(imagenet.TORCH_MEAN, imagenet.TORCH_STD, L)(x)
    x = blocks.conv_bn_act(
        x, round_depth(STEM_FILTERS * alpha), 3, strides=2, act="relu",
        names={"conv": "layers_0", "bn": "layers_1", "act": "layers_2", "pad": "layers_0_pad"},
        bn=BN, pad_mode="symmetric", L=L,
    )
    # torchvision gives the stem's separable conv no skip, even at equal widths.
    x = blocks.inverted_residual(
        x, round_depth(SEPARABLE_FILTERS * alpha), None, act="relu", prefix="",
        names=STEM_NAMES, bn=BN, pad_mode="symmetric", residual=False, L=L,
    )
    for prefix, expansion, filters, kernel, stride in decode_blocks(alpha):
        x = blocks.inverted_residual(
            x, filters, expansion * x.shape[-1], kernel_size=kernel, strides=stride,
            act="relu", prefix=prefix, names=IR_NAMES, bn=BN, pad_mode="symmetric", L=L,
        )
    last = FIRST_STACK + len(STACKS)
    x = blocks.conv_bn_act(
        x, LAST_FILTERS, 1, act="relu",
        names={"conv": f"layers_{last}", "bn": f"layers_{last + 1}",
               "act": f"layers_{last + 2}"},
        bn=BN, L=L,
    )
    if include_top:
        x = Ls.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate > 0:
            x = Ls.Dropout(dropout_rate, name="classifier_0")(x)
        x = Ls.Dense(classes, activation=classifier_activation, name="classifier_1")(x)
    else:
        x = common.pool(x, pooling, L=L)
    model = common.functional(inputs, x, name or f"mnasnet_{int(round(alpha * 100)):03d}", L)
    return common.load_weights(model, weights, "MnasNet", {"alpha": alpha}, include_top)


def preprocess_input(x, data_format=None):
    """Identity: MnasNet models embed their preprocessing."""
    return x


def decode_predictions(preds, top=5):
    return imagenet.decode_predictions(preds, top=top)


decode_predictions.__doc__ = "Decodes ImageNet predictions; see `imagenet.decode_predictions`."

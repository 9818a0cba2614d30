"""MobileNetV2, layer-compatible with `keras.applications.MobileNetV2`.

Reference:
- [MobileNetV2: Inverted Residuals and Linear Bottlenecks](
  https://arxiv.org/abs/1801.04381) (CVPR 2018)
"""

from keras_lightnets import blocks, imagenet
from keras_lightnets.models import common

# Paper Table 2 after the stem. Columns: expansion t, filters c, repeats n,
# stride s of the first repeat.
STAGES = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
STEM_FILTERS = 32
LAST_FILTERS = 1280
BN = {"epsilon": 1e-3, "momentum": 0.999}
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
IMAGENET_SIZES = (96, 128, 160, 192, 224)


def decode_blocks(alpha):
    """One `(block_id, expansion, filters, stride)` row per block."""
    rows = []
    for expansion, filters, repeats, stride in STAGES:
        # keras.applications truncates before rounding; the weights depend on it.
        out = blocks.make_divisible(int(filters * alpha), 8)
        for i in range(repeats):
            rows.append((len(rows), expansion, out, stride if i == 0 else 1))
    return rows


def MobileNetV2(
    input_shape=None,
    alpha=1.0,
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name=None,
    *,
    _layers=None,
):
    """Instantiates the MobileNetV2 architecture.

    Reference:
    - [MobileNetV2: Inverted Residuals and Linear Bottlenecks](
      https://arxiv.org/abs/1801.04381) (CVPR 2018)

    Layer names, order and weight shapes are those of
    `keras.applications.MobileNetV2`, so its `.h5` weight files load as they
    are. Inputs are float RGB pixels scaled to `[-1, 1]` by `preprocess_input`.

    Args:
        input_shape: optional `(rows, cols, channels)`; defaults to
            `(224, 224, 3)` with the top, `(None, None, 3)` without.
        alpha: width multiplier, at most 4 (0.35, 0.5, 0.75, 1.0, 1.3 and 1.4
            have ImageNet weights).
        include_top: whether to include the classifier.
        weights: `None`, `"imagenet"` or the path to a weights file.
        input_tensor: optional Keras tensor to use as the model input.
        pooling: `None`, `"avg"` or `"max"` global pooling when
            `include_top=False`.
        classes: number of classes with the top.
        classifier_activation: activation of the top layer (`None` for
            logits).
        name: model name.

    Returns:
        A `keras.Model`.
    """
    classes = common.check_common(
        include_top=include_top, weights=weights, input_tensor=input_tensor,
        input_shape=input_shape, pooling=pooling, classes=classes,
        classifier_activation=classifier_activation, name=name,
    )
    alpha = common.check_positive("alpha", alpha, upper=common.MAX_ALPHA)
    if input_tensor is not None and input_shape is None:
        rows_cols = tuple(input_tensor.shape[1:3])
    else:
        rows_cols = tuple(input_shape[:2]) if input_shape is not None else (None, None)
    default_size = rows_cols[0] if rows_cols[0] == rows_cols[1] in IMAGENET_SIZES else 224
    shape = common.resolve_input_shape(
        input_shape, input_tensor, include_top, default_size, static_top=True, weights=weights,
    )
    rows, cols = shape[0], shape[1]
    if weights == "imagenet":
        common.check_choice("alpha", alpha, IMAGENET_ALPHAS)
        common.warn_default_size(rows, cols, IMAGENET_SIZES)
        if rows != cols or rows not in IMAGENET_SIZES:
            rows = 224

    L = _layers
    img_input, inputs = common.make_input(shape, input_tensor, L)
    x = blocks.conv_bn_act(
        img_input, blocks.make_divisible(STEM_FILTERS * alpha, 8), 3, strides=2, act="relu6",
        names={"conv": "Conv1", "bn": "bn_Conv1", "act": "Conv1_relu"}, bn=BN, L=L,
    )
    for block_id, expansion, filters, stride in decode_blocks(alpha):
        in_filters = x.shape[-1]
        x = blocks.inverted_residual(
            x, filters, expansion * in_filters if block_id else None, strides=stride,
            act="relu6", prefix=f"block_{block_id}_" if block_id else "expanded_conv_",
            names=blocks.IR_NAMES_KERAS_V2, bn=BN, L=L,
        )
    last = blocks.make_divisible(LAST_FILTERS * alpha, 8) if alpha > 1.0 else LAST_FILTERS
    x = blocks.conv_bn_act(
        x, last, 1, act="relu6",
        names={"conv": "Conv_1", "bn": "Conv_1_bn", "act": "out_relu"}, bn=BN, L=L,
    )
    if include_top:
        Ls = L or common.default_namespace()
        x = Ls.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
        x = Ls.Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = common.pool(x, pooling, L=L)
    model = common.functional(inputs, x, name or f"mobilenetv2_{alpha:0.2f}_{rows}", L)
    variant = {"alpha": alpha, "rows": rows}
    return common.load_weights(model, weights, "MobileNetV2", variant, include_top)


def preprocess_input(x, data_format=None):
    """Scales RGB pixels from `[0, 255]` to `[-1, 1]`."""
    return imagenet.preprocess_input(x, data_format=data_format, mode="tf")


decode_predictions = imagenet.decode_predictions

"""MobileNetV2, layer-compatible with `keras.applications.MobileNetV2`.

Reference:
- [MobileNetV2: Inverted Residuals and Linear Bottlenecks](
  https://arxiv.org/abs/1801.04381) (CVPR 2018)
"""


from keras_lightnets import blocks, imagenet, spec
from keras_lightnets import layers as kl
from keras_lightnets.models import common
from keras_lightnets.spec import Block
from keras_lightnets.weights import sources

# Paper Table 2. Columns: kind, kernel, stride, filters, expansion t; repeats n.
TABLE = [
    Block("conv", 3, 2, 32, act="relu6", name="Conv1 bn_Conv1 Conv1_relu"),
    Block("ir", 3, 1, 16, 1, act="relu6", tap=True, name="expanded_conv_"),
    Block("ir", 3, 2, 24, 6, act="relu6", repeats=2, tap=True),
    Block("ir", 3, 2, 32, 6, act="relu6", repeats=3, tap=True),
    Block("ir", 3, 2, 64, 6, act="relu6", repeats=4),
    Block("ir", 3, 1, 96, 6, act="relu6", repeats=3, tap=True),
    Block("ir", 3, 2, 160, 6, act="relu6", repeats=3),
    Block("ir", 3, 1, 320, 6, act="relu6"),
    Block("conv", 1, 1, 1280, act="relu6", scale="up", tap=True, name="Conv_1 Conv_1_bn out_relu"),
]
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
IMAGENET_SIZES = (96, 128, 160, 192, 224)


def MobileNetV2(
    input_shape=None,
    alpha=1.0,
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    name=None,
):
    """Instantiates the MobileNetV2 architecture.

    Reference:
    - [MobileNetV2: Inverted Residuals and Linear Bottlenecks](
      https://arxiv.org/abs/1801.04381) (CVPR 2018)

    Layer names, order and weight shapes are those of
    `keras.applications.MobileNetV2`, so its `.h5` weight files load as they
    are. Inputs are float RGB pixels scaled to `[-1, 1]` by `preprocess_input`.

    A torchvision `.pth`, PaddleClas `.pdparams` or timm `.safetensors` file
    as `weights` builds that publisher's flavour (symmetric padding, its
    batch-norm epsilon; PaddleClas: an expansion in the first block and
    widths `int(c * alpha)`), which takes float RGB pixels in `[0, 255]`
    with the ImageNet mean/std normalization embedded
    (`include_preprocessing=True`); so do those publishers' weight sets
    (`"torchvision"`, `"paddle"`, `"timm_ra"`, ...: `keras_lightnets.list_weights`).

    Args:
        input_shape: optional `(rows, cols, channels)`; defaults to
            `(224, 224, 3)` with the top, `(None, None, 3)` without.
        alpha: width multiplier, at most 4 (0.35, 0.5, 0.75, 1.0, 1.3 and 1.4
            have keras.applications' ImageNet weights).
        include_top: whether to include the classifier.
        weights: `None`, `"imagenet"`, a weight set's name
            (`keras_lightnets.list_weights`) or the path to a weights file.
        input_tensor: optional Keras tensor to use as the model input.
        pooling: `None`, `"avg"` or `"max"` global pooling when
            `include_top=False`.
        classes: number of classes with the top.
        classifier_activation: activation of the top layer (`None` for
            logits).
        include_preprocessing: whether to embed the input normalization of
            a flavour that has one (torchvision's, PaddleClas').
        name: model name.

    Returns:
        A `keras.Model`.
    """
    classes = common.check_common(locals())
    flavour = sources.flavour_for("MobileNetV2", weights)
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
    if common.is_pretrained(weights):
        if weights == "imagenet":
            common.check_choice("alpha", alpha, IMAGENET_ALPHAS)
        common.check_published("MobileNetV2", {"alpha": alpha}, weights)
        common.warn_default_size(rows, cols, IMAGENET_SIZES)
        if rows != cols or rows not in IMAGENET_SIZES:
            rows = 224

    img_input, inputs = common.make_input(shape, input_tensor)
    x = img_input
    if include_preprocessing and flavour.normalization.embedded:
        x = kl.Rescaling(*flavour.normalization.scale_offset(), name="rescaling")(x)
    x, taps = spec.build(x, TABLE, alpha, names=blocks.IR_NAMES_KERAS_V2,
                         prefix="block_{b}_", bn=flavour.bn, pad=flavour.padding, truncate=True,
                         flavour=flavour)
    x = common.head(x, include_top, pooling, classes, classifier_activation,
                    pool="global_average_pooling2d", dropout=flavour.classifier_dropout)
    model = common.finish(inputs, x, name or f"mobilenetv2_{alpha:0.2f}_{rows}", weights,
                          "MobileNetV2", {"alpha": alpha, "rows": rows}, include_top)
    return spec.remember_taps(model, taps, img_input, inputs)


def preprocess_input(x, data_format=None):
    """Scales RGB pixels from `[0, 255]` to `[-1, 1]`."""
    return imagenet.preprocess_input(x, data_format=data_format, mode="tf")


decode_predictions = imagenet.decode_predictions

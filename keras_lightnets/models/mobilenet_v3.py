"""MobileNetV3 Small and Large, layer-compatible with keras.applications.

Reference:
- [Searching for MobileNetV3](https://arxiv.org/abs/1905.02244) (ICCV 2019)

Hard-swish and the SE gate are the registered `HardSwish` and `HardSigmoid`
layers (Keras' `x + 3` arithmetic cannot be quantized by TF-MOT).
"""

from keras_lightnets import blocks
from keras_lightnets.models import common

# Paper Tables 1 (Large) and 2 (Small) after the stem. Columns: expansion,
# filters, kernel, stride, squeeze-excite, activation. Minimalistic variants
# turn every kernel into 3x3, drop SE and use ReLU throughout.
LARGE = [
    (1, 16, 3, 1, False, "relu"),
    (4, 24, 3, 2, False, "relu"),
    (3, 24, 3, 1, False, "relu"),
    (3, 40, 5, 2, True, "relu"),
    (3, 40, 5, 1, True, "relu"),
    (3, 40, 5, 1, True, "relu"),
    (6, 80, 3, 2, False, "hard_swish"),
    (2.5, 80, 3, 1, False, "hard_swish"),
    (2.3, 80, 3, 1, False, "hard_swish"),
    (2.3, 80, 3, 1, False, "hard_swish"),
    (6, 112, 3, 1, True, "hard_swish"),
    (6, 112, 3, 1, True, "hard_swish"),
    (6, 160, 5, 2, True, "hard_swish"),
    (6, 160, 5, 1, True, "hard_swish"),
    (6, 160, 5, 1, True, "hard_swish"),
]
SMALL = [
    (1, 16, 3, 2, True, "relu"),
    (72 / 16, 24, 3, 2, False, "relu"),
    (88 / 24, 24, 3, 1, False, "relu"),
    (4, 40, 5, 2, True, "hard_swish"),
    (6, 40, 5, 1, True, "hard_swish"),
    (6, 40, 5, 1, True, "hard_swish"),
    (3, 48, 5, 1, True, "hard_swish"),
    (3, 48, 5, 1, True, "hard_swish"),
    (6, 96, 5, 2, True, "hard_swish"),
    (6, 96, 5, 1, True, "hard_swish"),
    (6, 96, 5, 1, True, "hard_swish"),
]
# Per model type: block table, last point-wise channels.
SPECS = {"large": (LARGE, 1280), "small": (SMALL, 1024)}
STEM_FILTERS = 16
SE_RATIO = 0.25
BN = {"epsilon": 1e-3, "momentum": 0.999}
IMAGENET_ALPHAS = {False: (0.75, 1.0), True: (1.0,)}


def decode_blocks(model_type, alpha, minimalistic):
    """One `(expansion, filters, kernel, stride, se, activation)` row per block."""
    table, _ = SPECS[model_type]
    rows = []
    for expansion, filters, kernel, stride, se, act in table:
        if minimalistic:
            kernel, se, act = 3, False, "relu"
        rows.append((expansion, blocks.make_divisible(filters * alpha), kernel, stride, se, act))
    return rows


def _mobilenet_v3(
    model_type,
    input_shape,
    alpha,
    minimalistic,
    include_top,
    weights,
    input_tensor,
    classes,
    pooling,
    dropout_rate,
    classifier_activation,
    include_preprocessing,
    name,
    L,
):
    classes = common.check_common(
        include_top=include_top, weights=weights, input_tensor=input_tensor,
        input_shape=input_shape, pooling=pooling, classes=classes,
        classifier_activation=classifier_activation,
        include_preprocessing=include_preprocessing, name=name,
    )
    alpha = common.check_positive("alpha", alpha, upper=common.MAX_ALPHA)
    common.check_bool("minimalistic", minimalistic)
    common.check_fraction("dropout_rate", dropout_rate)
    shape = common.resolve_input_shape(input_shape, input_tensor, include_top, 224,
                                       static_top=False)
    if weights == "imagenet":
        common.check(
            alpha in IMAGENET_ALPHAS[minimalistic],
            "If imagenet weights are being loaded, alpha can be one of `0.75`, `1.0` for "
            "non minimalistic or `1.0` for minimalistic only.",
            alpha=alpha,
        )
        common.warn_default_size(shape[0], shape[1], (224,))

    Ls = L or common.default_namespace()
    act = "relu" if minimalistic else "hard_swish"
    img_input, inputs = common.make_input(shape, input_tensor, L)
    x = img_input
    if include_preprocessing:
        x = Ls.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="rescaling")(x)
    x = blocks.conv_bn_act(
        x, STEM_FILTERS, 3, strides=2, act=act,
        names={"conv": "conv", "bn": "conv_bn", "act": f"conv_{act}"}, bn=BN, L=L,
    )
    for block_id, (expansion, filters, kernel, stride, se, block_act) in enumerate(
        decode_blocks(model_type, alpha, minimalistic)
    ):
        in_filters = x.shape[-1]
        expand = blocks.make_divisible(in_filters * expansion) if block_id else None
        x = blocks.inverted_residual(
            x, filters, expand, kernel_size=kernel, strides=stride, act=block_act,
            se_filters=blocks.make_divisible((expand or in_filters) * SE_RATIO) if se else None,
            prefix=f"expanded_conv_{block_id}_" if block_id else "expanded_conv_",
            names=blocks.IR_NAMES_KERAS_V3, bn=BN, L=L,
        )
    last_conv = blocks.make_divisible(x.shape[-1] * 6)
    _, last_point = SPECS[model_type]
    if alpha > 1.0:
        last_point = blocks.make_divisible(last_point * alpha)
    x = blocks.conv_bn_act(
        x, last_conv, 1, act=act,
        names={"conv": "conv_1", "bn": "conv_1_bn", "act": f"conv_1_{act}"}, bn=BN, L=L,
    )
    if include_top:
        x = Ls.GlobalAveragePooling2D(keepdims=True, name="global_average_pooling2d")(x)
        x = Ls.Conv2D(last_point, 1, padding="same", use_bias=True, name="conv_2")(x)
        x = blocks.apply_activation(Ls, x, act, f"conv_2_{act}")
        if dropout_rate > 0:
            x = Ls.Dropout(dropout_rate, name="dropout")(x)
        x = Ls.Conv2D(classes, 1, padding="same", name="logits")(x)
        x = Ls.Flatten(name="flatten")(x)
        x = Ls.Activation(classifier_activation, name="predictions")(x)
    else:
        x = common.pool(x, pooling, L=L)
    model = common.functional(inputs, x, name, L)
    variant = {"model_type": model_type, "alpha": alpha, "minimalistic": minimalistic}
    family = "MobileNetV3Large" if model_type == "large" else "MobileNetV3Small"
    return common.load_weights(model, weights, family, variant, include_top)


DOCSTRING = """Instantiates the {name} architecture.

    Reference:
    - [Searching for MobileNetV3](https://arxiv.org/abs/1905.02244) (ICCV 2019)

    Layer names, order and weight shapes are those of
    `keras.applications.{name}`, so its `.h5` weight files load as they are.
    With `include_preprocessing=True` (default) the model takes float RGB
    pixels in `[0, 255]` and `preprocess_input` is the identity; without it,
    pixels in `[-1, 1]`.

    Args:
        input_shape: optional `(rows, cols, channels)`; defaults to
            `(None, None, 3)`.
        alpha: width multiplier, at most 4 (0.75 and 1.0 have ImageNet
            weights; 1.0 only when minimalistic).
        minimalistic: no squeeze-excite, no hard-swish and no 5x5 kernels.
        include_top: whether to include the classifier.
        weights: `None`, `"imagenet"` or the path to a weights file.
        input_tensor: optional Keras tensor to use as the model input.
        classes: number of classes with the top.
        pooling: `None`, `"avg"` or `"max"` global pooling when
            `include_top=False`.
        dropout_rate: dropout rate before the classifier.
        classifier_activation: activation of the top layer (`None` for
            logits).
        include_preprocessing: whether to include the `Rescaling` layer.
        name: model name.

    Returns:
        A `keras.Model`.
    """


def MobileNetV3Small(
    input_shape=None,
    alpha=1.0,
    minimalistic=False,
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    classes=1000,
    pooling=None,
    dropout_rate=0.2,
    classifier_activation="softmax",
    include_preprocessing=True,
    name="MobileNetV3Small",
    *,
    _layers=None,
):
    return _mobilenet_v3(
        "small", input_shape, alpha, minimalistic, include_top, weights, input_tensor,
        classes, pooling, dropout_rate, classifier_activation, include_preprocessing,
        name, _layers,
    )


def MobileNetV3Large(
    input_shape=None,
    alpha=1.0,
    minimalistic=False,
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    classes=1000,
    pooling=None,
    dropout_rate=0.2,
    classifier_activation="softmax",
    include_preprocessing=True,
    name="MobileNetV3Large",
    *,
    _layers=None,
):
    return _mobilenet_v3(
        "large", input_shape, alpha, minimalistic, include_top, weights, input_tensor,
        classes, pooling, dropout_rate, classifier_activation, include_preprocessing,
        name, _layers,
    )


MobileNetV3Small.__doc__ = DOCSTRING.format(name="MobileNetV3Small")
MobileNetV3Large.__doc__ = DOCSTRING.format(name="MobileNetV3Large")


def preprocess_input(x, data_format=None):
    """Identity: MobileNetV3 models embed their preprocessing."""
    return x


def decode_predictions(preds, top=5):
    from keras_lightnets import imagenet

    return imagenet.decode_predictions(preds, top=top)


decode_predictions.__doc__ = "Decodes ImageNet predictions; see `imagenet.decode_predictions`."

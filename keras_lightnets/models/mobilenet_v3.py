"""MobileNetV3 Small and Large, layer-compatible with keras.applications.

Reference:
- [Searching for MobileNetV3](https://arxiv.org/abs/1905.02244) (ICCV 2019)

Hard-swish and the SE gate are the registered `HardSwish` and `HardSigmoid`
layers (Keras' `x + 3` arithmetic cannot be quantized by TF-MOT).

The weights decide the flavour built (`sources.flavour_for`): keras.applications'
by default; torchvision's (`.pth`, sets "torchvision"/"torchvision_v2"),
PaddleClas's (`.pdparams`, sets "paddle"/"paddle_ssld") and timm's (`.safetensors`,
sets "timm"/"timm_ra4") keep the same layer names with their own numerics, widths
and head (see `sources.Flavour`).
"""

from keras import layers

from keras_lightnets import blocks, spec
from keras_lightnets import layers as kl
from keras_lightnets.models import common
from keras_lightnets.spec import Block
from keras_lightnets.weights import sources

# Paper Tables 1 (Large) and 2 (Small). Columns: kind, kernel, stride, filters,
# expansion, squeeze-excite ratio, activation. Minimalistic variants turn every
# block kernel into 3x3, drop SE and use ReLU throughout.
STEM = Block("conv", 3, 2, 16, act="hard_swish", scale="fixed", name="conv conv_bn conv_{act}")
HEAD = Block("conv", 1, 1, None, 6, act="hard_swish", tap=True,
             name="conv_1 conv_1_bn conv_1_{act}")
LARGE = [
    STEM,
    Block("ir", 3, 1, 16, 1, 0, "relu", tap=True, name="expanded_conv_"),
    Block("ir", 3, 2, 24, 4, 0, "relu"),
    Block("ir", 3, 1, 24, 3, 0, "relu", tap=True),
    Block("ir", 5, 2, 40, 3, 0.25, "relu"),
    Block("ir", 5, 1, 40, 3, 0.25, "relu"),
    Block("ir", 5, 1, 40, 3, 0.25, "relu", tap=True),
    Block("ir", 3, 2, 80, 6, 0, "hard_swish"),
    Block("ir", 3, 1, 80, 2.5, 0, "hard_swish"),
    Block("ir", 3, 1, 80, 2.3, 0, "hard_swish"),
    Block("ir", 3, 1, 80, 2.3, 0, "hard_swish"),
    Block("ir", 3, 1, 112, 6, 0.25, "hard_swish"),
    Block("ir", 3, 1, 112, 6, 0.25, "hard_swish", tap=True),
    Block("ir", 5, 2, 160, 6, 0.25, "hard_swish"),
    Block("ir", 5, 1, 160, 6, 0.25, "hard_swish"),
    Block("ir", 5, 1, 160, 6, 0.25, "hard_swish"),
    HEAD,
]
SMALL = [
    STEM._replace(tap=True),
    Block("ir", 3, 2, 16, 1, 0.25, "relu", tap=True, name="expanded_conv_"),
    Block("ir", 3, 2, 24, 72 / 16, 0, "relu"),
    Block("ir", 3, 1, 24, 88 / 24, 0, "relu", tap=True),
    Block("ir", 5, 2, 40, 4, 0.25, "hard_swish"),
    Block("ir", 5, 1, 40, 6, 0.25, "hard_swish"),
    Block("ir", 5, 1, 40, 6, 0.25, "hard_swish"),
    Block("ir", 5, 1, 48, 3, 0.25, "hard_swish"),
    Block("ir", 5, 1, 48, 3, 0.25, "hard_swish", tap=True),
    Block("ir", 5, 2, 96, 6, 0.25, "hard_swish"),
    Block("ir", 5, 1, 96, 6, 0.25, "hard_swish"),
    Block("ir", 5, 1, 96, 6, 0.25, "hard_swish"),
    HEAD,
]
# Per model type: block table, channels of the classifier's hidden 1x1 conv.
SPECS = {"large": (LARGE, 1280), "small": (SMALL, 1024)}
# Layer-name suffixes of the inverted residual in keras.applications.
IR_NAMES = {
    "expand": "expand", "expand_bn": "expand_bn", "expand_act": "expand_{act}",
    "pad": "depthwise_pad", "dw": "depthwise", "dw_bn": "depthwise_bn",
    "dw_act": "depthwise_{act}", "project": "project", "project_bn": "project_bn",
    "add": "add",
}
IMAGENET_ALPHAS = {False: (0.75, 1.0), True: (1.0,)}


def minimal(row):
    """The row of a minimalistic variant."""
    if row.kind == "conv":
        return row._replace(act="relu")
    return row._replace(kernel=3, se=0, act="relu")


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
):
    classes = common.check_common(locals())
    alpha = common.check_positive("alpha", alpha, upper=common.MAX_ALPHA)
    common.check_bool("minimalistic", minimalistic)
    common.check_fraction("dropout_rate", dropout_rate)
    shape = common.resolve_input_shape(input_shape, input_tensor, include_top)
    family = "MobileNetV3Large" if model_type == "large" else "MobileNetV3Small"
    if common.is_pretrained(weights):
        common.check(
            weights != "imagenet" or alpha in IMAGENET_ALPHAS[minimalistic],
            "If imagenet weights are being loaded, alpha can be one of `0.75`, `1.0` for "
            "non minimalistic or `1.0` for minimalistic only.",
            alpha=alpha,
        )
        common.check_published(family, {"alpha": alpha, "minimalistic": minimalistic}, weights)
        common.warn_default_size(shape[0], shape[1], (224,))

    flavour = sources.flavour_for(family, weights, {"alpha": alpha, "minimalistic": minimalistic})
    table, hidden = SPECS[model_type]
    if minimalistic:
        table = [minimal(row) for row in table]
    act = table[-1].act
    img_input, inputs = common.make_input(shape, input_tensor)
    x = img_input
    if include_preprocessing and flavour.normalization.embedded:
        x = kl.Rescaling(*flavour.normalization.scale_offset(), name="rescaling")(x)
    x, taps = spec.build(x, table, alpha, names=IR_NAMES,
                         prefix="expanded_conv_{b}_", bn=flavour.bn,
                         pad=flavour.padding, flavour=flavour)
    if include_top:
        hidden = flavour.head_filters or spec.width(hidden, alpha, "up")
        x = layers.GlobalAveragePooling2D(keepdims=True, name="global_average_pooling2d")(x)
        x = layers.Conv2D(hidden, 1, padding="same", use_bias=flavour.head_bias,
                          name="conv_2")(x)
        x = blocks.apply_activation(x, act, f"conv_2_{act}")
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="dropout")(x)
        x = layers.Conv2D(classes, 1, padding="same", name="logits")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Activation(classifier_activation, name="predictions")(x)
    else:
        x = common.globally_pool(x, pooling)
    variant = {"model_type": model_type, "alpha": alpha, "minimalistic": minimalistic}
    model = common.finish(inputs, x, name, weights, family, variant, include_top)
    return spec.remember_taps(model, taps, img_input, inputs)


DOCSTRING = """Instantiates the {name} architecture.

    Reference:
    - [Searching for MobileNetV3](https://arxiv.org/abs/1905.02244) (ICCV 2019)

    Layer names, order and weight shapes are those of
    `keras.applications.{name}`, so its `.h5` weight files load as they are.
    With `include_preprocessing=True` (default) the model takes float RGB
    pixels in `[0, 255]` and `preprocess_input` is the identity; without it,
    pixels in `[-1, 1]` (torchvision's, PaddleClas's and timm's flavours:
    pixels normalized by the ImageNet mean and std; timm's "timm_ra4" set:
    `[-1, 1]`). A timm `.safetensors` file given by path builds the "timm"
    set's normalization.

    Args:
        input_shape: optional `(rows, cols, channels)`; defaults to
            `(None, None, 3)`.
        alpha: width multiplier, at most 4 (0.75 and 1.0 have ImageNet
            weights; 1.0 only when minimalistic; PaddleClas's sets have
            0.35, 0.5, 0.75, 1.0 and 1.25; timm's, Large 1.0 and Small 0.5,
            0.75 and 1.0).
        minimalistic: no squeeze-excite, no hard-swish and no 5x5 kernels.
        include_top: whether to include the classifier.
        weights: `None`, `"imagenet"`, a weight set's name
            (`keras_lightnets.list_weights`) or the path to a weights file.
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
):
    return _mobilenet_v3(
        "small", input_shape, alpha, minimalistic, include_top, weights, input_tensor,
        classes, pooling, dropout_rate, classifier_activation, include_preprocessing,
        name,
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
):
    return _mobilenet_v3(
        "large", input_shape, alpha, minimalistic, include_top, weights, input_tensor,
        classes, pooling, dropout_rate, classifier_activation, include_preprocessing,
        name,
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

"""EfficientNet-Lite0 to Lite4, numerically identical to timm's.

Reference:
- [EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks](
  https://arxiv.org/abs/1905.11946) (ICML 2019); the Lite variants are
  TensorFlow's `efficientnet/lite`: no squeeze-excite, ReLU6, and a stem and
  head that are not scaled.

Weighted layers are named after timm's module paths (`conv_stem`,
`blocks_1_0_conv_pw`, `classifier`), so a timm state dict
(`tf_efficientnet_lite0.in1k`) loads through `weights=<path.safetensors>`.
"""

import math

from keras_lightnets import imagenet, spec
from keras_lightnets.models import common
from keras_lightnets.spec import Block
from keras_lightnets.weights import sources

# timm's `_gen_efficientnet_lite` arch_def, one row per stage, the stem and
# head (fixed width) around them. Columns: kind, kernel, stride, filters,
# expansion; repeats (scaled by the depth multiplier except in the first and
# last stage).
TABLE = [
    Block("conv", 3, 2, 32, act="relu6", scale="fixed", name="conv_stem bn1 bn1_act"),
    Block("ds", 3, 1, 16, act="relu6", tap=True, name="blocks_0_{i}_"),
    Block("ir", 3, 2, 24, 6, act="relu6", repeats=2, tap=True, name="blocks_1_{i}_"),
    Block("ir", 5, 2, 40, 6, act="relu6", repeats=2, tap=True, name="blocks_2_{i}_"),
    Block("ir", 3, 2, 80, 6, act="relu6", repeats=3, name="blocks_3_{i}_"),
    Block("ir", 5, 1, 112, 6, act="relu6", repeats=3, tap=True, name="blocks_4_{i}_"),
    Block("ir", 5, 2, 192, 6, act="relu6", repeats=4, name="blocks_5_{i}_"),
    Block("ir", 3, 1, 320, 6, act="relu6", name="blocks_6_{i}_"),
    Block("conv", 1, 1, 1280, act="relu6", scale="fixed", tap=True,
          name="conv_head bn2 bn2_act"),
]
# Per variant: width multiplier, depth multiplier, default input size,
# dropout rate (TensorFlow's `efficientnet_lite_builder`).
VARIANTS = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
    3: (1.2, 1.4, 280, 0.3),
    4: (1.4, 1.8, 300, 0.3),
}
# timm's block module names, after `blocks_{stage}_{i}_`: the separable
# block's depthwise conv is its first (`bn1`), the inverted residual's second.
IR_NAMES = {
    "expand": "conv_pw", "expand_bn": "bn1", "expand_act": "bn1_act",
    "pad": "conv_dw_pad", "dw": "conv_dw", "dw_bn": "bn2", "dw_act": "bn2_act",
    "project": "conv_pwl", "project_bn": "bn3", "add": "add",
}
DS_NAMES = {
    **IR_NAMES, "dw_bn": "bn1", "dw_act": "bn1_act", "project": "conv_pw", "project_bn": "bn2",
}
NAMES = {"ir": IR_NAMES, "ds": DS_NAMES}
# One family of five variants (as torchvision's widths), for its weights and registry.
FAMILY = "EfficientNetLite"


def scaled_table(depth):
    """`TABLE` with the repeats of the inner stages scaled by `depth`, rounded up."""
    inner = range(2, len(TABLE) - 2)
    return [row._replace(repeats=int(math.ceil(row.repeats * depth))) if i in inner else row
            for i, row in enumerate(TABLE)]


def EfficientNetLite(
    variant=0,
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    name=None,
    dropout_rate=None,
):
    """Instantiates an EfficientNet-Lite architecture (`variant` 0 to 4).

    `EfficientNetLite0` .. `EfficientNetLite4` are this with their `variant`;
    see them for the arguments.
    """
    classes = common.check_common(locals())
    variant = common.check_choice("variant", variant, tuple(VARIANTS))
    alpha, depth, _, default_dropout = VARIANTS[variant]
    dropout_rate = default_dropout if dropout_rate is None else dropout_rate
    common.check_fraction("dropout_rate", dropout_rate)
    common.check_published(FAMILY, {"variant": variant}, weights)
    flavour = sources.flavour_for(FAMILY, weights, {"variant": variant})
    shape = common.resolve_input_shape(input_shape, input_tensor, include_top)

    img_input, inputs = common.make_input(shape, input_tensor)
    x = img_input
    if include_preprocessing:
        x = common.normalization(flavour.normalization.mean, flavour.normalization.std)(x)
    x, taps = spec.build(x, scaled_table(depth), alpha, names=NAMES, prefix="", bn=flavour.bn,
                          pad=flavour.padding)
    x = common.head(x, include_top, pooling, classes, classifier_activation,
                    dropout=dropout_rate, dropout_name="top_dropout", dense="classifier")
    model = common.finish(inputs, x, name or f"efficientnet_lite{variant}", weights, FAMILY,
                          {"variant": variant}, include_top)
    return spec.remember_taps(model, taps, img_input, inputs)


_DOC = """Instantiates the EfficientNet-Lite{variant} architecture.

    Reference:
    - [EfficientNet: Rethinking Model Scaling for Convolutional Neural
      Networks](https://arxiv.org/abs/1905.11946) (ICML 2019)

    Computes exactly what timm's `tf_efficientnet_lite{variant}` computes
    (TensorFlow's 'same' padding, batch-norm epsilon 1e-3); weighted layers
    carry timm's module paths. The default input size is {size}x{size}, but
    any size of at least 32 works. With `include_preprocessing=True`
    (default) the model takes float RGB pixels in `[0, 255]` and
    `preprocess_input` is the identity; without it, pixels scaled to
    `[-1, 1]`.

    Args:
        include_top: whether to include the classifier.
        weights: `None`, `"imagenet"` (= `"timm"`, timm's port of the
            TensorFlow weights), `"timm_ra"` (Lite0: timm's own training,
            built with PyTorch's padding and ImageNet mean/std) or the path
            to a weights file (a timm `model.safetensors` builds the port's
            flavour).
        input_tensor: optional Keras tensor to use as the model input.
        input_shape: optional `(rows, cols, channels)`; defaults to
            `(None, None, 3)`.
        pooling: `None`, `"avg"` or `"max"` global pooling when
            `include_top=False`.
        classes: number of classes with the top.
        classifier_activation: activation of the top layer (`None` for
            logits).
        include_preprocessing: whether to include the normalisation layer.
        name: model name.
        dropout_rate: dropout rate before the classifier (default {dropout}).

    Returns:
        A `keras.Model`.
    """


def _factory(variant):
    def factory(
        include_top=True,
        weights="imagenet",
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        include_preprocessing=True,
        name=None,
        dropout_rate=None,
    ):
        return EfficientNetLite(variant, include_top, weights, input_tensor, input_shape,
                                pooling, classes, classifier_activation, include_preprocessing,
                                name, dropout_rate)

    factory.__name__ = factory.__qualname__ = f"EfficientNetLite{variant}"
    _, _, size, dropout = VARIANTS[variant]
    factory.__doc__ = _DOC.format(variant=variant, size=size, dropout=dropout)
    return factory


EfficientNetLite0 = _factory(0)
EfficientNetLite1 = _factory(1)
EfficientNetLite2 = _factory(2)
EfficientNetLite3 = _factory(3)
EfficientNetLite4 = _factory(4)


def preprocess_input(x, data_format=None):
    """Identity: EfficientNet-Lite models embed their preprocessing."""
    return x


def decode_predictions(preds, top=5):
    return imagenet.decode_predictions(preds, top=top)


decode_predictions.__doc__ = "Decodes ImageNet predictions; see `imagenet.decode_predictions`."

"""MobileNet (V1), layer-compatible with `keras.applications.MobileNet`.

Reference:
- [MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
  Applications](https://arxiv.org/abs/1704.04861)
"""

from keras import layers

from keras_lightnets import blocks, imagenet
from keras_lightnets import layers as kl
from keras_lightnets.models import common
from keras_lightnets.weights import sources

# Paper Table 1 after the stem, one row per depthwise separable block
# (block ids 1..13). Columns: pointwise filters, stride.
BLOCKS = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
]
STEM_FILTERS = 32
IMAGENET_ALPHAS = (0.25, 0.5, 0.75, 1.0)
IMAGENET_SIZES = (128, 160, 192, 224)
# Multiplies the depthwise outputs and the next pointwise inputs; at it and
# `common.MAX_ALPHA` the model has a few hundred million parameters.
MAX_DEPTH_MULTIPLIER = 4


def width(filters, alpha):
    """MobileNet V1 scales widths by truncation, as keras.applications does."""
    return int(filters * alpha)


def MobileNet(
    input_shape=None,
    alpha=1.0,
    depth_multiplier=1,
    dropout=1e-3,
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    name=None,
):
    """Instantiates the MobileNet architecture.

    Reference:
    - [MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
      Applications](https://arxiv.org/abs/1704.04861)

    Layer names, order and weight shapes are those of
    `keras.applications.MobileNet`, so its `.h5` weight files load as they are.
    Inputs are float RGB pixels scaled to `[-1, 1]` by `preprocess_input`.

    A PaddleClas `.pdparams` file as `weights` builds PaddleClas' flavour
    (ReLU, symmetric padding, a dense classifier), which takes float RGB
    pixels in `[0, 255]` with the ImageNet mean/std normalization embedded
    (`include_preprocessing=True`). A timm `.safetensors` file (or the set
    `"timm_ra4"`) builds timm's flavour: ReLU6, symmetric padding, a dense
    classifier, RGB pixels in `[0, 255]` scaled to `[-1, 1]` in the model.

    Args:
        input_shape: optional `(rows, cols, channels)`; defaults to
            `(224, 224, 3)` with the top, `(None, None, 3)` without.
        alpha: width multiplier, at most 4 (0.25, 0.5, 0.75 and 1.0 have
            ImageNet weights).
        depth_multiplier: depthwise multiplier, at most 4 (1 for ImageNet
            weights).
        dropout: dropout rate before the classifier.
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
            a flavour that has one (PaddleClas').
        name: model name.

    Returns:
        A `keras.Model`.
    """
    classes = common.check_common(locals())
    flavour = sources.flavour_for("MobileNet", weights)
    alpha = common.check_positive("alpha", alpha, upper=common.MAX_ALPHA)
    depth_multiplier = common.check_positive("depth_multiplier", depth_multiplier,
                                             integer=True, upper=MAX_DEPTH_MULTIPLIER)
    common.check_fraction("dropout", dropout)
    common.check(width(STEM_FILTERS, alpha) >= 1, "`alpha` is too small: a layer would have "
                 "no filters.", alpha=alpha)
    if input_shape is not None and input_shape[0] == input_shape[1] in IMAGENET_SIZES:
        default_size = input_shape[0]
    else:
        default_size = 224
    shape = common.resolve_input_shape(
        input_shape, input_tensor, include_top, default_size, static_top=True, weights=weights,
    )
    rows, cols = shape[0], shape[1]
    if common.is_pretrained(weights):
        common.check(depth_multiplier == 1, "If imagenet weights are being loaded, depth "
                     "multiplier must be 1.", depth_multiplier=depth_multiplier)
        if weights == "imagenet":
            common.check_choice("alpha", alpha, IMAGENET_ALPHAS)
        common.check_published("MobileNet", {"alpha": alpha}, weights)
        common.warn_default_size(rows, cols, IMAGENET_SIZES)
        if rows != cols or rows not in IMAGENET_SIZES:
            rows = 224

    img_input, inputs = common.make_input(shape, input_tensor)
    x = img_input
    if include_preprocessing and flavour.normalization.embedded:
        x = kl.Rescaling(*flavour.normalization.scale_offset(), name="rescaling")(x)
    act = flavour.activation or "relu6"
    # keras.applications' stem pads as TF "same"; PyTorch-style flavours pad it too.
    x = blocks.conv_bn_act(
        x, width(STEM_FILTERS, alpha), 3, strides=2, act=act,
        names={"conv": "conv1", "bn": "conv1_bn", "act": "conv1_relu", "pad": "conv1_pad"},
        bn=flavour.bn, pad_mode="symmetric" if flavour.padding == "symmetric" else "same",
    )
    for block_id, (filters, stride) in enumerate(BLOCKS, start=1):
        x = blocks.depthwise_separable(
            x, width(filters, alpha), strides=stride, depth_multiplier=depth_multiplier,
            act=act, block_id=block_id, bn=flavour.bn, pad_mode=flavour.padding,
        )
    if include_top and flavour.classifier == "dense":
        x = common.head(x, include_top, pooling, classes, classifier_activation,
                        pool="global_average_pooling2d", dropout=dropout)
    elif include_top:
        x = _top(x, classes, dropout, classifier_activation)
    else:
        x = common.globally_pool(x, pooling)
    return common.finish(inputs, x, name or f"mobilenet_{alpha:0.2f}_{rows}", weights,
                         "MobileNet", {"alpha": alpha, "rows": rows}, include_top)


def _top(x, classes, dropout, classifier_activation):
    x = layers.GlobalAveragePooling2D(keepdims=True, name="global_average_pooling2d")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Conv2D(classes, 1, padding="same", name="conv_preds")(x)
    x = layers.Reshape((classes,), name="reshape_2")(x)
    return layers.Activation(classifier_activation, name="predictions")(x)


def preprocess_input(x, data_format=None):
    """Scales RGB pixels from `[0, 255]` to `[-1, 1]`."""
    return imagenet.preprocess_input(x, data_format=data_format, mode="tf")


decode_predictions = imagenet.decode_predictions

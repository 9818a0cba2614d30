"""SqueezeNet 1.0 and 1.1, numerically identical to torchvision's.

Reference:
- [SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB
  model size](https://arxiv.org/abs/1602.07360) (2016)

Weighted layers are named after torchvision's module paths (`features_0`,
`features_3_squeeze`, `classifier_1`), so a torchvision state dict loads
through `keras_lightnets.weights.load_torch_state_dict`.
"""

from keras import layers

from keras_lightnets import blocks, imagenet
from keras_lightnets.models import common
from keras_lightnets.weights import sources

POOL = "pool"
# Per version: conv1 (filters, kernel; stride 2, no padding, + ReLU), then the
# rest of torchvision's `features` in order, so row i is `features_{i + 2}`.
# Rows: POOL is a 3x3/2 ceil-mode max pool; (squeeze, expand1x1, expand3x3)
# is a fire module (the paper's fire2 ... fire9, in order).
VERSIONS = {
    "1.0": ((96, 7), [
        POOL, (16, 64, 64), (16, 64, 64), (32, 128, 128),
        POOL, (32, 128, 128), (48, 192, 192), (48, 192, 192), (64, 256, 256),
        POOL, (64, 256, 256),
    ]),
    "1.1": ((64, 3), [
        POOL, (16, 64, 64), (16, 64, 64),
        POOL, (32, 128, 128), (32, 128, 128),
        POOL, (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256),
    ]),
}
BYPASSES = (None, "simple")
FIRST_FEATURE = 2  # conv1 and its ReLU are features.0 and features.1.
DROPOUT = 0.5


def decode_features(version, bypass=None):
    """One `(torchvision index, row, bypass)` per pool or fire after conv1.

    The simple bypass goes around every fire module whose input and output
    channels match: fire3, fire5, fire7 and fire9 in both versions.
    """
    (channels, _), table = VERSIONS[version]
    rows = []
    for i, row in enumerate(table):
        around = False
        if row != POOL:
            out = row[1] + row[2]
            around = bypass == "simple" and out == channels
            channels = out
        rows.append((FIRST_FEATURE + i, row, around))
    return rows


def SqueezeNet(
    input_shape=None,
    version="1.1",
    bypass=None,
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    name=None,
):
    """Instantiates the SqueezeNet architecture.

    Reference:
    - [SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and
      <0.5MB model size](https://arxiv.org/abs/1602.07360) (2016)

    Versions "1.0" and "1.1" compute exactly what torchvision's
    `squeezenet1_0` and `squeezenet1_1` compute, ceil-mode max pools
    included; weighted layers carry torchvision's module paths. The
    classifier is fully convolutional: dropout, a 1x1 conv to `classes`,
    ReLU, global average pooling, then `classifier_activation`. With
    `include_preprocessing=True` (default) the model takes float RGB pixels
    in `[0, 255]` and `preprocess_input` is the identity; without it, pixels
    normalised as torchvision does (`x / 255`, ImageNet mean and std).

    Args:
        input_shape: optional `(rows, cols, channels)`; defaults to
            `(None, None, 3)`.
        version: `"1.0"` or `"1.1"` (2.4x fewer MACs, same accuracy).
        bypass: `None`, or `"simple"` for the paper's identity bypass around
            fire3, fire5, fire7 and fire9 (no extra weights).
        include_top: whether to include the classifier.
        weights: `None`, `"imagenet"`, a weight set's name
            (`keras_lightnets.list_weights`) or the path to a weights file.
        input_tensor: optional Keras tensor to use as the model input.
        pooling: `None`, `"avg"` or `"max"` global pooling when
            `include_top=False`.
        classes: number of classes with the top.
        classifier_activation: activation of the top layer (`None` for
            logits).
        include_preprocessing: whether to include the normalisation layer.
        name: model name.

    Returns:
        A `keras.Model`.
    """
    classes = common.check_common(locals())
    flavour = sources.flavour_for("SqueezeNet", weights)
    version = common.check_choice("version", version, tuple(VERSIONS))
    bypass = common.check_choice("bypass", bypass, BYPASSES)
    shape = common.resolve_input_shape(input_shape, input_tensor, include_top)
    if common.is_pretrained(weights):
        common.check(bypass is None, "No ImageNet weights exist for the bypass variants.",
                     bypass=bypass)
        common.check_published("SqueezeNet", {"version": version, "bypass": bypass}, weights)

    img_input, inputs = common.make_input(shape, input_tensor)
    x = img_input
    if include_preprocessing:
        x = common.normalization(flavour.normalization.mean, flavour.normalization.std)(x)
    (filters, kernel), _ = VERSIONS[version]
    x = layers.Conv2D(filters, kernel, strides=2, padding="valid", name="features_0")(x)
    x = layers.ReLU(name="features_1")(x)
    for index, row, around in decode_features(version, bypass):
        if row == POOL:
            # Every pool follows a ReLU or a fire module (ReLUs, plus a bypass of
            # ReLUs): its input is >= 0, so the zero padding is exact.
            x = blocks.max_pool_ceil(x, 3, 2, name=f"features_{index}")
        else:
            x = blocks.fire(x, *row, bypass=around, prefix=f"features_{index}")
    if include_top:
        x = layers.Dropout(DROPOUT, name="classifier_0")(x)
        x = layers.Conv2D(classes, 1, name="classifier_1")(x)
        # torchvision applies the ReLU before the average, to the class maps.
        x = layers.ReLU(name="classifier_2")(x)
        x = layers.GlobalAveragePooling2D(name="classifier_3")(x)
        x = layers.Activation(classifier_activation, name="predictions")(x)
    else:
        x = common.globally_pool(x, pooling)
    default_name = f"squeezenet_{version.replace('.', '_')}" + ("_bypass" if bypass else "")
    return common.finish(inputs, x, name or default_name, weights, "SqueezeNet",
                         {"version": version}, include_top)


def preprocess_input(x, data_format=None):
    """Identity: SqueezeNet models embed their preprocessing."""
    return x


def decode_predictions(preds, top=5):
    return imagenet.decode_predictions(preds, top=top)


decode_predictions.__doc__ = "Decodes ImageNet predictions; see `imagenet.decode_predictions`."

"""MnasNet (B1), numerically identical to torchvision's.

Reference:
- [MnasNet: Platform-Aware Neural Architecture Search for Mobile](
  https://arxiv.org/abs/1807.11626) (CVPR 2019)

Weighted layers are named after torchvision's module paths (`layers_0`,
`layers_8_0_layers_3`, `classifier_1`), so a torchvision state dict loads
through `keras_lightnets.weights.load_torch_state_dict`. timm's `mnasnet_100`
is the same network (`weights="timm"` or a timm `.safetensors` file).
"""

from keras_lightnets import blocks, imagenet, spec
from keras_lightnets.models import common
from keras_lightnets.spec import Block
from keras_lightnets.weights import sources

# torchvision's `features`: the stem (3x3/2 conv, separable conv), six
# stacks of inverted residuals, the 1x1 head. Columns: kind, kernel, stride,
# filters, expansion; repeats.
TABLE = [
    Block("conv", 3, 2, 32, act="relu", name="layers_0 layers_1 layers_2"),
    # torchvision gives the separable conv no skip, even at equal widths.
    Block("ds", 3, 1, 16, act="relu", tap=True, name=""),
    Block("ir", 3, 2, 24, 3, act="relu", repeats=3, tap=True, name="layers_8_{i}_"),
    Block("ir", 5, 2, 40, 3, act="relu", repeats=3, tap=True, name="layers_9_{i}_"),
    Block("ir", 5, 2, 80, 6, act="relu", repeats=3, name="layers_10_{i}_"),
    Block("ir", 3, 1, 96, 6, act="relu", repeats=2, tap=True, name="layers_11_{i}_"),
    Block("ir", 5, 2, 192, 6, act="relu", repeats=4, name="layers_12_{i}_"),
    Block("ir", 3, 1, 320, 6, act="relu", name="layers_13_{i}_"),
    Block("conv", 1, 1, 1280, act="relu", scale="fixed", tap=True,
          name="layers_14 layers_15 layers_16"),
]
IMAGENET_ALPHAS = (0.5, 0.75, 1.0, 1.3)
# torchvision `_InvertedResidual.layers` indices, after `layers_{i}_{j}_`.
IR_NAMES = {
    "expand": "layers_0", "expand_bn": "layers_1", "expand_act": "layers_2",
    "pad": "layers_3_pad", "dw": "layers_3", "dw_bn": "layers_4", "dw_act": "layers_5",
    "project": "layers_6", "project_bn": "layers_7", "add": "add",
}


def round_depth(value):
    """torchvision's `_round_to_multiple_of(value, 8, round_up_bias=0.9)`.

    That is `make_divisible`'s rule (nearest multiple of 8, never below 8,
    and up again when more than 10% was dropped), which `spec.width` applies.
    """
    return blocks.make_divisible(value, 8)


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
            ImageNet weights; 1.0 timm's too).
        include_top: whether to include the classifier.
        weights: `None`, `"imagenet"`, a weight set's name
            (`keras_lightnets.list_weights`) or the path to a weights file.
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
    classes = common.check_common(locals())
    flavour = sources.flavour_for("MnasNet", weights)
    alpha = common.check_positive("alpha", alpha, upper=common.MAX_ALPHA)
    common.check_fraction("dropout_rate", dropout_rate)
    shape = common.resolve_input_shape(input_shape, input_tensor, include_top)
    if common.is_pretrained(weights):
        if weights == "imagenet":
            common.check_choice("alpha", alpha, IMAGENET_ALPHAS)
        common.check_published("MnasNet", {"alpha": alpha}, weights)

    img_input, inputs = common.make_input(shape, input_tensor)
    x = img_input
    if include_preprocessing:
        x = common.normalization(flavour.normalization.mean, flavour.normalization.std)(x)
    x, taps = spec.build(x, TABLE, alpha, names=IR_NAMES, prefix="", bn=flavour.bn,
                          pad=flavour.padding)
    x = common.head(x, include_top, pooling, classes, classifier_activation,
                    dropout=dropout_rate, dropout_name="classifier_0", dense="classifier_1")
    model = common.finish(inputs, x, name or f"mnasnet_{int(round(alpha * 100)):03d}", weights,
                          "MnasNet", {"alpha": alpha}, include_top)
    return spec.remember_taps(model, taps, img_input, inputs)


def preprocess_input(x, data_format=None):
    """Identity: MnasNet models embed their preprocessing."""
    return x


def decode_predictions(preds, top=5):
    return imagenet.decode_predictions(preds, top=top)


decode_predictions.__doc__ = "Decodes ImageNet predictions; see `imagenet.decode_predictions`."

"""ShuffleNet V1, as in the paper, and in megvii's flavour for its trained checkpoints.

Reference:
- [ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile
  Devices](https://arxiv.org/abs/1707.01083) (CVPR 2018)

Grouped 1x1 convolutions are `keras_lightnets.layers.group_conv` (split, one
`Conv2D` per group, concat) by default, which every runtime converts;
`group_conv="native"` builds `Conv2D(groups=g)` instead, which TFLite converts
but tf2onnx cannot. `transfer_weights` moves weights between the two forms.
"""

import inspect
import numbers
import re

import numpy as np

from keras_lightnets import blocks, imagenet
from keras_lightnets import layers as kl
from keras_lightnets.models import common
from keras_lightnets.weights import sources

# Paper Table 1: stage-2 output channels at 1x per number of groups g.
# Columns: groups, stage-2 channels.
STAGE2_FILTERS = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
# Stages after the stem (3x3/2 conv, 3x3/2 max pool). Columns: name, repeats
# (the first unit has stride 2), channels as a multiple of stage 2's.
STAGES = [("stage2", 4, 1), ("stage3", 8, 2), ("stage4", 4, 4)]
# Stem channels per width multiplier s. Paper Table 1 has 24 at 1x, and Sec.
# 4.1.1 scales "the number of filters" by s without saying how the stem rounds.
# Its Table 2 complexities (g=3: 13, 38, 137, 292, 524 MFLOPs) come out only
# with these stems (24 * s everywhere gives 11, 38, 137, 300, 524; 24 throughout
# gives 18, 43, 137, 292, 508), which are also the official model zoo's
# (megvii-model/ShuffleNet-Series: 12, 24, 24, 48 for 0.5x-2.0x).
# Columns: alpha, stem channels.
STEM_FILTERS = {0.25: 12, 0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}
GROUPS = tuple(STAGE2_FILTERS)
ALPHAS = tuple(STEM_FILTERS)


def decode_units(groups, alpha):
    """Stem channels and one `(prefix, filters, stride, pw_groups)` row per unit.

    Width rounding, once, here: stage-2 channels are
    `make_divisible(alpha * c, 4 * groups)`, so the bottleneck (a quarter of
    a unit's output) splits into `groups`; stages 3 and 4 are 2x and 4x
    that. The stem rounds to a multiple of `groups`, so that the first unit's
    branch (output minus input channels) splits too (12 -> 16 at g=8, as the
    official zoo's 0.5x g=8 model). At 1x every channel count of the paper's
    Table 1 is kept.
    """
    stem = blocks.make_divisible(STEM_FILTERS[alpha], groups)
    base = blocks.make_divisible(alpha * STAGE2_FILTERS[groups], 4 * groups)
    units = []
    for stage, repeats, multiple in STAGES:
        for i in range(repeats):
            # The very first 1x1 of stage 2 is not grouped: its input is too narrow.
            pw_groups = 1 if (stage, i) == ("stage2", 0) else groups
            units.append((f"{stage}_unit{i + 1}", base * multiple, 2 if i == 0 else 1,
                          pw_groups))
    return stem, units


def _families_with_weights():
    from keras_lightnets import registry

    return sorted({
        entry.family for entry in registry.entries()
        if inspect.signature(entry.factory).parameters["weights"].default == "imagenet"
    })


def ShuffleNetV1(
    input_shape=None,
    groups=3,
    alpha=1.0,
    group_conv="split",
    include_top=True,
    weights=None,
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    name=None,
):
    """Instantiates the ShuffleNet V1 architecture.

    Reference:
    - [ShuffleNet: An Extremely Efficient Convolutional Neural Network for
      Mobile Devices](https://arxiv.org/abs/1707.01083) (CVPR 2018)

    The paper's Table 1 network scaled by `alpha` (Table 2); padding and
    pooling follow PyTorch, as the official implementation. With
    `include_preprocessing=True` (default) the model takes float RGB pixels
    in `[0, 255]` and embeds torchvision's mean/std normalization, and
    `preprocess_input` is the identity.

    megvii's trained checkpoints (groups 3 and 8, `alpha` 0.5-2.0; files
    `*.pth.tar` from megvii-model/ShuffleNet-Series) build megvii's flavour:
    its channel shuffle (the inverse permutation, after the depthwise conv)
    and a classifier without bias. They were trained on BGR pixels in
    `[0, 255]` without normalization; the channel reversal is folded into
    the first convolution, so the model takes RGB pixels in `[0, 255]` like
    every other (the embedded normalization is the identity).

    Args:
        input_shape: optional `(rows, cols, channels)`; defaults to
            `(None, None, 3)`.
        groups: groups of the 1x1 convolutions: 1, 2, 3, 4 or 8.
        alpha: width multiplier: 0.25, 0.5, 1.0, 1.5 or 2.0.
        group_conv: `"split"` (channel split, one `Conv2D` per group, concat;
            converts to TFLite and ONNX) or `"native"` (`Conv2D(groups=g)`;
            TFLite only: tf2onnx cannot convert it). Both compute the same
            function; `transfer_weights` moves weights between them.
        include_top: whether to include the classifier.
        weights: `None`, the path to a weights file (one of megvii's
            checkpoints builds megvii's flavour), or a weight set
            (`"megvii"`; `"imagenet"` is refused: none is published).
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
    common.check(
        not (isinstance(weights, str) and weights == "imagenet"),
        f"ShuffleNetV1 has no published ImageNet weights; the families with ImageNet "
        f"weights are {', '.join(_families_with_weights())}. Pass `weights=None`, "
        f"`weights='megvii'` (megvii's trained checkpoints) or the path to a weights file.",
        weights=weights,
    )
    classes = common.check_common(locals())
    flavour = sources.flavour_for("ShuffleNetV1", weights)
    common.check(
        isinstance(groups, numbers.Integral) and not isinstance(groups, bool)
        and groups in GROUPS,
        f"`groups` must be one of {list(GROUPS)}.", groups=groups,
    )
    groups = int(groups)
    alpha = common.check_choice("alpha", alpha, ALPHAS)
    if common.is_pretrained(weights):
        common.check_published("ShuffleNetV1", {"groups": groups, "alpha": alpha}, weights)
    group_conv = common.check_choice("group_conv", group_conv, blocks.GROUP_CONV_MODES)
    shape = common.resolve_input_shape(input_shape, input_tensor, include_top)

    img_input, inputs = common.make_input(shape, input_tensor)
    x = img_input
    if include_preprocessing:
        x = kl.Rescaling(*flavour.normalization.scale_offset(), name="normalization")(x)
    stem, units = decode_units(groups, alpha)
    x = blocks.conv_bn_act(x, stem, 3, strides=2, act="relu", prefix="conv1",
                           pad_mode=flavour.padding, bn=flavour.bn)
    x = blocks.torch_pool(x, "max", 3, 2, name="maxpool", nonnegative=True)
    for prefix, filters, stride, pw_groups in units:
        x = blocks.shufflenet_v1_unit(x, filters, groups, stride, pw_groups, group_conv,
                                      prefix, bn=flavour.bn, shuffle_order=flavour.shuffle_order,
                                      shuffle_after_depthwise=flavour.shuffle_after_depthwise)
    x = common.head(x, include_top, pooling, classes, classifier_activation,
                    use_bias=flavour.classifier_bias)
    suffix = "_native" if group_conv == "native" else ""
    return common.finish(inputs, x, name or f"shufflenetv1_g{groups}_{alpha:0.2f}{suffix}",
                         weights, "ShuffleNetV1", {"groups": groups, "alpha": alpha},
                         include_top)


_SPLIT_PART = re.compile(r"^(.*)_g(\d+)$")


def transfer_weights(source, target):
    """Copies the weights of a ShuffleNetV1 into one of the same variant.

    Either model may use either `group_conv` mode: a native grouped conv
    `{name}` holds along its output axis the kernels of the split form's
    `{name}_g0`, `{name}_g1`, ..., in order. Other layers are copied by name.

    Args:
        source: the model to copy from.
        target: the model to copy into (changed in place).

    Returns:
        `target`.

    Raises:
        ValueError: when a weighted layer of `target` has no counterpart.
    """
    layers = {layer.name: layer for layer in source.layers if layer.weights}
    staged = []
    for layer in target.layers:
        if not layer.weights:
            continue
        match = _SPLIT_PART.match(layer.name)
        parts = sorted(
            (int(_SPLIT_PART.match(n).group(2)), n) for n in layers
            if _SPLIT_PART.match(n) and _SPLIT_PART.match(n).group(1) == layer.name
        )
        if layer.name in layers:
            values = layers[layer.name].get_weights()
        elif match and match.group(1) in layers:
            # Native source, split target: this group's slice of the output channels.
            kernel = layers[match.group(1)].get_weights()[0]
            part = int(match.group(2))
            width = layer.weights[0].shape[-1]
            values = [kernel[..., part * width:(part + 1) * width]]
        elif parts:
            # Split source, native target: the groups' kernels side by side.
            values = [np.concatenate([layers[n].get_weights()[0] for _, n in parts], axis=-1)]
        else:
            values = None
        shapes = [tuple(w.shape) for w in layer.weights]
        if values is None or [v.shape for v in values] != shapes:
            raise ValueError(
                f"Model {source.name!r} has no weights for layer {layer.name!r} of "
                f"{target.name!r}; are they the same ShuffleNetV1 variant? "
                f"Received: source={source.name!r}"
            )
        staged.append((layer, values))
    for layer, values in staged:
        layer.set_weights(values)
    return target


def preprocess_input(x, data_format=None):
    """Identity: ShuffleNet V1 models embed their preprocessing."""
    return x


def decode_predictions(preds, top=5):
    return imagenet.decode_predictions(preds, top=top)


decode_predictions.__doc__ = "Decodes ImageNet predictions; see `imagenet.decode_predictions`."

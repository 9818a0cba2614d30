"""Weight sources as data: each source's numerics flavour per family and its name maps.

A `Source` is a publisher of weight files (keras.applications, torchvision): the
manifest formats and file endings it publishes, the reader of its files, and per
family the `Flavour` (the numerics its weights were trained with) and the name
map from Keras layer names to its tensor names. `flavour_for(family, weights)`
says which flavour a factory builds for the requested weights;
`flavour_check.check_flavour` refuses to load a file into a model built in
another flavour.

A new source (PaddleClas, megvii, timm) is one more `Source` record: its reader,
its flavours (`dataclasses.replace` of a base flavour), its name maps, and its
tensor conventions (`bn_keys`, `dense_layout`, `key_prefixes`).
"""

import dataclasses
import os
import re

from keras_lightnets import imagenet
from keras_lightnets.weights import pdparams, pth, safetensors_file

# SE gate formulas. keras and torchvision: `HardSigmoid`; PaddleClas's gate is
# `HardSigmoid` after scaling the SE's second conv by 1.2.
GATE_RELU6 = "relu6(x + 3) / 6"
GATE_PADDLE = "clip(0.2 * x + 0.5, 0, 1)"


@dataclasses.dataclass(frozen=True)
class Normalization:
    """The input the weights expect: `(p * pixel_max / 255 - mean) / std` per channel.

    `p` are pixels in [0, 255] in channel `order`, as are `mean` and `std`.
    Models take RGB: BGR weights get their first convolution's input channels
    reversed (`convert.load_state`). `embedded`: the model holds it as its first
    layer (`include_preprocessing=True`); otherwise `preprocess_input` applies it.
    """

    mean: tuple
    std: tuple
    pixel_max: float = 1.0  # 1.0: pixels / 255 first (torchvision); 255.0: raw pixels
    order: str = "RGB"
    embedded: bool = True

    def scale_offset(self):
        """`(scale, offset)` of the `Rescaling` layer that embeds it, per RGB channel,
        or scalars when the channels agree (the plain layer's graph, as MobileNetV3's)."""
        scale = [self.pixel_max / (255.0 * s) for s in self.std]
        offset = [-m / s for m, s in zip(self.mean, self.std, strict=True)]
        if len(set(scale)) == len(set(offset)) == 1:
            return scale[0], offset[0]
        if self.order == "BGR":  # the layer sees RGB
            return scale[::-1], offset[::-1]
        return scale, offset


@dataclasses.dataclass(frozen=True)
class Flavour:
    """The numerics a family is built with for one source's weights.

    `padding` is the `blocks.pad_for_stride` mode of strided convolutions
    ("keras": keras.applications' `correct_pad`; "bottom_right": MobileNet
    V1's; "symmetric": PyTorch's `kernel // 2`); keras flavours' stems use TF
    "same". `bn_epsilon`/`bn_momentum` are None without batch norm.
    `block0_expand`: whether an inverted-residual family's first block has
    its 1x1 expansion (None: no inverted residuals). `classifier`: "dense"
    or "conv1x1" (a 1x1 convolution on the pooled map). `activation`
    replaces the family's own (None: keep it; PaddleClas' MobileNet V1 has
    ReLU for ReLU6). `width_rule`: "make_divisible" (the family's rounding to
    multiples of 8) or "truncate" (`int(filters * alpha)`, expansions
    `round(in * t)`: PaddleClas' MobileNetV2). `classifier_dropout`: the
    dropout rate before the classifier of a family without a dropout argument.

    MobileNetV3's variations: `stem_scaled`, the stem's filters scale with
    alpha; `expand_from_alpha`, expansions are `make_divisible(alpha * e)` of
    the table's unscaled expanded channels `e`, not `make_divisible` of the
    ratio times the scaled input; `se_round`, SE squeeze channels rounded by
    `make_divisible` (False: `floor(expanded * se)`); `head_filters`, channels
    of the last 1x1 conv (None: the family's, scaled above alpha 1), with
    `head_bias`. `folds`: `(layer-name regex, kernel factor, bias factor)`
    constants of the source's graph that `convert.load_state` folds into the
    weights, so the model keeps the same layers.

    ShuffleNet V1's unit: `shuffle_order` "paper" (channel `g * (C // groups)
    + i` to `i * groups + g`) or "inverse" (megvii's); `shuffle_after_depthwise`:
    the shuffle follows the 3x3 depthwise conv and its batch norm (megvii's)
    instead of preceding them (the same function, with the depthwise weights
    permuted).
    """

    source: str
    padding: str
    bn_epsilon: float | None
    bn_momentum: float | None
    normalization: Normalization
    classifier: str = "dense"
    classifier_bias: bool = True
    gate: str | None = None
    block0_expand: bool | None = None
    activation: str | None = None
    width_rule: str = "make_divisible"
    classifier_dropout: float = 0.0
    stem_scaled: bool = False
    expand_from_alpha: bool = False
    se_round: bool = True
    head_filters: int | None = None
    head_bias: bool = True
    folds: tuple = ()
    shuffle_order: str = "paper"
    shuffle_after_depthwise: bool = False

    @property
    def bn(self):
        """Keyword arguments of the flavour's `BatchNormalization` layers."""
        return {"epsilon": self.bn_epsilon, "momentum": self.bn_momentum}


@dataclasses.dataclass(frozen=True)
class Source:
    """A publisher of weight files.

    `reader(path) -> {key: array}` reads its files; None: Keras reads them
    (legacy `.h5`, matched by layer order or name). `name_maps[family]` is an
    ordered tuple of `(regex, template)` rules: the first rule whose regex
    matches a whole Keras layer name gives the tensor-name prefix
    (`re.Match.expand`). `bn_keys` name a batch norm's gamma, beta, mean and
    variance; `dense_layout` is "out_in" ([out, in], PyTorch) or "in_out";
    `key_prefixes` are stripped from the file's keys. `set_flavours[(family,
    name)]` are flavours of weight sets whose numerics differ from the
    family's (another mean and std): manifest entries name them in `flavour`.
    """

    name: str
    formats: tuple
    suffixes: tuple
    reader: object
    flavours: dict
    name_maps: dict = dataclasses.field(default_factory=dict)
    bn_keys: tuple = ("weight", "bias", "running_mean", "running_var")
    dense_layout: str = "out_in"
    key_prefixes: tuple = ()
    set_flavours: dict = dataclasses.field(default_factory=dict)


# -- flavours: today's values, as the models build them ----------------------------------

KERAS_TF = Normalization((127.5,) * 3, (127.5,) * 3, pixel_max=255.0, embedded=False)
TORCH_IMAGENET = Normalization(imagenet.TORCH_MEAN, imagenet.TORCH_STD)

KERAS = Flavour("keras.applications", "keras", 1e-3, 0.999, KERAS_TF, block0_expand=False)
TORCH = Flavour("torchvision", "symmetric", 1e-5, 0.9, TORCH_IMAGENET)

_replace = dataclasses.replace
_V3 = _replace(KERAS, classifier="conv1x1", gate=GATE_RELU6,
               normalization=_replace(KERAS_TF, embedded=True))

def _v3_rules(block_names, fixed):
    """Name-map rules of MobileNetV3's Keras layers: `block_names(b)` gives block
    `b`'s `{keras suffix: name}`; `fixed`, the stem's and head's."""
    rules = [(re.escape(k), v) for k, v in fixed.items()]
    for b in range(16):
        prefix = "expanded_conv_" if b == 0 else f"expanded_conv_{b}_"
        rules += [(re.escape(prefix + k), v) for k, v in block_names(b).items()]
    return tuple(rules)


def _torchvision_v3(blocks, se):
    """torchvision's MobileNetV3: Keras block b is `features.{b + 1}`, whose
    modules count up through the expansion (not in block 0), depthwise, SE and
    projection."""
    def block_names(b):
        if b >= blocks:
            return {}
        parts = ["depthwise"] + (["squeeze_excite_conv"] if b in se else []) + ["project"]
        parts = (["expand"] if b else []) + parts
        names = {}
        for j, part in enumerate(parts):
            module = f"features.{b + 1}.block.{j}"
            if part == "squeeze_excite_conv":
                names.update({part: f"{module}.fc1", f"{part}_1": f"{module}.fc2"})
            else:
                names.update({part: f"{module}.0", f"{part}_bn": f"{module}.1"})
        return names

    last = f"features.{blocks + 1}"
    return _v3_rules(block_names, {
        "conv": "features.0.0", "conv_bn": "features.0.1", "conv_1": f"{last}.0",
        "conv_1_bn": f"{last}.1", "conv_2": "classifier.0", "logits": "classifier.3"})


def _paddle_v3(blocks):
    """PaddleClas's MobileNetV3: Keras block b is `blocks.{b}`."""
    parts = {"expand": "expand_conv", "depthwise": "bottleneck_conv", "project": "linear_conv"}

    def block_names(b):
        if b >= blocks:
            return {}
        names = {"squeeze_excite_conv": f"blocks.{b}.mid_se.conv1",
                 "squeeze_excite_conv_1": f"blocks.{b}.mid_se.conv2"}
        for k, v in parts.items():
            names.update({k: f"blocks.{b}.{v}.conv", f"{k}_bn": f"blocks.{b}.{v}.bn"})
        return names

    return _v3_rules(block_names, {
        "conv": "conv.conv", "conv_bn": "conv.bn", "conv_1": "last_second_conv.conv",
        "conv_1_bn": "last_second_conv.bn", "conv_2": "last_conv", "logits": "fc"})


KERAS_APPLICATIONS = Source(
    name="keras.applications", formats=("keras-h5",), suffixes=(".h5", ".hdf5"), reader=None,
    flavours={
        # Keras' default BatchNormalization momentum; block 0 is a separable conv.
        "MobileNet": _replace(KERAS, padding="bottom_right", bn_momentum=0.99,
                              classifier="conv1x1", block0_expand=None),
        "MobileNetV2": KERAS,
        "MobileNetV3Large": _V3,
        "MobileNetV3Small": _V3,
        # keras' NASNet builds every batch norm with momentum 0.9997.
        "NASNetMobile": _replace(KERAS, bn_momentum=0.9997, block0_expand=None),
    },
)

# -- name maps built from the block tables (their module indices count blocks) -------------

# keras.applications' MobileNetV2 inverted-residual layer suffixes and the modules
# they are in torchvision's `InvertedResidual.conv` (block 0, without expansion, shifts).
_V2_TORCH_SUFFIXES = {"expand": "0.0", "expand_BN": "0.1", "depthwise": "1.0",
                      "depthwise_BN": "1.1", "project": "2", "project_BN": "3"}
_V2_TORCH_BLOCK0 = {"depthwise": "0.0", "depthwise_BN": "0.1", "project": "1",
                    "project_BN": "2"}
# MobileNetV2's repeats per stage (paper Table 2), for PaddleClas' per-stage module names.
_V2_REPEATS = (1, 2, 3, 4, 3, 3, 1)
_V2_PADDLE_SUFFIXES = {
    "expand": "_expand_conv._conv", "expand_BN": "_expand_conv._batch_norm",
    "depthwise": "_bottleneck_conv._conv", "depthwise_BN": "_bottleneck_conv._batch_norm",
    "project": "_linear_conv._conv", "project_BN": "_linear_conv._batch_norm",
}


def _v2_paddle_blocks():
    """Keras' block prefix and PaddleClas' module of each MobileNetV2 inverted residual
    (`conv{stage + 2}._first_block`, then `conv{stage + 2}.conv{stage + 2}_{i + 1}`)."""
    modules = [f"conv{s + 2}." + ("_first_block" if i == 0 else f"conv{s + 2}_{i + 1}")
               for s, repeats in enumerate(_V2_REPEATS) for i in range(repeats)]
    return [("expanded_conv_" if b == 0 else f"block_{b}_", m) for b, m in enumerate(modules)]


TORCHVISION_MOBILENET_V2 = (
    (r"Conv1", "features.0.0"), (r"bn_Conv1", "features.0.1"),
    *((f"expanded_conv_{k}", f"features.1.conv.{v}") for k, v in _V2_TORCH_BLOCK0.items()),
    *((f"block_{b}_{k}", f"features.{b + 1}.conv.{v}")
      for b in range(1, sum(_V2_REPEATS)) for k, v in _V2_TORCH_SUFFIXES.items()),
    (r"Conv_1", "features.18.0"), (r"Conv_1_bn", "features.18.1"),
    (r"predictions", "classifier.1"),
)
PADDLE_MOBILENET = (
    (r"conv1", "conv.conv"), (r"conv1_bn", "conv.bn"),
    *((f"conv_{kind}_{i}{bn}", f"blocks.{i - 1}.{module}_conv.{leaf}")
      for i in range(1, 14) for kind, module in (("dw", "depthwise"), ("pw", "pointwise"))
      for bn, leaf in (("", "conv"), ("_bn", "bn"))),
    (r"predictions", "fc"),
)
PADDLE_MOBILENET_V2 = (
    (r"Conv1", "conv1._conv"), (r"bn_Conv1", "conv1._batch_norm"),
    *((f"{prefix}{k}", f"{module}.{v}")
      for prefix, module in _v2_paddle_blocks() for k, v in _V2_PADDLE_SUFFIXES.items()),
    (r"Conv_1", "conv9._conv"), (r"Conv_1_bn", "conv9._batch_norm"),
    (r"predictions", "out"),
)
# torchvision's ShuffleNetV2 unit modules (Keras' names) in PaddleClas' units: the
# stride-2 unit's branches, then the stride-1 unit's second branch.
_SHUFFLE_PADDLE_DS = {"branch1_0": "_conv_dw_1", "branch1_2": "_conv_linear_1",
                      "branch2_0": "_conv_pw_2", "branch2_3": "_conv_dw_2",
                      "branch2_5": "_conv_linear_2"}
_SHUFFLE_PADDLE = {"branch2_0": "_conv_pw", "branch2_3": "_conv_dw", "branch2_5": "_conv_linear"}


def _shuffle_paddle_rules(i, modules):
    """Unit `i` of every stage: conv `branchB_K` and its batch norm `branchB_{K+1}`."""
    for name, module in modules.items():
        branch, k = name.rsplit("_", 1)
        for index, leaf in ((int(k), "_conv"), (int(k) + 1, "_batch_norm")):
            yield rf"stage(\d)_{i}_{branch}_{index}", rf"\1_{i + 1}.{module}.{leaf}"


PADDLE_SHUFFLENET_V2 = (
    (r"conv1_0", "_conv1._conv"), (r"conv1_1", "_conv1._batch_norm"),
    *_shuffle_paddle_rules(0, _SHUFFLE_PADDLE_DS),
    *(rule for i in range(1, 8) for rule in _shuffle_paddle_rules(i, _SHUFFLE_PADDLE)),
    (r"conv5_0", "_last_conv._conv"), (r"conv5_1", "_last_conv._batch_norm"),
    (r"fc", "_fc"),
)

TORCHVISION = Source(
    name="torchvision", formats=("torchvision-pth",), suffixes=(".pth", ".pt"),
    reader=pth.load_state_dict,
    flavours={
        "ShuffleNetV2": TORCH,
        "SqueezeNet": _replace(TORCH, bn_epsilon=None, bn_momentum=None, classifier="conv1x1"),
        # PyTorch momentum 1 - 0.9997; the stem's separable conv has no expansion.
        "MnasNet": _replace(TORCH, bn_momentum=0.9997, block0_expand=False),
        # Block 0 without expansion (as keras'); dropout 0.2 before the classifier.
        "MobileNetV2": _replace(TORCH, block0_expand=False, classifier_dropout=0.2),
        # PyTorch momentum 0.01.
        "MobileNetV3Large": _replace(TORCH, bn_epsilon=1e-3, bn_momentum=0.99,
                                     classifier="conv1x1", gate=GATE_RELU6, block0_expand=False),
        "MobileNetV3Small": _replace(TORCH, bn_epsilon=1e-3, bn_momentum=0.99,
                                     classifier="conv1x1", gate=GATE_RELU6, block0_expand=False),
    },
    # Keras layer names are torchvision's module paths with "_" for "." (MobileNetV2:
    # keras.applications' names).
    name_maps={
        "ShuffleNetV2": (
            (r"conv([15])_(\d+)", r"conv\1.\2"),
            (r"(stage\d)_(\d+)_(branch[12])_(\d+)", r"\1.\2.\3.\4"),
            (r"fc", "fc"),
        ),
        "SqueezeNet": (
            (r"features_(\d+)", r"features.\1"),
            (r"features_(\d+)_(squeeze|expand1x1|expand3x3)", r"features.\1.\2"),
            (r"classifier_(\d+)", r"classifier.\1"),
        ),
        "MnasNet": (
            (r"layers_(\d+)", r"layers.\1"),
            (r"layers_(\d+)_(\d+)_layers_(\d+)", r"layers.\1.\2.layers.\3"),
            (r"classifier_(\d+)", r"classifier.\1"),
        ),
        "MobileNetV2": TORCHVISION_MOBILENET_V2,
        "MobileNetV3Large": _torchvision_v3(15, se=(3, 4, 5, 10, 11, 12, 13, 14)),
        "MobileNetV3Small": _torchvision_v3(11, se=(0, 3, 4, 5, 6, 7, 8, 9, 10)),
    },
)

# PaddleClas's numerics: PyTorch's, ImageNet mean and std embedded for raw 0-255 RGB.
PADDLE_FLAVOUR = Flavour("paddleclas", "symmetric", 1e-5, 0.9, TORCH_IMAGENET)
_PADDLE_V3 = _replace(
    PADDLE_FLAVOUR, classifier="conv1x1", gate=GATE_PADDLE, block0_expand=True,
    stem_scaled=True, expand_from_alpha=True, se_round=False, head_filters=1280,
    head_bias=False,
    # clip(0.2x + 0.5, 0, 1) is HardSigmoid of 1.2x; the `downscale_in_infer`
    # dropout (p = 0.2) scales the classifier's input by 0.8 at inference.
    folds=((r".*squeeze_excite_conv_1", 1.2, 1.2), (r"logits", 0.8, 1.0)),
)

PADDLE = Source(
    name="paddleclas", formats=("paddle-pdparams",), suffixes=(".pdparams",),
    reader=pdparams.load_state_dict,
    flavours={
        "MobileNetV3Large": _PADDLE_V3,
        "MobileNetV3Small": _PADDLE_V3,
        # ReLU for ReLU6; a dense classifier (pool, flatten, Linear).
        "MobileNet": _replace(PADDLE_FLAVOUR, activation="relu"),
        # Block 0 expands (ratio 1); widths `int(c * alpha)`, not rounded to 8.
        "MobileNetV2": _replace(PADDLE_FLAVOUR, block0_expand=True, width_rule="truncate"),
        # torchvision's topology and numerics.
        "ShuffleNetV2": PADDLE_FLAVOUR,
    },
    name_maps={
        "MobileNetV3Large": _paddle_v3(15),
        "MobileNetV3Small": _paddle_v3(11),
        "MobileNet": PADDLE_MOBILENET,
        "MobileNetV2": PADDLE_MOBILENET_V2,
        "ShuffleNetV2": PADDLE_SHUFFLENET_V2,
    },
    bn_keys=("weight", "bias", "_mean", "_variance"),
    dense_layout="in_out",
)

# Architectures built from their paper, without published weights (yet).
PAPER = Source(
    name="paper", formats=(), suffixes=(), reader=None,
    # PyTorch numerics, as the authors' implementation.
    flavours={"ShuffleNetV1": _replace(TORCH, source="paper")},
)

# timm's hub files (`model.safetensors`); families and flavours are added with their models.
TIMM = Source(
    name="timm", formats=("timm-safetensors",), suffixes=(".safetensors",),
    reader=safetensors_file.load_state_dict, flavours={}, name_maps={},
)

# MobileNetV4 (timm's own architecture): PyTorch numerics and timm's ImageNet mean/std
# (the default tags' `pretrained_cfg`); Keras layer names are timm's module paths.
_TIMM_MOBILENET_V4 = _replace(TORCH, source="timm")
_TIMM_MOBILENET_V4_NAMES = (
    (r"(conv_stem|bn1|conv_head|norm_head|classifier)", r"\1"),
    (r"blocks_(\d+)_(\d+)_(conv|bn1|conv_exp|conv_pwl|bn2)", r"blocks.\1.\2.\3"),
    (r"blocks_(\d+)_(\d+)_(dw_start|pw_exp|dw_mid|pw_proj)_(conv|bn)", r"blocks.\1.\2.\3.\4"),
)
for _family in ("MobileNetV4ConvSmall", "MobileNetV4ConvMedium", "MobileNetV4ConvLarge"):
    TIMM.flavours[_family] = _TIMM_MOBILENET_V4
    TIMM.name_maps[_family] = _TIMM_MOBILENET_V4_NAMES
# timm's longer trainings of Conv-Small (e3600, the 0.5 width) take inputs scaled to [-1, 1].
TIMM_INCEPTION = Normalization((0.5,) * 3, (0.5,) * 3)
TIMM.set_flavours[("MobileNetV4ConvSmall", "inception")] = _replace(
    _TIMM_MOBILENET_V4, normalization=TIMM_INCEPTION)
# The hybrids add the attention blocks' modules and the layer scales (same flavour).
_TIMM_MOBILENET_V4_HYBRID_NAMES = (
    *_TIMM_MOBILENET_V4_NAMES,
    (r"blocks_(\d+)_(\d+)_(norm|layer_scale)", r"blocks.\1.\2.\3"),
    (r"blocks_(\d+)_(\d+)_attn_(query|key|value|output)_(proj|down_conv|norm)",
     r"blocks.\1.\2.attn.\3.\4"),
)
for _family in ("MobileNetV4HybridMedium", "MobileNetV4HybridLarge"):
    TIMM.flavours[_family] = _TIMM_MOBILENET_V4
    TIMM.name_maps[_family] = _TIMM_MOBILENET_V4_HYBRID_NAMES


def _megvii_shufflenet_v1_map():
    """megvii's module paths: the units are `features.{i}`, counted across the stages."""
    parts = {"gconv1": "branch_main_1.0", "bn1": "branch_main_1.1", "dw": "branch_main_1.3",
             "dw_bn": "branch_main_1.4", "gconv2": "branch_main_2.0", "bn2": "branch_main_2.1"}
    rules = [("conv1", "first_conv.0"), ("conv1_bn", "first_conv.1"),
             ("predictions", "classifier.0")]
    # The stages and repeats of `models.shufflenet_v1.STAGES`.
    units = [(stage, i) for stage, repeats in (("stage2", 4), ("stage3", 8), ("stage4", 4))
             for i in range(1, repeats + 1)]
    for index, (stage, i) in enumerate(units):
        # A split grouped conv's parts (`_g0`, `_g1`, ...) share the grouped tensor.
        rules += [(rf"{stage}_unit{i}_{part}(?:_g\d+)?", f"features.{index}.{module}")
                  for part, module in parts.items()]
    return tuple(rules)


# megvii's own ShuffleNet V1 checkpoints (megvii-model/ShuffleNet-Series), saved from
# `nn.DataParallel`: BGR pixels in [0, 255], unnormalized; a Linear classifier without bias.
# The identity is embedded all the same: a model with its preprocessing takes raw pixels.
MEGVII_BGR = Normalization((0.0,) * 3, (1.0,) * 3, pixel_max=255.0, order="BGR")
MEGVII = Source(
    name="megvii", formats=("torch-pth",), suffixes=(".pth.tar", ".pth"),
    reader=pth.load_state_dict,
    flavours={"ShuffleNetV1": _replace(TORCH, source="megvii", normalization=MEGVII_BGR,
                                       classifier_bias=False, shuffle_order="inverse",
                                       shuffle_after_depthwise=True)},
    name_maps={"ShuffleNetV1": _megvii_shufflenet_v1_map()},
    key_prefixes=("module.",),
)

# timm's EfficientNet-Lite: its ports of the TensorFlow weights (`tf_efficientnet_lite*`) keep
# TF 'same' padding, epsilon 1e-3 and inputs scaled to [-1, 1]; its own training
# (`efficientnet_lite0.ra_in1k`) has PyTorch's padding and epsilon and ImageNet mean/std. The
# files hold the same tensors: a timm file of the family is taken as the TF port.
TIMM_TF_LITE = Flavour("timm", "same", 1e-3, 0.9, TIMM_INCEPTION,
                       block0_expand=False)
TIMM_LITE = _replace(TIMM_TF_LITE, padding="symmetric", bn_epsilon=1e-5,
                     normalization=TORCH_IMAGENET)
_EFFICIENTNET_LITE_NAMES = (
    (r"(conv_stem|bn1|conv_head|bn2|classifier)", r"\1"),
    (r"blocks_(\d+)_(\d+)_(conv_pw|conv_dw|conv_pwl|bn[123])", r"blocks.\1.\2.\3"),
)
TIMM.flavours["EfficientNetLite"] = TIMM_TF_LITE
TIMM.name_maps["EfficientNetLite"] = _EFFICIENTNET_LITE_NAMES
TIMM.set_flavours[("EfficientNetLite", "pytorch")] = TIMM_LITE

# timm's GhostNet V1/V2: PyTorch numerics, ImageNet mean and std; SE gate `hard_sigmoid`.
TIMM.flavours["GhostNet"] = _replace(TORCH, source="timm", gate=GATE_RELU6)
TIMM.name_maps["GhostNet"] = (
    (r"(conv_stem|bn1|conv_head|classifier)", r"\1"),
    (r"blocks_(\d+)_(\d+)_(ghost[12])_(primary_conv|cheap_operation|short_conv)_(\d+)",
     r"blocks.\1.\2.\3.\4.\5"),
    (r"blocks_(\d+)_(\d+)_(conv_dw|bn_dw|conv|bn1)", r"blocks.\1.\2.\3"),
    (r"blocks_(\d+)_(\d+)_(se|shortcut)_(conv_reduce|conv_expand|\d+)", r"blocks.\1.\2.\3.\4"),
)

# timm's MobileNet V1 (`mobilenetv1_*`, ra4 tags): PyTorch numerics, symmetric padding in the
# stem too, a dense classifier on the pooled 1024 (no head conv), inputs scaled to [-1, 1].
TIMM.flavours["MobileNet"] = _replace(TORCH, source="timm", normalization=TIMM_INCEPTION)
# Keras' separable blocks 1-13 are timm's `blocks.{stage}.{i}`: stages of 1, 2, 2, 6, 2.
_V1_TIMM_BLOCKS = [f"blocks.{s}.{i}" for s, n in enumerate((1, 2, 2, 6, 2)) for i in range(n)]
TIMM.name_maps["MobileNet"] = (
    (r"conv1", "conv_stem"), (r"conv1_bn", "bn1"), (r"predictions", "classifier"),
    *((f"conv_{kind}_{b}{bn}", f"{module}.{leaf}")
      for b, module in enumerate(_V1_TIMM_BLOCKS, start=1)
      for kind, leaves in (("dw", ("conv_dw", "bn1")), ("pw", ("conv_pw", "bn2")))
      for bn, leaf in zip(("", "_bn"), leaves, strict=True)),
)
# timm's MobileNetV2 (`mobilenetv2_{050,100,140}`): torchvision's topology and numerics, no
# dropout; block 0 is a depthwise separable `blocks.0.0`, the others `blocks.{stage}.{i}`.
TIMM.flavours["MobileNetV2"] = _replace(TORCHVISION.flavours["MobileNetV2"], source="timm",
                                        classifier_dropout=0.0)
_V2_TIMM_IR = {"expand": "conv_pw", "expand_BN": "bn1", "depthwise": "conv_dw",
               "depthwise_BN": "bn2", "project": "conv_pwl", "project_BN": "bn3"}
_V2_TIMM_BLOCK0 = {"depthwise": "conv_dw", "depthwise_BN": "bn1", "project": "conv_pw",
                   "project_BN": "bn2"}
_V2_TIMM_BLOCKS = [f"blocks.{s}.{i}" for s, n in enumerate(_V2_REPEATS) for i in range(n)]
TIMM.name_maps["MobileNetV2"] = (
    (r"Conv1", "conv_stem"), (r"bn_Conv1", "bn1"), (r"Conv_1", "conv_head"),
    (r"Conv_1_bn", "bn2"), (r"predictions", "classifier"),
    *((f"expanded_conv_{k}", f"blocks.0.0.{v}") for k, v in _V2_TIMM_BLOCK0.items()),
    *((f"block_{b}_{k}", f"{module}.{v}") for b, module in enumerate(_V2_TIMM_BLOCKS)
      if b for k, v in _V2_TIMM_IR.items()),
)

# timm's MobileNetV3 (`mobilenetv3_large_100`, `mobilenetv3_small_*`): torchvision's topology
# (same SE rounding, hard-sigmoid gate, head conv with bias and no batch norm, linear
# classifier) with PyTorch's batch-norm epsilon; ImageNet mean/std (the `ra_in1k`/`lamb_in1k`
# tags). Keras block b is timm's `blocks.{stage}.{i}`: block 0 a depthwise-separable block,
# the head's 1x1 conv the last stage.
def _timm_v3(stages, se):
    """The name map of a MobileNetV3 of `stages` blocks per stage; blocks `se` have an SE."""
    places = [(s, i) for s, repeats in enumerate(stages) for i in range(repeats)]
    block0 = {"depthwise": "conv_dw", "depthwise_bn": "bn1", "project": "conv_pw",
              "project_bn": "bn2"}
    block = {"expand": "conv_pw", "expand_bn": "bn1", "depthwise": "conv_dw",
             "depthwise_bn": "bn2", "project": "conv_pwl", "project_bn": "bn3"}

    def block_names(b):
        if b >= len(places):
            return {}
        module = "blocks.{}.{}".format(*places[b])
        names = {k: f"{module}.{v}" for k, v in (block if b else block0).items()}
        if b in se:
            names.update({"squeeze_excite_conv": f"{module}.se.conv_reduce",
                          "squeeze_excite_conv_1": f"{module}.se.conv_expand"})
        return names

    head = f"blocks.{len(stages)}.0"
    return _v3_rules(block_names, {"conv": "conv_stem", "conv_bn": "bn1", "conv_1": f"{head}.conv",
                                   "conv_1_bn": f"{head}.bn1", "conv_2": "conv_head",
                                   "logits": "classifier"})


TIMM_V3 = _replace(TORCHVISION.flavours["MobileNetV3Large"], source="timm", bn_epsilon=1e-5,
                   bn_momentum=0.9)
TIMM.flavours.update({"MobileNetV3Large": TIMM_V3, "MobileNetV3Small": TIMM_V3})
TIMM.name_maps["MobileNetV3Large"] = _timm_v3((1, 2, 3, 4, 2, 3),
                                              se=(3, 4, 5, 10, 11, 12, 13, 14))
TIMM.name_maps["MobileNetV3Small"] = _timm_v3((1, 2, 3, 2, 3), se=(0, 3, 4, 5, 6, 7, 8, 9, 10))
# The ra4 tag (`mobilenetv3_large_100.ra4_e3600_r224_in1k`) takes inputs scaled to [-1, 1].
TIMM.set_flavours[("MobileNetV3Large", "inception")] = _replace(
    TIMM_V3, normalization=TIMM_INCEPTION)
# Alibaba MIIL's ImageNet-21K pretraining, fine-tuned on ImageNet-1k: pixels / 255, unnormalized.
TIMM.set_flavours[("MobileNetV3Large", "miil")] = _replace(
    TIMM_V3, normalization=Normalization((0.0,) * 3, (1.0,) * 3))

# timm's MnasNet-B1 (`mnasnet_100`): torchvision's topology; PyTorch's default batch-norm
# momentum. Keras' torchvision names `layers_{8 + s}_{i}_layers_{j}` are timm's
# `blocks.{s + 1}.{i}`.
_MNASNET_IR = {0: "conv_pw", 1: "bn1", 3: "conv_dw", 4: "bn2", 6: "conv_pwl", 7: "bn3"}
TIMM.flavours["MnasNet"] = _replace(TORCHVISION.flavours["MnasNet"], source="timm",
                                    bn_momentum=0.9)
TIMM.name_maps["MnasNet"] = (
    (r"layers_0", "conv_stem"), (r"layers_1", "bn1"),
    (r"layers_3", "blocks.0.0.conv_dw"), (r"layers_4", "blocks.0.0.bn1"),
    (r"layers_6", "blocks.0.0.conv_pw"), (r"layers_7", "blocks.0.0.bn2"),
    *((rf"layers_{8 + s}_(\d+)_layers_{j}", rf"blocks.{s + 1}.\1.{v}")
      for s in range(6) for j, v in _MNASNET_IR.items()),
    (r"layers_14", "conv_head"), (r"layers_15", "bn2"), (r"classifier_1", "classifier"),
)

# In order of precedence: a family's default source is the first that publishes it.
SOURCES = {s.name: s for s in (KERAS_APPLICATIONS, TORCHVISION, PADDLE, PAPER, TIMM, MEGVII)}
# This package's own files: Keras reads them by layer name, whatever the flavour.
NATIVE_SUFFIXES = (".weights.h5", ".keras")


# -- lookups -------------------------------------------------------------------------------


def _received(weights):
    return f"Received: weights={weights!r}"


def default_source(family):
    """The source of `weights="imagenet"` and of `weights=None`.

    The source of the family's "imagenet" files (the manifest), else the first
    in `SOURCES` with a flavour of it: sources added later do not change what
    "imagenet" means.
    """
    from keras_lightnets.weights import manifest

    published = {e["source"] for e in manifest.entries(family, manifest.IMAGENET)}
    for candidates in (published, {s.name for s in SOURCES.values() if family in s.flavours}):
        for source in SOURCES.values():
            if source.name in candidates:
                return source
    raise ValueError(f"No weight source has a flavour of family {family!r}. "
                     f"Received: family={family!r}")


def set_source(family, weights):
    """The source of weight set `weights` of `family` (its manifest entries name it)."""
    from keras_lightnets.weights import manifest

    named = {e["source"] for e in manifest.entries(family, weights)}
    if not named:
        sets = manifest.set_names(family)
        raise ValueError(
            f"{family} has no weight set {weights!r}; its sets: {', '.join(sets) or 'none'}. "
            f"Any other `weights` must be the path to an existing weights file. "
            f"{_received(weights)}"
        )
    if len(named) > 1 or next(iter(named)) not in SOURCES:
        raise ValueError(f"The manifest's {weights!r} entries of {family} name the sources "
                         f"{sorted(named)}: one known source per set. {_received(weights)}")
    source = SOURCES[named.pop()]
    if family not in source.flavours:
        raise ValueError(f"The {weights!r} weights of {family} need {source.name}'s flavour "
                         f"of {family}, which this version does not build. {_received(weights)}")
    return source


def file_source(path, family=None):
    """The source whose file `path` is, by its ending; None for Keras-layout files.

    A legacy `.h5` is keras.applications' for its families and this package's
    own layout otherwise, like `.weights.h5`, `.keras` and unknown endings
    (Keras tries them). A state-dict file (`.pth`) needs a source that maps
    `family` (None: the first source reading such files, in `SOURCES` order).
    """
    name = os.fspath(path).lower()
    if name.endswith(NATIVE_SUFFIXES):
        return None
    found = [s for s in SOURCES.values() if s.suffixes and name.endswith(s.suffixes)]
    keras_layout = [s for s in found if s.reader is None]
    if not found or keras_layout:
        return next((s for s in keras_layout if family in s.flavours), None)
    if family is not None:
        found = [s for s in found if family in s.name_maps]
    if len(found) == 1 or (family is None and found):
        return found[0]
    readable = "; ".join(f"{s.name} {s.suffixes}: {', '.join(s.name_maps)}"
                         for s in SOURCES.values() if s.reader)
    raise ValueError(
        f"No weight source reads the file {os.fspath(path)!r} for family {family}. Sources and "
        f"the families they map: {readable}; Keras files: .h5, .weights.h5, .keras. "
        f"{_received(os.fspath(path))}"
    )


def flavour_for(family, weights, variant=None):
    """The flavour a factory builds for `weights` (None, a weight set's name or a path).

    "imagenet" and None give the family's default source; another set the
    source its manifest entries name (`set_source`); a path's ending decides
    its source (`file_source`), Keras-layout files giving the default source.
    With `variant` (the factory's variant arguments), a set whose entry of
    that variant names a `flavour` gives that flavour (`entry_flavour`).
    """
    from keras_lightnets.weights import manifest

    source = None
    if manifest.is_set_name(weights):
        if weights != manifest.IMAGENET:
            source = set_source(family, weights)
        if variant is not None:
            named = [e for e in manifest.entries(family, weights)
                     if manifest.matches(e, variant) and e.get("flavour")]
            if named:
                return entry_flavour(named[0])
    elif weights is not None:
        source = file_source(weights, family)
    return (source or default_source(family)).flavours[family]


def entry_flavour(entry):
    """The flavour manifest entry `entry`'s file was trained in."""
    source = SOURCES[entry["source"]]
    if entry.get("flavour"):
        return source.set_flavours[(entry["family"], entry["flavour"])]
    return source.flavours[entry["family"]]


def state_prefix(source, family, layer_name):
    """The tensor-name prefix of Keras layer `layer_name` in `source`'s files."""
    for pattern, template in source.name_maps.get(family, ()):
        match = re.fullmatch(pattern, layer_name)
        if match:
            return match.expand(template)
    raise ValueError(
        f"Keras layer {layer_name!r} has no {source.name} name in {family}'s name map; is the "
        f"model a {family}? Received: layer={layer_name!r}"
    )


def weighted_layers(model):
    """The layers that hold a source's tensors (not the embedded preprocessing)."""
    return [layer for layer in model.layers
            if layer.weights and type(layer).__name__ not in ("Rescaling", "Normalization")]


def family_of(model, source, weights=None):
    """The family of `source` whose name map places every weighted layer of `model`.

    When several do (MobileNetV3 Large's PaddleClas map also names every layer of
    a Small), the one with the fewest rules: the most specific.
    """
    misses = {}
    for family in source.name_maps:
        misses[family] = [layer.name for layer in weighted_layers(model)
                          if not any(re.fullmatch(p, layer.name)
                                     for p, _ in source.name_maps[family])]
    fitting = [f for f in misses if not misses[f]]
    if fitting:
        return min(fitting, key=lambda f: len(source.name_maps[f]))
    closest = min(misses, key=lambda f: len(misses[f]), default=None)
    detail = f" ({closest}'s has no name for layer {misses[closest][0]!r})" if closest else ""
    raise ValueError(
        f"No {source.name} name map fits model {model.name!r}{detail}; {source.name} maps "
        f"{', '.join(source.name_maps) or 'no family'}. "
        f"{_received(weights) if weights else f'Received: model={model.name!r}'}"
    )

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
from keras_lightnets.weights import pth, safetensors_file

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
    or "conv1x1" (a 1x1 convolution on the pooled map).
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
    `key_prefixes` are stripped from the file's keys.
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


# -- flavours: today's values, as the models build them ----------------------------------

KERAS_TF = Normalization((127.5,) * 3, (127.5,) * 3, pixel_max=255.0, embedded=False)
TORCH_IMAGENET = Normalization(imagenet.TORCH_MEAN, imagenet.TORCH_STD)

KERAS = Flavour("keras.applications", "keras", 1e-3, 0.999, KERAS_TF, block0_expand=False)
TORCH = Flavour("torchvision", "symmetric", 1e-5, 0.9, TORCH_IMAGENET)

_replace = dataclasses.replace
_V3 = _replace(KERAS, classifier="conv1x1", gate=GATE_RELU6,
               normalization=_replace(KERAS_TF, embedded=True))

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

TORCHVISION = Source(
    name="torchvision", formats=("torchvision-pth",), suffixes=(".pth", ".pt"),
    reader=pth.load_state_dict,
    flavours={
        "ShuffleNetV2": TORCH,
        "SqueezeNet": _replace(TORCH, bn_epsilon=None, bn_momentum=None, classifier="conv1x1"),
        # PyTorch momentum 1 - 0.9997; the stem's separable conv has no expansion.
        "MnasNet": _replace(TORCH, bn_momentum=0.9997, block0_expand=False),
    },
    # Keras layer names are torchvision's module paths with "_" for ".".
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
    },
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

# In order of precedence: a family's default source is the first that publishes it.
SOURCES = {s.name: s for s in (KERAS_APPLICATIONS, TORCHVISION, PAPER, TIMM)}
# This package's own files: Keras reads them by layer name, whatever the flavour.
NATIVE_SUFFIXES = (".weights.h5", ".keras")


# -- lookups -------------------------------------------------------------------------------


def _received(weights):
    return f"Received: weights={weights!r}"


def default_source(family):
    """The source of `weights="imagenet"` and of `weights=None`.

    The first source in `SOURCES` with published files of `family` (the
    manifest), else the first with a flavour of it: sources added later do
    not change what "imagenet" means.
    """
    from keras_lightnets.weights import manifest

    published = {e["source"] for e in manifest.entries(family)}
    for candidates in (published, {s.name for s in SOURCES.values() if family in s.flavours}):
        for source in SOURCES.values():
            if source.name in candidates:
                return source
    raise ValueError(f"No weight source has a flavour of family {family!r}. "
                     f"Received: family={family!r}")


def file_source(path, family=None):
    """The source whose file `path` is, by its ending; None for Keras-layout files.

    A legacy `.h5` is keras.applications' for its families and this package's
    own layout otherwise, like `.weights.h5`, `.keras` and unknown endings
    (Keras tries them). A state-dict file (`.pth`) needs a source that maps
    `family` (None: the one source reading such files).
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
    if len(found) == 1:
        return found[0]
    readable = "; ".join(f"{s.name} {s.suffixes}: {', '.join(s.name_maps)}"
                         for s in SOURCES.values() if s.reader)
    raise ValueError(
        f"No weight source reads the file {os.fspath(path)!r} for family {family}. Sources and "
        f"the families they map: {readable}; Keras files: .h5, .weights.h5, .keras. "
        f"{_received(os.fspath(path))}"
    )


def flavour_for(family, weights):
    """The flavour a factory builds for `weights` (None, "imagenet" or a path).

    A path's ending decides its source (`file_source`); Keras-layout files and
    `None`/"imagenet" give the family's default source.
    """
    source = None
    if weights is not None and not (isinstance(weights, str) and weights == "imagenet"):
        source = file_source(weights, family)
    return (source or default_source(family)).flavours[family]


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
    """The family of `source` whose name map places every weighted layer of `model`."""
    misses = {}
    for family in source.name_maps:
        misses[family] = [layer.name for layer in weighted_layers(model)
                          if not any(re.fullmatch(p, layer.name)
                                     for p, _ in source.name_maps[family])]
        if not misses[family]:
            return family
    closest = min(misses, key=lambda f: len(misses[f]), default=None)
    detail = f" ({closest}'s has no name for layer {misses[closest][0]!r})" if closest else ""
    raise ValueError(
        f"No {source.name} name map fits model {model.name!r}{detail}; {source.name} maps "
        f"{', '.join(source.name_maps) or 'no family'}. "
        f"{_received(weights) if weights else f'Received: model={model.name!r}'}"
    )

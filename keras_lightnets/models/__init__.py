"""Model families; importing this package registers every variant."""

from keras_lightnets.models.efficientnet_lite import (
    EfficientNetLite,
    EfficientNetLite0,
    EfficientNetLite1,
    EfficientNetLite2,
    EfficientNetLite3,
    EfficientNetLite4,
)
from keras_lightnets.models.ghostnet import GhostNet
from keras_lightnets.models.mnasnet import MnasNet
from keras_lightnets.models.mobilenet import MobileNet
from keras_lightnets.models.mobilenet_v2 import MobileNetV2
from keras_lightnets.models.mobilenet_v3 import MobileNetV3Large, MobileNetV3Small
from keras_lightnets.models.mobilenet_v4 import (
    MobileNetV4ConvLarge,
    MobileNetV4ConvMedium,
    MobileNetV4ConvSmall,
)
from keras_lightnets.models.nasnet import NASNetMobile
from keras_lightnets.models.shufflenet_v1 import ShuffleNetV1
from keras_lightnets.models.shufflenet_v2 import ShuffleNetV2
from keras_lightnets.models.squeezenet import SqueezeNet
from keras_lightnets.registry import register, width_tag

# Registry rows. Columns: name prefix, family, factory, variant kwargs,
# default (the family's representative in the heavier tests).
VARIANTS = [
    *[("mobilenet_v1", "MobileNet", MobileNet, {"alpha": a}, a == 0.25)
      for a in (0.25, 0.5, 0.75, 1.0, 1.25)],
    *[("mobilenet_v2", "MobileNetV2", MobileNetV2, {"alpha": a}, a == 1.0)
      for a in (0.25, 0.35, 0.5, 0.75, 1.0, 1.3, 1.4, 1.5, 2.0)],
    *[(prefix, family, factory, {"alpha": a, "minimalistic": m}, a == 1.0 and not m)
      for prefix, family, factory in (
          ("mobilenet_v3_large", "MobileNetV3Large", MobileNetV3Large),
          ("mobilenet_v3_small", "MobileNetV3Small", MobileNetV3Small))
      for a, m in ((0.35, False), (0.5, False), (0.75, False), (1.0, False), (1.25, False),
                   (1.0, True))],
    *[("mnasnet", "MnasNet", MnasNet, {"alpha": a}, a == 1.0) for a in (0.5, 0.75, 1.0, 1.3)],
    *[("shufflenet_v2", "ShuffleNetV2", ShuffleNetV2, {"alpha": a}, a == 1.0)
      for a in (0.25, 0.33, 0.5, 1.0, 1.5, 2.0)],
    ("shufflenet_v2_swish", "ShuffleNetV2", ShuffleNetV2, {"alpha": 1.0, "activation": "swish"},
     False),
    *[(f"shufflenet_v1_g{g}", "ShuffleNetV1", ShuffleNetV1, {"groups": g, "alpha": a},
       g == 3 and a == 1.0)
      for g in (1, 2, 3, 4, 8) for a in (0.25, 0.5, 1.0, 1.5, 2.0)],
]

for _prefix, _family, _factory, _kwargs, _default in VARIANTS:
    _minimal = "_minimal" if _kwargs.get("minimalistic") else ""
    register(f"{_prefix}{_minimal}_{width_tag(_kwargs['alpha'])}", _family, _factory,
             default=_default, **_kwargs)

# SqueezeNet has versions, not widths. Columns: name, variant kwargs, default.
SQUEEZENETS = [
    (f"squeezenet_{v.replace('.', '_')}{'_bypass' if b else ''}",
     {"version": v, **({"bypass": b} if b else {})}, v == "1.1" and not b)
    for v in ("1.0", "1.1") for b in (None, "simple")
]
for _name, _kwargs, _default in SQUEEZENETS:
    register(_name, "SqueezeNet", SqueezeNet, default=_default, **_kwargs)

# NASNet-A Mobile has one published configuration (4 @ 1056), no width multiplier.
register("nasnet_a_mobile", "NASNetMobile", NASNetMobile, default=True)
# MobileNetV4: timm's widths of Conv-Small; Medium and Large have one width.
# Columns: name, family, factory, variant kwargs, default.
MOBILENET_V4 = [
    *[(f"mobilenet_v4_conv_small_{width_tag(a)}", "MobileNetV4ConvSmall", MobileNetV4ConvSmall,
       {"alpha": a}, a == 1.0) for a in (0.35, 0.5, 1.0)],
    ("mobilenet_v4_conv_medium_100", "MobileNetV4ConvMedium", MobileNetV4ConvMedium, {}, True),
    ("mobilenet_v4_conv_large_100", "MobileNetV4ConvLarge", MobileNetV4ConvLarge, {}, True),
]
for _name, _family, _factory, _kwargs, _default in MOBILENET_V4:
    register(_name, _family, _factory, default=_default, **_kwargs)
# EfficientNet-Lite: factories per variant as keras.applications' EfficientNetB0..B7, one
# family (its weights, its tests' representative Lite0).
for _variant in range(5):
    register(f"efficientnet_lite{_variant}", "EfficientNetLite", EfficientNetLite,
             default=_variant == 0, variant=_variant)

__all__ = ["MnasNet", "MobileNet", "MobileNetV2", "MobileNetV3Large", "MobileNetV3Small",
           "MobileNetV4ConvLarge", "MobileNetV4ConvMedium", "MobileNetV4ConvSmall",
           "NASNetMobile", "ShuffleNetV1", "ShuffleNetV2", "SqueezeNet"]
# GhostNet: versions and widths with timm weights; V2 1.0 (V1's ghost modules plus DFC
# attention) represents the family, test_ghostnet checks V1 as well.
for _version, _alpha in ((1, 1.0), (2, 1.0), (2, 1.3), (2, 1.6)):
    register(f"ghostnet_v{_version}_{width_tag(_alpha)}", "GhostNet", GhostNet,
             default=(_version, _alpha) == (2, 1.0), version=_version, alpha=_alpha)

__all__ += ["GhostNet", "EfficientNetLite", "EfficientNetLite0", "EfficientNetLite1",
            "EfficientNetLite2", "EfficientNetLite3", "EfficientNetLite4"]

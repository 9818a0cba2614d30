"""Model families; importing this package registers every variant."""

from keras_lightnets.models.mnasnet import MnasNet
from keras_lightnets.models.mobilenet import MobileNet
from keras_lightnets.models.mobilenet_v2 import MobileNetV2
from keras_lightnets.models.mobilenet_v3 import MobileNetV3Large, MobileNetV3Small
from keras_lightnets.models.nasnet import NASNetMobile
from keras_lightnets.models.shufflenet_v1 import ShuffleNetV1
from keras_lightnets.models.shufflenet_v2 import ShuffleNetV2
from keras_lightnets.models.squeezenet import SqueezeNet
from keras_lightnets.registry import register, width_tag

# Registry rows. Columns: name prefix, family, factory, variant kwargs,
# default (the family's representative in the heavier tests).
VARIANTS = [
    *[("mobilenet_v1", "MobileNet", MobileNet, {"alpha": a}, a == 0.25)
      for a in (0.25, 0.5, 0.75, 1.0)],
    *[("mobilenet_v2", "MobileNetV2", MobileNetV2, {"alpha": a}, a == 1.0)
      for a in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)],
    *[(prefix, family, factory, {"alpha": a, "minimalistic": m}, a == 1.0 and not m)
      for prefix, family, factory in (
          ("mobilenet_v3_large", "MobileNetV3Large", MobileNetV3Large),
          ("mobilenet_v3_small", "MobileNetV3Small", MobileNetV3Small))
      for a, m in ((0.75, False), (1.0, False), (1.0, True))],
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

__all__ = ["MnasNet", "MobileNet", "MobileNetV2", "MobileNetV3Large", "MobileNetV3Small",
           "NASNetMobile", "ShuffleNetV1", "ShuffleNetV2", "SqueezeNet"]

"""keras_lightnets: lightweight mobile CNNs for Keras 3, with weights and export.

```python
import keras_lightnets as kl
model = kl.MobileNetV2(alpha=1.0, weights=None, include_top=False, pooling="avg")
```
"""

from keras_lightnets import imagenet, layers, weights
from keras_lightnets.features import feature_extractor
from keras_lightnets.layers import (
    ChannelShuffle,
    ChannelSplit,
    HardSigmoid,
    HardSwish,
    LayerScale,
    MultiQueryAttentionCore,
    group_conv,
)
from keras_lightnets.models import (
    EfficientNetLite,
    EfficientNetLite0,
    EfficientNetLite1,
    EfficientNetLite2,
    EfficientNetLite3,
    EfficientNetLite4,
    GhostNet,
    MnasNet,
    MobileNet,
    MobileNetV2,
    MobileNetV3Large,
    MobileNetV3Small,
    MobileNetV4ConvLarge,
    MobileNetV4ConvMedium,
    MobileNetV4ConvSmall,
    MobileNetV4HybridLarge,
    MobileNetV4HybridMedium,
    NASNetMobile,
    ShuffleNetV1,
    ShuffleNetV2,
    SqueezeNet,
)
from keras_lightnets.profile import profile
from keras_lightnets.registry import get_model, list_models, list_weights

__version__ = "0.1.0"

__all__ = [
    "ChannelShuffle",
    "ChannelSplit",
    "HardSigmoid",
    "EfficientNetLite",
    "EfficientNetLite0",
    "EfficientNetLite1",
    "EfficientNetLite2",
    "EfficientNetLite3",
    "EfficientNetLite4",
    "GhostNet",
    "HardSwish",
    "LayerScale",
    "MnasNet",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Large",
    "MobileNetV3Small",
    "MobileNetV4ConvLarge",
    "MobileNetV4ConvMedium",
    "MobileNetV4ConvSmall",
    "MobileNetV4HybridLarge",
    "MobileNetV4HybridMedium",
    "MultiQueryAttentionCore",
    "NASNetMobile",
    "ShuffleNetV1",
    "ShuffleNetV2",
    "SqueezeNet",
    "feature_extractor",
    "get_model",
    "group_conv",
    "imagenet",
    "layers",
    "list_models",
    "list_weights",
    "profile",
    "weights",
]

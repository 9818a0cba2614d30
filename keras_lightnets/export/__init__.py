"""Export to SavedModel, TFLite (LiteRT) and ONNX, verified numerically.

```python
import keras_lightnets as kl
from keras_lightnets import export

model = kl.MobileNetV3Small(input_shape=(224, 224, 3), weights=None)
export.to_tflite(model, "v3s.tflite")                      # float32, batch 1
export.to_tflite(model, "v3s_int8.tflite", "int8", representative_data=photos)
export.to_onnx(model, "v3s.onnx")                          # dynamic batch
export.to_saved_model(model, "v3s_savedmodel")
```

Every exporter takes Keras 3 models (TensorFlow backend) and tf_keras models (those of
`keras_lightnets.optimize`), writes atomically and by default runs the artifact and
compares it with the Keras model, raising `ExportVerificationError` beyond the tolerance.
Each returns an `ExportReport`.

The graph passes that make the files fast are listed in order in `export.passes`;
`passes=` switches them, and the report says which changed the graph.

Artifacts take what the Keras model takes: raw `[0, 255]` RGB pixels with embedded
preprocessing (`expects_raw_pixels(model)`), else the family's `preprocess_input` output.
"""

from keras_lightnets.export._fold import fold_concatenated
from keras_lightnets.export._model import expects_raw_pixels
from keras_lightnets.export._route import routed
from keras_lightnets.export.onnx import to_onnx
from keras_lightnets.export.saved_model import to_saved_model
from keras_lightnets.export.tflite import to_tflite
from keras_lightnets.export.verify import (
    ExportError,
    ExportReport,
    ExportVerificationError,
)

__all__ = [
    "ExportError",
    "ExportReport",
    "ExportVerificationError",
    "expects_raw_pixels",
    "fold_concatenated",
    "routed",
    "to_onnx",
    "to_saved_model",
    "to_tflite",
]

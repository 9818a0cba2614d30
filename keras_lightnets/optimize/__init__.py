"""Pruning and quantization-aware training with TF-MOT, for every family.

TF-MOT only takes tf_keras (Keras 2) models, so each function works on the model's
tf_keras twin (`to_tf_keras`) and comes back to Keras 3 by layer name (`strip`, `to_keras3`).

```python
from keras_lightnets import export, optimize

pruned, callbacks = optimize.prune(model, target_sparsity=0.5)
pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
pruned.fit(dataset, epochs=2, callbacks=callbacks)
sparse = optimize.strip(pruned)  # Keras 3, ready for .keras and export

qat = optimize.quantize_aware(sparse, preserve_sparsity=True)
qat.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
qat.fit(dataset, epochs=1)
export.to_tflite(qat, "model_int8.tflite", "int8")
```

Needs `pip install keras-lightnets[optimize]` (tf_keras and TF-MOT). TF-MOT is imported on
first use, leaving TensorFlow's `keras` attribute at Keras 3 (a plain import switches it).
"""

import importlib

_EXPORTS = {
    "build_tf_keras": "twin",
    "copy_weights": "twin",
    "to_keras3": "twin",
    "to_tf_keras": "twin",
    "prune": "pruning",
    "sparsity_report": "pruning",
    "strip": "pruning",
    "calibrate": "quantization",
    "quantize_aware": "quantization",
    "quantize_scope": "quantization",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

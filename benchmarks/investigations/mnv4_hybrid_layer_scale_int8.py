"""How MobileNetV4-Hybrid's int8 file depends on the spread of its layer scales.

Every universal inverted residual and attention block of the hybrids ends in a per-channel
`LayerScale`. The converter folds it into the convolution before it, so the int8 graph has
no op for it; but a strided block (no shortcut) then writes channels of very different
sizes into one per-tensor int8 tensor, and the next block's batch norm scales each back
up, quantization noise included. timm initialises the scales to 1e-5; trained ones are
unknown here (no weight download). This script draws them log-uniform in `[low, 1]`
(`harness.trained_like` draws [0.5, 1.5]), makes the batch norms trained-like on photos
and reports the int8 file's mean cosine (the harness's metric) on held-out photos.

    PYTHONPATH=. python benchmarks/investigations/mnv4_hybrid_layer_scale_int8.py [name] [size]
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests"))

import harness  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_lightnets import export, registry  # noqa: E402
from keras_lightnets import layers as kl  # noqa: E402


def main(name="mobilenet_v4_hybrid_medium_100", size="128"):
    entry = registry.get_entry(name)
    size = int(size)
    for low in (None, 1e-1, 1e-2, 1e-3):
        model, x = harness.export_model(entry, size)
        fit, held = x[:harness.CALIBRATION_PHOTOS], x[harness.CALIBRATION_PHOTOS:]
        if low is not None:
            rng = np.random.default_rng(1)
            for layer in model.layers:
                if isinstance(layer, kl.LayerScale):
                    gamma = np.exp(rng.uniform(np.log(low), 0.0, layer.gamma.shape))
                    layer.set_weights([gamma.astype("float32")])
            keras.utils.set_random_seed(0)
            harness.trained_like(model, fit, layer_scales=False)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.tflite")
            export.to_tflite(model, path, "int8", representative_data=fit, verify=False,
                             progress=False)
            measured = harness.agreement(np.asarray(model(held, training=False)),
                                         harness.run_tflite(path, held))
        scales = "[0.5, 1.5]" if low is None else f"log-uniform [{low:g}, 1]"
        print(f"{name} {size}px, layer scales {scales}: int8 mean cosine "
              f"{measured['cosine']:.4f} (min {measured['min_cosine']:.4f})", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

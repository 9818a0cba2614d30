"""Why MobileNetV4 Conv-Large's int8 export check fails on the harness's trained-like weights.

`harness.trained_like` gives every batch norm an offset of 1-2 times its scale. After a
linear projection (no activation) that offset is added to the residual stream by every
block, so in Conv-Large's 14-block stride-32 stage the stream's range grows far above its
image-dependent part and a per-tensor int8 step swallows the signal. This script measures
the stream and exports the int8 file twice: with the harness's weights, and with the
projection batch norms' offsets centred (beta ~ N(0, 0.1 gamma)), everything else equal.

    PYTHONPATH=. python benchmarks/investigations/mnv4_large_int8.py [registry name]
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests"))

import harness  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_lightnets import export, registry  # noqa: E402


def stream(model, x):
    adds = [layer.name for layer in model.layers if layer.name.endswith("_add")][-1:]
    out = np.asarray(keras.Model(model.input, model.get_layer(adds[0]).output)(x))
    return adds[0], float(np.abs(out).max()), float(out.std(0).mean())


def centre_projection_offsets(model, x, seed=1):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.name.endswith(
                ("pw_proj_bn", "_bn2")):
            gamma, _, mean, var = layer.get_weights()
            beta = (0.1 * gamma * rng.standard_normal(gamma.shape)).astype("float32")
            layer.set_weights([gamma, beta, mean, var])
    head = harness._classifier(model, list(harness._all_layers(model)))
    harness._scale_classifier(model, head, x, harness.LOGIT_STD)
    return model


def main(name="mobilenet_v4_conv_large_100", size=96):
    entry = registry.get_entry(name)
    model, x = harness.export_model(entry, size)
    fit, held = x[:harness.CALIBRATION_PHOTOS], x[harness.CALIBRATION_PHOTOS:]
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("trained_like", "projection offsets centred"):
            if label != "trained_like":
                centre_projection_offsets(model, fit)
            add, top, spread = stream(model, fit)
            report = export.to_tflite(model, os.path.join(tmp, "m.tflite"), "int8",
                                      representative_data=fit, verify_data=held,
                                      tolerance=0.01, progress=False)
            print(f"{name} {size}px, {label}: {add} range {top:.1f}, image-dependent std "
                  f"{spread:.2f}; int8 mean cosine {report.cosine:.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:2])

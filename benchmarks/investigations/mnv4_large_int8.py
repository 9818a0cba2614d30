"""Why MobileNetV4 Conv-Large's int8 export check fails at 96 px on trained-like weights.

`harness.run_export_test` exports each model at 96 px. Conv-Large's stride-32 stage is
fourteen blocks of 5x5 depthwise convs on a 3x3 map there: most of each kernel reads
padding, so the residual stream carries large offsets that depend on the position, not
on the image, and a per-tensor int8 step swallows the image-dependent part. This script
measures the stream at the last residual add (its range, the spread of its per-position
mean, and its spread over images) and the int8 file's mean cosine (the harness's
metric), at 96 px and at larger sizes.

    PYTHONPATH=. python benchmarks/investigations/mnv4_large_int8.py [name] [size ...]
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
    """The last residual add: name, range, spread of the per-position mean, spread over x."""
    add = [layer.name for layer in model.layers if layer.name.endswith("_add")][-1]
    out = np.asarray(keras.Model(model.input, model.get_layer(add).output)(x))
    return add, float(np.abs(out).max()), float(out.mean(0).std()), float(out.std(0).mean())


def main(name="mobilenet_v4_conv_large_100", *sizes):
    entry = registry.get_entry(name)
    for size in [int(s) for s in sizes] or [96, 160]:
        model, x = harness.export_model(entry, size)
        fit, held = x[:harness.CALIBRATION_PHOTOS], x[harness.CALIBRATION_PHOTOS:]
        add, top, fixed, spread = stream(model, fit)
        with tempfile.TemporaryDirectory() as tmp:
            report = export.to_tflite(model, os.path.join(tmp, "m.tflite"), "int8",
                                      representative_data=fit, verify_data=held,
                                      tolerance=0.01, progress=False)
        print(f"{name} {size}px: {add} range {top:.1f}, per-position mean spread {fixed:.2f}, "
              f"spread over images {spread:.2f}; int8 mean cosine {report.cosine:.4f}",
              flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

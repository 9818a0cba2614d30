"""Exports a full-integer ShuffleNet V2 for Android (LiteRT), with `labels.txt`.

The model embeds its preprocessing (`include_preprocessing=True`), so the app
feeds the camera's RGB bytes as they are: the file takes uint8
`(1, 224, 224, 3)` pixels and returns uint8 logits `(1, 1000)` (rank them as
they are; apply a softmax to the dequantized values for probabilities).
Calibration uses the images of `--calibration-dir`; the exported file is
verified against the Keras model, then run once with ai-edge-litert the way
the app will run it.

    python examples/tflite_android.py --calibration-dir photos/ \\
        --output-dir app/src/main/assets

Copy `shufflenet_v2_100_int8.tflite` and `labels.txt` into the app's assets;
the README's "Android" section shows the Kotlin side.
"""

import argparse
import os
import sys

import numpy as np

import keras_lightnets as kl
from keras_lightnets import export, imagenet
from keras_lightnets.export import tflite

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def load_photos(directory, size, limit):
    """Up to `limit` images of `directory`, raw RGB in [0, 255], `(n, size, size, 3)`."""
    names = sorted(n for n in os.listdir(directory) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        sys.exit(f"tflite_android.py: no .jpg/.png images in {directory!r}")
    return np.concatenate([imagenet.load_image(os.path.join(directory, n), size)
                           for n in names[:limit]]), names[:limit]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shufflenet_v2_100",
                        help="a registered model with embedded preprocessing")
    parser.add_argument("--weights", default="imagenet", help="imagenet, none or a path")
    parser.add_argument("--calibration-dir", required=True,
                        help="folder of representative photos (100-500 is plenty)")
    parser.add_argument("--limit", type=int, default=200, help="calibration images to use")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--output-dir", default="android_assets")
    args = parser.parse_args(argv)

    size = args.input_size
    model = kl.get_model(
        args.model, weights=None if args.weights == "none" else args.weights,
        input_shape=(size, size, 3), include_preprocessing=True, classifier_activation=None)
    if not export.expects_raw_pixels(model):
        sys.exit(f"tflite_android.py: {args.model} does not embed its preprocessing")
    photos, names = load_photos(args.calibration_dir, size, args.limit)

    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, f"{args.model}_int8.tflite")
    report = export.to_tflite(model, path, quantization="int8", representative_data=photos,
                              io_dtype="uint8")
    print(report.summary())
    with open(os.path.join(args.output_dir, "labels.txt"), "w", encoding="utf-8") as f:
        index = imagenet.class_index()
        f.write("".join(f"{index[i][1]}\n" for i in range(len(index))))

    # What the app does: raw bytes in, uint8 logits out, rank them.
    runner = tflite.interpreter(path).get_signature_runner()
    (logits,) = runner(input=photos[:1].astype("uint8")).values()
    labels = [imagenet.class_index()[i][1] for i in range(1000)]
    best = np.argsort(-logits[0].astype(int), kind="stable")[:5]
    print(f"top-5 for {names[0]}: " + ", ".join(labels[i] for i in best))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ImageNet preprocessing and `decode_predictions`, offline.

The ImageNet-1k class index (`{"0": ["n01440764", "tench"], ...}`, the order
Keras and torchvision share) ships in the package, so decoding needs no
download.
"""

import functools
import importlib.resources
import json

import numpy as np
from keras import ops
from keras.applications import imagenet_utils

# torchvision's normalisation, on [0, 1] inputs.
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


@functools.lru_cache(maxsize=1)
def class_index():
    """The ImageNet-1k class index as `{int: (wnid, name)}`."""
    text = importlib.resources.files("keras_lightnets").joinpath(
        "data/imagenet_class_index.json"
    ).read_text()
    return {int(k): tuple(v) for k, v in json.loads(text).items()}


def decode_predictions(preds, top=5):
    """Decodes ImageNet predictions.

    Args:
        preds: array of shape `(samples, 1000)`.
        top: how many top guesses to return per sample.

    Returns:
        A list of lists of `(class_id, class_name, score)` tuples, one list per
        sample, best first.
    """
    preds = np.asarray(ops.convert_to_numpy(preds))
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(
            "`decode_predictions` expects a batch of predictions (i.e. a 2D array of "
            f"shape (samples, 1000)). Received: preds.shape={preds.shape}"
        )
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"`top` must be a positive integer. Received: top={top!r}")
    index = class_index()
    results = []
    for row in preds:
        best = np.argsort(-row, kind="stable")[:top]
        results.append([index[int(i)] + (row[i],) for i in best])
    return results


def preprocess_input(x, data_format=None, mode="tf"):
    """Keras' ImageNet preprocessing (`mode` "tf", "torch" or "caffe")."""
    return imagenet_utils.preprocess_input(x, data_format=data_format, mode=mode)


def load_image(path, size=224):
    """An image file as a float32 RGB array `(1, rows, cols, 3)` in `[0, 255]`.

    The photo is resized straight to `size` (an int or `(rows, cols)`),
    bilinear, no crop.
    """
    from PIL import Image

    rows, cols = (size, size) if isinstance(size, int) else size
    with Image.open(path) as img:
        img = img.convert("RGB").resize((cols, rows), Image.BILINEAR)
        return np.asarray(img, dtype="float32")[None]

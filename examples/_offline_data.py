"""The offline task of the example notebooks: "dog vs. not dog" on the ImageNet sample photos.

`../shared/data/imagenet-sample/` (next to the repository) holds 1000 real photos, one per
ImageNet class; classes 151-268 are dog breeds, so 118 photos are dogs and a model that always
answers "not dog" is right 88% of the time. Accuracy alone flatters such a model: the notebooks
also report balanced accuracy (the mean of the recall on each class), where it scores 0.5.

The photos are ImageNet *training-style* images, and the offline backbone was trained on
ImageNet (dog breeds included), so this is an easy transfer task; it exists so that the
notebooks run, and can be tested, without a network.
"""

import csv
import os
import pathlib

import numpy as np

DOG_CLASSES = range(151, 269)
CLASS_NAMES = ("not dog", "dog")
WEIGHTS_FILE = "mobilenet_1_0.25_224_keras.h5"


def shared_data(path=None):
    """`../shared/data` next to the repository (or `$KL_SHARED_DATA`, or `path`)."""
    path = path or os.environ.get("KL_SHARED_DATA")
    if path is None:
        path = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
    path = pathlib.Path(path)
    if not (path / "imagenet-sample" / "labels.csv").is_file():
        raise FileNotFoundError(
            f"The offline task needs the ImageNet sample photos under {path}/imagenet-sample "
            "(set KL_SHARED_DATA to the folder holding imagenet-sample/ and weights/).")
    return path


def load_photos(folder, size):
    """The sample photos resized straight to `size` x `size`: uint8 RGB and ImageNet classes."""
    from PIL import Image

    folder = pathlib.Path(folder)
    with open(folder / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images = np.empty((len(rows), size, size, 3), dtype="uint8")
    for i, row in enumerate(rows):
        with Image.open(folder / "jpeg" / row["filename"]) as img:
            images[i] = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))
    return images, np.array([int(r["class_index"]) for r in rows])


def dog_task(size, validation_fraction=0.3, seed=0, data=None):
    """The photos as dog (1) / not dog (0), split in train and validation sets.

    The split is stratified (each set holds the same share of dogs) and fixed by `seed`.

    Returns:
        `(x_train, y_train), (x_val, y_val)`: uint8 RGB images `(n, size, size, 3)` in
        [0, 255] and int32 labels.
    """
    images, class_index = load_photos(shared_data(data) / "imagenet-sample", size)
    labels = np.isin(class_index, DOG_CLASSES).astype("int32")
    rng = np.random.default_rng(seed)
    val = []
    for label in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == label))
        val.extend(members[:round(validation_fraction * len(members))])
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[val] = True
    train = rng.permutation(np.flatnonzero(~is_val))
    val = rng.permutation(np.flatnonzero(is_val))
    return (images[train], labels[train]), (images[val], labels[val])


def class_weights(labels):
    """`{class: weight}` giving every class the same total weight (Keras' `class_weight`)."""
    counts = np.bincount(labels)
    return {c: len(labels) / (len(counts) * n) for c, n in enumerate(counts)}


def scores(labels, logits):
    """Accuracy, balanced accuracy, and the recall on each class, of arg-max predictions."""
    predicted = np.argmax(np.asarray(logits), axis=-1)
    recalls = [float(np.mean(predicted[labels == c] == c)) for c in np.unique(labels)]
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "balanced_accuracy": float(np.mean(recalls)),
        "recalls": recalls,
    }


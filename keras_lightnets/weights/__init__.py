"""Weight files: manifest, download, verification, cache and conversion.

`weights="imagenet"` picks the manifest entry of the variant, fetches it
(`download.fetch`), checks its hash, converts torchvision files once through
`load_torch_state_dict` and caches the converted `.weights.h5` keyed by the
source hash, so later loads are fast and offline.
"""

import os
import warnings

from keras_lightnets.weights import download, manifest
from keras_lightnets.weights.download import MIRROR_ENV, WeightsDownloadError
from keras_lightnets.weights.manifest import has_imagenet_weights
from keras_lightnets.weights.pth import load_state_dict
from keras_lightnets.weights.torch_convert import load_torch_state_dict

TORCH_SUFFIXES = (".pth", ".pt")


def load_file(model, path):
    """Loads a weights file of the same variant into `model`.

    Accepts a legacy Keras `.h5` (keras.applications layout, matched by layer
    order as Keras does), a `.weights.h5`, a `.keras` file, or a torchvision
    `.pth` state dict (read without torch).

    Raises:
        ValueError: the file is missing, truncated, foreign or of another
            variant; the message names the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"No weights file at this path. Received: weights={path!r}")
    if path.endswith(TORCH_SUFFIXES):
        load_torch_state_dict(model, load_state_dict(path))
        return model
    try:
        model.load_weights(path)
    except Exception as exc:  # h5py and Keras raise many types for a bad file
        raise ValueError(
            f"Could not load the weights file {path!r} into model {model.name!r} "
            f"({type(exc).__name__}: {exc}). Received: weights={path!r}"
        ) from None
    return model


def load_imagenet(model, family, variant, include_top):
    """Loads the published ImageNet weights of `family`/`variant` into `model`."""
    variant = dict(variant)
    rows = variant.pop("rows", None)
    entry = manifest.find(family, variant, include_top, rows)
    path = download.fetch(entry)
    if entry["format"] == "keras-h5":
        return load_file(model, path)
    converted = download.converted_path(entry, include_top)
    if os.path.isfile(converted):
        try:
            model.load_weights(converted)
            return model
        except Exception as exc:  # a damaged cache entry is rebuilt, not trusted
            warnings.warn(f"Rebuilding the converted weights cache {converted}: {exc}",
                          stacklevel=2)
            os.remove(converted)
    load_torch_state_dict(model, load_state_dict(path))
    download.save_weights_atomically(model, converted)
    return model


__all__ = [
    "MIRROR_ENV",
    "WeightsDownloadError",
    "has_imagenet_weights",
    "load_file",
    "load_imagenet",
    "load_state_dict",
    "load_torch_state_dict",
]

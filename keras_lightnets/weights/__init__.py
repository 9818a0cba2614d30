"""Weight files: manifest, download, verification, cache and conversion.

`weights="imagenet"` (or another weight set's name, e.g. "torchvision") picks
the manifest entry of the variant in that set, fetches it
(`download.fetch`), checks its hash, converts files of state-dict sources
(torchvision) once through their source's reader and name map, and caches the
converted `.weights.h5` keyed by the source hash, so later loads are fast and
offline. A file of a source is loaded only into a model built in that source's
flavour (`sources`). Files holding NaN or Inf weights are refused.
"""

import os
import warnings

import numpy as np

from keras_lightnets.weights import download, flavour_check, manifest, sources
from keras_lightnets.weights.convert import load_state, load_torch_state_dict
from keras_lightnets.weights.download import MIRROR_ENV, WeightsDownloadError
from keras_lightnets.weights.manifest import has_imagenet_weights, has_weights, weight_sets
from keras_lightnets.weights.pth import load_state_dict
from keras_lightnets.weights.sources import flavour_for


def load_file(model, path, allow_nan=False, family=None, flavour=None):
    """Loads a weights file of the same variant into `model`.

    Accepts a legacy Keras `.h5` (keras.applications layout, matched by layer
    order as Keras does, or by layer name when the file holds more layers than
    the model, e.g. a full model's file loaded into `include_top=False`), a
    `.weights.h5`, a `.keras` file, or a torchvision `.pth` state dict (read
    without torch).

    Args:
        model: the model to load into.
        path: the weights file.
        allow_nan: whether to accept NaN or Inf weights. A `.pth` file is
            checked before anything is assigned; a Keras file after loading,
            so a refused Keras file leaves `model` holding its values.
        family: the model's family (the factory's name, e.g. "ShuffleNetV2");
            None: for a state-dict file, the family whose name map fits.
        flavour: the flavour the file was trained in (a weight set's, see
            `sources.entry_flavour`); None: its source's flavour of `family`.

    Raises:
        ValueError: the file is missing, truncated, foreign, of another
            variant, of a flavour `model` is not built in, or holds NaN/Inf
            weights; the message names the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"No weights file at this path. Received: weights={path!r}")
    source = sources.file_source(path, family)
    if source is not None:
        family = family or sources.family_of(model, source, path)
        flavour_check.check_flavour(model, source, family, path, flavour)
    if source is not None and source.reader is not None:
        state = source.reader(path)
        if not allow_nan:
            _check_finite(state.items(), path)
        load_state(model, state, source, family, flavour)
        return model
    try:
        try:
            model.load_weights(path)
        except Exception:
            if not _covers_by_name(model, path):
                raise
            model.load_weights(path, by_name=True)
    except Exception as exc:  # h5py and Keras raise many types for a bad file
        raise ValueError(
            f"Could not load the weights file {path!r} into model {model.name!r} "
            f"({type(exc).__name__}: {exc}). Received: weights={path!r}"
        ) from None
    if not allow_nan:
        _check_finite(((w.path, w.numpy()) for w in model.weights), path)
    return model


def _check_finite(named_arrays, path):
    """Raises ValueError naming `path` if a float array holds NaN or Inf."""
    for name, value in named_arrays:
        value = np.asarray(value)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(
                f"The weights file {path!r} holds NaN or Inf values (first in {name!r}); it "
                f"was refused. Pass allow_nan=True to load_file to load it anyway. "
                f"Received: weights={path!r}"
            )


def _covers_by_name(model, path):
    """Whether legacy `.h5` file `path` has a layer for every weighted layer of `model`.

    Keras' `by_name` loading skips the model's layers the file lacks without a
    word; this makes sure nothing is skipped before it is used.
    """
    if not path.endswith((".h5", ".hdf5")) or path.endswith(".weights.h5"):
        return False
    import h5py

    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        names = [n.decode() if isinstance(n, bytes) else n
                 for n in group.attrs.get("layer_names", [])]
        present = {n for n in names if len(group[n].attrs.get("weight_names", []))}
    needed = {layer.name for layer in model.layers if layer.weights}
    return bool(needed) and needed <= present


def load_imagenet(model, family, variant, include_top, weights=manifest.IMAGENET):
    """Loads the published weights of `family`/`variant` in weight set `weights`
    ("imagenet": the family's default source) into `model`."""
    variant = dict(variant)
    rows = variant.pop("rows", None)
    entry = manifest.find(family, variant, include_top, rows, weights=weights)
    flavour = sources.entry_flavour(entry)
    if sources.SOURCES[entry["source"]].reader is None:
        # A file that entered the cache was checked for NaN then.
        download.fetch(entry, lambda path, new: load_file(model, path, allow_nan=not new,
                                                          family=family, flavour=flavour))
        return model

    def convert(path, new):
        del new  # the state dict is checked for NaN on each conversion
        converted = download.converted_path(entry, include_top, path)
        if os.path.isfile(converted):
            try:
                model.load_weights(converted)
                return
            except Exception as exc:  # a damaged cache entry is rebuilt, not trusted
                warnings.warn(f"Rebuilding the converted weights cache {converted}: {exc}",
                              stacklevel=4)
                download.remove_quietly(converted)
        load_file(model, path, family=family, flavour=flavour)
        try:
            download.save_weights_atomically(model, converted)
        except OSError as exc:
            # The model already holds the weights; only the next load is slower.
            warnings.warn(f"Could not cache the converted weights at {converted} ({exc}); "
                          f"they will be converted again on the next load.", stacklevel=4)

    download.fetch(entry, convert)
    return model


__all__ = [
    "MIRROR_ENV",
    "WeightsDownloadError",
    "flavour_for",
    "has_imagenet_weights",
    "has_weights",
    "load_file",
    "load_imagenet",
    "load_state",
    "load_state_dict",
    "load_torch_state_dict",
    "weight_sets",
]

"""`weights_manifest.json`: which published file serves which variant.

The manifest ships inside the package (setup.py copies the repository's
top-level file into it); in a source checkout the top-level file is read.
`python -m keras_lightnets.weights.manifest --update` recomputes the
params/MACs fields from the models (and the registry's params/MACs table),
which tests check for drift.
"""

import functools
import json
import math
import os

FILENAME = "weights_manifest.json"
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def manifest_path():
    """The manifest file: the packaged copy, else the repository's."""
    for candidate in (
        os.path.join(_PACKAGE_DIR, FILENAME),
        os.path.join(os.path.dirname(_PACKAGE_DIR), FILENAME),
    ):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"{FILENAME} is missing from the installation ({_PACKAGE_DIR}).")


@functools.lru_cache(maxsize=1)
def load_manifest():
    with open(manifest_path(), encoding="utf-8") as f:
        return json.load(f)


def entries(family=None, weights="imagenet"):
    """Manifest entries of the weight set `weights` (an entry without a `weights`
    field is "imagenet"; None: every set), optionally of one family."""
    return [e for e in load_manifest()["entries"]
            if (family is None or e["family"] == family)
            and (weights is None or e.get("weights", "imagenet") == weights)]


def _same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b)
    return a == b


def _matches(entry, variant):
    return all(_same(variant.get(k), v) for k, v in entry["variant"].items())


def describe(entry):
    args = ", ".join(f"{k}={v!r}" for k, v in entry["variant"].items())
    return f"{entry['family']}({args})"


def published_variants(family=None):
    """Sorted descriptions of the variants with published weights."""
    return sorted({describe(e) for e in entries(family)})


def find(family, variant, include_top, rows=None):
    """The manifest entry for a variant, or ValueError listing those that exist.

    Keras files exist per input size: the entry for `rows` is preferred, else
    the 224 one (weights do not depend on the input size). torchvision files
    hold the classifier and serve `include_top=False` as well.
    """
    found = [e for e in entries(family) if _matches(e, variant)]
    if not found:
        have = published_variants(family) or published_variants()
        shown = ", ".join(f"{k}={v!r}" for k, v in variant.items())
        raise ValueError(
            f"No published ImageNet weights for {family}({shown}). Variants with weights: "
            f"{'; '.join(have)}. Received: weights='imagenet'"
        )
    keras_files = [
        e for e in found if e["format"] == "keras-h5" and e["include_top"] == include_top
    ]
    if keras_files:
        by_size = {e["input_size"]: e for e in keras_files}
        return by_size.get(rows) or by_size.get(224) or keras_files[0]
    return found[0]


def has_imagenet_weights(family, kwargs):
    """Whether the variant built with `kwargs` has published ImageNet weights."""
    return any(_matches(e, kwargs) for e in entries(family))


def factory_kwargs(entry):
    """Keyword arguments that build the entry's variant."""
    kwargs = dict(entry["variant"])
    if entry["family"] in ("MobileNet", "MobileNetV2"):
        kwargs["input_shape"] = (entry["input_size"], entry["input_size"], 3)
    kwargs["include_top"] = entry["include_top"]
    return kwargs


def complexity(entry):
    """`(params, macs)` of the entry's variant, built with random weights."""
    import keras_lightnets
    from keras_lightnets.profile import profile
    from keras_lightnets.weights import sources

    factory = getattr(keras_lightnets, entry["family"])
    with sources.building(entry["source"]):  # the flavour of the entry's file
        model = factory(weights=None, **factory_kwargs(entry))
    stats = profile(model, input_size=None if model.inputs[0].shape[1] else entry["input_size"])
    return stats["params"], stats["macs"]


def update(path=None):
    """Rewrites the params/macs fields of the manifest from the models."""
    path = path or os.path.join(os.path.dirname(_PACKAGE_DIR), FILENAME)
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    import keras_lightnets

    for entry in doc["entries"]:
        if hasattr(keras_lightnets, entry["family"]):
            entry["params"], entry["macs"] = complexity(entry)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    load_manifest.cache_clear()
    return doc


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--update"]:
        import keras_lightnets

        update()
        keras_lightnets.registry.update_complexity_table()
        print(f"updated {os.path.join(os.path.dirname(_PACKAGE_DIR), FILENAME)} and "
              f"{keras_lightnets.registry.PROFILE_TABLE}")
    else:
        print("usage: python -m keras_lightnets.weights.manifest --update")

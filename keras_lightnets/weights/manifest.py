"""`weights_manifest.json`: which published file serves which variant.

Each entry belongs to a named weight set (its `weights` field): `"imagenet"` is
the files of the family's default source, other sets (`"torchvision"`,
`"paddle_ssld"`, ...) are other publishers' files, built in their source's
flavour. A factory's `weights=<set>` picks the entry through `find`.

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
import re

FILENAME = "weights_manifest.json"
IMAGENET = "imagenet"
# A weight set's name; any other string given as `weights` is a path.
_SET_NAME = re.compile(r"[a-z][a-z0-9_]*")
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


def entries(family=None, weights=None):
    """Manifest entries, optionally of one family and of one weight set.

    A family without "imagenet" files (one first published by timm) has its
    publisher's default set, the set named after the source, as "imagenet",
    when that set can be downloaded (megvii's files cannot: ShuffleNet V1 stays
    the paper's model by default).
    """
    rows = [e for e in load_manifest()["entries"] if family is None or e["family"] == family]
    if weights is None:
        return rows
    chosen = [e for e in rows if e["weights"] == weights]
    if not chosen and weights == IMAGENET and family is not None:
        chosen = [e for e in rows if e["weights"] == e["source"]]
        chosen = chosen if all(e.get("url") for e in chosen) else []
    return chosen


def is_set_name(weights):
    """Whether `weights` is written as a weight set's name (else it is a path)."""
    return isinstance(weights, str) and _SET_NAME.fullmatch(weights) is not None


def _set_order(name):
    return (name != IMAGENET, name)


def set_names(family=None):
    """The weight sets of the manifest (of `family`): "imagenet" first, then sorted."""
    return sorted({e["weights"] for e in entries(family)}, key=_set_order)


def _same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b)
    return a == b


def matches(entry, variant):
    """Whether the entry is of the variant built with `variant`."""
    return all(_same(variant.get(k), v) for k, v in entry["variant"].items())


def describe(entry):
    args = ", ".join(f"{k}={v!r}" for k, v in entry["variant"].items())
    return f"{entry['family']}({args})"


def published_variants(family=None, weights=IMAGENET):
    """Sorted descriptions of the variants with files in the weight set `weights`."""
    return sorted({describe(e) for e in entries(family, weights)})


def weight_sets(family, variant):
    """The weight sets with files of the variant built with `variant`: "imagenet" first."""
    sets = {e["weights"] for e in entries(family) if matches(e, variant)}
    if any(matches(e, variant) for e in entries(family, IMAGENET)):
        sets.add(IMAGENET)  # also where it names the publisher's default set
    return sorted(sets, key=_set_order)


def has_weights(family, variant, weights=IMAGENET):
    """Whether the variant built with `variant` has files in the weight set `weights`."""
    return any(matches(e, variant) for e in entries(family, weights))


def has_imagenet_weights(family, kwargs):
    """Whether the variant built with `kwargs` has published ImageNet weights."""
    return has_weights(family, kwargs, IMAGENET)


def _shown(family, variant):
    return f"{family}({', '.join(f'{k}={v!r}' for k, v in variant.items())})"


def missing_message(family, variant, weights=IMAGENET):
    """Why `weights` cannot serve the variant, listing what exists; None if it can."""
    if has_weights(family, variant, weights):
        return None
    sets = weight_sets(family, variant)
    has = (f"Its weight sets: {', '.join(sets)}." if sets
           else "It has no published weights.")
    if weights == IMAGENET:
        have = published_variants(family) or published_variants()
        return (f"No published ImageNet weights for {_shown(family, variant)}. Variants with "
                f"weights: {'; '.join(have)}.{f' {has}' if sets else ''}")
    if weights not in set_names():
        return (f"Unknown weight set {weights!r} for {_shown(family, variant)}. {has} "
                f"Any other `weights` must be the path to an existing weights file.")
    return f"{_shown(family, variant)} has no weights in the set {weights!r}. {has}"


def find(family, variant, include_top, rows=None, weights=IMAGENET):
    """The manifest entry of a variant in weight set `weights`, or ValueError listing
    those that exist.

    Keras files exist per input size: the entry for `rows` is preferred, else
    the 224 one (weights do not depend on the input size). State-dict files
    (torchvision, PaddleClas) hold the classifier and serve `include_top=False`
    as well.
    """
    found = [e for e in entries(family, weights) if matches(e, variant)]
    if not found:
        raise ValueError(f"{missing_message(family, variant, weights)} "
                         f"Received: weights={weights!r}")
    keras_files = [
        e for e in found if e["format"] == "keras-h5" and e["include_top"] == include_top
    ]
    if keras_files:
        by_size = {e["input_size"]: e for e in keras_files}
        return by_size.get(rows) or by_size.get(224) or keras_files[0]
    return found[0]


def factory_kwargs(entry):
    """Keyword arguments that build the entry's variant."""
    kwargs = dict(entry["variant"])
    if entry["family"] in ("MobileNet", "MobileNetV2"):
        kwargs["input_shape"] = (entry["input_size"], entry["input_size"], 3)
    kwargs["include_top"] = entry["include_top"]
    return kwargs


def buildable(entry):
    """Whether this version builds the flavour of the entry's source for its family."""
    from keras_lightnets.weights import sources

    try:
        sources.entry_flavour(entry)
    except KeyError:  # an unknown source, or no flavour of the family or the set
        return False
    return True


def complexity(entry):
    """`(params, macs)` of the entry's variant in its weight set's flavour, random weights."""
    import warnings

    import keras_lightnets
    from keras_lightnets.models import common
    from keras_lightnets.profile import profile

    factory = getattr(keras_lightnets, entry["family"])
    with common.weights_not_loaded(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the default-size warning of other sizes
        model = factory(weights=entry["weights"], **factory_kwargs(entry))
    stats = profile(model, input_size=None if model.inputs[0].shape[1] else entry["input_size"])
    return stats["params"], stats["macs"]


def update(path=None):
    """Rewrites the params/macs fields of the manifest from the models.

    Entries whose flavour this version does not build are left as they are
    and returned as the second value.
    """
    path = path or os.path.join(os.path.dirname(_PACKAGE_DIR), FILENAME)
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    import keras_lightnets

    load_manifest.cache_clear()  # the sets of the file being updated
    skipped = []
    for entry in doc["entries"]:
        if not hasattr(keras_lightnets, entry["family"]):
            continue
        if not buildable(entry):
            skipped.append(entry["file"])
            continue
        entry["params"], entry["macs"] = complexity(entry)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    load_manifest.cache_clear()
    return doc, skipped


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--update"]:
        import keras_lightnets

        _, skipped = update()
        keras_lightnets.registry.update_complexity_table()
        if skipped:
            print(f"left unchanged (no flavour of their source yet): {', '.join(skipped)}")
        print(f"updated {os.path.join(os.path.dirname(_PACKAGE_DIR), FILENAME)} and "
              f"{keras_lightnets.registry.PROFILE_TABLE}")
    else:
        print("usage: python -m keras_lightnets.weights.manifest --update")

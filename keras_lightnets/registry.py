"""Registry of model variants under systematic names.

Names are the family in snake case plus the width multiplier x100
(`mobilenet_v2_140`, `mobilenet_v3_small_minimal_100`, `shufflenet_v1_g3_100`).
Each entry is a factory plus the keyword arguments that pick the variant.
A name may carry a weight set, timm-style: `get_model("mobilenet_v2_100.torchvision")`
builds with `weights="torchvision"`; `list_weights(name)` gives a model's sets.
"""

import dataclasses
import difflib
import functools
import importlib.resources
import inspect
import json
import sys

# Params and MACs of every registered variant at this size, read by
# `keras-lightnets list` instead of building all the models.
PROFILE_SIZE = 224
PROFILE_TABLE = "data/registry_profile.json"


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    factory: object
    kwargs: dict
    default: bool = False
    module: object = None

    @property
    def preprocess_input(self):
        return self.module.preprocess_input

    @property
    def variant(self):
        """The factory's keyword arguments of the variant, defaults filled in."""
        return {**_defaults(self.factory), **self.kwargs}

    @property
    def weight_sets(self):
        """The variant's weight sets in the manifest: "imagenet" first, then sorted."""
        from keras_lightnets.weights import manifest

        return manifest.weight_sets(self.family, self.variant)

    def build(self, **kwargs):
        return self.factory(**{**self.kwargs, **kwargs})


@functools.cache
def _defaults(factory):
    return {name: p.default for name, p in inspect.signature(factory).parameters.items()
            if p.default is not inspect.Parameter.empty}


_REGISTRY = {}


def width_tag(alpha):
    return f"{int(round(alpha * 100)):03d}"


def register(name, family, factory, default=False, **kwargs):
    """Adds a variant; `default` marks the family's representative model.

    The family module (the factory's module) provides `preprocess_input` and
    `decode_predictions`.
    """
    if name in _REGISTRY:
        raise ValueError(f"A model is already registered under this name. Received: name={name!r}")
    module = sys.modules[factory.__module__]
    _REGISTRY[name] = ModelEntry(name, family, factory, dict(kwargs), default, module)
    return _REGISTRY[name]


def list_models(family=None):
    """Sorted names of the registered models, optionally of one family."""
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def families():
    """Sorted names of the registered families."""
    return sorted({e.family for e in _REGISTRY.values()})


def suggest(word, choices, n=3):
    """` Did you mean ...?` with the closest of `choices`, or an empty string."""
    close = difflib.get_close_matches(str(word), choices, n=n, cutoff=0.6)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def get_entry(name):
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"Unknown model name.{suggest(name, list(_REGISTRY))} `list_models()` gives the "
            f"{len(_REGISTRY)} registered names. Received: name={name!r}"
        )
    return _REGISTRY[name]


def split_name(name):
    """`(entry, weight set or None)` of `"model"` or `"model.set"`; ValueError for an
    unknown model or a set the model does not have, listing its sets."""
    if not isinstance(name, str) or "." not in name:
        return get_entry(name), None
    base, _, weights = name.partition(".")
    if base not in _REGISTRY:
        raise ValueError(
            f"Unknown model name.{suggest(base, list(_REGISTRY))} `list_models()` gives the "
            f"{len(_REGISTRY)} registered names. Received: name={name!r}"
        )
    entry = _REGISTRY[base]
    if weights not in entry.weight_sets:
        sets = entry.weight_sets
        raise ValueError(
            f"Model {base!r} has no weight set {weights!r}; its sets: "
            f"{', '.join(sets) or 'none'}.{suggest(weights, sets)} Received: name={name!r}"
        )
    return entry, weights


def list_weights(name):
    """The weight sets of registered model `name`: "imagenet" first (when the model has
    it), then sorted. Each is a `weights=` value, or a `get_model("name.set")` suffix."""
    return get_entry(name).weight_sets


def get_model(name, **kwargs):
    """Builds the registered model `name`; `kwargs` go to its factory.

    `name` may end in `.<weight set>` (see `list_weights`), which sets `weights`.

    Example: `get_model("mobilenet_v2_140", weights=None, include_top=False)`,
    `get_model("mobilenet_v3_large_100.torchvision_v2")`.
    """
    entry, weights = split_name(name)
    if weights is not None:
        if "weights" in kwargs and kwargs["weights"] != weights:
            raise ValueError(
                f"The model name gives the weight set {weights!r} and `weights` another; "
                f"pass one of them. Received: weights={kwargs['weights']!r}"
            )
        kwargs = {**kwargs, "weights": weights}
    return entry.build(**kwargs)


def entries():
    return [_REGISTRY[n] for n in list_models()]


def complexity(entry):
    """`(params, macs)` of the variant with its top, built at `PROFILE_SIZE`."""
    from keras_lightnets.profile import profile

    model = entry.build(weights=None, input_shape=(PROFILE_SIZE, PROFILE_SIZE, 3))
    stats = profile(model)
    return stats["params"], stats["macs"]


@functools.lru_cache(maxsize=1)
def complexity_table():
    """`{name: {"params", "macs"}}` as recorded in the packaged table."""
    text = importlib.resources.files("keras_lightnets").joinpath(PROFILE_TABLE).read_text()
    return json.loads(text)["models"]


def update_complexity_table():
    """Rewrites the packaged table from the models (after an architecture change)."""
    path = importlib.resources.files("keras_lightnets").joinpath(PROFILE_TABLE)
    models = {}
    for entry in entries():
        params, macs = complexity(entry)
        models[entry.name] = {"params": params, "macs": macs}
    doc = {"about": f"params and MACs of each registered model with its top at "
                    f"{PROFILE_SIZE}x{PROFILE_SIZE}, batch 1 (keras_lightnets.profile); "
                    f"refresh with `python -m keras_lightnets.weights.manifest --update`",
           "models": models}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    complexity_table.cache_clear()
    return models

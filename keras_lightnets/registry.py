"""Registry of model variants under systematic names.

Names are the family in snake case plus the width multiplier x100
(`mobilenet_v2_140`, `mobilenet_v3_small_minimal_100`, `shufflenet_v1_g3_100`).
Each entry is a factory plus the keyword arguments that pick the variant.
"""

import dataclasses
import sys


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

    def build(self, **kwargs):
        return self.factory(**{**self.kwargs, **kwargs})


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


def get_entry(name):
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"Unknown model name; `list_models()` gives the {len(_REGISTRY)} registered "
            f"names. Received: name={name!r}"
        )
    return _REGISTRY[name]


def get_model(name, **kwargs):
    """Builds the registered model `name`; `kwargs` go to its factory.

    Example: `get_model("mobilenet_v2_140", weights=None, include_top=False)`.
    """
    return get_entry(name).build(**kwargs)


def entries():
    return [_REGISTRY[n] for n in list_models()]

"""Weight files: manifest, download, verification, cache and conversion."""

import os


def load_file(model, path):
    """Loads a weights file into `model`.

    Accepts a legacy Keras `.h5` (keras.applications layout, matched by layer
    order as Keras does), a `.weights.h5` or a `.keras` file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"No weights file at this path. Received: weights={path!r}")
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(
            f"Could not load the weights file {path!r} into model {model.name!r}: {exc}"
        ) from exc
    return model


def load_imagenet(model, family, variant, include_top):
    """Loads the published ImageNet weights of `family`/`variant`."""
    raise ValueError(
        f"No published ImageNet weights are registered for {family} {variant} yet; "
        f"pass `weights=None` or a path. Received: weights='imagenet'"
    )


from keras_lightnets.weights.torch_convert import load_torch_state_dict  # noqa: E402

__all__ = ["load_file", "load_imagenet", "load_torch_state_dict"]

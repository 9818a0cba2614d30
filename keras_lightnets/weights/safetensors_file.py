"""Reading `.safetensors` state dicts (timm's hub files): plain tensors, no pickle."""

import os


def load_state_dict(path):
    """Reads a `.safetensors` file as `{name: numpy array}`.

    The format is a JSON header plus raw tensor bytes: nothing in the file
    is executed.

    Raises:
        ValueError: the file is missing, truncated or not a safetensors file.
    """
    from safetensors.numpy import load_file

    path = os.fspath(path)
    try:
        return load_file(path)
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise ValueError(f"Cannot read {path!r} as a safetensors state dict "
                         f"({type(exc).__name__}: {exc}). Received: weights={path}") from None

"""What the exporters need to know about a Keras 3 or tf_keras model (never importing tf_keras)."""

import numbers
import os

import keras
import numpy as np

from keras_lightnets._utils import check
from keras_lightnets.graph import is_tf_keras

DEFAULT_INPUT_SIZE = 224
INPUT_NAME = "input"
# Layers that make a model take raw [0, 255] pixels when they come first.
PREPROCESSING_LAYERS = ("Rescaling", "Normalization")
QAT_LAYERS = ("QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer")


def check_model(model):
    """Checks that `model` is an exportable one-input image model."""
    if not is_tf_keras(model):
        check(isinstance(model, keras.Model),
              "`model` must be a Keras 3 `keras.Model` or a `tf_keras.Model`.",
              model=type(model).__name__)
        check(keras.backend.backend() == "tensorflow",
              "Export traces the model with TensorFlow; set KERAS_BACKEND=tensorflow "
              "before importing keras.", backend=keras.backend.backend())
    check(len(model.inputs) == 1 and len(model.inputs[0].shape) == 4,
          "`model` must have one 4-D (batch, rows, cols, channels) input.",
          input_shapes=[tuple(t.shape) for t in model.inputs])
    return model


def _check_positive_int(name, value, allow_none=False):
    if value is None and allow_none:
        return
    what = "a positive integer or None" if allow_none else "a positive integer"
    check(_positive_int(value), f"`{name}` must be {what}.", **{name: value})


def _positive_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def input_shape(model, batch_size, input_size=None, keep_dynamic=False):
    """The (batch, rows, cols, channels) shape the export is traced at: `input_size` (default
    224) sets a None size and must match a static one; `keep_dynamic` keeps None sizes."""
    _check_positive_int("batch_size", batch_size, allow_none=True)
    _, rows, cols, channels = (None if d is None else int(d) for d in model.inputs[0].shape)
    if input_size is not None:
        size = (input_size, input_size) if isinstance(input_size, numbers.Integral) else input_size
        check(isinstance(size, (tuple, list)) and len(size) == 2
              and all(map(_positive_int, size)),
              "`input_size` must be a positive integer or a (rows, cols) pair.",
              input_size=input_size)
        check(rows in (None, size[0]) and cols in (None, size[1]),
              f"The model is built for {rows}x{cols} inputs; rebuild it with "
              "`input_shape` to export another size.", input_size=input_size)
        rows, cols = int(size[0]), int(size[1])
    elif not keep_dynamic:
        rows = DEFAULT_INPUT_SIZE if rows is None else rows
        cols = DEFAULT_INPUT_SIZE if cols is None else cols
    return (batch_size, rows, cols, channels)


def tensor_spec(shape):
    import tensorflow as tf

    return tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)


def serving_fn(model, named=True):
    """A tf.function running `model` for inference; `named` outputs `{"output": y}` (or
    `output_0`, ...), which names them in SavedModel and ONNX graphs."""
    import tensorflow as tf

    def serve(x):
        y = call(model, x)
        if not named:
            return y
        if isinstance(y, (list, tuple)):
            return {f"output_{i}": t for i, t in enumerate(y)}
        return {"output": y}

    return tf.function(serve)


def call(model, x):
    """`model(x)` for inference, with `x` in the structure the model was built with."""
    try:
        structure = model.input
    except AttributeError:  # a Keras 3 Sequential model has `inputs` only
        structure = None
    return model([x] if isinstance(structure, list) else x, training=False)


def output_names(model):
    n = len(model.outputs)
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def predict(model, x, batch_size=32):
    """The model's outputs on numpy `x`, as a list of float32 arrays."""
    outs = []
    for start in range(0, len(x), batch_size):
        y = call(model, x[start:start + batch_size])
        y = list(y) if isinstance(y, (list, tuple)) else [y]
        outs.append([np.asarray(t, dtype="float32") for t in y])
    return [np.concatenate(parts) for parts in zip(*outs, strict=True)]


def all_layers(model):
    """Every layer of `model`, nested models and wrapped layers included."""
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is not None:
        return [layer for layer in flatten(include_self=False, recursive=True)]
    return list(model.layers)


def expects_raw_pixels(model):
    """Whether `model` takes raw [0, 255] pixels: its first layer is preprocessing."""
    for layer in model.layers:
        name = type(_unwrapped(layer)).__name__
        if name not in ("InputLayer", "QuantizeLayer"):
            return name in PREPROCESSING_LAYERS
    return False


def _unwrapped(layer):
    """`layer`, or the layer inside it if it is a QAT wrapper."""
    inner = getattr(layer, "layer", None)
    return inner if inner is not None and type(layer).__name__ in QAT_LAYERS else layer


def is_quantization_aware(model):
    return any(type(layer).__name__ in QAT_LAYERS for layer in all_layers(model))


def grouped_conv_layers(model):
    """Names of convolution layers with `groups > 1` (not the depthwise ones)."""
    layers = [_unwrapped(layer) for layer in all_layers(model)]
    return [layer.name for layer in layers
            if type(layer).__name__.startswith("Conv") and getattr(layer, "groups", 1) > 1]


def random_inputs(model, shape, count, seed=0):
    """`count` deterministic uniform inputs in [0, 255] or [-1, 1] (the model's domain)."""
    rng = np.random.default_rng(seed)
    low, high = (0.0, 255.0) if expects_raw_pixels(model) else (-1.0, 1.0)
    return rng.uniform(low, high, (count, *shape[1:])).astype("float32")


def _upsampled(grid, rows, cols):
    """Bilinear upsampling of a (h, w, c) grid to (rows, cols, c), corners aligned."""
    for axis, size in ((0, rows), (1, cols)):
        at = np.linspace(0, grid.shape[axis] - 1, size)
        low = np.floor(at).astype(int)
        high = np.minimum(low + 1, grid.shape[axis] - 1)
        weight = np.expand_dims(at - low, tuple(range(1, 3 - axis)) if axis == 0 else -1)
        grid = (np.take(grid, low, axis) * (1 - weight) + np.take(grid, high, axis) * weight)
    return grid


def synthetic_images(model, shape, count, seed=0):
    """`count` deterministic photo-like images in the model's input domain, on which (unlike
    noise) a classifier's ranking is confident enough to compare files by."""
    rng = np.random.default_rng(seed)
    rows, cols, channels = shape[1:]
    y, x = np.mgrid[0:rows, 0:cols]
    y, x = y / rows, x / cols
    images = np.empty((count, rows, cols, channels), "float32")
    for i in range(count):
        image = sum(weight * _upsampled(rng.normal(size=(cells + 1, cells + 1, channels)),
                                        rows, cols)
                    for cells, weight in ((2, 1.0), (4, 0.7), (8, 0.45), (16, 0.3), (32, 0.15)))
        image = (image - image.min()) / max(float(np.ptp(image)), 1e-12)
        for _ in range(rng.integers(3, 8)):
            cy, cx, radius = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
            if rng.uniform() < 0.5:
                mask = (y - cy) ** 2 + (x - cx) ** 2 < radius ** 2
            else:
                height, width = rng.uniform(0.05, 0.4, 2)
                mask = (np.abs(y - cy) < height) & (np.abs(x - cx) < width)
            image[mask] = 0.3 * image[mask] + 0.7 * rng.uniform(0, 1, channels)
        images[i] = image
    return images * 255.0 if expects_raw_pixels(model) else images * 2.0 - 1.0


def as_array(data, shape, name):
    """`data` as a finite float32 (n, rows, cols, channels) array matching `shape`."""
    check(not isinstance(data, (str, bytes, os.PathLike)),
          f"`{name}` must hold images, not a path.", **{name: data})
    x = np.asarray(data, dtype="float32")
    if x.ndim == 3:
        x = x[None]
    check(x.ndim == 4 and all(want in (None, got) for got, want in zip(
        x.shape[1:], shape[1:], strict=True)),
        f"`{name}` must hold images of shape {tuple(shape[1:])}.", **{f"{name}.shape": x.shape})
    bad = int(np.sum(~np.isfinite(x).reshape(len(x), -1).all(1)))
    check(not bad, f"`{name}` must hold finite values; {bad} of {len(x)} image(s) "
          "hold NaN or infinity.", **{f"{name}.nonfinite_images": bad})
    return x


def chunks(x, step):
    """`(batch, n)` pairs covering `x` in batches of `step` (the last padded; `n` rows count)."""
    step = step or len(x)
    for start in range(0, len(x), step):
        chunk = x[start:start + step]
        n = len(chunk)
        if n < step:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - n, axis=0)])
        yield chunk, n


"""What every factory shares: argument checks, the input, the head, weights.

Every bad argument raises `ValueError` naming the argument and ending
`Received: arg=value`, before any layer is built.
"""

import contextlib
import contextvars
import math
import numbers
import os
import warnings

import keras

from keras_lightnets import layers as kl
from keras_lightnets._utils import check

POOLINGS = (None, "avg", "max")
# Upper bounds: an absurd value is refused here, not by exhausting memory in TensorFlow.
MAX_ALPHA = 4.0  # well past the widest published width multiplier
MAX_CLASSES = 100_000  # ImageNet-21k with room; larger heads go on a no-top model
MAX_INPUT_SIZE = 4096  # rows and columns, above the largest frames these nets run on
MAX_CHANNELS = 1024  # room for multispectral and hyperspectral images
# Set by `weights_not_loaded`: build a weight set's architecture without its file.
_SKIP_LOADING = contextvars.ContextVar("keras_lightnets_skip_loading", default=False)


def is_pretrained(weights):
    """Whether `weights` names a weight set ("imagenet", "paddle_ssld", ...), not a path."""
    from keras_lightnets.weights import manifest

    return manifest.is_set_name(weights)


@contextlib.contextmanager
def weights_not_loaded():
    """Factories called inside build a weight set's architecture and checks, but load
    no file (the manifest's params/MACs are measured this way)."""
    token = _SKIP_LOADING.set(True)
    try:
        yield
    finally:
        _SKIP_LOADING.reset(token)


def is_number(value):
    """A finite real number (numpy's included), not a bool, complex or Decimal."""
    # Integers skip `isfinite`, which overflows on huge ones.
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and (isinstance(value, numbers.Integral) or math.isfinite(value)))


def check_positive(name, value, integer=False, upper=None):
    """Checks `0 < value <= upper`; returns a Python int or float (Keras refuses numpy ints)."""
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and is_number(value) and value > 0
    ok = ok and (upper is None or value <= upper)
    bound = f" no larger than {upper}" if upper is not None else ""
    what = "integer" if integer else "number"
    check(ok, f"`{name}` must be a positive {what}{bound}.", **{name: value})
    return int(value) if integer else float(value)


def check_choice(name, value, choices):
    """Checks that `value` is one of `choices`; returns that choice."""
    for choice in choices:
        # Typed: neither `1+0j == 1.0` nor an array's elementwise `==` lets a value in.
        same = is_number(value) if is_number(choice) else type(value) is type(choice)
        if same and value == choice:
            return choice
    check(False, f"`{name}` must be one of {list(choices)}.", **{name: value})


def check_bool(name, value):
    check(isinstance(value, bool), f"`{name}` must be True or False.", **{name: value})


def check_fraction(name, value):
    check(is_number(value) and 0 <= value < 1, f"`{name}` must be a number in [0, 1).",
          **{name: value})


def _check_size(arg, shape, value, min_size):
    """Rows and columns of `shape` within the bounds (None: any size)."""
    check(all(d is None or d >= min_size for d in shape[:2]),
          f"Input size must be at least {min_size}x{min_size}.", **{arg: value})
    check(all(d is None or d <= MAX_INPUT_SIZE for d in shape[:2]),
          f"Input size must be at most {MAX_INPUT_SIZE}x{MAX_INPUT_SIZE}.", **{arg: value})


def check_common(args, min_size=32):
    """Checks the arguments every factory takes (`args`: its `locals()`); returns `classes`."""
    include_top, weights, input_tensor, input_shape, pooling, classes = (args[k] for k in (
        "include_top", "weights", "input_tensor", "input_shape", "pooling", "classes"))
    classifier_activation = args["classifier_activation"]
    include_preprocessing, name = args.get("include_preprocessing", True), args.get("name")
    check_bool("include_top", include_top)
    check_bool("include_preprocessing", include_preprocessing)
    check(weights is None or isinstance(weights, (str, os.PathLike)),
          "The `weights` argument should be either `None` (random initialization), "
          "'imagenet' (pre-training on ImageNet), the name of a weight set, or the path to "
          "the weights file to be loaded.", weights=weights)
    # A directory or a missing file would otherwise fail only once the model is built;
    # a set's name is checked against the variant's sets by the factory.
    check(weights is None or is_pretrained(weights) or os.path.isfile(weights),
          "`weights` must be None, 'imagenet', a weight set's name or the path to an "
          "existing weights file (not a directory).", weights=weights)
    check_choice("pooling", pooling, POOLINGS)
    classes = check_positive("classes", classes, integer=True, upper=MAX_CLASSES)
    check(not is_pretrained(weights) or not include_top or classes == 1000,
          f"If using `weights={weights!r}` with `include_top=True`, `classes` should be 1000.",
          classes=classes)
    try:
        activation = keras.activations.get(classifier_activation)
    except (ValueError, TypeError):
        activation = None
        check(False, "Unknown `classifier_activation`.",
              classifier_activation=classifier_activation)
    check(weights is None or not include_top
          or activation in (keras.activations.get("softmax"), keras.activations.get(None)),
          "Only `None` and `softmax` activations are allowed for the "
          "`classifier_activation` argument when using pretrained weights, with "
          "`include_top=True`;", classifier_activation=classifier_activation)
    # Keras refuses "/" in a name, but only once the whole model is built.
    check(name is None or (isinstance(name, str) and "/" not in name),
          "`name` must be a string without '/'.", name=name)
    check(keras.config.image_data_format() == "channels_last",
          "keras_lightnets builds channels-last models only; set "
          "`keras.config.set_image_data_format('channels_last')`.",
          image_data_format=keras.config.image_data_format())
    if input_tensor is not None:
        check(keras.backend.is_keras_tensor(input_tensor) and len(input_tensor.shape) == 4,
              "`input_tensor` must be a 4-D Keras tensor (the output of `keras.Input` "
              "or of a layer).", input_tensor=input_tensor)
        _check_channels("input_tensor", tuple(input_tensor.shape[1:]), input_tensor, weights)
        _check_size("input_tensor", tuple(input_tensor.shape[1:]), input_tensor, min_size)
    if input_shape is not None:
        check(isinstance(input_shape, (tuple, list)) and len(input_shape) == 3 and all(
            d is None or (isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0)
            for d in input_shape),
            "`input_shape` must be a tuple of three positive integers or None.",
            input_shape=input_shape)
        _check_channels("input_shape", input_shape, input_shape, weights)
        _check_size("input_shape", input_shape, input_shape, min_size)
        check(input_tensor is None or tuple(input_tensor.shape[1:]) == tuple(input_shape),
              "`input_shape` must equal the shape of `input_tensor` (without the batch).",
              input_shape=input_shape)
    return classes


def _check_channels(arg, shape, value, weights):
    check(shape[2] is not None, f"`{arg}` must give the channel count.", **{arg: value})
    check(shape[2] <= MAX_CHANNELS, f"The input must have at most {MAX_CHANNELS} channels.",
          **{arg: value})
    if is_pretrained(weights):
        check(shape[2] == 3, "ImageNet weights need an input of 3 channels.", **{arg: value})


def resolve_input_shape(input_shape, input_tensor, include_top, default_size=224,
                        static_top=False, weights=None, channels=3, min_size=32):
    """The (rows, cols, channels) the model is built for: `static_top` families (MobileNet
    V1/V2) default to `default_size` and need it static with the top, others to any size."""
    if input_tensor is not None:
        shape = tuple(input_tensor.shape[1:])
    elif input_shape is not None:
        shape = tuple(input_shape)
    elif static_top and include_top:
        shape = (default_size, default_size, channels)
    else:
        shape = (None, None, channels)
    if static_top and include_top:
        check(None not in shape[:2],
              "If `include_top` is True, you should specify a static `input_shape`.",
              input_shape=shape)
        if is_pretrained(weights) and input_shape is not None:
            expected = (default_size, default_size, 3)
            check(tuple(input_shape) == expected,
                  f"When setting `include_top=True` and loading `{weights}` weights, "
                  f"`input_shape` should be {expected}.", input_shape=input_shape)
    _check_size("input_shape", shape, shape, min_size)
    # Python ints: numpy integers in `input_shape` would reach the layers.
    return tuple(None if d is None else int(d) for d in shape)


def make_input(shape, input_tensor):
    """`(img_input, model_inputs)` for the functional model."""
    if input_tensor is None:
        img_input = keras.Input(shape=shape)
        return img_input, img_input
    return input_tensor, keras.utils.get_source_inputs(input_tensor)


def globally_pool(x, pooling, names=("avg_pool", "max_pool")):
    """Global pooling of a no-top model (None keeps the 4-D map)."""
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name=names[0])(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name=names[1])(x)
    return x


def normalization(mean, std, name="normalization"):
    """Embedded preprocessing `(x - mean) / std` per channel on [0, 255] pixels (no weights)."""
    scale = [float(1.0 / (255.0 * s)) for s in std]
    offset = [float(-m / s) for m, s in zip(mean, std, strict=True)]
    return kl.Rescaling(scale=scale, offset=offset, name=name)


def warn_default_size(rows, cols, sizes):
    if rows != cols or rows not in sizes:
        warnings.warn(
            f"`input_shape` is undefined or non-square, or `rows` is not in {list(sizes)}. "
            f"Weights for input shape (224, 224) will be loaded as the default.", stacklevel=3)


def check_published(family, variant, weights="imagenet"):
    """ValueError, listing what exists, unless `variant` has weights in the set `weights`.

    ImageNet's error names the variant's arguments, as keras.applications'
    width checks do; another set's names `weights`.
    """
    from keras_lightnets.weights import manifest

    if not is_pretrained(weights):
        return
    message = manifest.missing_message(family, variant, weights)
    if message is None:
        return
    if weights == "imagenet":
        check(False, message, **variant)
    check(False, message, weights=weights)


def head(x, include_top, pooling, classes, classifier_activation, pool="avg_pool",
         dense="predictions", dropout=0.0, dropout_name="dropout", use_bias=True):
    """The dense classifier (global average pool, dropout, `Dense`), or the no-top pooling."""
    if not include_top:
        return globally_pool(x, pooling)
    x = keras.layers.GlobalAveragePooling2D(name=pool)(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=dropout_name)(x)
    return keras.layers.Dense(classes, activation=classifier_activation, use_bias=use_bias,
                              name=dense)(x)


def finish(inputs, outputs, name, weights, family, variant, include_top):
    """The functional model, with `weights` loaded."""
    model = keras.Model(inputs, outputs, name=name)
    return load_weights(model, weights, family, variant, include_top)


def load_weights(model, weights, family, variant, include_top):
    """Loads `weights` (a weight set such as "imagenet", a path, or None) into `model`."""
    if weights is None or _SKIP_LOADING.get():
        return model
    from keras_lightnets import weights as weights_lib

    if is_pretrained(weights):
        weights_lib.load_imagenet(model, family, variant, include_top, weights=weights)
    else:
        weights_lib.load_file(model, os.fspath(weights), family=family)
    return model

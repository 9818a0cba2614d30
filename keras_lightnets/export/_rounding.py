"""Int8 weight rounding chosen on calibration images, for full-integer TFLite.

Rounding to nearest adds up errors in thin networks, so each fitted layer's weights (batch
norm folded) are fitted on the int8 grid to the float outputs from the inputs the int8 file
gives it (float and int8 run side by side): a ridge least-squares target, or bias correction
where positions are few (Nagel et al., ICCV 2019), rounded as GPTQ does (Frantar et al.,
ICLR 2023). One weight per channel stays at 127 steps, so the converter finds the same grid.
"""

import keras
import numpy as np

from keras_lightnets import graph
from keras_lightnets.export import _fold

# Output positions sampled per fitted input (at most MAX_SAMPLES per layer), fixed seed.
SAMPLES_PER_INPUT = 256
MAX_SAMPLES = 16384
# Positions per input the least-squares fit needs; with fewer only the bias moves.
FIT_SAMPLES_PER_INPUT = 16
# Ridge (and GPTQ dampening) relative to the mean input energy.
DAMPING = 0.1
# Wider inputs (a 3x3 convolution over more than 227 channels) are rounded to nearest.
MAX_INPUTS = 2048
# Bytes of activations in flight in the side-by-side walk: bounds the images used.
MEMORY = 512 * 2**20


def _input_quantize(x):
    """Images through the int8 input as `tflite.run` feeds them (numpy rounding)."""
    low, high = min(float(np.min(x)), 0.0), max(float(np.max(x)), 0.0)
    if high <= low:
        return x
    scale = (high - low) / 255.0
    zero = -128 - low / scale
    # The converter rounds the zero point half away from zero (std::round).
    zero = np.clip(np.sign(zero) * np.floor(np.abs(zero) + 0.5), -128, 127)
    return ((np.clip(np.round(x / scale + zero), -128, 127) - zero) * scale).astype("float32")


def _quantize_like(y_int, y_float):
    """`y_int` through int8 with the range of `y_float`, as the converter calibrates it."""
    import tensorflow as tf

    low = min(float(tf.reduce_min(y_float)), 0.0)
    high = max(float(tf.reduce_max(y_float)), 0.0)
    if high <= low or not y_int.dtype.is_floating:
        return y_int
    return tf.quantization.fake_quant_with_min_max_args(y_int, min=low, max=high, num_bits=8)


class _Pair:
    """A tensor of the float model and the same tensor as the int8 file computes it."""

    __slots__ = ("float", "int")

    def __init__(self, y_float, y_int):
        self.float, self.int = y_float, y_int


def _halves(structure):
    """`structure` of `_Pair`s as its float and int8 structures."""
    pick = lambda attr: keras.tree.map_structure(  # noqa: E731
        lambda v: getattr(v, attr) if isinstance(v, _Pair) else v, structure)
    return pick("float"), pick("int")


def _same_pad(size, kernel, stride, dilation):
    out = -(-size // stride)
    return max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0) // 2, out


def _patches(layer, pair, inputs, rng):
    """Inputs of `layer` at random output positions, float and int8: (rows, inputs, groups)."""
    halves = [np.asarray(pair.float), np.asarray(pair.int)]
    samples = min(MAX_SAMPLES, SAMPLES_PER_INPUT * (inputs + 1))
    if type(layer).__name__ == "Dense":
        flat = [h.reshape(-1, h.shape[-1]) for h in halves]
        pick = _sample(len(flat[0]), samples, rng)
        return flat[0][pick][..., None], flat[1][pick][..., None]
    n, rows, cols, _ = halves[0].shape
    kh, kw = layer.kernel_size
    (sh, sw), (dh, dw) = layer.strides, layer.dilation_rate
    if layer.padding == "same":
        top, out_r = _same_pad(rows, kh, sh, dh)
        left, out_c = _same_pad(cols, kw, sw, dw)
    else:
        top = left = 0
        out_r, out_c = (rows - (kh - 1) * dh - 1) // sh + 1, (cols - (kw - 1) * dw - 1) // sw + 1
    img, pos = np.divmod(_sample(n * out_r * out_c, samples, rng), out_r * out_c)
    r, c = np.divmod(pos, out_c)
    taps = []
    for i in range(kh):
        for j in range(kw):
            y, x = r * sh + i * dh - top, c * sw + j * dw - left
            inside = ((y >= 0) & (y < rows) & (x >= 0) & (x < cols))[:, None]
            y, x = np.clip(y, 0, rows - 1), np.clip(x, 0, cols - 1)
            taps.append([np.where(inside, h[img, y, x], 0) for h in halves])  # zero padding
    out = [np.stack([tap[k] for tap in taps], axis=1) for k in (0, 1)]  # (rows, kh*kw, channels)
    if _fold.depthwise(layer):
        return tuple(out)
    return tuple(h.reshape(len(img), -1, 1) for h in out)


def _sample(count, size, rng):
    return np.sort(rng.choice(count, size, replace=False)) if count > size else np.arange(count)


def _moments(x_int, x_float):
    """Per group, `x_int`'s Gram matrix and cross moments with `x_float`, bias column added."""
    import tensorflow as tf

    rows, _, groups = x_int.shape
    mean_i = np.mean(x_int, axis=0, dtype="float64").T
    mean_f = np.mean(x_float, axis=0, dtype="float64").T

    def gram(a, b, mean_a, mean_b):
        # TensorFlow's, not numpy's BLAS: its threads already hold the cores.
        inner = tf.einsum("rig,rjg->gij", a, b).numpy().astype("float64") / rows
        top = np.concatenate([inner, mean_a[:, :, None]], axis=2)
        bottom = np.concatenate([mean_b, np.ones((groups, 1))], axis=1)[:, None, :]
        return np.concatenate([top, bottom], axis=1)

    return gram(x_int, x_int, mean_i, mean_i), gram(x_int, x_float, mean_i, mean_f)


def fit(x_float, x_int, weights, bias):
    """Int8-grid weights and a bias for one layer.

    Args:
        x_float, x_int: (rows, inputs, groups) inputs of the float and the int8 layer.
        weights: (groups, inputs, outputs) float weights; bias (groups, outputs).

    Returns:
        `(weights, bias)`, weights on each output's int8 grid (one at +-127 steps), fitting
        `x_int @ weights + bias` to `x_float @ weights_float + bias_float`.
    """
    import tensorflow as tf  # its linear algebra: see _moments

    groups, inputs, outputs = weights.shape
    w = np.concatenate([weights, bias[:, None]], axis=1).astype("float64")
    gram, cross = _moments(np.asarray(x_int, "float32"), np.asarray(x_float, "float32"))
    diagonal = np.mean(np.diagonal(gram[:, :inputs, :inputs], axis1=1, axis2=2), axis=1)
    ridge = (DAMPING * np.maximum(diagonal, 1e-12))[:, None, None] * np.eye(inputs + 1)
    rows = len(x_int)
    if rows >= FIT_SAMPLES_PER_INPUT * (inputs + 1):
        # Least squares (ridge towards the float weights) from int8 inputs to float outputs.
        w = tf.linalg.solve(gram + ridge, cross @ w + ridge @ w).numpy()
    else:
        # Too few positions for a full fit: the bias alone takes the mean shift.
        shift = cross[:, inputs, :inputs] - gram[:, inputs, :inputs]  # mean float - int8 input
        w[:, inputs] += np.einsum("gi,gio->go", shift, w[:, :inputs])
    if inputs > MAX_INPUTS or rows <= inputs:
        # Too wide, or too few positions to tell which roundings matter.
        return _nearest(w[:, :inputs]), w[:, inputs]
    return _gptq(w, gram + ridge)


def _nearest(w):
    limit = np.max(np.abs(w), axis=1, keepdims=True)
    scale = np.where(limit > 0, limit / 127.0, 1.0)
    return np.clip(np.round(w / scale), -127, 127) * scale


def _gptq(w, hessian, block=128):
    """Rounds the rows of `w` but the last (the bias) one at a time, errors spread after."""
    w = w.copy()
    inputs = w.shape[1] - 1
    limit = np.max(np.abs(w[:, :inputs]), axis=1)  # (groups, outputs)
    scale = np.where(limit > 0, limit / 127.0, 1.0)
    # Each output's largest weight at +-127 steps: the converter's scale then gives this grid.
    pinned = np.argmax(np.abs(w[:, :inputs]), axis=1)
    sign = np.where(np.take_along_axis(w, pinned[:, None], 1)[:, 0] < 0, -1.0, 1.0)
    import tensorflow as tf  # its linear algebra: see _moments

    upper = tf.linalg.cholesky(tf.linalg.inv(hessian)).numpy().transpose(0, 2, 1)
    for start in range(0, inputs, block):
        stop = min(start + block, inputs)
        errors = np.zeros((len(w), stop - start, w.shape[2]))
        for i in range(start, stop):
            row = w[:, i]
            q = np.clip(np.round(row / scale), -127, 127)
            q = np.where(pinned == i, 127 * sign, q) * scale
            error = (row - q) / upper[:, i, i, None]
            w[:, i] = q
            w[:, i + 1:stop] -= upper[:, i, i + 1:stop, None] * error[:, None, :]
            errors[:, i - start] = error
        w[:, stop:] -= np.matmul(upper[:, start:stop, stop:].transpose(0, 2, 1), errors)
    return w[:, :inputs], w[:, inputs]


def _as_groups(layer):
    kernel = np.asarray(layer.kernel, "float64")
    bias = np.asarray(layer.bias, "float64")
    if _fold.depthwise(layer):
        kh, kw, channels, multiplier = kernel.shape
        return (kernel.reshape(kh * kw, channels, multiplier).transpose(1, 0, 2),
                bias.reshape(channels, multiplier))
    return kernel.reshape(1, -1, kernel.shape[-1]), bias[None]


def _from_groups(layer, weights, bias):
    shape = tuple(layer.kernel.shape)
    if _fold.depthwise(layer):
        kernel = weights.transpose(1, 0, 2).reshape(shape)
    else:
        kernel = weights.reshape(shape)
    return kernel.astype("float32"), bias.reshape(-1).astype("float32")


def _images_for(nodes, images):
    """As many of `images` as the side-by-side walk holds in MEMORY bytes."""
    side = max(images.shape[1:3])  # bounds the size of a layer built for any size
    widest = max(int(np.prod([side if d is None else d for d in t.shape[1:]]))
                 for node in nodes for t in node.outputs)
    # Float and int8 halves of an input, an output and temporaries: ~8 widest tensors.
    return images[:max(1, MEMORY // (8 * 4 * widest))]


def rounded(model, images, seed=0):
    """A copy of `model` with its fitted weights on TFLite's int8 grid (or `model`: none)."""
    if graph.functional(model) is None or not len(images):
        return model
    plan = _fold.fold_plan(model)
    if not plan:
        return model
    copy = _fold.fold(model, plan)
    nodes = graph.nodes(copy)
    images = _images_for(nodes, np.asarray(images, "float32"))
    rng = np.random.default_rng(seed)
    consumers = graph.consumers(nodes)

    def fused(node):
        """Whether TFLite fuses the activation after `node` into it."""
        out = node.outputs[0]
        while True:
            after = consumers.get(id(out), [])
            if len(after) != 1:
                return False
            layer = after[0].operation
            if type(layer).__name__ == "Identity":
                out = after[0].outputs[0]
                continue
            return "relu" in graph.traits(layer)

    def concatenated(node):
        """Whether `node` only feeds concatenations (rounded once, at their scale)."""
        after = [n for t in node.outputs for n in consumers.get(id(t), [])]
        return bool(after) and all(type(n.operation).__name__ == "Concatenate" for n in after)

    def call(node, args, kwargs):
        layer = node.operation
        kind = type(layer).__name__
        if "training" in getattr(layer, "_call_context_args", ()):
            kwargs = {**kwargs, "training": False}
        (args_f, kwargs_f), (args_i, kwargs_i) = _halves((args, kwargs))
        y_float = layer(*args_f, **kwargs_f)
        if layer.name in plan:
            weights, bias = _as_groups(layer)
            weights, bias = fit(*_patches(layer, args[0], weights.shape[1], rng), weights, bias)
            layer.set_weights(list(_from_groups(layer, weights, bias)))
        y_int = layer(*args_i, **kwargs_i)
        keep = ("passes_quantized_values" in graph.traits(layer)
                or (kind in _fold.FITTED and fused(node)) or concatenated(node))
        y_float, y_int = keras.tree.flatten(y_float), keras.tree.flatten(y_int)
        return [_Pair(f, i if keep else _quantize_like(i, f))
                for f, i in zip(y_float, y_int, strict=True)]

    as_tensor = keras.ops.convert_to_tensor
    graph.run(copy, _Pair(as_tensor(images), as_tensor(_input_quantize(images))), call)
    return copy

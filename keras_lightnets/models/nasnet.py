"""NASNet-A Mobile, layer-compatible with `keras.applications.NASNetMobile`.

Reference:
- [Learning Transferable Architectures for Scalable Image Recognition](
  https://arxiv.org/abs/1707.07012) (CVPR 2018)
"""

import collections

from keras import layers

from keras_lightnets import imagenet, spec
from keras_lightnets import layers as kl
from keras_lightnets.blocks import correct_pad
from keras_lightnets.models import common
from keras_lightnets.weights import sources

# A cell reads two hidden states: `h`, its input after ReLU, 1x1 conv and BN, and
# `p`, the previous cell's input brought to h's size and width. Each row is one
# block of the paper's Fig. 4: two operations, summed into hidden state `x{row}`.
# op: "sep" (twice ReLU, separable conv, BN), "avg" or "max" (3x3 pooling),
#   "id" (the state itself). input: "h", "p" or an earlier sum "x1".."x5".
# In a reduction cell, operations on `h` and `p` have stride 2, and strided
#   pools read `h` zero padded as keras pads it.
# name: keras.applications' layer name of the operation (or of the sum), before
#   the cell's `_{block_id}`; its one unnamed sum gets a name here.
Op = collections.namedtuple("Op", "op input kernel name", defaults=(None, None))
Sum = collections.namedtuple("Sum", "name left right")

NORMAL_CELL = [
    Sum("normal_add_1", Op("sep", "h", 5, "normal_left1"), Op("sep", "p", 3, "normal_right1")),
    Sum("normal_add_2", Op("sep", "p", 5, "normal_left2"), Op("sep", "p", 3, "normal_right2")),
    Sum("normal_add_3", Op("avg", "h", 3, "normal_left3"), Op("id", "p")),
    Sum("normal_add_4", Op("avg", "p", 3, "normal_left4"), Op("avg", "p", 3, "normal_right4")),
    Sum("normal_add_5", Op("sep", "h", 3, "normal_left5"), Op("id", "h")),
]
REDUCTION_CELL = [
    Sum("reduction_add_1", Op("sep", "h", 5, "reduction_left1"),
        Op("sep", "p", 7, "reduction_right1")),
    Sum("reduction_add_2", Op("max", "h", 3, "reduction_left2"),
        Op("sep", "p", 7, "reduction_right2")),
    Sum("reduction_add3", Op("avg", "h", 3, "reduction_left3"),
        Op("sep", "p", 5, "reduction_right3")),
    Sum("reduction_add_4", Op("id", "x2"), Op("avg", "x1", 3, "reduction_left4")),
    Sum("reduction_add4", Op("sep", "x1", 3, "reduction_left4"),
        Op("max", "h", 3, "reduction_right5")),
]
# The hidden states each cell concatenates into its output, in order.
CELLS = {
    "normal": (NORMAL_CELL, ("p", "x1", "x2", "x3", "x4", "x5")),
    "reduction": (REDUCTION_CELL, ("x2", "x3", "x4", "x5")),
}

# NASNet-A Mobile (4 @ 1056): stem conv, two reduction cells, then N = 4 normal
# cells per stage with reduction cells between the stages. Columns: cell kind,
# block id, filters (1056 penultimate filters / 24 = 44 in the first stage).
STEM_FILTERS = 32
NUM_BLOCKS = 4
FILTERS = 1056 // 24
NETWORK = [
    ("reduction", "stem_1", FILTERS // 4),
    ("reduction", "stem_2", FILTERS // 2),
    *[("normal", f"{i}", FILTERS) for i in range(NUM_BLOCKS)],
    ("reduction", f"reduce_{NUM_BLOCKS}", FILTERS * 2),
    *[("normal", f"{NUM_BLOCKS + 1 + i}", FILTERS * 2) for i in range(NUM_BLOCKS)],
    ("reduction", f"reduce_{2 * NUM_BLOCKS}", FILTERS * 4),
    *[("normal", f"{2 * NUM_BLOCKS + 1 + i}", FILTERS * 4) for i in range(NUM_BLOCKS)],
]
DEFAULT_SIZE = 224


def NASNetMobile(
    input_shape=None,
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="nasnet_mobile",
):
    """Instantiates a Mobile NASNet model in ImageNet mode.

    Reference:
    - [Learning Transferable Architectures for Scalable Image Recognition](
      https://arxiv.org/abs/1707.07012) (CVPR 2018)

    Layer names, order and weight shapes are those of
    `keras.applications.NASNetMobile`, so its `.h5` weight files load as they
    are. Inputs are float RGB pixels scaled to `[-1, 1]` by `preprocess_input`.

    Args:
        input_shape: optional static `(rows, cols, channels)`, at least 32x32;
            defaults to `(224, 224, 3)`, which ImageNet weights with the top
            need. The padding of each strided layer depends on the parity of
            its input's size, as in keras.applications.
        include_top: whether to include the classifier.
        weights: `None`, `"imagenet"` or the path to a weights file.
        input_tensor: optional Keras tensor to use as the model input.
        pooling: `None`, `"avg"` or `"max"` global pooling when
            `include_top=False`.
        classes: number of classes with the top.
        classifier_activation: activation of the top layer (`None` for
            logits).
        name: model name.

    Returns:
        A `keras.Model`.
    """
    classes = common.check_common(locals())
    flavour = sources.flavour_for("NASNetMobile", weights)
    if input_shape is None and input_tensor is None:
        input_shape = (DEFAULT_SIZE, DEFAULT_SIZE, 3)
    shape = common.resolve_input_shape(
        input_shape, input_tensor, include_top, DEFAULT_SIZE, static_top=True, weights=weights,
    )
    common.check(None not in shape[:2], "NASNet needs a static input size: the padding of "
                 "its strided layers depends on the parity of each feature map.",
                 input_shape=shape)

    img_input, inputs = common.make_input(shape, input_tensor)
    x, taps = _network(img_input, flavour.bn)
    x = common.head(x, include_top, pooling, classes, classifier_activation)
    model = common.finish(inputs, x, name, weights, "NASNetMobile", {}, include_top)
    return spec.remember_taps(model, taps, img_input, inputs)


def _network(x, bn, network=NETWORK):
    """The stem and the cells of `network`; returns `(x, {stride: tapped layer})`."""
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="valid", use_bias=False,
                      name="stem_conv1")(x)
    x = layers.BatchNormalization(name="stem_bn1", **bn)(x)
    # The cell input and the state before it (None before the first cell), with strides.
    ip, p, stride, last = x, None, 2, "stem_bn1"
    taps = {}
    for kind, block_id, filters in network:
        if kind == "reduction":
            taps[stride] = last
        x = _cell(kind, (ip, stride), p, filters, block_id, bn)
        ip, p, last = x, (ip, stride), f"{kind}_concat_{block_id}"
        stride *= 2 if kind == "reduction" else 1
    taps[stride] = "relu"
    return layers.Activation("relu", name="relu")(x), taps


def _cell(kind, ip, p, filters, block_id, bn):
    """A normal or reduction cell (`CELLS`) on input `ip` and previous state `p`, each a
    `(tensor, stride)` pair (`p` None before the first cell)."""
    table, outputs = CELLS[kind]
    reduce = kind == "reduction"
    p = _adjust(p, ip, filters, block_id, bn)
    h = layers.Activation("relu", name=f"{kind}_relu_1_{block_id}")(ip[0])
    h = layers.Conv2D(filters, 1, padding="same", use_bias=False,
                      name=f"{kind}_conv_1_{block_id}")(h)
    h = layers.BatchNormalization(name=f"{kind}_bn_1_{block_id}", **bn)(h)
    states = {"h": h, "p": p}
    if reduce:
        states["h_pad"] = layers.ZeroPadding2D(correct_pad(h.shape[1:3], 3),
                                               name=f"reduction_pad_1_{block_id}")(h)
    for index, row in enumerate(table, start=1):
        terms = [_op(op, states, filters, reduce, block_id, bn) for op in (row.left, row.right)]
        states[f"x{index}"] = layers.Add(name=f"{row.name}_{block_id}")(terms)
    return layers.Concatenate(name=f"{kind}_concat_{block_id}")(
        [states[s] for s in outputs])


def _op(op, states, filters, reduce, block_id, bn):
    """One operation of a cell row on its input state."""
    strides = 2 if reduce and op.input in ("h", "p") else 1
    x = states[op.input]
    if op.op == "id":
        return x
    name = f"{op.name}_{block_id}"
    if op.op == "sep":
        return _separable_block(x, filters, op.kernel, strides, name, bn)
    if strides > 1:
        x = states[f"{op.input}_pad"]  # strided pools read their input padded, as keras' do
    padding = "valid" if strides > 1 else "same"
    pool = kl.AveragePooling2D if op.op == "avg" else layers.MaxPooling2D
    return pool(op.kernel, strides=strides, padding=padding, name=name)(x)


def _separable_block(x, filters, kernel, strides, block, bn):
    """Twice ReLU, separable conv, BN; the first conv strided (after keras' padding)."""
    padding = "same"
    for i in (1, 2):
        x = layers.Activation("relu", name=f"separable_relu_{i}_{block}")(x)
        if i == 1 and strides > 1:
            x = layers.ZeroPadding2D(correct_pad(x.shape[1:3], kernel),
                                     name=f"separable_conv_1_pad_{block}")(x)
            padding = "valid"
        x = layers.SeparableConv2D(filters, kernel, strides=strides if i == 1 else 1,
                                   padding=padding if i == 1 else "same", use_bias=False,
                                   name=f"separable_conv_{i}_{block}")(x)
        x = layers.BatchNormalization(name=f"separable_conv_{i}_bn_{block}", **bn)(x)
    return x


def _adjust(p, ip, filters, block_id, bn):
    """The previous state `p` brought to the stride of `ip` and to `filters` channels.

    After a reduction, two 1x1/2 average pools (the second a pixel shifted) each
    feed a 1x1 conv to half the width; otherwise a ReLU and a 1x1 conv. The
    first cell has no previous state and reads `ip` twice.
    """
    if p is None:
        return ip[0]
    (p, p_stride), ip_stride = p, ip[1]
    if ip_stride != p_stride:
        p = layers.Activation("relu", name=f"adjust_relu_1_{block_id}")(p)
        p1 = kl.AveragePooling2D(1, strides=2, padding="valid",
                                 name=f"adjust_avg_pool_1_{block_id}")(p)
        p1 = layers.Conv2D(filters // 2, 1, padding="same", use_bias=False,
                           name=f"adjust_conv_1_{block_id}")(p1)
        p2 = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"adjust_pad_2_{block_id}")(p)
        p2 = layers.Cropping2D(((1, 0), (1, 0)), name=f"adjust_crop_2_{block_id}")(p2)
        p2 = kl.AveragePooling2D(1, strides=2, padding="valid",
                                 name=f"adjust_avg_pool_2_{block_id}")(p2)
        p2 = layers.Conv2D(filters // 2, 1, padding="same", use_bias=False,
                           name=f"adjust_conv_2_{block_id}")(p2)
        p = layers.Concatenate(name=f"adjust_concat_{block_id}")([p1, p2])
    elif p.shape[-1] != filters:
        p = layers.Activation("relu", name=f"adjust_relu_1_{block_id}")(p)
        p = layers.Conv2D(filters, 1, padding="same", use_bias=False,
                          name=f"adjust_conv_projection_{block_id}")(p)
    else:
        return p
    return layers.BatchNormalization(name=f"adjust_bn_{block_id}", **bn)(p)


def preprocess_input(x, data_format=None):
    """Scales RGB pixels from `[0, 255]` to `[-1, 1]`."""
    return imagenet.preprocess_input(x, data_format=data_format, mode="tf")


decode_predictions = imagenet.decode_predictions

"""ONNX export through tf2onnx, verified with onnxruntime."""

import contextlib
import logging
import numbers

import numpy as np

from keras_lightnets._utils import check
from keras_lightnets.export import _atomic, _capture, _model, _onnx_passes
from keras_lightnets.export import passes as passes_lib
from keras_lightnets.export import verify as verify_lib

MIN_OPSET = 13
VERIFY_SAMPLES = 4
KERNEL_OPS = ("Conv", "MatMul", "Gemm")
BATCH_DIM = "batch"
INPUT_LAYOUTS = ("NHWC", "NCHW")


def to_onnx(
    model,
    path,
    opset=17,
    batch_size=None,
    *,
    input_size=None,
    input_layout="NHWC",
    verify=True,
    verify_data=None,
    tolerance=None,
    passes=None,
):
    """Exports a Keras 3 or tf_keras image model to ONNX with tf2onnx.

    The graph takes float32 `input` in the model's input domain (`input_layout`), the batch
    static or named `batch`, and returns `output` (`output_0`, ... for several); it runs
    channels-first inside. `group_conv="native"` models are refused (tf2onnx cannot convert
    `Conv2D(groups>1)`): build them with `group_conv="split"`, same weights.

    A QAT model becomes a QDQ graph with int8 kernels, verified as written (graph
    optimizations off) by cosine; with labelled `verify_data`, by top-1 agreement too.

    Args:
        model: a `keras.Model` (TensorFlow backend) or a `tf_keras.Model`.
        path: the `.onnx` file to write (atomically).
        opset: the ONNX opset (13 to 18).
        batch_size: a static batch size, or `None` (default) for a dynamic one.
        input_size: rows and cols (int or pair) if the model's are `None`; default 224.
        input_layout: `"NHWC"` (the Keras model's) or `"NCHW"` (PyTorch-style).
        verify: run the file with onnxruntime (CPU) and compare it with the model first.
        verify_data: NHWC inputs to verify on, or an `(inputs, labels)` pair.
        tolerance: max relative difference (default 1e-4); for a QAT model, min mean
            cosine similarity (default 0.95).
        passes: names of `export.passes.ONNX_KERAS` and `.ONNX` to run; None runs all.

    Returns:
        An `ExportReport`.
    """
    _model.check_model(model)
    chosen = passes_lib.selected(passes, passes_lib.ONNX_KERAS + passes_lib.ONNX)
    verify_lib.check_tolerance("float32", tolerance)
    import tf2onnx

    max_opset = max(tf2onnx.constants.OPSET_TO_IR_VERSION)
    check(isinstance(opset, numbers.Integral) and not isinstance(opset, bool)
          and MIN_OPSET <= opset <= max_opset,
          f"`opset` must be an integer from {MIN_OPSET} to {max_opset}.", opset=opset)
    qdq = _model.is_quantization_aware(model)
    grouped = _model.grouped_conv_layers(model)
    check(not grouped,
          f"tf2onnx cannot convert grouped convolutions (`Conv2D(groups>1)`, which Keras "
          f"compiles through XLA): layers {grouped[:3]}{' ...' if len(grouped) > 3 else ''}. "
          'Build the model with `group_conv="split"` (same weights and outputs, a '
          "split/conv/concat graph every runtime supports).", group_conv="native")
    check(input_layout in INPUT_LAYOUTS,
          f"`input_layout` must be one of {list(INPUT_LAYOUTS)}.", input_layout=input_layout)
    shape = _model.input_shape(model, batch_size, input_size)
    x_verify, labels = verify_lib.split_verify_data(verify_data, shape)
    final = _atomic.check_destination(path)

    converted, outcomes = passes_lib.run_keras(
        model, chosen, passes_lib.Export(None, None), passes_lib.ONNX_KERAS)
    proto, counts = convert(converted, shape, opset, input_layout, chosen)
    names = [o.name for o in proto.graph.output]
    with _atomic.staged(final) as tmp:
        with open(tmp, "wb") as f:
            f.write(proto.SerializeToString())
        report = verify_lib.ExportReport(
            path=final, format="onnx", size_bytes=_atomic.size_of(tmp),
            quantization="int8" if qdq else None,
            ops=tuple(sorted({node.op_type for node in proto.graph.node})),
            inputs=[_value_info(v) for v in proto.graph.input],
            outputs=[_value_info(v) for v in proto.graph.output],
            passes={**outcomes, **{
                p.name: passes_lib.OFF if p.name not in chosen else
                passes_lib.APPLIED if counts.get(p.name) else passes_lib.NOT_APPLICABLE
                for p in passes_lib.ONNX}},
        )
        if verify:
            if x_verify is None:
                x_verify = _model.random_inputs(model, shape, VERIFY_SAMPLES)
            feed = x_verify if input_layout == "NHWC" else np.transpose(x_verify, (0, 3, 1, 2))
            actual = run(tmp, feed, names, shape[0], optimized=not qdq)
            reference = _model.predict(model, x_verify)
            verify_lib.apply(report, verify_lib.measure(reference, actual, labels))
            if qdq:
                _check_kernels(proto, report)
            # A QDQ graph rounds a step off TF's fake quantization here and there: int8 bounds.
            verify_lib.check(report, "int8" if qdq else "float32", tolerance,
                             labelled=qdq and labels is not None)
    return report


@contextlib.contextmanager
def _collect_errors():
    """tf2onnx logs unsupported ops as errors and still returns a model."""
    errors = []
    handler = logging.Handler(level=logging.ERROR)
    handler.emit = lambda record: errors.append(record.getMessage())
    logger = logging.getLogger("tf2onnx")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    try:
        yield errors
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def convert(model, shape, opset=17, input_layout="NHWC", passes=None):
    """`(ONNX ModelProto, {pass: rewrites})` of `model` traced at NHWC `shape`, after `passes`."""
    import tf2onnx

    fn = _by_value(_model.serving_fn(model), _model.tensor_spec(shape))
    nchw = [f"{_model.INPUT_NAME}:0"] if input_layout == "NCHW" else None
    with _collect_errors() as errors, _capture.native_stderr() as log, \
            _onnx_passes.fixed_transpose_optimizer():
        try:
            proto, _ = tf2onnx.convert.from_function(
                fn, input_signature=[_model.tensor_spec(shape)], opset=opset,
                inputs_as_nchw=nchw, custom_op_handlers={"Erfc": (_erfc, [])})
        except Exception as exc:
            raise verify_lib.ExportError(
                f"tf2onnx could not convert the model: {exc}\n{log.tail()}") from exc
    if errors:
        raise verify_lib.ExportError("tf2onnx could not convert the model: "
                                     + "; ".join(errors))
    proto, counts = _onnx_passes.optimize(proto, passes)
    if shape[0] is None:
        for value in (*proto.graph.input, *proto.graph.output):
            dim = value.type.tensor_type.shape.dim[0]
            dim.ClearField("dim_value")
            dim.dim_param = BATCH_DIM
    return proto, counts


def _erfc(ctx, node, name, args):
    """TensorFlow's `Erfc` (its exact GELU's) as `1 - Erf`: ONNX has no `Erfc`. The Keras
    passes rewrite a Keras 3 GELU (`erf_gelu`); a tf_keras (QAT) model's reaches tf2onnx."""
    import numpy as np
    from tf2onnx import utils

    node.type = "Erf"
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.output[0]))
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.ones((), dtype))
    ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{name}_erfc"),
                                  inputs=[one.output[0], node.output[0]])


def _by_value(fn, spec):
    """`fn` with captured tensors (pruning masks) as constants, not tf2onnx graph inputs."""
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants

    concrete = fn.get_concrete_function(spec)
    if all(t.dtype == tf.resource for t in concrete.captured_inputs):
        return fn
    frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
    return tf.function(lambda x: frozen(x))


def _check_kernels(proto, report):
    """Raises for a float kernel in a QDQ graph, which onnxruntime quantizes per tensor."""
    constants = {t.name for t in proto.graph.initializer if t.data_type == t.FLOAT}
    floats = [n.name for n in proto.graph.node
              if n.op_type in KERNEL_OPS and n.input[1] in constants]
    if floats:
        more = " ..." if len(floats) > 3 else ""
        raise verify_lib.ExportVerificationError(
            f"The QDQ graph keeps float kernels in {floats[:3]}{more}, which onnxruntime "
            "would quantize per tensor. Nothing was written to "
            f"{report.path!r}; pass `verify=False` to write it anyway.", report)


def _value_info(value):
    dims = value.type.tensor_type.shape.dim
    shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in dims]
    return {"name": value.name, "shape": shape, "dtype": "float32"}


def run(path, x, names=None, batch_size=None, optimized=True):
    """The outputs of an ONNX file run by onnxruntime (CPU); `optimized=False`: as written."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = names or [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    outs = [[] for _ in names]
    for chunk, n in _model.chunks(x, batch_size):
        for i, y in enumerate(session.run(names, {input_name: chunk})):
            outs[i].append(np.asarray(y, dtype="float32")[:n])
    return [np.concatenate(o) for o in outs]

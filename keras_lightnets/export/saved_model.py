"""TensorFlow SavedModel export (TF Serving, TF.js, further conversion)."""

import numpy as np

from keras_lightnets.export import _atomic, _model
from keras_lightnets.export import verify as verify_lib

VERIFY_SAMPLES = 4


def to_saved_model(
    model,
    path,
    *,
    batch_size=None,
    input_size=None,
    verify=True,
    verify_data=None,
    tolerance=None,
):
    """Exports a Keras 3 or tf_keras image model as a TensorFlow SavedModel.

    One `serving_default` signature takes float32 `input` in the model's input domain and
    returns `{"output": ...}` (`output_0`, ...); it holds the inference graph only.

    Args:
        model: a `keras.Model` (TensorFlow backend) or a `tf_keras.Model`.
        path: the directory to write (atomically), replacing a SavedModel or empty one.
        batch_size: a static batch size, or `None` (default) for any batch.
        input_size: rows and cols (int or pair) to fix if the model's are `None` (else dynamic).
        verify: reload the SavedModel and compare it with the Keras model.
        verify_data: inputs to verify on, or an `(inputs, labels)` pair.
        tolerance: max relative difference (default 1e-4).

    Returns:
        An `ExportReport`.
    """
    import tensorflow as tf

    _model.check_model(model)
    verify_lib.check_tolerance("float32", tolerance)
    shape = _model.input_shape(model, batch_size, input_size, keep_dynamic=True)
    x_verify, labels = verify_lib.split_verify_data(verify_data, shape)
    final = _atomic.check_destination(path, directory=True)

    fn = _model.serving_fn(model)
    concrete = fn.get_concrete_function(_model.tensor_spec(shape))
    module = tf.Module()
    # The variables only: saving the Keras model would also trace every layer's call.
    module.variables_ = [v if isinstance(v, tf.Variable) else v.value for v in model.variables]
    with _atomic.staged(final, directory=True) as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": concrete})
        report = verify_lib.ExportReport(
            path=final, format="saved_model", size_bytes=_atomic.size_of(tmp), ops=_ops(tmp),
            inputs=[{"name": _model.INPUT_NAME, "shape": list(shape), "dtype": "float32"}],
            outputs=[{"name": n, "shape": [shape[0], *t.shape[1:]], "dtype": "float32"}
                     for n, t in zip(_model.output_names(model), model.outputs, strict=True)],
        )
        if verify:
            if x_verify is None:
                static = _model.input_shape(model, 1, input_size)
                x_verify = _model.random_inputs(model, static, VERIFY_SAMPLES)
            serve = tf.saved_model.load(tmp).signatures["serving_default"]
            names = _model.output_names(model)
            outs = [[] for _ in names]
            for chunk, n in _model.chunks(x_verify, shape[0]):
                result = serve(**{_model.INPUT_NAME: tf.constant(chunk)})
                for i, name in enumerate(names):
                    outs[i].append(np.asarray(result[name], dtype="float32")[:n])
            actual = [np.concatenate(o) for o in outs]
            reference = _model.predict(model, x_verify)
            verify_lib.apply(report, verify_lib.measure(reference, actual, labels))
            verify_lib.check(report, "float32", tolerance)
    return report


def _ops(path):
    """Sorted TensorFlow op types in a SavedModel's graph and functions."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(f"{path}/saved_model.pb", "rb") as f:
        proto.ParseFromString(f.read())
    graphs = [g.graph_def for g in proto.meta_graphs]
    ops = {node.op for g in graphs for node in g.node}
    ops.update(node.op for g in graphs for f in g.library.function for node in f.node_def)
    names = {f.signature.name for g in graphs for f in g.library.function}
    return tuple(sorted(ops - names))

"""TFLite (LiteRT) export for phones: static batch, TFLite builtin ops only.

A static shape keeps `Reshape` free of SHAPE/STRIDED_SLICE/PACK chains that trip delegates;
frozen variables let batch norm fold and give the file its signature; builtins run anywhere.
"""

import contextlib
import io
import itertools
import numbers
import os
import re
import statistics
import time

import numpy as np

from keras_lightnets._utils import check, received
from keras_lightnets.export import _atomic, _capture, _model, forms
from keras_lightnets.export import passes as passes_lib
from keras_lightnets.export import verify as verify_lib

QUANTIZATIONS = (None, "float16", "dynamic", "int8")
IO_DTYPES = ("int8", "uint8")
VERIFY_SAMPLES = 8  # random inputs a float32 file is verified on
VERIFY_IMAGES = 32  # synthetic images a float16 or dynamic-range file is verified on
KEPT_CALIBRATION_SAMPLES = 16  # calibration images an int8 file is verified on
ROUNDING_SAMPLES = 64  # calibration images the int8 rounding is fitted on


def to_tflite(
    model,
    path,
    quantization=None,
    representative_data=None,
    batch_size=1,
    *,
    io_dtype=None,
    input_size=None,
    calibration_steps=None,
    adaptive_rounding=True,
    verify=True,
    verify_data=None,
    tolerance=None,
    min_top1_agreement=None,
    progress=True,
    passes=None,
):
    """Exports a Keras 3 or tf_keras image model to a TFLite (LiteRT) file.

    The file takes and gives what the Keras model does (raw `[0, 255]` pixels with
    embedded preprocessing, else the family's `preprocess_input` output); an int8 file
    takes the quantized form of those values.

    Args:
        model: a `keras.Model` (TensorFlow backend) or a `tf_keras.Model`.
        path: the `.tflite` file to write (atomically, once complete and verified).
        quantization: `None` (float32), `"float16"` (float16 weights), `"dynamic"`
            (int8 weights) or `"int8"` (int8 weights, activations, input and output).
        representative_data: for `"int8"`, calibration images in the model's input domain:
            an array, an iterable of batches or images, or a callable returning one.
        batch_size: the static batch of the file; `None` gives a dynamic batch.
        io_dtype: `"int8"` (default) or `"uint8"` input and output for `"int8"`.
        input_size: rows and cols (int or pair) if the model's are `None`; default 224.
        calibration_steps: at most this many calibration images.
        adaptive_rounding: for `"int8"`, fit the rounding of the weights on the first 64
            calibration images (the `rounding` pass; Keras 3 models only).
        verify: run the file with ai-edge-litert and compare it with the model first.
        verify_data: inputs to verify on, or an `(inputs, labels)` pair (adds the top-1
            check); default calibration (int8), synthetic (float16, dynamic) or random.
        tolerance: overrides the default bound of `verify.TOLERANCES`.
        min_top1_agreement: least top-1 agreement, with labels (`verify.MIN_TOP1_AGREEMENT`).
        progress: show a progress bar during calibration.
        passes: names of `export.passes.KERAS` to run; None runs all that apply.

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: for a bad argument.
        ExportError: when the converter fails (its log is in the message).
        ExportVerificationError: when the file does not reproduce the model.
    """
    _model.check_model(model)
    chosen = passes_lib.selected(passes, passes_lib.KERAS)
    check(quantization in QUANTIZATIONS, f"`quantization` must be one of "
          f"{list(QUANTIZATIONS)}.", quantization=quantization)
    verify_lib.check_tolerance(quantization or "float32", tolerance, min_top1_agreement)
    if quantization == "int8":
        io_dtype = "int8" if io_dtype is None else io_dtype
        check(io_dtype in IO_DTYPES, f"`io_dtype` must be one of {list(IO_DTYPES)}.",
              io_dtype=io_dtype)
        check(representative_data is not None,
              "Full-integer (int8) quantization needs calibration images: pass "
              "`representative_data` (an array or an iterable of image batches in the "
              "model's input domain).", representative_data=None)
        check_representative_data(representative_data)
    else:
        check(io_dtype is None, "`io_dtype` applies to quantization='int8' only.",
              io_dtype=io_dtype)
        check(representative_data is None,
              "`representative_data` applies to quantization='int8' only.",
              quantization=quantization)
    if calibration_steps is not None:
        _model._check_positive_int("calibration_steps", calibration_steps)
    shape = _model.input_shape(model, batch_size, input_size)
    x_verify, labels = verify_lib.split_verify_data(verify_data, shape)
    final = _atomic.check_destination(path)

    calibration = None if representative_data is None else Calibration(
        representative_data, shape, calibration_steps, progress)
    if not adaptive_rounding:
        chosen = chosen - {"rounding"}
    images = None if calibration is None else (lambda: calibration.head(ROUNDING_SAMPLES))
    converted, outcomes = passes_lib.run_keras(
        model, chosen, passes_lib.Export(quantization, images))
    with forms.activated(passes_lib.twin_forms(outcomes)):
        content = convert(converted, shape, quantization, calibration, io_dtype)

    with _atomic.staged(final) as tmp:
        with open(tmp, "wb") as f:
            f.write(content)
        report = describe(content, final, quantization)
        report.passes = outcomes
        if verify:
            report.verify_inputs = "verify_data"
            if x_verify is None:
                x_verify, report.verify_inputs = default_verify_inputs(
                    model, shape, quantization, calibration)
            reference = _model.predict(model, x_verify)
            actual = run(tmp, x_verify)  # the bytes on disk, not the ones in memory
            verify_lib.apply(report, verify_lib.measure(reference, actual, labels))
            verify_lib.check(report, quantization or "float32", tolerance,
                             labelled=labels is not None,
                             min_top1_agreement=min_top1_agreement)
    return report


def check_representative_data(data):
    """Raises `ValueError` for `representative_data` that holds no image batches."""
    batches = callable(data) or hasattr(data, "shape") or hasattr(data, "__iter__")
    check(batches and not isinstance(data, (str, bytes, os.PathLike)),
          "`representative_data` must be an array, a `tf.data.Dataset`, or an iterable "
          "or callable yielding image batches, in the model's input domain. A folder of "
          "images is not accepted here: load and preprocess them first (the command line "
          "takes `--calibration-dir`).", representative_data=data)


def default_verify_inputs(model, shape, quantization, calibration=None):
    """`(inputs, description)` a file is verified on when the caller gives none."""
    if calibration is not None and len(calibration.kept):
        return calibration.kept, "calibration images"
    if quantization in ("float16", "dynamic"):
        return _model.synthetic_images(model, shape, VERIFY_IMAGES), "synthetic images"
    return _model.random_inputs(model, shape, VERIFY_SAMPLES), "random inputs"


class Calibration:
    """The representative dataset: batches of the traced shape, with progress; keeps the
    first images to fit the rounding on and to verify the file within its ranges."""

    def __init__(self, data, shape, limit=None, progress=True):
        self.data, self.shape, self.limit, self.progress = data, shape, limit, progress
        self.count, self._head, self._source, self._passes = 0, [], None, 0

    def _images(self):
        data = self.data() if callable(self.data) else self.data
        if hasattr(data, "shape") and len(data.shape) in (3, 4):
            data = [data]
        for item in data:
            if isinstance(item, (tuple, list)):  # (x, y) pairs, or TF's [x] convention
                item = item[0]
            yield from _model.as_array(item, self.shape, "representative_data")

    def head(self, n):
        """The first `n` images (fewer if the data or the limit ends first)."""
        if self._source is None:
            self._source = self._images()
        n = n if self.limit is None else min(n, self.limit)
        while len(self._head) < n:
            try:
                self._head.append(next(self._source))
            except StopIteration:
                break
        head = self._head[:n]
        return np.stack(head) if head else np.zeros((0, *self.shape[1:]), "float32")

    @property
    def kept(self):
        return self.head(KEPT_CALIBRATION_SAMPLES)

    def _target(self):
        n = len(self.data) if hasattr(self.data, "shape") and len(self.data.shape) == 4 else None
        if n is not None and self.limit is not None:
            n = min(n, self.limit)
        return n or self.limit

    def __call__(self):
        import keras

        if self._passes == 0:
            # The images read ahead by `head`, then the rest of the same pass.
            if self._source is None:
                self._source = self._images()
            images = itertools.chain(list(self._head), self._source)
        elif not callable(self.data) and iter(self.data) is self.data:
            # A one-shot generator: only what was kept.
            images = iter(list(self._head))
        else:
            images = self._images()
        self._passes += 1
        per_batch = self.shape[0] or 1
        bar = keras.utils.Progbar(self._target(), unit_name="image") if self.progress else None
        self.count, pending = 0, []
        for image in images:
            if self.limit is not None and self.count >= self.limit:
                break
            self.count += 1
            if self.count > len(self._head) and len(self._head) < KEPT_CALIBRATION_SAMPLES:
                self._head.append(image)
            pending.append(image)
            if len(pending) == per_batch:
                yield [np.stack(pending)]
                pending = []
            if bar is not None:
                bar.update(self.count)
        if bar is not None and bar.target is None:
            bar.update(self.count, finalize=True)
        if self.count < per_batch:
            raise ValueError(received(
                f"`representative_data` must yield at least {per_batch} image(s).",
                images=self.count))


def _frozen_function(model, shape):
    """The traced model with variables as constants (not VAR_HANDLE ops), without
    custom-gradient markers (swish's), which silently cost the file its signature."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    fn = _model.serving_fn(model, named=False)
    frozen = convert_variables_to_constants_v2(
        fn.get_concrete_function(_model.tensor_spec(shape)))
    graph_def = frozen.graph.as_graph_def()
    nodes = [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]
    marked = [node for node in nodes if "_gradient_op_type" in node.attr]
    if not marked:
        return tf, frozen
    for node in marked:
        del node.attr["_gradient_op_type"]
    wrapped = tf.compat.v1.wrap_function(
        lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    tensor = wrapped.graph.get_tensor_by_name
    return tf, wrapped.prune(feeds=[tensor(t.name) for t in frozen.inputs],
                             fetches=[tensor(t.name) for t in frozen.outputs])


def convert(model, shape, quantization=None, calibration=None, io_dtype=None):
    """The TFLite flatbuffer of `model` traced at `shape`, as bytes."""
    tf, frozen = _frozen_function(model, shape)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if calibration is not None:
            converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, io_dtype)
        converter.inference_output_type = getattr(tf, io_dtype)
    with _capture.native_stderr() as log:
        try:
            return converter.convert()
        except ValueError:  # calibration errors are the caller's (bad representative data)
            raise
        except Exception as exc:  # the converter raises ConverterError and friends
            raise verify_lib.ExportError(
                f"TFLite conversion (builtin ops only) failed: {exc}\n{log.tail()}") from exc


def analyze(content):
    """`(ops, gpu_compatible, its report)` from TFLite's model analyzer."""
    import tensorflow as tf

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        tf.lite.experimental.Analyzer.analyze(model_content=content, gpu_compatibility=True)
    text = text.getvalue()
    ops = tuple(sorted(set(re.findall(r"Op#\d+ (\w+)\(", text))))
    return ops, "looks compatible with GPU delegate" in text, text


def interpreter(content, num_threads=None):
    """An ai-edge-litert interpreter of a TFLite file (bytes or path)."""
    from ai_edge_litert.interpreter import Interpreter

    # The runtime announces its XNNPACK delegate on stderr; keep that quiet.
    source = {"model_content": content} if isinstance(content, bytes) else \
        {"model_path": str(content)}
    with _capture.native_stderr():
        interp = Interpreter(**source, num_threads=num_threads)
        interp.allocate_tensors()
    return interp


def _tensor_info(detail, name):
    info = {"name": name, "shape": [int(d) for d in detail["shape_signature"]],
            "dtype": np.dtype(detail["dtype"]).name}
    scale, zero_point = detail["quantization"]
    if scale:
        info.update(scale=float(scale), zero_point=int(zero_point))
    return info


def describe(content, path, quantization=None):
    """An unverified `ExportReport` of the TFLite flatbuffer `content`."""
    ops, gpu, _ = analyze(content)
    interp = interpreter(content)
    if not interp.get_signature_list():
        raise verify_lib.ExportError(
            "The TFLite converter produced a file without its `serving_default` signature.")
    runner = interp.get_signature_runner()
    ranks = [len(t["shape"]) for t in interp.get_tensor_details()]
    return verify_lib.ExportReport(
        path=path, format="tflite", size_bytes=len(content), ops=ops,
        quantization=quantization,
        inputs=[_tensor_info(d, n) for n, d in runner.get_input_details().items()],
        outputs=[_tensor_info(d, n) for n, d in _ordered(runner.get_output_details())],
        gpu_compatible=gpu, max_tensor_rank=max(ranks, default=0),
    )


def _ordered(details):
    """Signature outputs `output_0, output_1, ...` in numeric order."""
    return sorted(details.items(), key=lambda item: (
        int(m.group()) if (m := re.search(r"\d+$", item[0])) else -1, item[0]))


def _quantize(x, detail):
    scale, zero_point = detail["quantization"]
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f" or not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y, detail):
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind == "f" or not scale:
        return y.astype("float32")
    return ((y.astype("float32") - zero_point) * scale).astype("float32")


def run(content, x):
    """The float32 outputs of a TFLite file (bytes or path) on float inputs `x`."""
    runner = interpreter(content).get_signature_runner()
    (input_name, in_detail), = runner.get_input_details().items()
    out_details = _ordered(runner.get_output_details())
    batch = int(in_detail["shape_signature"][0])
    results = [[] for _ in out_details]
    for chunk, n in _model.chunks(x, batch if batch > 0 else None):
        out = runner(**{input_name: _quantize(chunk, in_detail)})
        for i, (name, detail) in enumerate(out_details):
            results[i].append(_dequantize(out[name], detail)[:n])
    return [np.concatenate(r) for r in results]


def latency(content, runs=50, warmup=5, num_threads=1):
    """`{median_ms, p10_ms, p90_ms, runs}` of single inferences on LiteRT's default delegate."""
    for name, value in (("runs", runs), ("num_threads", num_threads)):
        _model._check_positive_int(name, value)
    check(isinstance(warmup, numbers.Integral) and warmup >= 0,
          "`warmup` must be a non-negative integer.", warmup=warmup)
    interp = interpreter(content, num_threads=num_threads)
    rng = np.random.default_rng(0)
    for detail in interp.get_input_details():
        shape = [max(1, int(d)) for d in detail["shape"]]
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            value = rng.uniform(0, 1, shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            value = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        interp.set_tensor(detail["index"], value)
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    deciles = statistics.quantiles(times, n=10) if len(times) > 1 else times * 9
    return {"median_ms": statistics.median(times), "p10_ms": deciles[0],
            "p90_ms": deciles[-1], "runs": runs}

"""QDQ ONNX export of quantization-aware models, verified, for every family.

Each family's default variant, with and without `preserve_sparsity`, at
64 px. Batch norms are trained-like (statistics measured on photos), and a
model without them gets He-normal kernels, so that activations depend on
the input: otherwise a model's outputs are nearly constant and any
comparison passes. The default run
covers every family once, alternating the two modes; `-m heavy` the other
mode of each.
"""

import keras
import numpy as np
import pytest
from conftest import sample_photos
from harness import in_default_run, int8_cosine, trained_like

from keras_lightnets import export, optimize, registry
from keras_lightnets.export import _model, verify
from keras_lightnets.export import onnx as onnx_export

SIZE = 64
CLASSES = 10
SPARSITY = 0.5
# Photos to calibrate on; the file is verified on the others.
FIT = 8
PHOTOS = 16
KERNEL_OPS = ("Conv", "MatMul", "Gemm")


# Families whose default run exports the sparse QAT model (the others: the dense one). Magnitude
# pruning without fine-tuning leaves some trained-like models near-constant (MobileNetV2).
SPARSE_IN_DEFAULT_RUN = {"MobileNet", "MobileNetV3Large", "ShuffleNetV1", "SqueezeNet"}
# The slowest QAT graph, under `-m heavy` only for suite time (its ONNX and int8 TFLite exports
# stay in the default run: tests/test_models_export.py, tests/test_optimize.py).
HEAVY_QDQ = {"GhostNet"}


def _cases():
    cases = []
    for entry in (e for e in registry.entries() if e.default):
        for preserve in (False, True):
            default = (preserve == (entry.family in SPARSE_IN_DEFAULT_RUN)
                       and in_default_run(entry, export=True)
                       and entry.family not in HEAVY_QDQ)
            marks = () if default else pytest.mark.heavy
            cases.append(pytest.param(entry.name, preserve, marks=marks,
                                      id=f"{entry.name}-{'sparse' if preserve else 'dense'}"))
    return cases


def _sparsify(model, sparsity=SPARSITY):
    """Zeroes the smallest kernel weights of every Conv2D and Dense layer (SeparableConv2D:
    pointwise), in place.

    Stands in for prune -> fit -> strip (test_optimize runs that chain for
    every family): the prune-preserving scheme only needs the zeros.
    """
    for layer in model._flatten_layers():
        if type(layer) in (keras.layers.Conv2D, keras.layers.Dense,
                           keras.layers.SeparableConv2D):
            weights = layer.get_weights()
            k = 1 if type(layer) is keras.layers.SeparableConv2D else 0  # pointwise kernel
            cut = np.quantile(np.abs(weights[k]), sparsity)
            weights[k] = np.where(np.abs(weights[k]) <= cut, 0.0, weights[k]).astype("float32")
            layer.set_weights(weights)
    return model


def _he_kernels(model, seed=0):
    """He-normal kernels, in place: what keeps a model without batch norm
    (SqueezeNet) from fading to constant outputs."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if type(layer) in (keras.layers.Conv2D, keras.layers.Dense):
            weights = layer.get_weights()
            fan_in = int(np.prod(weights[0].shape[:-1]))
            weights[0] = rng.normal(0.0, np.sqrt(2.0 / fan_in), weights[0].shape)
            layer.set_weights([w.astype("float32") for w in weights])
    return model


def _qat(name, preserve_sparsity):
    keras.utils.set_random_seed(0)
    entry = registry.get_entry(name)
    # tf2onnx cannot convert Conv2D(groups): ONNX takes the split form.
    extra = {"group_conv": "split"} if entry.family == "ShuffleNetV1" else {}
    model = entry.build(weights=None, input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                        classifier_activation=None, **extra)
    x, _ = sample_photos(SIZE, PHOTOS)
    x = np.asarray(entry.preprocess_input(x.copy()), dtype="float32")
    if any(isinstance(la, keras.layers.BatchNormalization) for la in model._flatten_layers()):
        trained_like(model, x[:FIT])
    else:
        _he_kernels(model)
    if preserve_sparsity:
        _sparsify(model)
    qat = optimize.quantize_aware(model, preserve_sparsity=preserve_sparsity,
                                  representative_data=x[:FIT])
    return qat, x


def _kernels(path):
    """`{op name: kernel}` of the file's Conv/MatMul/Gemm, int8 behind DequantizeLinear or float."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    kernels = {}
    for node in graph.node:
        if node.op_type in KERNEL_OPS:
            source = producer.get(node.input[1])
            if source is not None and source.op_type == "DequantizeLinear":
                kernels[node.name] = consts[source.input[0]]
            elif node.input[1] in consts:
                kernels[node.name] = consts[node.input[1]]
    return kernels


@pytest.mark.parametrize("name,preserve_sparsity", _cases())
def test_qdq_export_verifies(name, preserve_sparsity, tmp_path):
    qat, x = _qat(name, preserve_sparsity)
    path = tmp_path / f"{name}_qdq.onnx"
    # Lower for the families whose int8 files agree less on random weights.
    report = export.to_onnx(qat, path, verify_data=x[FIT:],
                            tolerance=int8_cosine(registry.get_entry(name)))

    assert report.verified and report.quantization == "int8", report
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(report.ops), report.ops
    # The prune-preserving quantizers' masks are constants, not extra graph inputs.
    assert [i["name"] for i in report.inputs] == ["input"], report.inputs
    kernels = _kernels(path)
    assert kernels and all(k.dtype == np.int8 for k in kernels.values()), {
        n: k.dtype for n, k in kernels.items() if k.dtype != np.int8}
    if preserve_sparsity:
        zeros = sum(int(np.sum(k == 0)) for k in kernels.values())
        total = sum(k.size for k in kernels.values())
        # Depthwise kernels stay dense: the pruned ones still make up most weights.
        assert zeros / total >= SPARSITY * 0.8, zeros / total

    # The outputs follow the input: a constant model would pass any comparison.
    reference = _model.predict(qat, x[FIT:])
    assert reference[0].std(0).mean() > 0.05 * np.abs(reference[0]).mean()
    # onnxruntime's default session (int8 kernels) rounds differently from TF more often,
    # and these random-weight networks carry each step on, dense ones most: only gross
    # errors show here (float kernels are caught by `to_onnx` itself).
    deployed = verify.measure(reference, onnx_export.run(path, x[FIT:]))
    assert deployed["cosine"] >= 0.7, deployed


def test_qdq_verification_catches_float_kernels(tmp_path, monkeypatch):
    """Float kernels left in a QDQ graph (tf2onnx's output as it is) fail verification."""
    from keras_lightnets.export import _onnx_passes

    qat, x = _qat("mobilenet_v1_025", False)
    monkeypatch.setattr(_onnx_passes, "quantized_kernels", lambda graph: 0)
    path = tmp_path / "float_kernels.onnx"
    with pytest.raises(verify.ExportVerificationError, match="float"):
        export.to_onnx(qat, path, verify_data=x[FIT:])
    assert not path.exists()

"""The ONNX graph post-passes: fused hard activations, NCHW channel shuffle, folded pads.

Models at 64x64 with random weights; every exported graph must still give the
Keras model's outputs (the export verifies them, and so do these tests on a
dynamic batch).
"""

import collections

import numpy as np
import onnx
import pytest
from harness import randomize
from onnx import TensorProto, helper, numpy_helper

from keras_lightnets import export, registry
from keras_lightnets.export import _model as model_lib
from keras_lightnets.export import _onnx_passes
from keras_lightnets.export import onnx as onnx_lib
from keras_lightnets.export import passes as passes_lib

SIZE = 64


def _export(name, tmp_path, **kwargs):
    model = randomize(registry.get_entry(name).build(
        weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None), seed=0)
    path = tmp_path / f"{name}.onnx"
    report = export.to_onnx(model, path, **kwargs)
    assert report.verified and report.max_rel_diff <= 1e-4, report
    return model, onnx.load(path), path


def _ops(proto):
    return collections.Counter(n.op_type for n in proto.graph.node)


def _transposes(proto):
    """Each Transpose with its permutation, producer and readers (for failure messages)."""
    makers = {o: n for n in proto.graph.node for o in n.output}
    return [(list(n.attribute[0].ints), getattr(makers.get(n.input[0]), "name", n.input[0]),
             [m.name for m in proto.graph.node if n.output[0] in m.input])
            for n in proto.graph.node if n.op_type == "Transpose"]


# tf2onnx writes a transpose pair around each NHWC convolution, and its transpose
# optimizer removes them; in an occasional conversion of the same model it leaves one (and
# a size-1 one as a Reshape): the order in which it visits nodes varies between runs.
TF2ONNX_STRAY_TRANSPOSES = 1


def _assert_nchw(proto):
    """The graph runs NCHW: the NHWC input's transpose first, no other but tf2onnx's stray."""
    ops = _ops(proto)
    assert proto.graph.node[0].op_type == "Transpose", ops
    assert ops["Transpose"] <= 1 + TF2ONNX_STRAY_TRANSPOSES, (ops, _transposes(proto))


def _assert_same_outputs(model, path, batch=3):
    x = np.random.default_rng(1).uniform(0, 255, (batch, SIZE, SIZE, 3)).astype("float32")
    (y,) = onnx_lib.run(path, x)
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_mobilenet_v3_hard_activations_fused_and_nchw(tmp_path):
    model, proto, path = _export("mobilenet_v3_small_100", tmp_path)
    ops = _ops(proto)
    # 19 hard-swishes (stem, blocks, head) and 9 squeeze-excite gates.
    assert ops["HardSwish"] == 19 and ops["HardSigmoid"] == 9, ops
    assert "Clip" not in ops, ops
    # The only layout transpose left is the NHWC input's.
    _assert_nchw(proto)
    # Rescaling's scale is folded into the stem convolution: no Mul on the input.
    assert not any(n.op_type == "Mul" and "input" in n.input for n in proto.graph.node)
    # No squeeze-excite reshape between pooling and convolution: only the head's flatten.
    assert ops["Reshape"] <= 1 + TF2ONNX_STRAY_TRANSPOSES, ops
    _assert_same_outputs(model, path)


@pytest.mark.parametrize("name", ["mobilenet_v3_small_100", "mobilenet_v1_100"])
def test_heads_reshape_to_constant_shapes(name, tmp_path):
    """A dynamic batch leaves no shape computation before tf2onnx: whether tf2onnx's own
    optimizers fold one (and the transpose before the flatten) varied from run to run."""
    model = randomize(registry.get_entry(name).build(
        weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None), seed=0)

    def traced_ops(passes):
        chosen, _ = passes_lib.run_keras(model, passes, passes_lib.Export(None, None),
                                         passes_lib.ONNX_KERAS)
        concrete = model_lib.serving_fn(chosen).get_concrete_function(
            model_lib.tensor_spec((None, SIZE, SIZE, 3)))
        return {op.type for op in concrete.graph.get_operations()}

    assert "Shape" in traced_ops(set()) and "Shape" not in traced_ops({"static_reshapes"})
    report = export.to_onnx(model, tmp_path / "m.onnx")
    assert report.passes["static_reshapes"] == "applied", report.passes
    proto = onnx.load(tmp_path / "m.onnx")
    assert "Shape" not in _ops(proto), _ops(proto)
    _assert_nchw(proto)
    _assert_same_outputs(model, tmp_path / "m.onnx")


def test_opset_13_keeps_hard_swish_unfused(tmp_path):
    _, proto, _ = _export("mobilenet_v3_small_100", tmp_path, opset=13)
    ops = _ops(proto)
    assert "HardSwish" not in ops and ops["HardSigmoid"] == 28, ops


def test_shufflenet_v2_shuffle_in_nchw(tmp_path):
    model, proto, path = _export("shufflenet_v2_100", tmp_path)
    ops = _ops(proto)
    perms = [list(n.attribute[0].ints) for n in proto.graph.node if n.op_type == "Transpose"]
    # The input's layout transpose and one 5-D transpose per shuffle, as torchvision has.
    assert perms[0] == [0, 3, 1, 2] and perms[1:] == [[0, 2, 1, 3, 4]] * 16, perms
    assert all(_attr_int(n, "axis") == 1 for n in proto.graph.node if n.op_type == "Split")
    # The stem's zero pad (after ReLU) is MaxPool's own padding; the per-channel
    # preprocessing is an Add, not a 3-channel convolution.
    pool = next(n for n in proto.graph.node if n.op_type == "MaxPool")
    assert _attr_ints(pool, "pads") == [1, 1, 1, 1]
    assert ops["Conv"] == 56, ops
    _assert_same_outputs(model, path)


def test_shufflenet_v1_group_splits_in_nchw(tmp_path):
    model, proto, path = _export("shufflenet_v1_g3_100", tmp_path)
    perms = [list(n.attribute[0].ints) for n in proto.graph.node if n.op_type == "Transpose"]
    # The grouped 1x1 convolutions split channels in NCHW: no transpose around a group.
    assert perms[0] == [0, 3, 1, 2] and perms[1:] == [[0, 2, 1, 3, 4]] * 16, perms
    assert all(_attr_int(n, "axis") == 1 for n in proto.graph.node if n.op_type == "Split")
    _assert_same_outputs(model, path)


def _attr_int(node, name):
    return next(a.i for a in node.attribute if a.name == name)


def _attr_ints(node, name):
    return next(list(a.ints) for a in node.attribute if a.name == name)


def _model(nodes, inits, shape=(1, 4, 5, 5)):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(proto, x):
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _hard_swish_nodes(three=3.0, sixth=1.0 / 6.0):
    nodes = [helper.make_node("Add", ["x", "three"], ["a"]),
             helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
             helper.make_node("Mul", ["c", "sixth"], ["s"]),
             helper.make_node("Mul", ["x", "s"], ["y"])]
    return nodes, {"three": three, "zero": 0.0, "six": 6.0, "sixth": sixth}


@pytest.mark.parametrize("three, sixth, fused", [
    (3.0, 1.0 / 6.0, True), (2.0, 1.0 / 6.0, False), (3.0, 0.2, False)])
def test_hard_swish_matched_only_with_its_constants(three, sixth, fused):
    proto = _model(*_hard_swish_nodes(three, sixth))
    x = np.random.default_rng(0).normal(0, 4, (1, 4, 5, 5)).astype("float32")
    expected = _run(proto, x)
    optimized, counts = _onnx_passes.optimize(proto)
    assert (_ops(optimized) == {"HardSwish": 1}) == fused, _ops(optimized)
    np.testing.assert_allclose(_run(optimized, x), expected, rtol=1e-6, atol=1e-6)


def test_hard_sigmoid_shared_tensor_not_fused():
    """A clip read elsewhere too is not swallowed by a fused op."""
    nodes, inits = _hard_swish_nodes()
    nodes.append(helper.make_node("Add", ["y", "c"], ["y2"]))
    proto = _model(nodes, inits)
    proto.graph.output[0].name = "y2"
    optimized, _ = _onnx_passes.optimize(proto)
    assert "Clip" in _ops(optimized) and "HardSwish" not in _ops(optimized)


@pytest.mark.parametrize("relu", [True, False])
def test_zero_pad_folds_into_max_pool_only_after_relu(relu):
    nodes = [helper.make_node("Relu" if relu else "Neg", ["x"], ["r"]),
             helper.make_node("Pad", ["r", "pads"], ["p"], mode="constant"),
             helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[3, 3], strides=[2, 2])]
    graph = _model(nodes, {})
    graph.graph.initializer.append(numpy_helper.from_array(
        np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), "pads"))
    x = np.random.default_rng(0).normal(0, 1, (1, 4, 5, 5)).astype("float32")
    expected = _run(graph, x)
    optimized, _ = _onnx_passes.optimize(graph)
    assert ("Pad" not in _ops(optimized)) == relu, _ops(optimized)
    np.testing.assert_array_equal(_run(optimized, x), expected)


def _shuffle_nodes(split):
    """tf2onnx's NHWC channel shuffle of an NCHW `[1, 4, 2, 3]` x, then a split to NCHW."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["t", "s3"], ["r"]),
             helper.make_node("Transpose", ["r"], ["rt"], perm=[0, 2, 1]),
             helper.make_node("Reshape", ["rt", "s4"], ["y"])]
    if split:
        nodes += [helper.make_node("Split", ["y"], ["h0", "h1"], axis=-1, num_outputs=2),
                  helper.make_node("Transpose", ["h0"], ["y0"], perm=[0, 3, 1, 2]),
                  helper.make_node("Transpose", ["h1"], ["y1"], perm=[0, 3, 1, 2])]
    return nodes


@pytest.mark.parametrize("outputs", [["y"], ["y0", "y1"], ["y", "h1", "y0"]])
def test_channel_shuffle_rewrite_keeps_every_output(outputs):
    shape = (1, 4, 2, 3)
    graph = helper.make_graph(
        _shuffle_nodes(split=outputs != ["y"]), "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.array(v, dtype=np.int64), k)
         for k, v in {"s3": [-1, 2, 2], "s4": [-1, 2, 3, 4]}.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.arange(np.prod(shape), dtype="float32").reshape(shape)
    import onnxruntime as ort

    def run(p):
        session = ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})

    expected = run(proto)
    optimized, counts = _onnx_passes.optimize(proto)
    assert counts["channel_shuffle"] == 1, counts
    for got, want in zip(run(optimized), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    if outputs == ["y0", "y1"]:
        perms = [list(n.attribute[0].ints) for n in optimized.graph.node
                 if n.op_type == "Transpose"]
        assert perms == [[0, 2, 1, 3, 4]], perms

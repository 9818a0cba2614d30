"""GhostNet V1/V2 against timm's own model code, through timm-layout `.safetensors` files."""

import keras
import numpy as np
import pytest
from conftest import sample_photos
from timm_ref import (
    TOL,
    assert_logits,
    float64_logits,
    float64_model,
    import_timm,
    timm_normalize,
    timm_reference,
    to_torch,
)

import keras_lightnets as kl
from keras_lightnets import layers as kll
from keras_lightnets import registry
from keras_lightnets.weights import sources

# Columns: timm model, version, alpha; V1 and V2 at 1.0 in the default run.
CASES = [
    pytest.param("ghostnet_100", 1, 1.0, id="v1_100"),
    pytest.param("ghostnetv2_100", 2, 1.0, id="v2_100"),
    pytest.param("ghostnetv2_130", 2, 1.3, id="v2_130", marks=pytest.mark.heavy),
    pytest.param("ghostnetv2_160", 2, 1.6, id="v2_160", marks=pytest.mark.heavy),
]


def _timm_name(entry):
    kwargs = entry.variant
    return f"ghostnet{'v2' if kwargs['version'] == 2 else ''}_{int(round(kwargs['alpha'] * 100))}"


def expected_params(entry):
    """Parameter counts of the timm model of a registry entry (the harness's hook)."""
    _, timm = import_timm()
    module = timm.create_model(_timm_name(entry), pretrained=False)
    params = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for n, b in module.named_buffers() if "running" in n)
    # Without the top: no conv_head and classifier.
    head = sum(p.numel() for n, p in module.named_parameters()
               if n.startswith(("conv_head", "classifier")))
    return {"total_params": params + buffers, "trainable_params": params,
            "no_top_total_params": params + buffers - head}


@pytest.mark.torch
@pytest.mark.parametrize("timm_name,version,alpha", CASES)
def test_file_matches_timm(timm_name, version, alpha, tmp_path):
    """A timm GhostNet file gives timm's logits: at 64 px (every map even down to the last
    DFC attention's 2x2) and at 72 px (9x9 and 5x5 maps, pooled to 4x4 and 2x2, where
    PyTorch's nearest resize reads the first row three times), in float32 and, exactly, in
    float64."""
    torch, _ = import_timm()
    module, path, x, ref = timm_reference(timm_name, 64, tmp_path)
    odd, _ = sample_photos(72, len(x))
    odd_ref = float64_logits(torch, module, odd)
    dynamic = kl.GhostNet(version=version, alpha=alpha, weights=path,
                          classifier_activation=None)
    assert_logits(dynamic(x, training=False), ref, f"{timm_name} at 64")
    assert_logits(dynamic(odd, training=False), odd_ref, f"{timm_name} at 72")
    exact = float64_model(kl.GhostNet, version=version, alpha=alpha, weights=path,
                          input_shape=(72, 72, 3), classifier_activation=None)
    assert_logits(exact(odd.astype("float64"), training=False), odd_ref,
                  f"{timm_name} at 72 in float64", exact=True)
    headless = kl.GhostNet(version=version, alpha=alpha, weights=path, include_top=False,
                           input_shape=(64, 64, 3))
    with torch.no_grad():
        features = module.double().forward_features(to_torch(torch, timm_normalize(
            x, module.pretrained_cfg)).double()).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(headless(x, training=False)), features,
                               atol=TOL * np.abs(features).max(), rtol=0)


@pytest.mark.parametrize("size_in,size_out,rows", [
    (3, 6, [0, 0, 1, 1, 2, 2]), (3, 7, [0, 0, 0, 1, 1, 2, 2]), (1, 3, [0, 0, 0]),
    (4, 9, [0, 0, 0, 1, 1, 2, 2, 3, 3])])
def test_resize_nearest_is_pytorchs(size_in, size_out, rows):
    torch, _ = import_timm()
    small = np.arange(size_in * size_in, dtype="float32").reshape(1, size_in, size_in, 1)
    like = np.zeros((1, size_out, size_out + 1, 1), "float32")
    out = np.asarray(kll.ResizeNearest()([small, like]))
    ref = torch.nn.functional.interpolate(to_torch(torch, small), size=like.shape[1:3],
                                          mode="nearest").numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(out[0, :, 0, 0], np.array(rows) * size_in)


def test_resize_nearest_twin_matches():
    from keras_lightnets.optimize import tf_keras_layers

    small = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype("float32")
    like = np.zeros((2, 7, 8, 1), "float32")
    np.testing.assert_array_equal(
        np.asarray(tf_keras_layers.ResizeNearest()([small, like])),
        np.asarray(kll.ResizeNearest()([small, like])))


def test_layer_names_and_attention():
    v1 = kl.GhostNet(version=1, weights=None, input_shape=(64, 64, 3))
    v2 = kl.GhostNet(version=2, weights=None, input_shape=(64, 64, 3))
    for model in (v1, v2):
        names = [layer.name for layer in sources.weighted_layers(model)]
        prefixes = [sources.state_prefix(sources.TIMM, "GhostNet", n) for n in names]
        assert prefixes[:2] == ["conv_stem", "bn1"]
        assert prefixes[-2:] == ["conv_head", "classifier"]
        assert "blocks.3.0.se.conv_reduce" in prefixes and "blocks.9.0.bn1" in prefixes
        assert "blocks.1.0.shortcut.3" in prefixes and "blocks.1.0.bn_dw" in prefixes
        assert sources.family_of(model, sources.TIMM) == "GhostNet"
    # DFC attention from the third block on, in version 2 only.
    resized = [la.name for la in v2.layers if isinstance(la, kll.ResizeNearest)]
    assert resized[0] == "blocks_2_0_ghost1_resize" and len(resized) == 14
    assert not any(isinstance(la, kll.ResizeNearest) for la in v1.layers)
    assert v2.get_layer("blocks_3_0_se_gate").__class__ is kll.HardSigmoid
    assert sources.flavour_for("GhostNet", None).bn == {"epsilon": 1e-5, "momentum": 0.9}


def test_ghost_module_slices_odd_widths():
    from keras_lightnets import blocks

    x = keras.Input((8, 8, 6))
    out = blocks.ghost_module(x, 7, prefix="g_")
    model = keras.Model(x, out)
    assert out.shape[-1] == 7
    assert isinstance(model.get_layer("g_slice"), kll.ChannelSlice)
    assert model.get_layer("g_cheap_operation_0").output.shape[-1] == 4


def test_registry_and_arguments():
    assert kl.list_models("GhostNet") == ["ghostnet_v1_100", "ghostnet_v2_100",
                                          "ghostnet_v2_130", "ghostnet_v2_160"]
    assert {e.name for e in registry.entries() if e.family == "GhostNet" and e.default} == {
        "ghostnet_v2_100"}
    with pytest.raises(ValueError, match="Received: version=3"):
        kl.GhostNet(version=3, weights=None)
    with pytest.raises(ValueError, match="Received: alpha=0.5"):
        kl.GhostNet(version=1, alpha=0.5)  # no published weights
    model = kl.GhostNet(version=1, weights=None, include_top=False, pooling="avg")
    assert model.output.shape == (None, 960)
    # Version 2's attention pools the last (stride 32) maps 2x2, as timm's cannot below 33 px.
    assert kl.GhostNet(version=2, weights=None, input_shape=(33, 33, 3)).output.shape == (
        None, 1000)
    with pytest.raises(ValueError, match="at least 33x33. Received: input_shape"):
        kl.GhostNet(version=2, weights=None, input_shape=(32, 32, 3))

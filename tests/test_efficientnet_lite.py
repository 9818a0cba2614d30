"""EfficientNet-Lite against timm's own model code, through timm-layout `.safetensors` files."""

import os

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
from keras_lightnets import registry
from keras_lightnets import weights as wl
from keras_lightnets.models import efficientnet_lite
from keras_lightnets.weights import manifest, sources


def expected_params(entry):
    """Parameter counts of timm's `tf_efficientnet_lite{n}` (the harness's `expected` hook)."""
    torch, timm = import_timm()
    module = timm.create_model(f"tf_{entry.name}", pretrained=False)
    params = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for n, b in module.named_buffers() if "running" in n)
    head = module.get_classifier()
    return {"total_params": params + buffers, "trainable_params": params,
            "no_top_total_params": params + buffers - head.weight.numel() - head.bias.numel()}


LITES = [pytest.param(v, id=f"lite{v}", marks=() if v == 0 else pytest.mark.heavy)
         for v in range(5)]


@pytest.mark.torch
@pytest.mark.parametrize("variant", LITES)
def test_tf_port_file_matches_timm(variant, tmp_path):
    """A timm `tf_efficientnet_lite` file builds the TF-port flavour and gives timm's logits,
    at an even and an odd size (TF 'same' pads the odd one differently), in float32 and,
    exactly, in float64."""
    torch, _ = import_timm()
    factory = getattr(kl, f"EfficientNetLite{variant}")
    module, path, x, ref = timm_reference(f"tf_efficientnet_lite{variant}", 64, tmp_path)
    assert module.pretrained_cfg["mean"] == module.pretrained_cfg["std"] == (0.5,) * 3
    odd, _ = sample_photos(67, len(x))
    odd_ref = float64_logits(torch, module, odd)
    dynamic = factory(weights=path, classifier_activation=None)
    assert_logits(dynamic(x, training=False), ref, f"Lite{variant} at 64")
    assert_logits(dynamic(odd, training=False), odd_ref, f"Lite{variant} at 67")
    exact = float64_model(factory, weights=path, input_shape=(67, 67, 3),
                          classifier_activation=None)
    assert_logits(exact(odd.astype("float64"), training=False), odd_ref,
                  f"Lite{variant} at 67 in float64", exact=True)
    headless = factory(weights=path, include_top=False, input_shape=(64, 64, 3))
    with torch.no_grad():
        features = module.double().forward_features(to_torch(torch, timm_normalize(
            x, module.pretrained_cfg)).double()).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(headless(x, training=False)), features,
                               atol=TOL * np.abs(features).max(), rtol=0)


@pytest.mark.torch
def test_timm_trained_set_matches_timm(tmp_path, monkeypatch):
    """`weights="timm_ra"`: timm's own EfficientNet-Lite0 (`efficientnet_lite0.ra_in1k`), the
    same tensors in another flavour (symmetric padding, epsilon 1e-5, ImageNet mean and std),
    which the set's manifest entry names; served from a mirror."""
    _, path, x, ref = timm_reference("efficientnet_lite0", 67, tmp_path)
    entry = manifest.find("EfficientNetLite", {"variant": 0}, True, weights="timm_ra")
    assert sources.entry_flavour(entry) is sources.TIMM_LITE
    served = tmp_path / "served"
    served.mkdir()
    os.replace(path, served / entry["file"])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv(wl.MIRROR_ENV, served.as_uri())
    ours = kl.EfficientNetLite0(weights="timm_ra", classifier_activation=None)
    assert_logits(ours(x, training=False), ref, "efficientnet_lite0.ra_in1k at 67")
    pads = {tuple(map(tuple, la.padding)) for la in ours.layers
            if isinstance(la, keras.layers.ZeroPadding2D)}
    assert pads == {((1, 1), (1, 1)), ((2, 2), (2, 2))}
    assert {la.epsilon for la in ours.layers
            if isinstance(la, keras.layers.BatchNormalization)} == {1e-5}
    # The file alone cannot tell the flavours apart: a path builds the TF port's, into
    # which the set's file, loaded as the set's flavour, is refused.
    assert "timm_ra" in kl.list_weights("efficientnet_lite0")
    tf_port = kl.EfficientNetLite0(weights=None, input_shape=(67, 67, 3))
    with pytest.raises(ValueError, match="not built in"):
        wl.load_file(tf_port, str(served / entry["file"]), family=efficientnet_lite.FAMILY,
                     flavour=sources.entry_flavour(entry))
    with pytest.raises(ValueError, match="timm_ra"):
        kl.EfficientNetLite1(weights="timm_ra")


def test_layer_names_and_flavour():
    model = kl.EfficientNetLite0(weights=None, input_shape=(64, 64, 3))
    names = [layer.name for layer in sources.weighted_layers(model)]
    assert names[:2] == ["conv_stem", "bn1"] and names[-3:] == ["conv_head", "bn2", "classifier"]
    assert "blocks_0_0_conv_pw" in names and "blocks_1_0_conv_pwl" in names
    prefixes = [sources.state_prefix(sources.TIMM, "EfficientNetLite", n) for n in names]
    assert prefixes[2] == "blocks.0.0.conv_dw" and "blocks.6.0.conv_pwl" in prefixes
    # TF 'same': the strided convolutions pad themselves, no ZeroPadding2D.
    assert not any(isinstance(la, keras.layers.ZeroPadding2D) for la in model.layers)
    assert sources.flavour_for("EfficientNetLite", "x.safetensors") is sources.TIMM_TF_LITE
    assert sources.flavour_for("EfficientNetLite", None) is sources.TIMM_TF_LITE
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.epsilon == 1e-3
    assert model.get_layer("top_dropout").rate == 0.2


@pytest.mark.parametrize("variant,repeats", [(0, [1, 2, 2, 3, 3, 4, 1]),
                                             (4, [1, 4, 4, 6, 6, 8, 1])])
def test_depth_scaling(variant, repeats):
    depth = efficientnet_lite.VARIANTS[variant][1]
    table = efficientnet_lite.scaled_table(depth)
    assert [row.repeats for row in table[1:-1]] == repeats
    model = getattr(kl, f"EfficientNetLite{variant}")(weights=None, include_top=False)
    assert model.output.shape[-1] == 1280  # the head is not scaled
    assert model.get_layer("conv_stem").filters == 32


def test_registry_and_arguments():
    assert kl.list_models("EfficientNetLite") == [f"efficientnet_lite{v}" for v in range(5)]
    assert registry.get_entry("efficientnet_lite0").default
    assert kl.get_model("efficientnet_lite2", weights=None).name == "efficientnet_lite2"
    with pytest.raises(ValueError, match="Received: variant=5"):
        kl.EfficientNetLite(5, weights=None)
    with pytest.raises(ValueError, match="Received: dropout_rate=1.5"):
        kl.EfficientNetLite0(weights=None, dropout_rate=1.5)
    with pytest.raises(ValueError, match="Received: pooling='sum'"):
        kl.EfficientNetLite1(weights=None, include_top=False, pooling="sum")

"""Weight sources as data: flavours match the built models, name maps, flavour checks."""

import dataclasses
import functools

import pytest

import keras_lightnets as kl
from keras_lightnets import registry
from keras_lightnets import weights as wl
from keras_lightnets.weights import flavour_check, manifest, sources

ENTRIES = registry.entries()


@functools.lru_cache(maxsize=1)
def built(name):
    """The registered model with its top, random weights, at 64x64."""
    return registry.get_model(name, weights=None, input_shape=(64, 64, 3))


def test_manifest_entries_name_their_source():
    """Every weight set is built in its source's flavour: "imagenet" in the family's default
    source's, another set in the flavour `flavour_for` gives for the set's name."""
    for entry in manifest.entries():
        source = sources.SOURCES[entry["source"]]
        assert entry["format"] in source.formats, entry["file"]
        assert entry["family"] in source.flavours, entry["file"]
        if entry["weights"] == "imagenet":
            assert sources.default_source(entry["family"]) is source
        assert (sources.flavour_for(entry["family"], entry["weights"])
                is source.flavours[entry["family"]])
    published = {e["family"] for e in manifest.entries() if e["source"] == "torchvision"}
    assert published <= set(sources.TORCHVISION.name_maps)


def test_flavour_for_follows_the_weights():
    assert sources.flavour_for("ShuffleNetV2", None) is sources.TORCH
    assert sources.flavour_for("ShuffleNetV2", "imagenet") is sources.TORCH
    assert sources.flavour_for("ShuffleNetV2", "x.pth") is sources.TORCH
    assert sources.flavour_for("ShuffleNetV2", "x.weights.h5") is sources.TORCH
    assert sources.flavour_for("MobileNetV2", "x.h5") is sources.KERAS
    assert sources.flavour_for("MnasNet", "x.pt").bn == {"epsilon": 1e-5, "momentum": 0.9997}
    assert sources.flavour_for("ShuffleNetV1", None).source == "paper"
    assert sources.flavour_for("MobileNetV2", "x.pth").source == "torchvision"
    with pytest.raises(ValueError, match="No weight source reads the file 'x.pth' for family "
                                         "MobileNet.*Received: weights='x.pth'"):
        sources.flavour_for("MobileNet", "x.pth")


def test_unknown_layers_are_an_error_naming_them():
    with pytest.raises(ValueError, match="Keras layer 'conv1_bn' has no torchvision name in "
                                         "ShuffleNetV2's name map"):
        sources.state_prefix(sources.TORCHVISION, "ShuffleNetV2", "conv1_bn")
    with pytest.raises(ValueError, match="No torchvision name map fits model .*'conv1'"):
        wl.load_torch_state_dict(built("mobilenet_v1_025"), {})


def _other(value, choices):
    return next(c for c in choices if c != value)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_flavour_and_name_map_fit_the_built_model(entry):
    """The recorded flavour is what the factory builds, each measured difference is refused,
    and the name map gives every weighted layer its torchvision module path."""
    model = built(entry.name)
    flavour = sources.flavour_for(entry.family, None)
    if sources.default_source(entry.family) is sources.TORCHVISION:
        layers = sources.weighted_layers(model)
        # The rule the name maps replaced: Keras names are module paths with "_" for ".".
        assert [sources.state_prefix(sources.TORCHVISION, entry.family, layer.name)
                for layer in layers] == [layer.name.replace("_", ".") for layer in layers]
        assert sources.family_of(model, sources.TORCHVISION) == entry.family
    assert flavour_check.flavour_mismatch(model, flavour) is None
    foreign = sources.KERAS if flavour.padding == "symmetric" else sources.TORCH
    assert flavour_check.flavour_mismatch(model, foreign)
    changes = {"classifier": _other(flavour.classifier, ("dense", "conv1x1"))}
    if flavour.bn_epsilon is not None:
        changes["bn_epsilon"] = flavour.bn_epsilon * 10
    if entry.family != "SqueezeNet":  # no padded strided convolution
        changes["padding"] = _other(flavour.padding, ("symmetric", "keras"))
    if flavour.normalization.embedded:
        changes["normalization"] = _other(flavour.normalization,
                                          (sources.TORCH_IMAGENET, sources.KERAS_TF))
    for field, value in changes.items():
        changed = dataclasses.replace(flavour, **{field: value})
        assert flavour_check.flavour_mismatch(model, changed), field


def test_a_file_of_another_flavour_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "shufflenet.pth"
    path.write_bytes(b"never read: the flavour is checked first")
    model = built("shufflenet_v2_050")
    keras_bn = dataclasses.replace(sources.TORCH, bn_epsilon=1e-3)
    monkeypatch.setitem(sources.TORCHVISION.flavours, "ShuffleNetV2", keras_bn)
    with pytest.raises(ValueError, match="shufflenet.pth' is torchvision's, for its flavour of "
                                         "ShuffleNetV2, .* epsilon"):
        wl.load_file(model, path)
    with pytest.raises(ValueError, match="No weight source reads the file .*shufflenet.pth' "
                                         "for family MobileNet"):
        kl.MobileNet(weights=str(path), alpha=0.25, input_shape=(64, 64, 3))


def test_embedded_normalizations_are_the_models_own_values():
    from keras_lightnets import imagenet
    from keras_lightnets.models import common

    torch = common.normalization(imagenet.TORCH_MEAN, imagenet.TORCH_STD)
    assert sources.TORCH_IMAGENET.scale_offset() == (torch.scale, torch.offset)
    v3 = sources.flavour_for("MobileNetV3Small", None).normalization
    assert v3.scale_offset() == (1.0 / 127.5, -1.0)  # keras.applications' Rescaling


def _state_dict_of(model, source, family):
    """`model`'s weights written as `source`'s state dict (the inverse of the conversion)."""
    state = {}
    for layer in sources.weighted_layers(model):
        prefix = sources.state_prefix(source, family, layer.name)
        values = {w.path.split("/")[-1]: w.numpy() for w in layer.weights}
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            for name, key in zip(("gamma", "beta", "moving_mean", "moving_variance"),
                                 source.bn_keys, strict=True):
                state[f"{prefix}.{key}"] = values[name]
            continue
        kernel = values.get("kernel", values.get("depthwise_kernel"))
        if kind == "DepthwiseConv2D":
            kh, kw, cin, mult = kernel.shape
            kernel = kernel.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
        elif kind == "Conv2D":
            kernel = kernel.transpose(3, 2, 0, 1)
        elif source.dense_layout == "out_in":
            kernel = kernel.T
        state[f"{prefix}.weight"] = kernel
        if "bias" in values:
            state[f"{prefix}.bias"] = values["bias"]
    return {f"{source.key_prefixes[0] if source.key_prefixes else ''}{k}": v
            for k, v in state.items()}


def test_a_new_source_is_a_record():
    """Other tensor conventions (batch-norm keys, Linear [in, out], a key prefix, BGR
    weights) are fields of a source's record: the converter needs no new code."""
    import harness
    import numpy as np

    family = "ShuffleNetV2"
    model = harness.randomize(kl.ShuffleNetV2(alpha=0.25, weights=None), seed=1)
    bgr = sources.Normalization((0.0,) * 3, (1.0,) * 3, pixel_max=255.0, order="BGR")
    for source in (sources.TORCHVISION, dataclasses.replace(
            sources.TORCHVISION, name="paddle-like", key_prefixes=("module.",),
            bn_keys=("weight", "bias", "_mean", "_variance"), dense_layout="in_out",
            flavours={family: dataclasses.replace(sources.TORCH, normalization=bgr)})):
        state = _state_dict_of(model, source, family)
        loaded = kl.ShuffleNetV2(alpha=0.25, weights=None)
        assert len(wl.load_state(loaded, state, source, family)) == len(state)
        for layer in sources.weighted_layers(model):
            expected = layer.get_weights()
            if layer.name == "conv1_0" and source.flavours[family].normalization.order == "BGR":
                expected[0] = expected[0][:, :, ::-1, :]  # the stem reads RGB
            for mine, theirs in zip(loaded.get_layer(layer.name).get_weights(), expected,
                                    strict=True):
                np.testing.assert_array_equal(mine, theirs)

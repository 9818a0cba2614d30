"""MobileNetV4 (conv) against timm's own model code, through timm's `.safetensors` files."""

import os

import keras
import numpy as np
import pytest
from conftest import sample_photos
from timm_ref import (
    TOL,
    assert_file_parity,
    import_timm,
    timm_file,
    timm_input,
    timm_trained_like,
)

import keras_lightnets as kl
from keras_lightnets import registry, spec
from keras_lightnets import weights as wl
from keras_lightnets.features import feature_layers
from keras_lightnets.weights import manifest, sources

SIZE = 96
# Parameter counts of timm 1.0.31's models: `sum(p.numel() for p in model.parameters())`
# (trainable), plus each batch norm's running mean and variance (total); no top: the stem
# and blocks only. `test_counts_are_timms` recomputes them from timm.
# Columns: registry name, timm model, total, trainable, no-top total.
COUNTS = [
    ("mobilenet_v4_conv_small_035", "mobilenetv4_conv_small_035", 1916072, 1905384, 199872),
    ("mobilenet_v4_conv_small_050", "mobilenetv4_conv_small_050", 2252808, 2238952, 352288),
    ("mobilenet_v4_conv_small_100", "mobilenetv4_conv_small", 3799112, 3774024, 1284192),
    ("mobilenet_v4_conv_medium_100", "mobilenetv4_conv_medium", 9783416, 9715512, 7268496),
    ("mobilenet_v4_conv_large_100", "mobilenetv4_conv_large", 32740416, 32590864, 30225496),
]
TIMM_NAMES = {name: timm_name for name, timm_name, *_ in COUNTS}
# The default run: Conv-Small; the other widths and sizes under `-m heavy`.
DEFAULT = "mobilenet_v4_conv_small_100"


def _cases():
    return [pytest.param(name, id=name, marks=() if name == DEFAULT else pytest.mark.heavy)
            for name, *_ in COUNTS]


def expected_params(entry):
    """The harness's counts for a MobileNetV4 registry entry (see `harness.FAMILY_HOOKS`)."""
    total, trainable, no_top = next(row[2:] for row in COUNTS if row[0] == entry.name)
    return {"total_params": total, "trainable_params": trainable, "no_top_total_params": no_top}


def _timm_case(name, tmp_path, size=SIZE, count=16):
    """`(timm model, its file, photos)` for registry entry `name`: trained-like on the photos."""
    torch, timm = import_timm()
    model = timm.create_model(TIMM_NAMES[name], pretrained=False)
    x, _ = sample_photos(size, count)
    timm_trained_like(torch, model, timm_input(torch, x, model.pretrained_cfg))
    path = timm_file(torch, model, tmp_path / f"{TIMM_NAMES[name]}.safetensors")
    return torch, model, path, x


@pytest.mark.torch
@pytest.mark.parametrize("name", _cases())
def test_timm_file_gives_timms_logits(name, tmp_path):
    """A timm state dict saved as `.safetensors` loads through `weights=<path>` (the file
    builds the timm flavour) and gives timm's logits and features on raw 0-255 pixels."""
    torch, model, path, x = _timm_case(name, tmp_path)
    entry = registry.get_entry(name)
    # The flavour's normalization: timm's `pretrained_cfg` of the default tag (the narrow
    # Conv-Small widths' own tags use another; they have no weights here).
    norm = sources.TIMM.flavours[entry.family].normalization
    assert_file_parity(torch, model, path, x, entry, {"mean": norm.mean, "std": norm.std})


def test_embedded_normalization_is_timms():
    _, timm = import_timm()
    for family, timm_name in (("MobileNetV4ConvSmall", "mobilenetv4_conv_small"),
                              ("MobileNetV4ConvMedium", "mobilenetv4_conv_medium"),
                              ("MobileNetV4ConvLarge", "mobilenetv4_conv_large")):
        cfg = timm.models.get_pretrained_cfg(timm_name).to_dict()
        norm = sources.TIMM.flavours[family].normalization
        assert (norm.mean, norm.std, norm.pixel_max) == (cfg["mean"], cfg["std"], 1.0), family


@pytest.mark.torch
def test_counts_are_timms():
    torch, timm = import_timm()
    for name, timm_name, total, trainable, no_top in COUNTS:
        model = timm.create_model(timm_name, pretrained=False)
        params = sum(p.numel() for p in model.parameters())
        stats = sum(b.numel() for k, b in model.named_buffers() if k.endswith(("_mean", "_var")))
        body = sum(v.numel() for k, v in model.state_dict().items()
                   if k.startswith(("conv_stem", "bn1", "blocks"))
                   and not k.endswith("num_batches_tracked"))
        assert (total, trainable, no_top) == (params + stats, params, body), name


@pytest.mark.parametrize("name", _cases())
def test_layers_of_a_block_table(name):
    """Every weighted layer carries a timm module path; every op is a plain Keras layer."""
    entry = registry.get_entry(name)
    model = entry.build(weights=None, input_shape=(64, 64, 3))
    kinds = {type(layer).__name__ for layer in model.layers}
    assert kinds <= {"InputLayer", "Rescaling", "Conv2D", "DepthwiseConv2D", "BatchNormalization",
                     "ReLU", "ZeroPadding2D", "Add", "GlobalAveragePooling2D", "Flatten",
                     "Dropout", "Dense"}, kinds
    assert sources.family_of(model, sources.TIMM) in registry.families()
    for layer in sources.weighted_layers(model):
        sources.state_prefix(sources.TIMM, entry.family, layer.name)
    # Strided convolutions pad as PyTorch does: the flavour check finds nothing amiss.
    from keras_lightnets.weights import flavour_check

    assert flavour_check.flavour_mismatch(model, sources.TIMM.flavours[entry.family]) is None


def test_tapped_rows_are_the_traced_feature_maps():
    model = kl.MobileNetV4ConvSmall(weights=None, include_top=False)
    taps = spec.taps_of(model)
    assert sorted(taps) == [2, 4, 8, 16, 32]
    # Stride 16 ends where the first stride-32 block's expansion (before its strided
    # depthwise conv) ends; stride 32 at the last 1x1 conv.
    assert taps[16] == "blocks_3_0_pw_exp_relu" and taps[32] == "blocks_4_0_bn1_relu"
    traced = keras.Model(model.inputs, model.outputs, name="traced")
    assert feature_layers(traced, tuple(taps)) == list(taps.values())
    for factory in (kl.MobileNetV4ConvMedium, kl.MobileNetV4ConvLarge):
        taps = spec.taps_of(factory(weights=None, include_top=False))
        assert sorted(taps) == [2, 4, 8, 16, 32]
        assert taps[4] == "blocks_1_0_pw_exp_relu"  # the edge residual ends at stride 4 ...
        assert taps[2] == "bn1_relu"  # ... and starts at the stem's output


def test_arguments():
    with pytest.raises(ValueError, match=r"Received: alpha=0"):
        kl.MobileNetV4ConvSmall(alpha=0, weights=None)
    with pytest.raises(ValueError, match=r"Received: dropout_rate=1"):
        kl.MobileNetV4ConvMedium(dropout_rate=1, weights=None)
    with pytest.raises(ValueError, match="Received: weights='timm'"):
        kl.MobileNetV4ConvSmall(alpha=0.35, weights="timm")
    model = kl.MobileNetV4ConvSmall(alpha=0.5, weights=None, dropout_rate=0.0, classes=10)
    assert model.name == "mobilenet_v4_conv_small_050" and model.output.shape == (None, 10)
    assert "dropout" not in [layer.name for layer in model.layers]


def test_manifest_entries():
    entries = {e["file"]: e for e in manifest.entries() if e["source"] == "timm"
               and e["family"].startswith("MobileNetV4Conv")}
    assert {e["weights"] for e in entries.values()} == {
        "timm", "timm_e1200_r224", "timm_e3600_r256", "timm_e500_r224", "timm_e500_r256"}
    for family in ("MobileNetV4ConvSmall", "MobileNetV4ConvMedium", "MobileNetV4ConvLarge"):
        # "timm" is the default tag.
        variant = {"alpha": 1.0} if family == "MobileNetV4ConvSmall" else {}
        defaults = [e for e in entries.values() if e["family"] == family
                    and e["weights"] == "timm" and manifest.matches(e, variant)]
        assert len(defaults) == 1
        assert manifest.find(family, variant, True, weights="timm") is defaults[0]
        for e in entries.values():
            if e["family"] == family:
                norm = sources.entry_flavour(e).normalization
                assert (tuple(e["mean"]), tuple(e["std"])) == (norm.mean, norm.std)
    # timm's longer Conv-Small trainings take [-1, 1] inputs: their entries name the flavour.
    assert {e["file"] for e in entries.values() if e.get("flavour") == "inception"} == {
        "mobilenetv4_conv_small.e3600_r256_in1k.safetensors",
        "mobilenetv4_conv_small_050.e3000_r224_in1k.safetensors"}


@pytest.mark.torch
def test_imagenet_weights_through_a_mirror(tmp_path, monkeypatch):
    """`weights="timm"` and the default "imagenet" fetch the default tag's file (a mirror)."""
    torch, model, path, x = _timm_case(DEFAULT, tmp_path)
    entry = manifest.find("MobileNetV4ConvSmall", {"alpha": 1.0}, True, weights="timm")
    served = tmp_path / "served"
    served.mkdir()
    os.rename(path, served / entry["file"])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv(wl.MIRROR_ENV, served.as_uri())
    ours = kl.MobileNetV4ConvSmall(weights="timm", classifier_activation=None)
    with torch.no_grad():
        ref = model(timm_input(torch, x, model.pretrained_cfg)).numpy()
    diff = float(np.abs(np.asarray(ours(x, training=False)) - ref).max())
    assert diff <= TOL * np.abs(ref).max()
    # "imagenet" (the default) is timm's default set for a family only timm publishes.
    assert manifest.find("MobileNetV4ConvSmall", {"alpha": 1.0}, True) is entry
    default = kl.MobileNetV4ConvSmall(classifier_activation=None)
    np.testing.assert_array_equal(np.asarray(default(x, training=False)),
                                  np.asarray(ours(x, training=False)))


@pytest.mark.torch
def test_inception_normalized_set_through_a_mirror(tmp_path, monkeypatch):
    """`weights="timm_e3600_r256"` builds the set's flavour (inputs scaled to [-1, 1], as its
    entry says) and gives timm's logits on raw pixels; its file into the default flavour's
    model is refused."""
    torch, model, path, x = _timm_case(DEFAULT, tmp_path)
    entry = manifest.find("MobileNetV4ConvSmall", {"alpha": 1.0}, True,
                          weights="timm_e3600_r256")
    served = tmp_path / "served"
    served.mkdir()
    os.rename(path, served / entry["file"])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv(wl.MIRROR_ENV, served.as_uri())
    ours = kl.MobileNetV4ConvSmall(weights="timm_e3600_r256", input_shape=(SIZE, SIZE, 3),
                                   classifier_activation=None)
    with torch.no_grad():
        ref = model(timm_input(torch, x, {"mean": (0.5,) * 3, "std": (0.5,) * 3})).numpy()
    assert ref.std(0).mean() > 0.5 * ref.std()
    diff = float(np.abs(np.asarray(ours(x, training=False)) - ref).max())
    assert diff <= TOL * np.abs(ref).max()
    default = kl.MobileNetV4ConvSmall(weights=None, input_shape=(SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="normalization"):
        wl.load_file(default, str(served / entry["file"]), family="MobileNetV4ConvSmall",
                     flavour=sources.entry_flavour(entry))


def test_narrow_small_imagenet_is_its_inception_flavour():
    """Conv-Small 0.5's only timm tag takes [-1, 1] inputs: "imagenet" builds that."""
    from keras_lightnets.models import common

    with common.weights_not_loaded():
        model = kl.MobileNetV4ConvSmall(alpha=0.5, input_shape=(64, 64, 3))
    layer = model.get_layer("normalization")
    assert (layer.scale, layer.offset) == pytest.approx((1 / 127.5, -1.0))
    assert kl.list_weights("mobilenet_v4_conv_small_050") == ["imagenet", "timm"]

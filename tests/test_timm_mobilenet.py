"""MobileNet V1 and MobileNetV2 with timm's weights: timm's own models through its
`.safetensors` files, the `timm_*` weight sets, and the timm flavours' reload and export."""

import harness
import keras
import numpy as np
import pytest
from conftest import sample_photos
from timm_ref import (
    TOL,
    assert_logits,
    import_timm,
    timm_file,
    timm_normalize,
    timm_reference,
    to_torch,
)

import keras_lightnets as kl
from keras_lightnets import registry
from keras_lightnets import weights as wl
from keras_lightnets.models import common
from keras_lightnets.weights import manifest, sources

SIZE = 96
# Columns: registry name, timm model (its default tag is the manifest's file), weight set;
# V1 and V2 at 1.0 in the default run. timm's `mobilenetv1_100h` (a 1x1 head conv) and
# `mobilenetv2_110d`/`120d` (deeper stages, a fixed stem and head) are other architectures.
CASES = [
    ("mobilenet_v1_100", "mobilenetv1_100", "timm_ra4"),
    ("mobilenet_v1_125", "mobilenetv1_125", "timm_ra4"),
    ("mobilenet_v2_050", "mobilenetv2_050", "timm_lamb"),
    ("mobilenet_v2_100", "mobilenetv2_100", "timm_ra"),
    ("mobilenet_v2_140", "mobilenetv2_140", "timm_ra"),
]
DEFAULTS = ("mobilenet_v1_100", "mobilenet_v2_100")


def _cases():
    return [pytest.param(*case, id=case[0],
                         marks=() if case[0] in DEFAULTS else pytest.mark.heavy)
            for case in CASES]


def _timm_flavour(entry, weights, **kwargs):
    """The registry entry built in timm's flavour (the set's), no file loaded."""
    with common.weights_not_loaded():
        return entry.build(weights=weights, **kwargs)


@pytest.mark.torch
@pytest.mark.parametrize("name,timm_name,weights", _cases())
def test_timm_file_gives_timms_logits(name, timm_name, weights, tmp_path):
    """A timm state dict saved as `.safetensors` builds the timm flavour (the file decides)
    and gives timm's logits on raw 0-255 pixels, its features at an even and an odd size,
    and survives a safe-mode `.keras` reload."""
    torch, _ = import_timm()
    module, path, x, ref = timm_reference(timm_name, SIZE, tmp_path)
    entry = registry.get_entry(name)
    assert sources.flavour_for(entry.family, path) is sources.TIMM.flavours[entry.family]
    ours = entry.build(weights=path, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    assert_logits(ours(x, training=False), ref, f"{name} at {SIZE}")

    # The body at 96 and 100 px (maps of 25 and 13: PyTorch's padding of odd sizes).
    headless = entry.build(weights=path, include_top=False)
    odd, _ = sample_photos(100, len(x))
    for pixels in (x, odd):
        with torch.no_grad():
            features = module.forward_features(
                to_torch(torch, timm_normalize(pixels, module.pretrained_cfg))).numpy()
        features = features.transpose(0, 2, 3, 1)
        diff = np.abs(np.asarray(headless(pixels, training=False)) - features).max()
        assert diff <= TOL * np.abs(features).max(), (pixels.shape, diff)

    # Every timm tensor has a Keras home.
    used = wl.load_state(ours, sources.TIMM.reader(path), sources.TIMM, entry.family)
    assert used == sorted(k for k in module.state_dict() if not k.endswith("num_batches_tracked"))

    saved = tmp_path / f"{name}.keras"
    ours.save(saved)
    loaded = keras.models.load_model(saved, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)),
                               np.asarray(ours(x, training=False)), atol=1e-6, rtol=0)


@pytest.mark.torch
def test_counts_are_timms():
    """Parameters (trainable; with the batch norms' statistics; without the top) of each
    timm-flavoured variant equal timm's model's."""
    _, timm = import_timm()
    for name, timm_name, weights in CASES:
        module = timm.create_model(timm_name, pretrained=False)
        params = sum(p.numel() for p in module.parameters())
        stats = sum(b.numel() for k, b in module.named_buffers() if k.endswith(("_mean", "_var")))
        body = sum(v.numel() for k, v in module.state_dict().items()
                   if not k.startswith("classifier") and not k.endswith("num_batches_tracked"))
        entry = registry.get_entry(name)
        model = _timm_flavour(entry, weights)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        headless = _timm_flavour(entry, weights, include_top=False)
        assert (model.count_params(), trainable, headless.count_params()) == (
            params + stats, params, body), name


def test_flavours_and_sets():
    """The timm sets are listed per variant, name their timm files, and build the timm
    flavour with the tag's normalization embedded; "imagenet" stays keras.applications'."""
    _, timm = import_timm()
    for name, timm_name, weights in CASES:
        entry = registry.get_entry(name)
        assert weights in kl.list_weights(name), name
        found = manifest.find(entry.family, entry.variant, True, weights=weights)
        cfg = timm.models.get_pretrained_cfg(timm_name).to_dict()
        assert found["file"] == f"{timm_name}.{cfg['tag']}.safetensors"
        assert found["crop_pct"] == cfg["crop_pct"] and found["input_size"] == cfg["input_size"][1]
        flavour = sources.flavour_for(entry.family, weights)
        assert flavour is sources.TIMM.flavours[entry.family]
        norm = flavour.normalization
        assert (norm.mean, norm.std, norm.pixel_max) == (cfg["mean"], cfg["std"], 1.0), name
        assert (tuple(found["mean"]), tuple(found["std"])) == (norm.mean, norm.std)
    assert kl.list_weights("mobilenet_v1_125") == ["timm_ra4"]
    assert {"timm_ra", "torchvision"} <= set(kl.list_weights("mobilenet_v2_100"))
    for family in ("MobileNet", "MobileNetV2"):
        assert sources.default_source(family) is sources.KERAS_APPLICATIONS
        assert manifest.find(family, {"alpha": 1.0}, True)["format"] == "keras-h5"
    # timm's V1: symmetric padding (the stem's too), a dense classifier, ReLU6.
    model = _timm_flavour(registry.get_entry("mobilenet_v1_100"), "timm_ra4")
    assert isinstance(model.get_layer("predictions"), keras.layers.Dense)
    assert model.get_layer("conv1_pad").padding == ((1, 1), (1, 1))
    assert "dropout" not in [la.name for la in _timm_flavour(
        registry.get_entry("mobilenet_v2_100"), "timm_ra").layers]


@pytest.mark.torch
def test_a_timm_file_is_refused_by_the_keras_flavour(tmp_path):
    """keras.applications' MobileNet pads strided convolutions bottom-right, with epsilon
    1e-3: a timm file does not load into it, and says so."""
    torch, timm = import_timm()
    path = timm_file(torch, timm.create_model("mobilenetv1_100"), tmp_path / "v1.safetensors")
    model = kl.MobileNet(weights=None, input_shape=(SIZE, SIZE, 3))
    with pytest.raises(ValueError, match=r"timm's, for its flavour of MobileNet.*epsilon"):
        wl.load_file(model, path, family="MobileNet")
    # Without the top every layer has a timm name: the family is found, the flavour is not.
    headless = kl.MobileNet(weights=None, include_top=False)
    with pytest.raises(ValueError, match=r"timm's, for its flavour of MobileNet.*epsilon"):
        wl.load_file(headless, path)


@pytest.mark.torch
def test_weight_set_through_a_mirror(tmp_path, monkeypatch):
    """`weights="timm_ra4"` fetches its file (from a file:// mirror), converts it once and
    gives timm's logits, also from the converted cache (with the top: at the set's 224 px)."""
    module, path, x, ref = timm_reference("mobilenetv1_100", 224, tmp_path, batch=4)
    entry = manifest.find("MobileNet", {"alpha": 1.0}, True, weights="timm_ra4")
    served = tmp_path / "served"
    served.mkdir()
    (served / entry["file"]).write_bytes(open(path, "rb").read())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv(wl.MIRROR_ENV, served.as_uri())
    for attempt in ("download", "cache"):
        model = kl.MobileNet(weights="timm_ra4", classifier_activation=None)
        assert_logits(model(x, training=False), ref, f"timm_ra4 ({attempt})")
    # The registry's `name.set` names it too.
    assert registry.split_name("mobilenet_v1_100.timm_ra4")[1] == "timm_ra4"


# Heavy: the default run exports MobileNet V1 and V2 (test_models_export) on the same
# builders; the timm flavours differ from PaddleClas' and torchvision's in data only.
EXPORT_CASES = [
    pytest.param("mobilenet_v2_050", "mobilenetv2_050", id="mobilenet_v2_050",
                 marks=pytest.mark.heavy),
    pytest.param("mobilenet_v1_100", "mobilenetv1_100", id="mobilenet_v1_100",
                 marks=pytest.mark.heavy),
    pytest.param("mobilenet_v2_100", "mobilenetv2_100", id="mobilenet_v2_100",
                 marks=pytest.mark.heavy),
]


@pytest.mark.torch
@pytest.mark.parametrize("name,timm_name", EXPORT_CASES)
def test_timm_flavour_exports(name, timm_name, tmp_path):
    """The harness's export check on a model a timm file built (its kernels; the batch
    norms and classifier made trained-like): float32 TFLite, ONNX and int8 TFLite."""
    torch, timm = import_timm()
    path = timm_file(torch, timm.create_model(timm_name), tmp_path / f"{timm_name}.safetensors")
    measured = harness.run_export_test(registry.get_entry(name), tmp_path, SIZE, weights=path)
    assert set(measured) == {"float32", "onnx", "int8"}
    print(f"\n{name} (timm): " + ", ".join(
        f"{kind} max rel diff {m['max_rel_diff']:.2g} cosine {m['cosine']:.4f}"
        for kind, m in measured.items()))

"""timm's MobileNetV3 (Large, Small) and MnasNet weight sets against timm's own model code.

timm 1.0.31's models, trained-like on photos, write `.safetensors` state dicts; the factories
load them through `weights=<path>` (the file builds the timm flavour) or through a weight set
served from a file:// mirror, and give timm's logits on raw 0-255 pixels.
"""

import harness
import keras
import numpy as np
import pytest
from conftest import sample_photos
from timm_ref import TOL, import_timm, timm_file, timm_input, timm_trained_like

import keras_lightnets as kl
from keras_lightnets import registry
from keras_lightnets import weights as wl
from keras_lightnets.models import common
from keras_lightnets.weights import flavour_check, manifest, sources

SIZE = 96
# Columns: registry name, timm model and weighted tag.
CASES = [
    ("mobilenet_v3_large_100", "mobilenetv3_large_100.ra_in1k"),
    ("mnasnet_100", "mnasnet_100.rmsp_in1k"),
    ("mobilenet_v3_small_050", "mobilenetv3_small_050.lamb_in1k"),
    ("mobilenet_v3_small_075", "mobilenetv3_small_075.lamb_in1k"),
    ("mobilenet_v3_small_100", "mobilenetv3_small_100.lamb_in1k"),
]
# The default run: Large 1.0 and MnasNet 1.0; the Small widths under `-m heavy`.
DEFAULT = ("mobilenet_v3_large_100", "mnasnet_100")
# The sets of this file, per registry name.
SETS = {"mobilenet_v3_large_100": {"timm", "timm_miil", "timm_ra4"}, "mnasnet_100": {"timm"},
        "mobilenet_v3_small_050": {"timm"}, "mobilenet_v3_small_075": {"timm"},
        "mobilenet_v3_small_100": {"timm"}}
# The last is ra4: the checks after the loop use its file and model.
TAGS = {"timm": "mobilenetv3_large_100.ra_in1k",
        "timm_miil": "mobilenetv3_large_100.miil_in21k_ft_in1k",
        "timm_ra4": "mobilenetv3_large_100.ra4_e3600_r224_in1k"}


def _cases():
    return [pytest.param(name, tag, id=name, marks=() if name in DEFAULT else pytest.mark.heavy)
            for name, tag in CASES]


def timm_case(tag, directory, file=None, count=16):
    """`(torch, timm model, its file, photos)`: timm's model of `tag` (random kernels),
    trained-like on photos normalized as the tag's `pretrained_cfg` says."""
    torch, timm = import_timm()
    model = timm.create_model(tag, pretrained=False)
    x, _ = sample_photos(SIZE, count)
    timm_trained_like(torch, model, timm_input(torch, x, model.pretrained_cfg))
    path = timm_file(torch, model, directory / (file or f"{tag}.safetensors"))
    return torch, model, path, x


def timm_logits(torch, model, x):
    with torch.no_grad():
        return model(timm_input(torch, x, model.pretrained_cfg)).numpy()


def assert_logits_match(ours, ref, x, label):
    logits = np.asarray(ours(x, training=False))
    diff = float(np.abs(logits - ref).max())
    print(f"\n{label}: max |logit diff| {diff:.2e}, max |logit| {np.abs(ref).max():.2f}, "
          f"logit std {ref.std():.2f}")
    assert ref.std(0).mean() > 0.5 * ref.std(), "the logits follow the image"
    # Relative to the largest logit, as `harness.FLOAT_REL` and test_mobilenet_v4.
    assert diff <= TOL * np.abs(ref).max()
    return diff


@pytest.mark.torch
@pytest.mark.parametrize("name,tag", _cases())
def test_timm_file_gives_timms_logits(name, tag, tmp_path):
    """A timm state dict saved as `.safetensors` loads through `weights=<path>` (the file
    builds the timm flavour) and gives timm's logits on raw 0-255 pixels."""
    torch, model, path, x = timm_case(tag, tmp_path)
    entry = registry.get_entry(name)
    ours = entry.build(weights=str(path), input_shape=(SIZE, SIZE, 3),
                       classifier_activation=None)
    assert_logits_match(ours, timm_logits(torch, model, x), x, tag)
    # Every timm tensor has a Keras home, and the file's normalization is the tag's.
    used = wl.load_state(ours, sources.TIMM.reader(path), sources.TIMM, entry.family)
    assert used == sorted(k for k in model.state_dict() if not k.endswith("num_batches_tracked"))
    norm = sources.flavour_for(entry.family, str(path)).normalization
    assert (norm.mean, norm.std) == (model.pretrained_cfg["mean"], model.pretrained_cfg["std"])


@pytest.mark.torch
def test_weight_sets_through_a_mirror(tmp_path, monkeypatch):
    """`weights="timm_ra4"` (inputs normalized by mean = std = 0.5), `"timm_miil"` (pixels /
    255) and `"timm"` (ImageNet's mean and std) fetch their files from a mirror and give timm's
    logits; the default "imagenet" stays keras.applications' flavour."""
    served = tmp_path / "served"
    served.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv(wl.MIRROR_ENV, served.as_uri())
    variant = {"alpha": 1.0, "minimalistic": False}
    for weights, tag in TAGS.items():
        file = manifest.find("MobileNetV3Large", variant, True, weights=weights)["file"]
        torch, model, path, x = timm_case(tag, served, file)
        ours = kl.MobileNetV3Large(weights=weights, classifier_activation=None)
        assert ours.get_layer("conv_bn").epsilon == 1e-5
        assert_logits_match(ours, timm_logits(torch, model, x), x, f"weights={weights!r}")
    # The ra4 file given by path builds the family's timm flavour (the file cannot tell its
    # tag): another normalization, which the flavour check refuses for the set's model.
    ra4 = sources.flavour_for("MobileNetV3Large", "timm_ra4", variant)
    assert ra4 is sources.TIMM.set_flavours["MobileNetV3Large", "inception"]
    assert ra4.normalization.mean == (0.5,) * 3 and ra4.bn == sources.TIMM_V3.bn
    assert sources.flavour_for("MobileNetV3Large", str(path)) is sources.TIMM_V3
    with pytest.raises(ValueError, match="input normalization"):
        flavour_check.check_flavour(ours, sources.TIMM, "MobileNetV3Large", path)
    flavour_check.check_flavour(ours, sources.TIMM, "MobileNetV3Large", path, ra4)
    with common.weights_not_loaded():
        default = kl.MobileNetV3Large()
    assert default.get_layer("conv_bn").epsilon == 1e-3  # keras.applications'


def test_sets_are_listed_and_imagenet_is_unchanged():
    for name, sets in SETS.items():
        assert sets <= set(kl.list_weights(name)), name
    assert kl.list_weights("mobilenet_v3_large_100")[0] == "imagenet"
    assert kl.list_weights("mobilenet_v3_small_050") == ["paddle", "timm"]
    assert kl.list_weights("mnasnet_100") == ["imagenet", "timm"]
    assert sources.flavour_for("MobileNetV3Large", "imagenet").source == "keras.applications"
    assert sources.flavour_for("MobileNetV3Small", "imagenet").source == "keras.applications"
    assert sources.flavour_for("MnasNet", "imagenet").source == "torchvision"
    for family in ("MobileNetV3Large", "MobileNetV3Small", "MnasNet"):
        assert sources.flavour_for(family, "timm") is sources.TIMM.flavours[family]
        assert sources.file_source("model.safetensors", family) is sources.TIMM


def test_manifest_entries():
    """One file per set and variant, at timm's hub address, with the set flavour's mean/std."""
    found = [e for e in manifest.entries() if e["source"] == "timm"
             and e["family"] in ("MobileNetV3Large", "MobileNetV3Small", "MnasNet")]
    assert sorted((e["family"], e["weights"], e["variant"]["alpha"]) for e in found) == [
        ("MnasNet", "timm", 1.0), ("MobileNetV3Large", "timm", 1.0),
        ("MobileNetV3Large", "timm_miil", 1.0), ("MobileNetV3Large", "timm_ra4", 1.0),
        ("MobileNetV3Small", "timm", 0.5),
        ("MobileNetV3Small", "timm", 0.75), ("MobileNetV3Small", "timm", 1.0)]
    for e in found:
        tag = e["file"].removesuffix(".safetensors")
        assert e["url"] == f"https://huggingface.co/timm/{tag}/resolve/main/model.safetensors"
        assert (e["format"], e["input_size"], e["include_top"]) == ("timm-safetensors", 224, True)
        flavour = sources.entry_flavour(e)
        assert flavour.bn == sources.TIMM.flavours[e["family"]].bn
        norm = flavour.normalization
        assert (tuple(e["mean"]), tuple(e["std"])) == (norm.mean, norm.std), tag
        assert sources.file_source(e["file"], e["family"]) is sources.TIMM


def test_embedded_normalization_is_timms():
    """Each set's flavour normalizes as its tag's `pretrained_cfg`."""
    _, timm = import_timm()
    for e in manifest.entries():
        if e["source"] == "timm" and e["family"] in ("MobileNetV3Large", "MobileNetV3Small",
                                                      "MnasNet"):
            cfg = timm.models.get_pretrained_cfg(e["file"].removesuffix(".safetensors"))
            norm = sources.entry_flavour(e).normalization
            assert (norm.mean, norm.std, norm.pixel_max) == (cfg.mean, cfg.std, 1.0), e["file"]
            assert (e["crop_pct"], e["interpolation"]) == (cfg.crop_pct, cfg.interpolation)


@pytest.mark.torch
def test_timm_files_go_to_their_family(tmp_path):
    """The Large name map would place every layer of a Small: the fewest rules decide.
    A timm file without a family goes to the model's own; a Small file into a Large fails."""
    torch, small, small_path, x = timm_case("mobilenetv3_small_100", tmp_path, count=4)
    large_path = tmp_path / "large.safetensors"
    timm_file(torch, import_timm()[1].create_model("mobilenetv3_large_100"), large_path)
    models = {family: getattr(kl, family)(weights=None, input_shape=(64, 64, 3))
              for family in ("MobileNetV3Large", "MobileNetV3Small", "MnasNet")}
    for family, model in models.items():
        assert sources.family_of(model, sources.TIMM) == family
    large_map = sources.TIMM.name_maps["MobileNetV3Large"]
    for layer in sources.weighted_layers(models["MobileNetV3Small"]):
        sources.state_prefix(sources.TIMM, "MobileNetV3Small", layer.name)
    assert len(sources.TIMM.name_maps["MobileNetV3Small"]) < len(large_map)
    # A timm-flavoured Small takes the Small file without being told its family.
    small_model = kl.MobileNetV3Small(weights=str(small_path), input_shape=(SIZE, SIZE, 3),
                                      classifier_activation=None)
    harness.randomize(small_model)
    wl.load_file(small_model, small_path)
    assert_logits_match(small_model, timm_logits(torch, small, x), x, "Small, no family")
    with pytest.raises(ValueError, match="same variant"):
        kl.MobileNetV3Large(weights=str(small_path))
    with pytest.raises(ValueError, match="same variant"):
        kl.MobileNetV3Small(weights=str(large_path))


@pytest.mark.torch
def test_timm_flavour_saves_and_reloads_in_safe_mode(tmp_path):
    torch, model, path, x = timm_case("mobilenetv3_large_100.ra_in1k", tmp_path, count=4)
    ours = kl.MobileNetV3Large(weights=str(path), input_shape=(SIZE, SIZE, 3),
                               classifier_activation=None)
    saved = tmp_path / "timm_v3.keras"
    ours.save(saved)
    loaded = keras.models.load_model(saved, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(ours(x)), atol=1e-6, rtol=0)
    assert flavour_check.flavour_mismatch(loaded, sources.TIMM_V3) is None


# Heavy: the default run exports both families in their default flavours (test_models_export),
# whose graphs differ from these only in batch-norm epsilon and the normalization's constants.
@pytest.mark.heavy
@pytest.mark.torch
@pytest.mark.parametrize("name,tag", [
    pytest.param("mobilenet_v3_large_100", "mobilenetv3_large_100", id="v3-large"),
    pytest.param("mnasnet_100", "mnasnet_100", id="mnasnet"),
])
def test_timm_flavour_exports(name, tag, tmp_path):
    """The harness's export check (float32 and int8 TFLite, ONNX) on the timm flavour, built
    by a file timm's code wrote (its kernels; batch norms and classifier trained-like)."""
    torch, timm = import_timm()
    path = timm_file(torch, timm.create_model(tag), tmp_path / f"{tag}.safetensors")
    measured = harness.run_export_test(registry.get_entry(name), tmp_path, SIZE,
                                       weights=str(path))
    print(f"\n{tag}: " + ", ".join(
        f"{kind} max rel diff {m['max_rel_diff']:.2g} cosine {m['cosine']:.4f}"
        for kind, m in measured.items()))

"""Named weight sets: weights=<set> through the manifest, list_weights, "name.set", CLI.

Most tests use a made-up source ("testsrc", `.npz` files, ShuffleNetV2 with its own
batch-norm epsilon) and a manifest of their own, so that they hold whatever sets
the real manifest gains; files are served from 127.0.0.1.
"""

import copy
import dataclasses
import hashlib
import json

import numpy as np
import pytest
from test_argument_bounds import assert_refused
from test_download_safety import models_dir, serve
from test_sources import _state_dict_of

import keras_lightnets as kl
from keras_lightnets import cli, registry
from keras_lightnets import weights as wl
from keras_lightnets.models import common
from keras_lightnets.weights import download, manifest, sources

FAMILY = "ShuffleNetV2"
VARIANT = {"alpha": 0.5, "activation": "relu"}
EPSILON = 2e-5  # the made-up flavour's, unlike torchvision's 1e-5: which one was built shows
TESTSET = "shufflenet_x0_5_testset.npz"
BYHAND = "shufflenet_x0_5_byhand.npz"
WHERE = "https://example.invalid/zoo (sign in, then 'Download')"


def _read_npz(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


FAKE = dataclasses.replace(
    sources.TORCHVISION, name="testsrc", formats=("test-npz",), suffixes=(".npz",),
    reader=_read_npz,
    flavours={FAMILY: dataclasses.replace(sources.TORCH, source="testsrc", bn_epsilon=EPSILON)},
    name_maps={FAMILY: sources.TORCHVISION.name_maps[FAMILY]},
)


def _entry(file, weights, url, family=FAMILY, variant=VARIANT, source="testsrc", **extra):
    return {"file": file, "family": family, "variant": dict(variant), "weights": weights,
            "input_size": 224, "include_top": True, "url": url, "hash": None,
            "format": "test-npz", "preprocessing": "as torchvision's", "classes": 1000,
            "top1": 50.0, "top1_source": "made up", "license": "none", "source": source,
            "origin": "this test", "params": 0, "macs": 0, **extra}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private Keras cache, no mirror, and the made-up source and manifest."""
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv(wl.MIRROR_ENV, raising=False)
    monkeypatch.delenv(download.TIMEOUT_ENV, raising=False)
    doc = {"about": "test", "entries": copy.deepcopy(manifest.entries(FAMILY, "imagenet")) + [
        _entry(TESTSET, "testset", f"https://example.invalid/{TESTSET}"),
        _entry(BYHAND, "byhand", None, download=WHERE),
        # A set whose source has no flavour of the family.
        _entry("mobilenet_orphan.pth", "orphan", None, family="MobileNet",
               variant={"alpha": 0.25}, source="torchvision", download=WHERE),
    ]}
    monkeypatch.setattr(manifest, "load_manifest", lambda: doc)
    monkeypatch.setitem(sources.SOURCES, "testsrc", FAKE)
    return home


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A made-up publisher's file for VARIANT, its bytes and the model they came from."""
    import harness

    ref = harness.randomize(kl.ShuffleNetV2(**VARIANT, weights=None), seed=3)
    path = tmp_path_factory.mktemp("published") / TESTSET
    np.savez(path, **_state_dict_of(ref, FAKE, FAMILY))
    return path.read_bytes(), ref


def _build(weights="testset", **kwargs):
    return kl.ShuffleNetV2(**VARIANT, weights=weights, input_shape=(64, 64, 3), **kwargs)


def assert_loaded(model, ref):
    for mine, theirs in zip(model.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def _epsilons(model):
    return {layer.epsilon for layer in model.layers if hasattr(layer, "epsilon")}


# -- resolution ------------------------------------------------------------------------------


def test_list_weights_imagenet_first_then_sorted(home):
    assert kl.list_weights("shufflenet_v2_050") == ["imagenet", "byhand", "testset"]
    assert kl.list_weights("shufflenet_v2_100") == ["imagenet"]
    assert kl.list_weights("shufflenet_v2_025") == []
    assert kl.list_weights("mobilenet_v1_025") == ["orphan"]
    with pytest.raises(ValueError, match="Unknown model name.*Received: name='nope'"):
        kl.list_weights("nope")


def test_real_manifest_sets():
    for name in registry.list_models():
        sets = kl.list_weights(name)
        assert sets[1:] == sorted(sets[1:]) and "imagenet" not in sets[1:], name
        entry = registry.get_entry(name)
        assert (sets[:1] == ["imagenet"]) == wl.has_imagenet_weights(entry.family, entry.variant)
    for name in ("mobilenet_v2_100", "mobilenet_v3_large_100"):
        assert {"imagenet", "torchvision", "torchvision_v2"} <= set(kl.list_weights(name))
    assert "torchvision" in kl.list_weights("mobilenet_v3_small_100")
    assert "torchvision" not in kl.list_weights("mobilenet_v3_small_075")
    found = manifest.find("MobileNetV2", {"alpha": 1.0}, False, weights="torchvision_v2")
    assert found["file"] == "mobilenet_v2-7ebf99e0.pth"  # a state dict serves no-top too
    assert manifest.find("MobileNetV2", {"alpha": 1.0}, True)["format"] == "keras-h5"
    large = manifest.find("MobileNetV3Large", {"alpha": 1.0, "minimalistic": False}, True,
                          weights="torchvision")
    assert large["url"] == "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth"
    assert large["hash"] == {"algorithm": "sha256", "value": "8738ca79", "prefix": True}


def test_a_set_builds_its_sources_flavour(home):
    """The set's entries name their source; the factory builds that source's flavour."""
    assert sources.flavour_for(FAMILY, "testset") is FAKE.flavours[FAMILY]
    assert sources.flavour_for(FAMILY, "imagenet") is sources.TORCH
    assert sources.flavour_for(FAMILY, "x.npz") is FAKE.flavours[FAMILY]
    with common.weights_not_loaded():  # no file fetched: there is neither mirror nor URL
        model = _build("byhand")
    assert _epsilons(model) == {EPSILON}
    assert _epsilons(_build(None)) == {1e-5}


@pytest.mark.parametrize("weights, match", [
    ("nope", "ShuffleNetV2 has no weight set 'nope'; its sets: imagenet, byhand, testset. "
             "Any other `weights` must be the path to an existing weights file."),
    ("orphan", "ShuffleNetV2 has no weight set 'orphan'; its sets: imagenet, byhand, testset"),
])
def test_unknown_set_lists_the_sets(home, weights, match):
    with pytest.raises(ValueError, match=f"{match}.* Received: weights='{weights}'$"):
        _build(weights)
    assert_refused(lambda: _build(weights), "weights")


def test_a_set_the_variant_lacks_lists_its_sets(home):
    with pytest.raises(ValueError, match=r"ShuffleNetV2\(alpha=1.0, activation='relu'\) has no "
                                         r"weights in the set 'testset'. Its weight sets: "
                                         r"imagenet. Received: weights='testset'$"):
        kl.ShuffleNetV2(alpha=1.0, weights="testset")
    assert_refused(lambda: kl.ShuffleNetV2(alpha=1.0, weights="testset"), "weights")
    with pytest.raises(ValueError, match="need torchvision's flavour of MobileNet, which this "
                                         "version does not build. Received: weights='orphan'"):
        kl.MobileNet(alpha=0.25, weights="orphan")


def test_real_sets_missing_from_a_variant():
    with pytest.raises(ValueError, match=r"MobileNetV3Small\(alpha=0.75, minimalistic=False\) "
                                         r"has no weights in the set 'torchvision'. Its weight "
                                         r"sets: imagenet"):
        kl.MobileNetV3Small(alpha=0.75, weights="torchvision")
    assert_refused(lambda: kl.MobileNetV3Small(alpha=0.75, weights="torchvision"), "weights")
    # Not a set's name, not a file.
    assert_refused(lambda: kl.MobileNetV2(weights="Torchvision"), "weights")


@pytest.mark.parametrize("kwargs, arg", [
    ({"classes": 10}, "classes"),
    ({"input_shape": (64, 64, 1)}, "input_shape"),
    ({"classifier_activation": "relu"}, "classifier_activation"),
])
def test_imagenet_checks_apply_to_every_set(home, kwargs, arg):
    build = lambda: kl.ShuffleNetV2(**VARIANT, weights="testset", **kwargs)  # noqa: E731
    assert_refused(build, arg)
    if arg == "classes":
        with pytest.raises(ValueError, match="If using `weights='testset'` with "
                                             "`include_top=True`, `classes` should be 1000"):
            build()


def test_family_checks_apply_to_every_set(monkeypatch):
    """MobileNet's and MobileNetV2's per-family checks (depth multiplier, the static input
    of the top) hold for any set, not only "imagenet"."""
    doc = {"entries": [
        _entry("mobilenet_x.h5", "otherset", None, family="MobileNet", variant={"alpha": 0.25},
               source="keras.applications", format="keras-h5"),
        _entry("mobilenet_v2_x.h5", "otherset", None, family="MobileNetV2",
               variant={"alpha": 1.0}, source="keras.applications", format="keras-h5")]}
    monkeypatch.setattr(manifest, "load_manifest", lambda: doc)
    assert_refused(lambda: kl.MobileNet(alpha=0.25, depth_multiplier=2, weights="otherset"),
                   "depth_multiplier")
    assert_refused(lambda: kl.MobileNetV2(input_shape=(96, 100, 3), weights="otherset"),
                   "input_shape")
    assert_refused(lambda: kl.MobileNet(alpha=0.5, weights="otherset"), "weights")


# -- the registry's "name.set" ------------------------------------------------------------------


def test_get_model_with_a_set_suffix(home, monkeypatch, published):
    data, ref = published
    with serve(monkeypatch, data):
        model = kl.get_model("shufflenet_v2_050.testset", input_shape=(64, 64, 3))
        assert_loaded(model, ref)
        assert _epsilons(model) == {EPSILON}
        same = kl.get_model("shufflenet_v2_050.testset", weights="testset",
                            input_shape=(64, 64, 3))
        assert_loaded(same, ref)
    with pytest.raises(ValueError, match="gives the weight set 'testset' and `weights` another"
                                         ".*Received: weights='imagenet'"):
        kl.get_model("shufflenet_v2_050.testset", weights="imagenet")
    with pytest.raises(ValueError, match="Model 'shufflenet_v2_050' has no weight set 'testst'; "
                                         "its sets: imagenet, byhand, testset. Did you mean "
                                         "'testset'.*Received: name='shufflenet_v2_050.testst'"):
        kl.get_model("shufflenet_v2_050.testst")
    with pytest.raises(ValueError, match="no weight set 'testset'; its sets: imagenet\\."):
        kl.get_model("shufflenet_v2_100.testset")
    with pytest.raises(ValueError, match="Unknown model name.*Received: name='nope.testset'"):
        kl.get_model("nope.testset")


def test_cli_list_weights(home, monkeypatch, capsys):
    def no_build(*args, **kwargs):
        raise AssertionError("list must not build models")

    monkeypatch.setattr(registry.ModelEntry, "build", no_build)
    assert cli.main(["list", "--weights", "--family", FAMILY]) == 0
    header, *rows, footer, note = capsys.readouterr().out.strip().splitlines()
    assert header.split()[-3:] == ["ImageNet", "weight", "sets"]
    assert "weights=SET" in note
    shown = {row.split()[0]: row.split()[-1] for row in rows}
    assert list(shown) == registry.list_models(FAMILY)
    assert shown["shufflenet_v2_050"] == "imagenet,byhand,testset"
    assert shown["shufflenet_v2_100"] == "imagenet"
    assert shown["shufflenet_v2_025"] == "-"
    assert cli.main(["list", "--family", FAMILY]) == 0
    plain = capsys.readouterr().out.strip().splitlines()
    assert plain[0].split()[-1] == "ImageNet" and len(plain) == len(rows) + 2


def test_cli_takes_name_dot_set(home, monkeypatch, published, capsys):
    data, _ = published
    with serve(monkeypatch, data):
        assert cli.main(["info", "shufflenet_v2_050.testset"]) == 0
    out = capsys.readouterr().out
    assert "Downloading data from http://127.0.0.1:" in out  # fetched through the set
    assert "\nshufflenet_v2_050: ShuffleNetV2 {'alpha': 0.5}\n" in out
    assert TESTSET in models_dir(home)
    assert cli.main(["info", "shufflenet_v2_050.testset", "--weights", "none"]) == 2
    assert "gives the weight set 'testset' and --weights another" in capsys.readouterr().err
    assert cli.main(["classify", "shufflenet_v2_050.nope", "x.jpg"]) == 2
    assert "its sets: imagenet, byhand, testset" in capsys.readouterr().err


# -- files without a URL, files without a hash ----------------------------------------------


def test_url_null_says_where_to_download_and_where_to_put_it(home, monkeypatch, published):
    data, ref = published
    with pytest.raises(wl.WeightsDownloadError) as info:
        _build("byhand")
    message = str(info.value)
    cached = home / "models" / BYHAND
    assert f"{BYHAND} (ShuffleNetV2, weights='byhand') cannot be downloaded automatically: " \
        f"{WHERE.rstrip('.')}. Download it by hand and place it at {cached}," in message
    assert WHERE in message and str(cached) in message and wl.MIRROR_ENV in message
    assert models_dir(home) == []  # nothing was written
    # The file placed by hand loads, and is recorded (trust on first use).
    cached.parent.mkdir()
    cached.write_bytes(data)
    assert_loaded(_build("byhand"), ref)
    assert models_dir(home) == [BYHAND, BYHAND + ".sha256"]
    assert (home / "models" / (BYHAND + ".sha256")).read_text().split()[0] == \
        hashlib.sha256(data).hexdigest()


def test_url_null_through_the_mirror(home, monkeypatch, published):
    data, ref = published
    with serve(monkeypatch, data):
        assert_loaded(_build("byhand"), ref)
    assert models_dir(home) == [BYHAND, BYHAND + ".sha256"]


def test_unhashed_set_is_trusted_on_first_use_and_refuses_a_changed_file(
        home, monkeypatch, published, tmp_path):
    data, ref = published
    with serve(monkeypatch, data):
        assert_loaded(_build(), ref)
    record = home / "models" / (TESTSET + ".sha256")
    assert record.read_text().split()[0] == hashlib.sha256(data).hexdigest()
    other = tmp_path / TESTSET
    import harness

    np.savez(other, **_state_dict_of(
        harness.randomize(kl.ShuffleNetV2(**VARIANT, weights=None), seed=4), FAKE, FAMILY))
    changed = other.read_bytes()
    # A changed cached file is refused, naming what to delete.
    cached = home / "models" / TESTSET
    cached.write_bytes(changed)
    monkeypatch.setenv(wl.MIRROR_ENV, "http://127.0.0.1:9")
    with pytest.raises(ValueError, match=f"Delete {cached} and {record}"):
        _build()
    # A changed download is refused and leaves nothing but the record.
    cached.unlink()
    with serve(monkeypatch, changed), pytest.raises(
            ValueError, match=f"differs from the one first downloaded.*Delete {record}"):
        _build()
    assert models_dir(home) == [TESTSET + ".sha256"]
    assert record.read_text().split()[0] == hashlib.sha256(data).hexdigest()


# -- the manifest's facts -------------------------------------------------------------------


def test_manifest_facts():
    doc = manifest.load_manifest()
    about = doc["about"]
    assert "PaddleClas, which publishes no checksums" in about
    assert "sha256 of the first file that loads is recorded" in about
    assert "counts the batch-norm moving statistics, which torchvision's num_params" in about
    v1 = {e["variant"]["alpha"]: (e["top1"], e["top1_source"])
          for e in manifest.entries("MobileNet", "imagenet") if e["input_size"] == 224}
    readme = "keras-applications README (100 minus the top-1 error it measured on keras' own files)"
    assert v1 == {0.25: (51.582, readme), 0.5: (64.292, readme), 0.75: (68.412, readme),
                  1.0: (70.424, readme)}
    tv = {(e["family"], e["weights"]): (e["file"], e["top1"], e["preprocessing"])
          for e in doc["entries"] if e["family"].startswith("MobileNetV") and
          e["source"] == "torchvision"}
    assert {k: v[:2] for k, v in tv.items()} == {
        ("MobileNetV2", "torchvision"): ("mobilenet_v2-b0353104.pth", 71.878),
        ("MobileNetV2", "torchvision_v2"): ("mobilenet_v2-7ebf99e0.pth", 72.154),
        ("MobileNetV3Large", "torchvision"): ("mobilenet_v3_large-8738ca79.pth", 74.042),
        ("MobileNetV3Large", "torchvision_v2"): ("mobilenet_v3_large-5c1a4163.pth", 75.274),
        ("MobileNetV3Small", "torchvision"): ("mobilenet_v3_small-047dcff4.pth", 67.668)}
    for (_, weights), (_, _, preprocessing) in tv.items():
        resize = 232 if weights == "torchvision_v2" else 256
        assert f"resize {resize}, centre crop 224" in preprocessing
    assert all(e["top1_source"] for e in doc["entries"])
    json.dumps(doc)  # plain JSON throughout


def test_entries_mean_and_std_are_their_flavours():
    """An entry stating the mean and std of its file's input is built with them: its source's
    flavour of the family or the set flavour it names (`flavour`)."""
    stated = [e for e in manifest.entries() if "mean" in e]
    assert len(stated) >= 18
    for e in stated:
        assert manifest.buildable(e), e["file"]
        norm = sources.entry_flavour(e).normalization
        assert (tuple(e["mean"]), tuple(e["std"])) == (norm.mean, norm.std), e["file"]
        assert norm.pixel_max == 1.0 and norm.order == "RGB" and norm.embedded, e["file"]
    named = [e for e in manifest.entries() if e.get("flavour")]
    assert named and all((e["family"], e["flavour"]) in sources.SOURCES[e["source"]].set_flavours
                         for e in named)


def test_a_set_flavour_is_built_per_variant():
    """One set ("timm" of MobileNetV4ConvSmall) with a flavour per width: the factory's variant
    picks it; without a variant, or for a path, the family's flavour."""
    base = sources.TIMM.flavours["MobileNetV4ConvSmall"]
    assert sources.flavour_for("MobileNetV4ConvSmall", "timm", {"alpha": 1.0}) is base
    half = sources.flavour_for("MobileNetV4ConvSmall", "imagenet", {"alpha": 0.5})
    assert half.normalization.mean == (0.5,) * 3 and half.bn == base.bn
    assert sources.flavour_for("MobileNetV4ConvSmall", "timm") is base
    assert sources.flavour_for("MobileNetV4ConvSmall", "x.safetensors", {"alpha": 0.5}) is base

"""megvii's ShuffleNet V1 checkpoints: its flavour of ShuffleNetV1 against its own code.

The oracle is megvii's reference implementation (megvii-model/ShuffleNet-Series,
ShuffleNetV1/network.py and blocks.py) in ../shared/reference/megvii_shufflenet_v1; the
tests that need it skip when it is absent. Checkpoints are written from it with random
weights, trained-like batch norms and logits of std 3, as megvii saved them (a
`state_dict` of `nn.DataParallel` keys).
"""

import dataclasses
import os
import pickle
import sys
import zipfile

import harness
import keras
import numpy as np
import pytest
from conftest import SHARED, sample_photos

import keras_lightnets as kl
from keras_lightnets import layers as kll
from keras_lightnets import registry
from keras_lightnets import weights as wl
from keras_lightnets.models import common
from keras_lightnets.weights import flavour_check, manifest, sources

REFERENCE = SHARED / "reference" / "megvii_shufflenet_v1"
FAMILY = "ShuffleNetV1"
# Published top-1 (100 - the top-1 error of megvii's README). Columns: groups, alpha, top-1.
TOP1 = {(3, 0.5): 57.3, (3, 1.0): 67.8, (3, 1.5): 71.6, (3, 2.0): 74.1,
        (8, 0.5): 58.8, (8, 1.0): 68.0, (8, 1.5): 71.0, (8, 2.0): 72.9}
# Parity cases: groups, alpha, input size, group_conv. The default run has one of each
# group count and each grouped-conv form; 224 keeps megvii's own AvgPool2d(7) head.
DEFAULT_CASES = [(3, 0.5, 224, "split"), (8, 0.5, 64, "split"), (3, 1.0, 64, "native")]
HEAVY_CASES = [(g, a, 96, "split") for g, a in TOP1
               if (g, a) not in {(c[0], c[1]) for c in DEFAULT_CASES}] + [(8, 1.0, 96, "native")]
CALIBRATION = 8  # photos that measure the batch norms; the next ones are compared
COMPARED = 4


def megvii_network():
    """megvii's `network` module (its folder on sys.path), or skip saying why."""
    torch = pytest.importorskip("torch", reason="torch is a dev dependency (pip install .[dev])")
    if not (REFERENCE / "network.py").is_file():
        pytest.skip(f"megvii's reference code is not available: {REFERENCE} (see SOURCE.md)")
    if str(REFERENCE) not in sys.path:
        sys.path.insert(0, str(REFERENCE))
    import network

    return torch, network


def _to_megvii_input(torch, rgb):
    """megvii's input: BGR pixels in [0, 255], NCHW, no normalization."""
    return torch.from_numpy(np.ascontiguousarray(rgb[..., ::-1].transpose(0, 3, 1, 2)))


def megvii_checkpoint(path, groups, alpha, size, photos, wrap=True, seed=0):
    """Writes a checkpoint of megvii's ShuffleNetV1 to `path`; returns the module.

    Random kernels (megvii's initialization, seeded); each batch norm gets a
    random scale, an offset of 0-1 times it and the statistics of its input
    measured on `photos` (one training-mode pass with momentum 1); the
    classifier is made blind to the mean feature and scaled so the logits have
    std `harness.LOGIT_STD`. Below 224 px megvii's AvgPool2d(7) head (a global
    average at 224) becomes the global average it stands for.
    """
    torch, network = megvii_network()
    torch.manual_seed(seed)
    net = network.ShuffleNetV1(input_size=size, model_size=f"{alpha}x", group=groups)
    if size != 224:
        net.globalpool = torch.nn.AdaptiveAvgPool2d(1)
    x = _to_megvii_input(torch, photos)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                # Offsets of 0-1 scale: larger ones make the pooled features mostly a
                # common mean, whose cancellation in the logits costs float32 digits.
                m.bias.copy_(m.weight * torch.rand(m.num_features, generator=gen))
                m.momentum = 1.0
        net.train()
        net(x)
        net.eval()
        linear = net.classifier[0]
        features = net.globalpool(net.features(net.maxpool(net.first_conv(x)))).flatten(1)
        mean = features.mean(0)
        # Without a bias, the mean feature would put a common offset on every logit.
        linear.weight.sub_(torch.outer(linear.weight @ mean, mean) / (mean @ mean))
        logits = net(x)
        linear.weight.mul_(harness.LOGIT_STD / logits.std())
    state = {"module." + k: v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state} if wrap else state, path)
    return net


def _parity(tmp_path, groups, alpha, size, group_conv):
    torch, _ = megvii_network()
    photos, _ = sample_photos(size, CALIBRATION + COMPARED)
    path = tmp_path / f"ShuffleNetV1_g{groups}_{alpha}x.pth.tar"
    # The `.pth` ending and a bare state dict (no "state_dict" entry) load as well.
    wrap = group_conv == "split"
    if not wrap:
        path = path.with_suffix("").with_suffix(".pth")
    net = megvii_checkpoint(path, groups, alpha, size, photos[:CALIBRATION], wrap=wrap)
    held = photos[CALIBRATION:]
    with torch.no_grad():
        expected = net(_to_megvii_input(torch, held)).numpy()
    model = kl.ShuffleNetV1(groups=groups, alpha=alpha, group_conv=group_conv,
                            weights=str(path), input_shape=(size, size, 3),
                            classifier_activation=None)
    # Every tensor is used: the trainable weights are megvii's parameters.
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == sum(
        p.numel() for p in net.parameters())
    got = np.asarray(model(held, training=False))
    assert np.std(expected) > 1.0, "degenerate reference logits"
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert (got.argmax(-1) == expected.argmax(-1)).all()
    print(f"g{groups} {alpha}x {size}px {group_conv}: max |diff| "
          f"{np.abs(got - expected).max():.2e}, logit std {np.std(expected):.2f}")
    return model


@pytest.mark.torch
@pytest.mark.parametrize("groups, alpha, size, group_conv", DEFAULT_CASES)
def test_megvii_checkpoint_gives_megvii_logits(tmp_path, groups, alpha, size, group_conv):
    model = _parity(tmp_path, groups, alpha, size, group_conv)
    # megvii's flavour: identity preprocessing, no classifier bias, inverse shuffles.
    assert model.get_layer("normalization").get_config()["scale"] == 1.0
    assert not model.get_layer("predictions").use_bias
    shuffle = model.get_layer("stage3_unit2_shuffle")
    assert shuffle.groups == model.get_layer("stage3_unit2_dw").output.shape[-1] // groups


@pytest.mark.torch
@pytest.mark.heavy
@pytest.mark.parametrize("groups, alpha, size, group_conv", HEAVY_CASES)
def test_megvii_checkpoint_every_width(tmp_path, groups, alpha, size, group_conv):
    _parity(tmp_path, groups, alpha, size, group_conv)


@pytest.mark.torch
@pytest.mark.parametrize("groups, alpha", list(TOP1))
def test_megvii_flavour_has_megvii_parameter_counts(groups, alpha):
    """The channel tables agree with megvii's at every published width."""
    torch, network = megvii_network()
    net = network.ShuffleNetV1(model_size=f"{alpha}x", group=groups)
    with common.weights_not_loaded():
        model = kl.ShuffleNetV1(groups=groups, alpha=alpha, group_conv="native", weights="megvii")
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == sum(
        p.numel() for p in net.parameters())
    assert model.count_params() == sum(t.numel() for k, t in net.state_dict().items()
                                       if not k.endswith("num_batches_tracked"))


def test_hostile_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "ShuffleNetV1_g3_0.5x.pth.tar"
    payload = pickle.dumps({"state_dict": {"module.first_conv.0.weight": Exploit()}},
                           protocol=2)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")
    with pytest.raises(ValueError, match=r"Cannot read .*ShuffleNetV1_g3_0.5x.pth.tar.* "
                                         r"Refusing to load (posix|os).system"):
        kl.ShuffleNetV1(groups=3, alpha=0.5, weights=str(path))
    assert not marker.exists()


def _layer_kinds(model):
    return sorted(type(layer).__name__ for layer in model.layers)


def test_weights_none_builds_the_paper_flavour():
    assert sources.flavour_for(FAMILY, None).source == "paper"
    assert sources.default_source(FAMILY) is sources.PAPER
    paper = kl.ShuffleNetV1(groups=8, alpha=0.5, group_conv="native")
    with common.weights_not_loaded():
        megvii = kl.ShuffleNetV1(groups=8, alpha=0.5, group_conv="native", weights="megvii")
    # Only the classifier's bias differs in size; the paper's shuffle precedes the
    # depthwise conv and interleaves `groups` groups.
    assert paper.count_params() == megvii.count_params() + 1000
    assert _layer_kinds(paper) == _layer_kinds(megvii)
    assert paper.get_layer("predictions").use_bias
    shuffle = paper.get_layer("stage2_unit2_shuffle")
    assert shuffle.groups == 8
    assert isinstance(shuffle.input._keras_history.operation, keras.layers.ReLU)
    shuffle = megvii.get_layer("stage2_unit2_shuffle")
    assert shuffle.groups == 48 // 8
    assert isinstance(shuffle.input._keras_history.operation, keras.layers.BatchNormalization)
    # Today's paper models: the registry's counts (closed form, tests/test_shufflenet.py).
    entry = registry.get_entry("shufflenet_v1_g8_050")
    assert paper.count_params() == harness.expected_params(entry)["total_params"]


def test_the_paper_model_refuses_megvii_files(tmp_path):
    path = tmp_path / "ShuffleNetV1_g3_0.5x.pth.tar"
    path.write_bytes(b"never read: the flavour is checked first")
    paper = kl.ShuffleNetV1(groups=3, alpha=0.5, group_conv="native", input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="is megvii's, for its flavour of ShuffleNetV1, .*"
                                         "input normalization"):
        wl.load_file(paper, path)
    bare = kl.ShuffleNetV1(groups=3, alpha=0.5, group_conv="native",
                           include_preprocessing=False, input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="classifier 'predictions' is dense \\(bias True\\)"):
        wl.load_file(bare, path)
    bare = kl.ShuffleNetV1(groups=3, alpha=0.5, group_conv="native", include_top=False,
                           include_preprocessing=False, input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="channel shuffle 'stage2_unit1_shuffle' precedes"):
        wl.load_file(bare, path)


def test_file_source_picks_megvii_for_shufflenet_v1_files():
    for name in ("0.5x.pth.tar", "ShuffleNetV1_g3_1.0x.PTH.TAR", "snet.pth"):
        assert sources.file_source(name, FAMILY) is sources.MEGVII
        assert sources.flavour_for(FAMILY, name) is sources.MEGVII.flavours[FAMILY]
    assert sources.file_source("x.pth", "ShuffleNetV2") is sources.TORCHVISION
    assert sources.file_source("x.pth") is sources.TORCHVISION  # first in precedence
    assert sources.file_source("x.pth.tar") is sources.MEGVII
    flavour = sources.MEGVII.flavours[FAMILY]
    assert (flavour.shuffle_order, flavour.shuffle_after_depthwise) == ("inverse", True)
    assert (flavour.classifier, flavour.classifier_bias) == ("dense", False)
    assert flavour.normalization.order == "BGR" and flavour.normalization.scale_offset() == (
        1.0, 0.0)
    assert flavour.bn == {"epsilon": 1e-5, "momentum": 0.9}
    assert sources.MEGVII.key_prefixes == ("module.",)


def test_name_map_gives_megvii_module_paths():
    with common.weights_not_loaded():
        model = kl.ShuffleNetV1(groups=3, alpha=0.5, weights="megvii", input_shape=(64, 64, 3))
    prefixes = {layer.name: sources.state_prefix(sources.MEGVII, FAMILY, layer.name)
                for layer in sources.weighted_layers(model)}
    assert prefixes["conv1"] == "first_conv.0" and prefixes["conv1_bn"] == "first_conv.1"
    assert prefixes["stage2_unit1_gconv1"] == "features.0.branch_main_1.0"
    assert prefixes["stage3_unit1_gconv2_g2"] == "features.4.branch_main_2.0"
    assert prefixes["stage4_unit4_dw_bn"] == "features.15.branch_main_1.4"
    assert prefixes["predictions"] == "classifier.0"
    assert sources.family_of(model, sources.MEGVII) == FAMILY
    assert flavour_check.flavour_mismatch(model, sources.MEGVII.flavours[FAMILY]) is None
    changed = dataclasses.replace(sources.MEGVII.flavours[FAMILY], classifier_bias=True)
    assert flavour_check.flavour_mismatch(model, changed)


@pytest.mark.torch
def test_grouped_tensor_of_another_variant_is_refused():
    """A split part reads its slice of the grouped tensor only when the groups fit."""
    _, network = megvii_network()
    state = network.ShuffleNetV1(model_size="0.5x", group=3).state_dict()
    with common.weights_not_loaded():
        model = kl.ShuffleNetV1(groups=3, alpha=0.5, weights="megvii", input_shape=(64, 64, 3))
    layer = model.get_layer("stage2_unit2_gconv2_g2")
    cin, cout = layer.kernel.shape[2], layer.kernel.shape[3]
    state["features.1.branch_main_2.0.weight"] = np.zeros((2 * cout, cin, 1, 1))
    with pytest.raises(ValueError, match="holds 2 groups of 40 output channels, but Keras "
                                         "layer 'stage2_unit2_gconv2_g2' is part 2"):
        wl.load_state(model, state, sources.MEGVII, FAMILY)


def test_manifest_entries_are_the_megvii_set():
    found = manifest.entries(FAMILY, weights="megvii")
    assert sorted((e["variant"]["groups"], e["variant"]["alpha"]) for e in found) == sorted(TOP1)
    assert manifest.entries(FAMILY, weights="imagenet") == []  # None: the paper flavour
    for e in found:
        variant = (e["variant"]["groups"], e["variant"]["alpha"])
        assert e["top1"] == TOP1[variant] and e["top1_source"]
        assert e["source"] == "megvii" and e["weights"] == "megvii"
        assert e["format"] in sources.MEGVII.formats
        assert e["url"] is None and e["hash"] is None
        assert "1drv.ms" in e["download"] and "pan.baidu.com" in e["download"]
        assert f"Group{variant[0]}/models/{variant[1]}x.pth.tar" in e["download"]
        assert sources.file_source(e["file"], FAMILY) is sources.MEGVII
        assert (e["input_size"], e["include_top"], e["classes"]) == (224, True, 1000)
        assert e["license"] == "MIT"
    # megvii's README: FLOPs 38M, 138M, 292M, 524M (g3); 40M, 138M, 290M, 522M (g8).
    macs = {(e["variant"]["groups"], e["variant"]["alpha"]): e["macs"] for e in found}
    assert [round(macs[3, a] / 1e6) for a in (0.5, 1.0, 1.5, 2.0)] == [38, 137, 292, 524]
    assert [round(macs[8, a] / 1e6) for a in (0.5, 1.0, 1.5, 2.0)] == [40, 138, 290, 522]


@pytest.mark.heavy
def test_megvii_flavour_exports(tmp_path):
    class MegviiEntry:
        """The registry entry, built in megvii's flavour (no file loaded)."""

        def __init__(self, entry):
            self.entry = entry

        def __getattr__(self, name):
            return getattr(self.entry, name)

        def build(self, **kwargs):
            return self.entry.build(**{**kwargs, "weights": "megvii"})

    entry = MegviiEntry(registry.get_entry("shufflenet_v1_g3_050"))
    with common.weights_not_loaded():
        measured = harness.run_export_test(entry, tmp_path, input_size=96)
    assert set(measured) == {"float32", "onnx", "int8"}


def test_megvii_model_saves_and_reloads_in_safe_mode(tmp_path):
    with common.weights_not_loaded():
        model = kl.ShuffleNetV1(groups=3, alpha=0.5, group_conv="native", weights="megvii",
                                input_shape=(64, 64, 3), classifier_activation=None)
    harness.randomize(model)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    path = tmp_path / "megvii.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6, rtol=0)
    assert isinstance(loaded.get_layer("stage2_unit1_shuffle"), kll.ChannelShuffle)


def test_weights_megvii_loads_the_placed_file_or_says_where_to_get_it(tmp_path, monkeypatch):
    """`weights="megvii"`: the file placed in the Keras cache (or served by the mirror)
    loads; a missing one is an error naming megvii's download links and where to put it."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv(wl.MIRROR_ENV, raising=False)
    kwargs = {"groups": 8, "alpha": 0.5, "group_conv": "native", "input_shape": (64, 64, 3)}
    with pytest.raises(wl.WeightsDownloadError, match=(
            r"ShuffleNetV1_g8_0.5x.pth.tar \(ShuffleNetV1, weights='megvii'\) cannot be "
            r"downloaded automatically: .*1drv.ms.*pan.baidu.com.*Group8/models/0.5x.pth.tar.*"
            r"place it at .*keras_home/models/ShuffleNetV1_g8_0.5x.pth.tar")):
        kl.ShuffleNetV1(weights="megvii", **kwargs)
    with pytest.raises(ValueError, match="ShuffleNetV1\\(groups=1, alpha=1.0\\) has no weights "
                                         "in the set 'megvii'"):
        kl.ShuffleNetV1(groups=1, weights="megvii")
    photos, _ = sample_photos(64, 4)
    served = tmp_path / "served"
    served.mkdir()
    net = megvii_checkpoint(served / "ShuffleNetV1_g8_0.5x.pth.tar", 8, 0.5, 64, photos)
    torch, _ = megvii_network()
    with torch.no_grad():
        expected = net(_to_megvii_input(torch, photos)).numpy()
    monkeypatch.setenv(wl.MIRROR_ENV, served.as_uri())
    model = kl.ShuffleNetV1(weights="megvii", classifier_activation=None, **kwargs)
    np.testing.assert_allclose(np.asarray(model(photos)), expected, atol=1e-4, rtol=0)
    assert (home / "models" / "ShuffleNetV1_g8_0.5x.pth.tar").is_file()  # cached

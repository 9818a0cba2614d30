"""SqueezeNet and MnasNet against torchvision's own model code, and real SqueezeNet weights."""

import harness
import keras
import numpy as np
import pytest
from conftest import WEIGHTS, import_torchvision, randomize_torch_bn, sample_photos, shared_file

import keras_lightnets as kl
from keras_lightnets import imagenet, registry
from keras_lightnets.models import mnasnet, squeezenet
from keras_lightnets.weights import load_torch_state_dict

TOL = 1e-4
# The paper's simple bypass wraps these fire modules (paper numbering, fire2 ... fire9).
PAPER_BYPASS_FIRES = {3, 5, 7, 9}
CAFFE_BGR_MEAN = np.array([104.0, 117.0, 123.0], "float32")


def _torch_input(torch, x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _torch_normalize(x):
    # torchvision's transform on [0, 255] RGB pixels: x / 255, then ImageNet mean and std.
    mean = np.array(imagenet.TORCH_MEAN, "float32")
    std = np.array(imagenet.TORCH_STD, "float32")
    return ((x / 255.0 - mean) / std).astype("float32")


def _randomize_torch_biases(torch, module, seed=1):
    # torchvision initialises conv biases to zero; random ones prove the bias wiring.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)
    return module.eval()


def _all_tensors(state_dict):
    return sorted(k for k in state_dict if not k.endswith("num_batches_tracked"))


# --- SqueezeNet -----------------------------------------------------------------------


def _paper_fire_numbers(tv_squeezenet, torch_fire):
    """`{features index: paper fire number}` from torchvision's module layout."""
    fires = [i for i, m in enumerate(tv_squeezenet.features) if isinstance(m, torch_fire)]
    return {index: number for number, index in enumerate(fires, start=2)}


def _torch_squeezenet_logits(torch, tv, x, bypass_fires=()):
    """torchvision's forward; with `bypass_fires`, the identity added around those."""
    with torch.no_grad():
        h = _torch_input(torch, x)
        for index, module in enumerate(tv.features):
            out = module(h)
            if index in bypass_fires:
                assert out.shape == h.shape, f"fire at features.{index} changes shape"
                out = out + h
            h = out
        features = h
        logits = torch.flatten(tv.classifier(h), 1)
    return logits.numpy(), features.numpy().transpose(0, 2, 3, 1)


# Columns: version, bypass, input_shape the model is built for, input sizes fed.
# 64 and 67 make the ceil-mode pools pad (1.0 at 64, 1.1 at 67) and not pad; 227 is Caffe's.
SQUEEZENET_CASES = [
    ("1.0", None, (64, 64, 3), [(64, 64)]),
    ("1.0", None, (67, 67, 3), [(67, 67)]),
    ("1.0", None, None, [(64, 64), (67, 67), (64, 67)]),
    ("1.1", None, (67, 67, 3), [(67, 67)]),
    ("1.1", None, (64, 67, 3), [(64, 67)]),
    ("1.1", None, (227, 227, 3), [(227, 227)]),
    ("1.1", None, None, [(64, 64), (67, 67), (67, 64)]),
    ("1.0", "simple", None, [(64, 64), (67, 67)]),
    ("1.1", "simple", None, [(64, 64), (67, 67)]),
]


@pytest.mark.torch
@pytest.mark.parametrize("version,bypass,input_shape,sizes", SQUEEZENET_CASES,
                         ids=[f"{v}-{b}-{s and s[0]}x{s and s[1]}"
                              for v, b, s, _ in SQUEEZENET_CASES])
def test_squeezenet_matches_torchvision(version, bypass, input_shape, sizes):
    torch, tvm = import_torchvision()
    from torchvision.models.squeezenet import Fire

    tv = _randomize_torch_biases(torch, getattr(tvm, f"squeezenet{version.replace('.', '_')}")())
    numbers = _paper_fire_numbers(tv, Fire)
    bypass_fires = {i for i, n in numbers.items() if n in PAPER_BYPASS_FIRES} if bypass else set()

    kw = dict(version=version, bypass=bypass, weights=None, input_shape=input_shape)
    ours = kl.SqueezeNet(classifier_activation=None, **kw)
    headless = kl.SqueezeNet(include_top=False, **kw)
    used = load_torch_state_dict(ours, tv.state_dict())
    assert used == _all_tensors(tv.state_dict()), "every torchvision tensor has a Keras home"
    load_torch_state_dict(headless, tv.state_dict())
    # The bypass sits exactly around paper fire3, 5, 7 and 9, in both versions.
    adds = {layer.name for layer in ours.layers if isinstance(layer, keras.layers.Add)}
    assert adds == {f"features_{i}_bypass" for i in bypass_fires}

    rng = np.random.default_rng(0)
    for rows, cols in sizes:
        x = rng.uniform(0, 255, (2, rows, cols, 3)).astype("float32")
        ref_logits, ref_features = _torch_squeezenet_logits(
            torch, tv, _torch_normalize(x), bypass_fires)
        logits = np.asarray(ours(x, training=False))
        features = np.asarray(headless(x, training=False))
        assert features.shape == ref_features.shape, (rows, cols)
        diff = float(np.abs(logits - ref_logits).max())
        print(f"SqueezeNet {version} bypass={bypass} built {input_shape} fed {rows}x{cols}: "
              f"max |logit diff| {diff:.2e}, max |logit| {np.abs(ref_logits).max():.2f}")
        assert diff < TOL
        assert np.count_nonzero(ref_logits) > ref_logits.size // 4, "the ReLU'd logits are alive"
        np.testing.assert_allclose(features, ref_features, atol=TOL, rtol=0)


def test_squeezenet_ceil_pools_pad_only_when_needed():
    # PyTorch ceil mode on a 3x3/2 pool needs one more row/col exactly when the size is even.
    model = kl.SqueezeNet(version="1.1", weights=None, input_shape=(67, 66, 3))
    pads = {layer.name: tuple(map(tuple, layer.padding)) for layer in model.layers
            if isinstance(layer, keras.layers.ZeroPadding2D)}
    # 67x66 -> conv1 33x32 -> pool 16x16 -> pool 8x8 -> pool 4x4.
    assert pads == {"features_2_pad": ((0, 0), (0, 1)), "features_5_pad": ((0, 1), (0, 1)),
                    "features_8_pad": ((0, 1), (0, 1))}
    assert model.get_layer("features_8").output.shape == (None, 4, 4, 256)
    dynamic = kl.SqueezeNet(version="1.1", weights=None)
    assert sum(isinstance(layer, keras.layers.ZeroPadding2D) for layer in dynamic.layers) == 3


def test_squeezenet_bypass_fires_and_params():
    for version in squeezenet.VERSIONS:
        rows = squeezenet.decode_features(version, "simple")
        fires = [(index, around) for index, row, around in rows if row != squeezenet.POOL]
        numbers = {number for number, (_, around) in enumerate(fires, start=2) if around}
        assert numbers == PAPER_BYPASS_FIRES, version
        plain = kl.SqueezeNet(version=version, weights=None)
        bypassed = kl.SqueezeNet(version=version, bypass="simple", weights=None)
        for layer in bypassed.layers:
            if isinstance(layer, keras.layers.Add):
                a, b = layer.input
                assert tuple(a.shape) == tuple(b.shape), layer.name
        # The identity bypass adds no weights: the plain model's exact counts.
        assert bypassed.count_params() == plain.count_params()
        entry = registry.get_entry(f"squeezenet_{version.replace('.', '_')}_bypass")
        assert harness.reference_row(entry)["trainable_params"] == plain.count_params()


def test_squeezenet_layer_names_and_head():
    model = kl.SqueezeNet(version="1.1", weights=None, classifier_activation=None)
    names = [layer.name for layer in model.layers]
    for name in ("normalization", "features_0", "features_3_squeeze", "features_3_expand1x1",
                 "features_3_expand3x3", "features_12_expand3x3", "classifier_1"):
        assert name in names
    # torchvision's head order: dropout, conv, ReLU, average.
    assert names[-5:] == ["classifier_0", "classifier_1", "classifier_2", "classifier_3",
                          "predictions"]
    assert model.name == "squeezenet_1_1"
    assert kl.SqueezeNet(version="1.0", bypass="simple", weights=None).name == \
        "squeezenet_1_0_bypass"
    assert model.input.shape == (None, None, None, 3)


def test_squeezenet_argument_checks():
    with pytest.raises(ValueError, match="Received: version='1.2'"):
        kl.SqueezeNet(version="1.2", weights=None)
    with pytest.raises(ValueError, match="Received: bypass='complex'"):
        kl.SqueezeNet(bypass="complex", weights=None)
    with pytest.raises(ValueError, match="Received: bypass='simple'"):
        kl.SqueezeNet(bypass="simple", weights="imagenet")
    with pytest.raises(ValueError, match="Received: classes=10"):
        kl.SqueezeNet(weights="imagenet", classes=10)


def _caffe_state_dict(npz, torch, tv_squeezenet, torch_fire):
    """The Caffe SqueezeNet 1.1 tensors under torchvision module paths.

    conv1 is the first conv of `features`, fire2 ... fire9 its Fire modules in
    order, conv10 the conv of `classifier`.
    """
    def convs(seq):
        return [i for i, m in enumerate(seq) if isinstance(m, torch.nn.Conv2d)]

    (conv1,), (conv10,) = convs(tv_squeezenet.features), convs(tv_squeezenet.classifier)
    fires = [i for i, m in enumerate(tv_squeezenet.features) if isinstance(m, torch_fire)]
    caffe = {"conv1": f"features.{conv1}", "conv10": f"classifier.{conv10}"}
    for number, index in enumerate(fires, start=2):
        for caffe_name, torch_name in (("squeeze1x1", "squeeze"), ("expand1x1", "expand1x1"),
                                       ("expand3x3", "expand3x3")):
            caffe[f"fire{number}_{caffe_name}"] = f"features.{index}.{torch_name}"
    state = {}
    for caffe_name, torch_name in caffe.items():
        state[f"{torch_name}.weight"] = npz[f"{caffe_name}_W"]
        state[f"{torch_name}.bias"] = npz[f"{caffe_name}_b"]
    assert sorted(state) == _all_tensors(tv_squeezenet.state_dict())
    return state


@pytest.mark.torch
def test_real_squeezenet_1_1_caffe_weights_classify_like_torchvision():
    path = shared_file(WEIGHTS / "squeezenet_v1.1_caffe_fp32.npz")
    torch, tvm = import_torchvision()
    from torchvision.models.squeezenet import Fire

    tv = tvm.squeezenet1_1().eval()
    with np.load(path) as npz:
        state = _caffe_state_dict(npz, torch, tv, Fire)
    tv.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    ours = kl.SqueezeNet(version="1.1", weights=None, include_preprocessing=False,
                         input_shape=(227, 227, 3))
    load_torch_state_dict(ours, state)

    x, y = sample_photos(227)
    # Caffe input: BGR, minus the per-channel mean, no scaling.
    x = np.ascontiguousarray(x[..., ::-1])
    x -= CAFFE_BGR_MEAN
    p_ours = ours.predict(x, batch_size=50, verbose=0)
    # Channels-last memory is the fast layout for oneDNN's CPU convolutions (same model code).
    tv = tv.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        p_ref = np.concatenate([
            tv(_torch_input(torch, x[i:i + 100]).contiguous(memory_format=torch.channels_last))
            .softmax(1).numpy()
            for i in range(0, len(x), 100)
        ])
    top1_ours = float((p_ours.argmax(1) == y).mean())
    top1_ref = float((p_ref.argmax(1) == y).mean())
    print(f"SqueezeNet 1.1 (Caffe weights) top-1 on the {len(y)} sample photos at 227: "
          f"ours {top1_ours:.3f}, torchvision {top1_ref:.3f}; "
          f"max |prob diff| {np.abs(p_ours - p_ref).max():.2e}")
    assert abs(top1_ours - top1_ref) <= 0.005
    assert top1_ours > 0.6, "the real weights are not wired correctly"
    np.testing.assert_allclose(p_ours, p_ref, atol=1e-4)
    right = np.flatnonzero(p_ours.argmax(1) == y)[:20]
    decoded = squeezenet.decode_predictions(p_ours[right], top=1)
    index = imagenet.class_index()
    assert [d[0][0] for d in decoded] == [index[int(y[i])][0] for i in right]


# --- MnasNet --------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("alpha", [0.5, 0.75, 1.0, 1.3, 0.35])
def test_mnasnet_matches_torchvision(alpha):
    torch, tvm = import_torchvision()
    from torchvision.models.mnasnet import MNASNet, _InvertedResidual

    tv = randomize_torch_bn(MNASNet(alpha))
    ours = kl.MnasNet(alpha=alpha, weights=None, input_shape=(64, 64, 3),
                      classifier_activation=None)
    used = load_torch_state_dict(ours, tv.state_dict())
    assert used == _all_tensors(tv.state_dict()), "every torchvision tensor has a Keras home"
    # Identity shortcuts exactly where torchvision applies its residual.
    residual = [name for name, m in tv.named_modules()
                if isinstance(m, _InvertedResidual) and m.apply_residual]
    adds = [layer.name for layer in ours.layers if isinstance(layer, keras.layers.Add)]
    assert adds == [f"{name.replace('.', '_')}_add" for name in residual]

    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    with torch.no_grad():
        ref = tv(_torch_input(torch, _torch_normalize(x))).numpy()
    logits = np.asarray(ours(x, training=False))
    diff = float(np.abs(logits - ref).max())
    print(f"MnasNet {alpha}: max |logit diff| {diff:.2e}, max |logit| {np.abs(ref).max():.2f}")
    assert diff < TOL


def test_mnasnet_rounding_is_torchvisions():
    _, _ = import_torchvision()
    from torchvision.models.mnasnet import _get_depths, _round_to_multiple_of

    for value in np.arange(1.0, 600.0, 0.25):
        assert mnasnet.round_depth(value) == _round_to_multiple_of(value, 8, 0.9), value
    # Widths without weights (the parity tests cover the others through tensor shapes).
    for alpha in (0.35, 1.4):
        model = kl.MnasNet(alpha=alpha, weights=None, include_top=False)
        depths = _get_depths(alpha)
        assert model.get_layer("layers_0").filters == depths[0]
        assert model.get_layer("layers_6").filters == depths[1]
        assert [model.get_layer(f"layers_{8 + s}_0_layers_6").filters for s in range(6)] == \
            depths[2:]


def test_mnasnet_uses_the_shared_inverted_residual_names():
    model = kl.MnasNet(weights=None)
    names = {layer.name for layer in model.layers}
    assert {"layers_0", "layers_3", "layers_7", "layers_8_0_layers_0", "layers_8_0_layers_3_pad",
            "layers_13_0_layers_7", "layers_14", "layers_15", "classifier_1"} <= names
    assert model.name == "mnasnet_100"
    assert model.input.shape == (None, None, None, 3)
    bn = model.get_layer("layers_8_0_layers_1")
    assert (bn.epsilon, bn.momentum) == (1e-5, 0.9997)


def test_mnasnet_argument_checks():
    with pytest.raises(ValueError, match="Received: alpha=0.35"):
        kl.MnasNet(alpha=0.35, weights="imagenet")
    with pytest.raises(ValueError, match="Received: alpha=0"):
        kl.MnasNet(alpha=0, weights=None)
    with pytest.raises(ValueError, match="Received: dropout_rate=1.0"):
        kl.MnasNet(dropout_rate=1.0, weights=None)
    with pytest.raises(ValueError, match="Received: classifier_activation='relu'"):
        kl.MnasNet(weights="imagenet", classifier_activation="relu")


def test_preprocess_input_is_identity_and_decode_predictions():
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    preds = np.eye(1000, dtype="float32")[[1, 999]]
    for module in (squeezenet, mnasnet):
        assert module.preprocess_input(x) is x
        decoded = module.decode_predictions(preds, top=1)
        assert [d[0][0] for d in decoded] == ["n01443537", "n15075141"]

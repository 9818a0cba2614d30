"""ShuffleNet V1 and V2: torchvision parity, paper complexity, group-conv forms, TFLite.

Parameter counts and MACs here are computed in closed form from the papers'
tables, independently of the package; `harness.FAMILY_HOOKS` points the
generic registry test at `expected_params` for the variants complexity.json
does not list.
"""

import json

import harness
import keras
import numpy as np
import pytest
from conftest import COMPLEXITY, import_torchvision, randomize_torch_bn, shared_file

import keras_lightnets as kl
from keras_lightnets import imagenet, registry
from keras_lightnets.models import shufflenet_v1, shufflenet_v2
from keras_lightnets.weights import load_torch_state_dict

# ShuffleNet V2 output channels (paper Table 5, torchvision; 0.25x and 0.33x from
# PaddleClas). Columns: stage2, stage3, stage4, conv5. Stem 24, repeats 4/8/4.
V2_CHANNELS = {
    0.25: (24, 48, 96, 512),
    0.33: (32, 64, 128, 512),
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}
# ShuffleNet V1 stage-2 channels: paper Table 1 at 1x, times s, rounded by hand to
# a multiple of 4g (the bottleneck, a quarter, splits into g groups).
# Columns: s = 0.25, 0.5, 1.0, 1.5, 2.0.
V1_STAGE2 = {
    1: (36, 72, 144, 216, 288),
    2: (48, 104, 200, 304, 400),
    3: (60, 120, 240, 360, 480),
    4: (64, 144, 272, 416, 544),
    8: (96, 192, 384, 576, 768),
}
V1_ALPHAS = (0.25, 0.5, 1.0, 1.5, 2.0)
# Stems reproducing the paper's Table 2 complexities (g=8 rounds 12 up to 16).
V1_STEM = {0.25: 12, 0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}
CLASSES = 1000
V2_ENTRIES = [registry.get_entry(n) for n in kl.list_models("ShuffleNetV2")]
V1_ENTRIES = [registry.get_entry(n) for n in kl.list_models("ShuffleNetV1")]
TORCH_MEAN = np.array([0.485, 0.456, 0.406])
TORCH_STD = np.array([0.229, 0.224, 0.225])


def _counts(weights, bn_channels, head):
    # Batch norm: gamma and beta train, the moving mean and variance do not.
    return {
        "trainable_params": weights + 2 * bn_channels,
        "total_params": weights + 4 * bn_channels,
        "no_top_total_params": weights - head + 4 * bn_channels,
    }


def v2_complexity(alpha, size=224):
    """Closed-form parameter counts and MACs of ShuffleNet V2 at `alpha`."""
    *stages, last = V2_CHANNELS[alpha]
    hw = size // 2
    weights, bn, macs = 27 * 24, 24, hw * hw * 27 * 24
    hw //= 2  # max pool
    cin = 24
    for out, repeats in zip(stages, (4, 8, 4), strict=True):
        half = out // 2
        hw //= 2
        # (weights, output pixels) per conv. Stride 2: branch 1 (3x3/2 dw, 1x1) and
        # branch 2 (1x1 at the input resolution, 3x3/2 dw, 1x1) both on the input.
        unit = [(9 * cin, hw * hw), (cin * half, hw * hw), (cin * half, 4 * hw * hw),
                (9 * half, hw * hw), (half * half, hw * hw)]
        # Stride 1: branch 2 on half the channels.
        unit += [(half * half, hw * hw), (9 * half, hw * hw), (half * half, hw * hw)] * (
            repeats - 1)
        weights += sum(w for w, _ in unit)
        macs += sum(w * pixels for w, pixels in unit)
        bn += cin + 4 * half + 3 * half * (repeats - 1)
        cin = out
    head = last * CLASSES + CLASSES
    weights += cin * last + head
    bn += last
    macs += hw * hw * cin * last + last * CLASSES
    return {**_counts(weights, bn, head), "macs": macs}


def v1_complexity(groups, alpha, size=224):
    """Closed-form parameter counts and MACs of ShuffleNet V1 (paper Tables 1, 2)."""
    stem = V1_STEM[alpha]
    stem += -stem % groups
    base = V1_STAGE2[groups][V1_ALPHAS.index(alpha)]
    hw = size // 2
    weights, bn, macs = 27 * stem, stem, hw * hw * 27 * stem
    hw //= 2  # max pool
    cin = stem
    for stage, repeats in enumerate((4, 8, 4)):
        out = base * 2**stage
        mid = out // 4
        for i in range(repeats):
            first_groups = 1 if stage == 0 and i == 0 else groups
            branch = out - cin if i == 0 else out
            hw_in, hw = hw, hw // 2 if i == 0 else hw
            layers = [(cin * mid // first_groups, hw_in * hw_in), (9 * mid, hw * hw),
                      (mid * branch // groups, hw * hw)]
            weights += sum(w for w, _ in layers)
            macs += sum(w * pixels for w, pixels in layers)
            bn += 2 * mid + branch
            cin = out
    head = cin * CLASSES + CLASSES
    return {**_counts(weights + head, bn, head), "macs": macs + cin * CLASSES}


def expected_params(entry):
    """Counts for a registry entry with no complexity.json row (see harness)."""
    if entry.family == "ShuffleNetV2":
        return v2_complexity(entry.kwargs["alpha"])
    return v1_complexity(entry.kwargs["groups"], entry.kwargs["alpha"])


def _complexity():
    with open(shared_file(COMPLEXITY)) as f:
        return json.load(f)


def _torch_reference_v2(models, torch, alpha, activation):
    """torchvision's ShuffleNetV2 at `alpha`, random weights, non-trivial BN."""
    if alpha in (0.5, 1.0, 1.5, 2.0):
        module = getattr(models, f"shufflenet_v2_x{str(alpha).replace('.', '_')}")(weights=None)
    else:  # PaddleClas widths, on torchvision's model code
        module = models.shufflenetv2.ShuffleNetV2([4, 8, 4], [24, *V2_CHANNELS[alpha]])
    if activation == "swish":
        _replace_relu(module, torch.nn.SiLU)
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            # Unit-gain weights keep logits O(1) through the 17 units.
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
    return randomize_torch_bn(module)


def _replace_relu(module, new):
    import torch

    for name, child in module.named_children():
        if isinstance(child, torch.nn.ReLU):
            setattr(module, name, new())
        else:
            _replace_relu(child, new)


def _to_torch_input(torch, x):
    x = (x / 255.0 - TORCH_MEAN) / TORCH_STD
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype("float32"))


def _pixels(size, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")


@pytest.mark.torch
@pytest.mark.parametrize("entry", V2_ENTRIES, ids=[e.name for e in V2_ENTRIES])
def test_v2_matches_torchvision(entry):
    torch, models = import_torchvision()
    alpha = entry.kwargs["alpha"]
    activation = entry.kwargs.get("activation", "relu")
    reference = _torch_reference_v2(models, torch, alpha, activation)
    state = reference.state_dict()
    model = entry.build(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    used = load_torch_state_dict(model, state)
    assert used == sorted(k for k in state if not k.endswith("num_batches_tracked"))
    x = _pixels(64)
    with torch.no_grad():
        expected = reference(_to_torch_input(torch, x)).numpy()
    got = np.asarray(model(x, training=False))
    assert np.std(expected) > 0.05, "degenerate reference logits"
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    print(f"{entry.name}: max |diff| {np.abs(got - expected).max():.2e}, "
          f"logit std {np.std(expected):.3f}")


@pytest.mark.torch
def test_v2_headless_features_match_torchvision():
    torch, models = import_torchvision()
    reference = _torch_reference_v2(models, torch, 0.5, "relu")
    model = kl.ShuffleNetV2(alpha=0.5, weights=None, include_top=False, pooling="avg")
    load_torch_state_dict(model, reference.state_dict())  # the fc tensors go unused
    x = _pixels(96, batch=1)
    with torch.no_grad():
        t = reference.maxpool(reference.conv1(_to_torch_input(torch, x)))
        t = reference.conv5(reference.stage4(reference.stage3(reference.stage2(t))))
        expected = t.mean([2, 3]).numpy()
    np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-4, rtol=0)


@pytest.mark.torch
@pytest.mark.parametrize("alpha", sorted(V2_CHANNELS))
def test_v2_closed_form_counts_match_torchvision(alpha):
    torch, models = import_torchvision()
    module = models.shufflenetv2.ShuffleNetV2([4, 8, 4], [24, *V2_CHANNELS[alpha]])
    trainable = sum(p.numel() for p in module.parameters())
    stats = sum(b.numel() for n, b in module.named_buffers() if "running" in n)
    counts = v2_complexity(alpha)
    assert counts["trainable_params"] == trainable
    assert counts["total_params"] == trainable + stats


def test_v2_closed_form_matches_complexity_rows():
    rows = _complexity()["ShuffleNetV2"]
    assert {row["alpha"] for row in rows} == {0.5, 1.0, 1.5, 2.0}
    for row in rows:
        counts = v2_complexity(row["alpha"])
        assert counts["total_params"] == row["total_params"]
        assert counts["trainable_params"] == row["trainable_params"]
        assert counts["macs"] / 1e6 == pytest.approx(row["macs_m"], rel=0.03)


@pytest.mark.parametrize("alpha", sorted(V2_CHANNELS))
def test_v2_macs_closed_form(alpha):
    p = kl.profile(kl.ShuffleNetV2(alpha=alpha, weights=None, input_shape=(224, 224, 3)))
    counts = v2_complexity(alpha)
    assert (p["trainable_params"], p["params"]) == (counts["trainable_params"],
                                                    counts["total_params"])
    assert p["macs"] == counts["macs"]


def test_v2_swish_variant():
    relu = kl.ShuffleNetV2(weights=None)
    swish = kl.ShuffleNetV2(weights=None, activation="swish")
    assert swish.name == "shufflenetv2_1.00_swish"
    assert [w.shape for w in swish.weights] == [w.shape for w in relu.weights]
    acts = [layer for layer in swish.layers if type(layer).__name__ == "Activation"]
    # Stem, conv5, two per unit and one more per stride-2 unit.
    assert len(acts) == 2 + 2 * 16 + 3
    assert {layer.get_config()["activation"] for layer in acts} == {"silu"}  # Keras' swish
    assert not any(type(layer).__name__ == "ReLU" for layer in swish.layers)


def test_v2_layer_names_follow_torchvision():
    model = kl.ShuffleNetV2(alpha=0.5, weights=None)
    names = {layer.name for layer in model.layers}
    assert {"conv1_0", "conv1_1", "stage2_0_branch1_0", "stage2_0_branch1_3",
            "stage2_0_branch2_6", "stage4_3_branch2_5", "conv5_0", "conv5_1", "fc",
            "stage2_1_split", "stage2_1_shuffle", "maxpool", "normalization"} <= names
    kinds = harness.layer_class_names(model)
    assert {"ChannelSplit", "ChannelShuffle"} <= kinds


def test_v2_embedded_preprocessing_is_torchvision_normalization():
    raw = kl.ShuffleNetV2(alpha=0.5, weights=None, input_shape=(64, 64, 3))
    plain = kl.ShuffleNetV2(alpha=0.5, weights=None, input_shape=(64, 64, 3),
                            include_preprocessing=False)
    harness.randomize(raw)
    plain.set_weights(raw.get_weights())
    x = _pixels(64)
    normalized = imagenet.preprocess_input(x.copy(), mode="torch")
    np.testing.assert_allclose(np.asarray(plain(normalized)), np.asarray(raw(x)), atol=1e-5)
    assert shufflenet_v2.preprocess_input(x) is x


def test_v2_argument_checks():
    with pytest.raises(ValueError, match="Received: alpha=0.75"):
        kl.ShuffleNetV2(weights=None, alpha=0.75)
    with pytest.raises(ValueError, match="Received: activation='hard_swish'"):
        kl.ShuffleNetV2(weights=None, activation="hard_swish")
    with pytest.raises(ValueError, match="Received: alpha=0.25, activation='relu'"):
        kl.ShuffleNetV2(weights="imagenet", alpha=0.25)
    with pytest.raises(ValueError, match="Received: alpha=1.0, activation='swish'"):
        kl.ShuffleNetV2(weights="imagenet", activation="swish")
    with pytest.raises(ValueError, match="Received: classes=10"):
        kl.ShuffleNetV2(weights="imagenet", classes=10)


# ShuffleNet V1 ---------------------------------------------------------------


def test_v1_macs_match_paper():
    paper = _complexity()["ShuffleNetV1"]
    cases = {(int(g[1:]), 1.0): m for g, m in paper["macs_m_1x"].items()}
    cases.update({(3, float(a)): m for a, m in paper["macs_m_g3"].items()})
    assert len(cases) == 9
    for (groups, alpha), macs_m in cases.items():
        p = kl.profile(kl.ShuffleNetV1(groups=groups, alpha=alpha, input_shape=(224, 224, 3)))
        assert p["macs"] == v1_complexity(groups, alpha)["macs"]
        ratio = p["macs"] / 1e6 / macs_m
        print(f"ShuffleNetV1 g{groups} {alpha}x: {p['macs'] / 1e6:.2f} M MACs, "
              f"paper {macs_m} M (ratio {ratio:.4f})")
        assert ratio == pytest.approx(1.0, abs=0.03), (groups, alpha)


def test_v1_closed_form_matches_official_zoo_params():
    # The megvii zoo lists parameters to 0.1 M; its classifier has no bias.
    zoo = _complexity()["ShuffleNetV1"]["approx_params_m_megvii_zoo"]
    for key, millions in zoo.items():
        groups, alpha = key.split("_")
        counts = v1_complexity(int(groups[1:]), float(alpha))
        assert round((counts["trainable_params"] - CLASSES) / 1e6, 1) == millions, key


@pytest.mark.parametrize("groups", [3, 8])
def test_v1_split_and_native_agree(groups):
    kw = dict(groups=groups, alpha=0.25, input_shape=(64, 64, 3), classifier_activation=None)
    split = harness.randomize(kl.ShuffleNetV1(**kw), seed=groups)
    native = kl.ShuffleNetV1(group_conv="native", **kw)
    shufflenet_v1.transfer_weights(split, native)
    x = _pixels(64)
    y = np.asarray(split(x, training=False))
    assert np.std(y) > 0.02
    np.testing.assert_allclose(np.asarray(native(x, training=False)), y, atol=1e-5, rtol=0)
    back = shufflenet_v1.transfer_weights(native, kl.ShuffleNetV1(**kw))
    for a, b in zip(back.get_weights(), split.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_v1_transfer_weights_rejects_other_variant():
    with pytest.raises(ValueError, match="Received: source="):
        shufflenet_v1.transfer_weights(kl.ShuffleNetV1(groups=3, alpha=0.25),
                                       kl.ShuffleNetV1(groups=4, alpha=0.25))


def _conv_groups(model):
    return [layer.groups for layer in model.layers if type(layer).__name__ == "Conv2D"]


def test_v1_group_conv_forms():
    native = kl.ShuffleNetV1(groups=3, group_conv="native")
    split = kl.ShuffleNetV1(groups=3)
    # Two grouped 1x1s per unit, but the very first 1x1 of stage 2.
    assert sum(g == 3 for g in _conv_groups(native)) == 2 * 16 - 1
    assert set(_conv_groups(split)) == {1}
    assert "ChannelSplit" in harness.layer_class_names(split)
    assert "ChannelSplit" not in harness.layer_class_names(native)
    assert native.count_params() == split.count_params()
    assert native.name == "shufflenetv1_g3_1.00_native"
    names = {layer.name for layer in split.layers}
    assert {"stage2_unit1_gconv1", "stage2_unit1_bn1", "stage2_unit1_shuffle",
            "stage2_unit1_dw", "stage2_unit1_dw_bn", "stage2_unit1_gconv2_g2",
            "stage2_unit1_pool", "stage2_unit1_concat", "stage2_unit2_gconv1_g0",
            "stage2_unit2_add", "stage4_unit4_relu", "predictions"} <= names
    assert "stage2_unit1_gconv1_g0" not in names
    # The average-pooled shortcut comes first in the concatenation.
    concat = split.get_layer("stage3_unit1_concat")
    assert concat.input[0]._keras_history.operation.name == "stage3_unit1_pool"
    assert tuple(concat.input[0].shape[1:]) == (None, None, 240)


class _PaperShuffleNetV1:
    """ShuffleNet V1 in PyTorch from the paper (Fig. 2, Table 1), for parity.

    Modules are keyed by the Keras layer names they correspond to.
    """

    def __init__(self, torch, groups, alpha):
        nn = torch.nn
        stem, units = shufflenet_v1.decode_units(groups, alpha)
        self.torch, self.groups, self.units = torch, groups, units
        m = {"conv1": nn.Conv2d(3, stem, 3, 2, 1, bias=False), "conv1_bn": nn.BatchNorm2d(stem)}
        cin = stem
        for prefix, out, stride, pw_groups in units:
            mid, branch = out // 4, out - cin if stride == 2 else out
            m[f"{prefix}_gconv1"] = nn.Conv2d(cin, mid, 1, groups=pw_groups, bias=False)
            m[f"{prefix}_bn1"] = nn.BatchNorm2d(mid)
            m[f"{prefix}_dw"] = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
            m[f"{prefix}_dw_bn"] = nn.BatchNorm2d(mid)
            m[f"{prefix}_gconv2"] = nn.Conv2d(mid, branch, 1, groups=groups, bias=False)
            m[f"{prefix}_bn2"] = nn.BatchNorm2d(branch)
            cin = out
        m["predictions"] = nn.Linear(cin, CLASSES)
        self.modules = nn.ModuleDict(m)
        for module in self.modules.values():
            if not isinstance(module, nn.BatchNorm2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
        randomize_torch_bn(self.modules)

    def shuffle(self, x):
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)

    def __call__(self, x):
        f, m = self.torch.nn.functional, self.modules
        x = f.relu(m["conv1_bn"](m["conv1"](x)))
        x = f.max_pool2d(x, 3, 2, 1)
        for prefix, _, stride, _ in self.units:
            y = f.relu(m[f"{prefix}_bn1"](m[f"{prefix}_gconv1"](x)))
            y = self.shuffle(y) if self.groups > 1 else y
            y = m[f"{prefix}_dw_bn"](m[f"{prefix}_dw"](y))
            y = m[f"{prefix}_bn2"](m[f"{prefix}_gconv2"](y))
            if stride == 2:
                x = f.relu(self.torch.cat([f.avg_pool2d(x, 3, 2, 1), y], 1))
            else:
                x = f.relu(x + y)
        return m["predictions"](x.mean([2, 3]))

    def keras_weights(self, model):
        for name, module in self.modules.items():
            values = [v.detach().numpy() for v in module.state_dict().values()]
            if name.endswith("_dw"):
                values = [values[0].transpose(2, 3, 0, 1)]
            elif isinstance(module, self.torch.nn.Conv2d):
                values = [values[0].transpose(2, 3, 1, 0)]
            elif isinstance(module, self.torch.nn.Linear):
                values = [values[0].T, values[1]]
            else:
                values = values[:4]  # drop num_batches_tracked
            model.get_layer(name).set_weights(values)


@pytest.mark.torch
@pytest.mark.parametrize("groups, alpha", [(1, 0.5), (2, 0.25), (3, 0.5), (4, 0.25), (8, 0.25)])
def test_v1_matches_paper_reference_in_torch(groups, alpha):
    torch, _ = import_torchvision()
    reference = _PaperShuffleNetV1(torch, groups, alpha)
    kw = dict(groups=groups, alpha=alpha, input_shape=(64, 64, 3), classifier_activation=None)
    native = kl.ShuffleNetV1(group_conv="native", **kw)
    reference.keras_weights(native)
    split = shufflenet_v1.transfer_weights(native, kl.ShuffleNetV1(**kw))
    x = _pixels(64)
    with torch.no_grad():
        expected = reference(_to_torch_input(torch, x)).numpy()
    assert np.std(expected) > 0.05
    np.testing.assert_allclose(np.asarray(native(x)), expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(split(x)), expected, atol=1e-4, rtol=0)


def test_v1_argument_checks():
    with pytest.raises(ValueError, match=r"no published ImageNet weights.*ShuffleNetV2.*"
                                         r"Received: weights='imagenet'"):
        kl.ShuffleNetV1(weights="imagenet")
    with pytest.raises(ValueError, match="Received: groups=5"):
        kl.ShuffleNetV1(groups=5)
    with pytest.raises(ValueError, match="Received: alpha=0.75"):
        kl.ShuffleNetV1(alpha=0.75)
    with pytest.raises(ValueError, match="Received: group_conv='xla'"):
        kl.ShuffleNetV1(group_conv="xla")
    assert kl.ShuffleNetV1().name == "shufflenetv1_g3_1.00"
    x = _pixels(8)
    assert shufflenet_v1.preprocess_input(x) is x


def test_v1_decoder_channels_divide_by_groups():
    for groups in V1_STAGE2:
        for alpha in V1_ALPHAS:
            stem, units = shufflenet_v1.decode_units(groups, alpha)
            cin = stem
            for _, out, stride, _ in units:
                branch = out - cin if stride == 2 else out
                assert (out // 4) % groups == 0 and branch % groups == 0, (groups, alpha)
                cin = out
    assert shufflenet_v1.decode_units(8, 0.5)[0] == 16


# TFLite -----------------------------------------------------------------------


def _tflite_check(model, size=64):
    """Converts `model` (batch 1) to TFLite, runs it under LiteRT, compares with Keras."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    harness.randomize(model, seed=1)
    spec = tf.TensorSpec((1, size, size, 3), tf.float32)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    # Frozen: handed Keras 3 variables, the converter leaves them uninitialized
    # resource variables and LiteRT returns NaN.
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    ranks = {len(t["shape"]) for t in interpreter.get_tensor_details()}
    assert max(ranks) <= 4, f"{model.name} has a tensor of rank {max(ranks)} in TFLite"
    x = _pixels(size, batch=1, seed=2)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    expected = np.asarray(model(x, training=False))
    assert np.std(expected) > 0.05
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    return float(np.abs(got - expected).max())


@pytest.mark.parametrize("build", [
    lambda: kl.ShuffleNetV2(alpha=1.0, weights=None, input_shape=(64, 64, 3),
                            classifier_activation=None),
    lambda: kl.ShuffleNetV1(groups=3, input_shape=(64, 64, 3), classifier_activation=None),
    lambda: kl.ShuffleNetV1(groups=3, group_conv="native", input_shape=(64, 64, 3),
                            classifier_activation=None),
], ids=["v2_100", "v1_g3_100_split", "v1_g3_100_native"])
def test_tflite_matches_keras(build):
    print(f"TFLite max |diff| {_tflite_check(build()):.2e}")


# Columns: registry entry, extra factory kwargs.
TFLITE_CASES = [(e, {}) for e in V2_ENTRIES] + [
    (e, {"group_conv": mode}) for e in V1_ENTRIES for mode in ("split", "native")]


@pytest.mark.heavy
@pytest.mark.parametrize("entry, kwargs", TFLITE_CASES,
                         ids=[e.name + "".join(f"-{v}" for v in kw.values())
                              for e, kw in TFLITE_CASES])
def test_tflite_every_variant(entry, kwargs):
    _tflite_check(entry.build(weights=None, input_shape=(64, 64, 3),
                              classifier_activation=None, **kwargs))


def test_registry_entries():
    assert len(V1_ENTRIES) == 25 and len(V2_ENTRIES) == 7
    assert {e.name for e in V1_ENTRIES if e.default} == {"shufflenet_v1_g3_100"}
    assert {e.name for e in V2_ENTRIES if e.default} == {"shufflenet_v2_100"}
    assert "shufflenet_v2_swish_100" in kl.list_models()
    assert isinstance(kl.get_model("shufflenet_v2_033", weights=None), keras.Model)


def test_v1_tflite_graph(tmp_path):
    """The files hold no MUL or lone RELU: each batch norm after a split grouped conv's
    concat, and the ReLU after it, fold into the group's convs. int8: the stride-2
    shortcut pools run as depthwise convs (XNNPACK takes no int8 pool)."""
    from conftest import sample_photos
    from harness import trained_like

    from keras_lightnets import export

    model = kl.ShuffleNetV1(groups=3, weights=None, input_shape=(64, 64, 3),
                            classifier_activation=None)
    photos, _ = sample_photos(64, 48)
    x = np.array(photos, dtype="float32")
    trained_like(model, x[:32])
    float_report = export.to_tflite(model, tmp_path / "f32.tflite")
    assert "AVERAGE_POOL_2D" in float_report.ops, float_report.ops
    report = export.to_tflite(model, tmp_path / "int8.tflite", "int8", representative_data=x[:32],
                              verify_data=x[32:], progress=False)
    assert report.cosine >= 0.95, report
    assert "AVERAGE_POOL_2D" not in report.ops, report.ops
    for ops in (float_report.ops, report.ops):
        assert not {"MUL", "RELU"} & set(ops), ops
    # Outside the int8 trace the layer is the plain pool.
    pool = model.get_layer("stage2_unit1_pool")
    v = np.random.default_rng(0).normal(size=(1, 9, 9, 4)).astype("float32")
    np.testing.assert_array_equal(np.asarray(pool(v)),
                                  np.asarray(keras.layers.AveragePooling2D(3, 2)(v)))

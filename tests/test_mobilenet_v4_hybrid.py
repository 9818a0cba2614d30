"""MobileNetV4 Hybrid-Medium and Hybrid-Large against timm's own model code, and the mobile
multi-query attention block through export and QAT on a small hybrid of the same builders.

The registry-wide tests (test_models, test_models_export, test_optimize) run both models with
`-m heavy` (`harness.HEAVY_FAMILIES`); the default run checks the attention block end to end
here: timm's logits through `weights=<file>`, and a small hybrid (the family's rows and
builders, GELU as in Hybrid-Large) through float32 TFLite, ONNX and int8 TFLite, and through
twin, prune -> strip, QAT -> int8 TFLite.
"""

import types

import harness
import keras
import numpy as np
import pytest
from conftest import sample_photos
from test_optimize import _compile, _dataset, _int8, _prune_fit_strip
from timm_ref import assert_file_parity, import_timm, timm_file, timm_input, timm_trained_like

import keras_lightnets as kl
from keras_lightnets import registry, spec
from keras_lightnets.features import feature_layers
from keras_lightnets.models import mobilenet_v4
from keras_lightnets.spec import Block
from keras_lightnets.weights import flavour_check, manifest, sources

# The keys and values of the stride-16 attention are downsampled twice more: 128 px gives
# them 4x4 positions.
SIZE = 128
# Parameter counts of timm 1.0.31's models, as test_mobilenet_v4's (`test_counts_are_timms`
# recomputes them). Columns: registry name, timm model, total, trainable, no-top total.
COUNTS = [
    ("mobilenet_v4_hybrid_medium_100", "mobilenetv4_hybrid_medium", 11150488, 11074648, 8635568),
    ("mobilenet_v4_hybrid_large_100", "mobilenetv4_hybrid_large", 37929024, 37764624, 35414104),
]
TIMM_NAMES = {name: timm_name for name, timm_name, *_ in COUNTS}
DEFAULT = "mobilenet_v4_hybrid_medium_100"
FAMILIES = ("MobileNetV4HybridMedium", "MobileNetV4HybridLarge")


def _cases():
    return [pytest.param(name, id=name, marks=() if name == DEFAULT else pytest.mark.heavy)
            for name, *_ in COUNTS]


def expected_params(entry):
    """The harness's counts for a hybrid registry entry (see `harness.FAMILY_HOOKS`)."""
    total, trainable, no_top = next(row[2:] for row in COUNTS if row[0] == entry.name)
    return {"total_params": total, "trainable_params": trainable, "no_top_total_params": no_top}


def _timm_case(name, tmp_path, size=SIZE, count=8):
    """`(torch, timm model, its file, photos)`: trained-like on the photos, and layer scales
    of a trained model's size (timm initialises them to 1e-5: the blocks would vanish)."""
    torch, timm = import_timm()
    model = timm.create_model(TIMM_NAMES[name], pretrained=False)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith("layer_scale.gamma"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
    x, _ = sample_photos(size, count)
    timm_trained_like(torch, model, timm_input(torch, x, model.pretrained_cfg))
    path = timm_file(torch, model, tmp_path / f"{TIMM_NAMES[name]}.safetensors")
    return torch, model, path, x


@pytest.mark.torch
@pytest.mark.parametrize("name", _cases())
def test_timm_file_gives_timms_logits(name, tmp_path):
    """A timm state dict saved as `.safetensors` loads through `weights=<path>` and gives
    timm's logits and features on raw 0-255 pixels."""
    torch, model, path, x = _timm_case(name, tmp_path)
    entry = registry.get_entry(name)
    used = assert_file_parity(torch, model, path, x, entry, model.pretrained_cfg)
    # The attention blocks' and layer scales' tensors have Keras homes too.
    assert any(".attn.key.down_conv." in k for k in used)
    assert any(k.endswith("layer_scale.gamma") for k in used)


@pytest.mark.torch
def test_counts_are_timms():
    _, timm = import_timm()
    for name, timm_name, total, trainable, no_top in COUNTS:
        model = timm.create_model(timm_name, pretrained=False)
        params = sum(p.numel() for p in model.parameters())
        stats = sum(b.numel() for k, b in model.named_buffers() if k.endswith(("_mean", "_var")))
        body = sum(v.numel() for k, v in model.state_dict().items()
                   if k.startswith(("conv_stem", "bn1", "blocks"))
                   and not k.endswith("num_batches_tracked"))
        assert (total, trainable, no_top) == (params + stats, params, body), name


def test_manifest_entries_are_timms_tags():
    """Each tag's `pretrained_cfg` (mean/std, input size, crop) is its manifest entry's, and
    the normalization the flavour embeds."""
    _, timm = import_timm()
    entries = [e for e in manifest.entries() if e["family"] in FAMILIES]
    assert {(e["family"], e["weights"]) for e in entries} == {
        ("MobileNetV4HybridMedium", "timm"), ("MobileNetV4HybridMedium", "timm_e500_r224"),
        ("MobileNetV4HybridLarge", "timm"), ("MobileNetV4HybridLarge", "timm_e600_r384")}
    for e in entries:
        tag = e["file"].removesuffix(".safetensors")
        cfg = timm.models.get_pretrained_cfg(tag).to_dict()
        assert e["url"] == f"https://huggingface.co/timm/{tag}/resolve/main/model.safetensors"
        assert (tuple(e["mean"]), tuple(e["std"])) == (cfg["mean"], cfg["std"]), tag
        assert (e["input_size"], e["crop_pct"], e["interpolation"]) == (
            cfg["input_size"][1], cfg["crop_pct"], cfg["interpolation"]), tag
        norm = sources.TIMM.flavours[e["family"]].normalization
        assert (norm.mean, norm.std, norm.pixel_max) == (cfg["mean"], cfg["std"], 1.0)
        assert e["source"] == "timm" and e["hash"] is None and e["classes"] == 1000
    for family in FAMILIES:
        # "imagenet" (the default) is the "timm" set.
        default = manifest.find(family, {}, True, weights="timm")
        assert manifest.find(family, {}, True) is default
        assert ".ix_" in default["file"]


@pytest.mark.parametrize("name", _cases())
def test_layers_of_a_block_table(name):
    """Every weighted layer carries a timm module path; every op is a Keras layer or one of
    the package's registered ones."""
    entry = registry.get_entry(name)
    model = entry.build(weights=None, input_shape=(64, 64, 3))
    kinds = {type(layer).__name__ for layer in model.layers}
    act = "Activation" if entry.family == "MobileNetV4HybridLarge" else "ReLU"
    assert kinds == {"InputLayer", "Rescaling", "Conv2D", "DepthwiseConv2D",
                     "BatchNormalization", act, "ZeroPadding2D", "Add", "LayerScale",
                     "MultiQueryAttentionCore", "GlobalAveragePooling2D", "Flatten", "Dropout",
                     "Dense"}, kinds
    assert sources.family_of(model, sources.TIMM) in FAMILIES  # the two share one name map
    for layer in sources.weighted_layers(model):
        sources.state_prefix(sources.TIMM, entry.family, layer.name)
    assert flavour_check.flavour_mismatch(model, sources.TIMM.flavours[entry.family]) is None
    cores = [la for la in model.layers if isinstance(la, kl.MultiQueryAttentionCore)]
    assert len(cores) == 8
    # A conv model is not taken for a hybrid (its name map is the smaller one that fits).
    conv = kl.MobileNetV4ConvMedium(weights=None, include_top=False, input_shape=(64, 64, 3))
    assert sources.family_of(conv, sources.TIMM).startswith("MobileNetV4Conv")


def test_tapped_rows_are_the_traced_feature_maps():
    for factory, act, last, channels in ((kl.MobileNetV4HybridMedium, "relu", 11, 160),
                                         (kl.MobileNetV4HybridLarge, "gelu", 14, 192)):
        model = factory(weights=None, include_top=False)
        taps = spec.taps_of(model)
        assert sorted(taps) == [2, 4, 8, 16, 32]
        # Strides 8 and 16 end at the next stage's expansion, before its strided depthwise
        # conv; the attention blocks work at strides 16 and 32.
        assert (taps[8], taps[16], taps[32]) == (
            f"blocks_2_0_pw_exp_{act}", f"blocks_3_0_pw_exp_{act}", f"blocks_4_0_bn1_{act}")
        assert model.get_layer(f"blocks_2_{last}_add").output.shape[1:] == (None, None, channels)
        traced = keras.Model(model.inputs, model.outputs, name="traced")
        assert feature_layers(traced, tuple(taps)) == list(taps.values())
        if act == "relu":
            outs = kl.feature_extractor(model, (8, 16, 32))(np.zeros((1, SIZE, SIZE, 3)))
            assert [tuple(o.shape[1:]) for o in outs] == [(16, 16, 480), (8, 8, 960),
                                                          (4, 4, 960)]


def test_arguments_and_input_sizes():
    with pytest.raises(ValueError, match=r"Received: dropout_rate=1"):
        kl.MobileNetV4HybridMedium(dropout_rate=1, weights=None)
    with pytest.raises(ValueError, match="Received: classes=10"):
        kl.MobileNetV4HybridLarge(weights="timm", classes=10)
    with pytest.raises(ValueError, match="Received: weights='timm_e500_r256'"):
        kl.MobileNetV4HybridMedium(weights="timm_e500_r256")
    model = kl.MobileNetV4HybridMedium(weights=None, dropout_rate=0.0, classes=10)
    assert model.name == "mobilenet_v4_hybrid_medium" and model.output.shape == (None, 10)
    # The attention takes any input size (here two, through one model of unknown size).
    model = kl.MobileNetV4HybridMedium(weights=None, include_top=False, pooling="avg")
    assert model.input.shape == (None, None, None, 3)
    for size in (64, 96):
        assert np.asarray(model(np.zeros((1, size, size, 3), "float32"))).shape == (1, 960)


# A small hybrid of the family's rows and builders: a stem, an edge residual, a strided
# universal inverted residual, attention with keys and values downsampled, a ConvNeXt-like
# block, another stage with attention at full resolution, the last 1x1 conv.
def _small_table(act):
    return mobilenet_v4._with_activation([
        Block("conv", 3, 2, 16, act="relu", name=mobilenet_v4.STEM),
        Block("er", 3, 2, 24, 2, act="relu", name="blocks_0_{j}_"),
        mobilenet_v4._uir(1, 3, 5, 2, 32, 2),
        mobilenet_v4._mqa(1, 2, 16, 2, 32),
        mobilenet_v4._uir(1, 3, 0, 1, 32, 2),
        mobilenet_v4._uir(2, 5, 5, 2, 48, 2),
        mobilenet_v4._mqa(2, 2, 16, 1, 48),
        mobilenet_v4._conv(3, 0, 1, 1, 96),
    ], act)


def _small_hybrid(act="gelu", size=64, classes=10):
    """The small hybrid with the flavour's embedded normalization (raw pixels in);
    `harness.trained_like` gives its layer scales a trained model's size."""
    flavour = sources.TIMM.flavours["MobileNetV4HybridLarge"]
    inputs = keras.Input((size, size, 3))
    x = kl.layers.Rescaling(*flavour.normalization.scale_offset(), name="normalization")(inputs)
    x, _ = spec.build(x, _small_table(act), 1.0, names=mobilenet_v4.NAMES, prefix="",
                      bn=flavour.bn, pad=flavour.padding, layer_scale=1e-5)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = keras.layers.Dense(classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"mobilenet_v4_hybrid_small_{act}")


@pytest.mark.parametrize("act", ["gelu", pytest.param("relu", marks=pytest.mark.heavy)])
def test_attention_block_exports(act, tmp_path):
    """The harness's export check (float32 TFLite, ONNX, int8 TFLite, builtin ops only) on
    the small hybrid: the attention core is two BATCH_MATMULs and a SOFTMAX, in int8 too."""
    def build(weights=None, input_shape=(64, 64, 3), classifier_activation=None):
        assert weights is None and classifier_activation is None
        return _small_hybrid(act, input_shape[0], classes=1000)

    # No registered family: the harness's own int8 bound, not the hybrids' lower floors.
    entry = types.SimpleNamespace(name=f"hybrid_small_{act}", build=build,
                                  preprocess_input=mobilenet_v4.preprocess_input)
    measured = harness.run_export_test(entry, tmp_path, 64)
    assert measured["int8"]["cosine"] >= harness.INT8_COSINE
    print(f"\n{entry.name}: " + ", ".join(
        f"{kind} max rel diff {m['max_rel_diff']:.2g} cosine {m['cosine']:.4f}"
        for kind, m in measured.items()))
    from keras_lightnets.export import tflite

    ops, _, _ = tflite.analyze((tmp_path / f"{entry.name}_int8.tflite").read_bytes())
    assert {"BATCH_MATMUL", "SOFTMAX"} <= set(ops), ops
    assert ("GELU" in ops) == (act == "gelu"), ops


def test_attention_block_prunes_and_quantizes(tmp_path):
    """Twin (both ways), prune -> strip, prune-preserving QAT -> integer-only int8 TFLite on
    the small hybrid, GELU and attention included."""
    from keras_lightnets import optimize

    x, y = sample_photos(64, 40)
    y = y % 10
    model = harness.trained_like(_small_hybrid("gelu"), x[:16])
    twin = optimize.to_tf_keras(model)
    reference = np.asarray(model(x[:4], training=False))
    assert np.abs(twin(x[:4], training=False).numpy() - reference).max() <= (
        1e-5 * np.abs(reference).max())
    back = optimize.to_keras3(twin, like=model)
    np.testing.assert_allclose(np.asarray(back(x[:4], training=False)), reference, atol=1e-6)
    kinds = {type(la).__name__ for la in twin.layers}
    assert {"LayerScale", "MultiQueryAttentionCore"} <= kinds

    sparse = _prune_fit_strip(twin, x[:8], y[:8], tmp_path, "hybrid_small")
    assert [la.name for la in sparse.layers] == [la.name for la in model.layers]
    qat = optimize.quantize_aware(sparse, preserve_sparsity=True, representative_data=x[:8])
    _compile(qat).fit(_dataset(x[:8], y[:8]), epochs=1, verbose=0)
    kept = optimize.sparsity_report(qat)
    assert kept and min(kept.values()) >= 0.5, kept
    report = _int8(qat, tmp_path / "hybrid_small_int8.tflite", x[:8], x[8:], True)
    assert report.samples == 32 and report.cosine >= 0.95, report
    assert {"BATCH_MATMUL", "SOFTMAX", "GELU"} <= set(report.ops), report.ops
    # The QAT model's exact GELU reaches tf2onnx as TensorFlow's `Erfc` (the Keras passes
    # rewrite Keras 3 models only): the export writes it as `1 - Erf`.
    from keras_lightnets import export

    report = export.to_onnx(qat, tmp_path / "hybrid_small_qdq.onnx", verify_data=x[8:])
    assert report.verified and report.quantization == "int8", report
    assert {"Erf", "QuantizeLinear", "MatMul", "Softmax"} <= set(report.ops), report.ops


def test_layers_round_trip_and_check_arguments(tmp_path):
    inputs = [keras.Input((6, 6, 32)), keras.Input((3, 3, 16)), keras.Input((3, 3, 8))]
    out = kl.MultiQueryAttentionCore(16, name="core")(inputs)
    out = kl.LayerScale(0.5, name="scale")(out)
    model = keras.Model(inputs, out)
    assert model.output.shape == (None, 6, 6, 16)
    rng = np.random.default_rng(0)
    data = [rng.normal(size=(2, *t.shape[1:])).astype("float32") for t in inputs]
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded(data)), np.asarray(model(data)))
    assert loaded.get_layer("core").get_config()["key_dim"] == 16
    assert loaded.get_layer("scale").get_config()["init_value"] == 0.5
    # Against the formula: query heads are head-major channel groups sharing the key/value.
    q, k, v = data
    q = q.reshape(2, 36, 2, 16)
    logits = np.einsum("bphd,bkd->bphk", q, k.reshape(2, 9, 16)) / 4.0
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    want = np.einsum("bphk,bkv->bphv", weights, v.reshape(2, 9, 8)).reshape(2, 6, 6, 16) * 0.5
    np.testing.assert_allclose(np.asarray(model(data)), want, atol=1e-5)
    with pytest.raises(ValueError, match="Received: key_dim=12"):
        kl.MultiQueryAttentionCore(12)(inputs)
    with pytest.raises(ValueError, match="Received: key_dim=0"):
        kl.MultiQueryAttentionCore(0)

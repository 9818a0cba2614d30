"""Generic checks on every registered model, through the shared harness."""

import math

import harness
import keras
import numpy as np
import pytest

import keras_lightnets as kl
from keras_lightnets import registry, spec
from keras_lightnets.features import feature_layers

ENTRIES = registry.entries()
IDS = [e.name for e in ENTRIES]
# Suite time: the full harness and the feature-extractor check run on every family's default
# variant; the other widths get them in the heavy subset (`-m heavy`), and the exact-params,
# shape, no-Lambda and profile checks below in the default run.
HARNESS_CASES = [
    pytest.param(e, id=e.name) if harness.in_default_run(e)
    else pytest.param(e, id=e.name, marks=pytest.mark.heavy)
    for e in ENTRIES
]


@pytest.mark.parametrize("entry", HARNESS_CASES)
def test_harness(entry):
    harness.run_model_test(entry)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_exact_params_and_shapes(entry):
    expected = harness.expected_params(entry)
    assert expected is not None, f"no reference parameter counts for {entry.name}"
    model = entry.build(weights=None)
    assert model.count_params() == expected["total_params"]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == expected["trainable_params"]
    assert model.output.shape == (None, 1000)
    harness.assert_no_lambda(model)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_profile_matches_reference(entry):
    row = harness.reference_row(entry)
    if row is None:
        pytest.skip(f"{entry.name}: no published complexity figures (checked in its family tests)")
    p = kl.profile(entry.build(weights=None))
    assert p["params"] == row["total_params"]
    assert p["trainable_params"] == row["trainable_params"]
    assert p["non_trainable_params"] == row["total_params"] - row["trainable_params"]
    assert p["size_bytes"] == 4 * row["total_params"]
    assert p["macs"] / 1e6 == pytest.approx(row["macs_m"], rel=0.03)
    assert 0 < p["peak_activation_bytes"] < 64 * 2**20


@pytest.mark.parametrize("entry", HARNESS_CASES)
def test_feature_extractor(entry):
    # A static size: NASNet's padding needs one (the others take any).
    model = entry.build(weights=None, include_top=False, input_shape=(128, 128, 3))
    strides, sizes = harness.feature_check(entry, 128)
    features = kl.feature_extractor(model, strides=strides)
    x = np.zeros((1, 128, 128, 3), "float32")
    outs = features(x)
    assert [tuple(o.shape[1:3]) for o in outs] == sizes
    # The deepest map is the backbone's own output.
    np.testing.assert_allclose(np.asarray(outs[-1]), np.asarray(model(x)), atol=1e-6)


@pytest.mark.parametrize("factory", [kl.MobileNetV2, kl.MobileNetV3Small, kl.MobileNetV3Large,
                                     kl.MnasNet])
def test_tapped_rows_are_the_traced_feature_maps(factory):
    model = factory(weights=None, include_top=False)
    taps = spec.taps_of(model)
    assert sorted(taps) == [2, 4, 8, 16, 32]
    # The same graph in a model of its own carries no taps: its maps are found by tracing.
    traced = keras.Model(model.inputs, model.outputs, name="traced")
    assert not spec.taps_of(traced)
    assert feature_layers(traced, tuple(taps)) == list(taps.values())


def test_feature_extractor_rejects_missing_stride():
    model = kl.MobileNetV2(weights=None, include_top=False, alpha=0.35)
    with pytest.raises(ValueError, match="Received: strides="):
        kl.feature_extractor(model, strides=(64,))


def test_registry_names_are_systematic():
    names = kl.list_models()
    assert len(names) == len(set(names))
    for entry in ENTRIES:
        alpha = entry.kwargs.get("alpha")
        if alpha is not None:
            assert entry.name.endswith(f"_{int(round(alpha * 100)):03d}")
    assert "mobilenet_v2_140" in names
    assert "mobilenet_v3_large_075" in names
    assert "mobilenet_v3_small_minimal_100" in names
    families = {e.family for e in ENTRIES}
    defaults = {e.family for e in ENTRIES if e.default}
    assert defaults == families, "every family needs one default entry"


def test_get_model_passes_kwargs_and_rejects_unknown_names():
    model = kl.get_model("mobilenet_v2_035", weights=None, include_top=False, pooling="avg")
    assert model.output.shape == (None, 1280)
    assert math.isclose(registry.get_entry("mobilenet_v2_035").kwargs["alpha"], 0.35)
    with pytest.raises(ValueError, match="Received: name='nope'"):
        kl.get_model("nope")

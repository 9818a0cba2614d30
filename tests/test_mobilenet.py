"""MobileNet V1/V2/V3 against keras.applications: names, shapes, numerics, real weights."""

import harness
import keras
import numpy as np
import pytest
from conftest import WEIGHTS, sample_photos, shared_file

import keras_lightnets as kl
from keras_lightnets.models import mobilenet, mobilenet_v2, mobilenet_v3

# Columns: our factory, keras.applications factory, variant kwargs.
PAIRS = [
    *[(kl.MobileNet, keras.applications.MobileNet, {"alpha": a})
      for a in (0.25, 0.5, 0.75, 1.0)],
    (kl.MobileNet, keras.applications.MobileNet, {"alpha": 0.5, "depth_multiplier": 2}),
    *[(kl.MobileNetV2, keras.applications.MobileNetV2, {"alpha": a})
      for a in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)],
    *[(ours, ref, {"alpha": a, "minimalistic": m})
      for ours, ref in ((kl.MobileNetV3Large, keras.applications.MobileNetV3Large),
                        (kl.MobileNetV3Small, keras.applications.MobileNetV3Small))
      for a, m in ((0.75, False), (1.0, False), (1.0, True), (1.25, False))],
]


def _id(pair):
    ours, _, kwargs = pair
    return ours.__name__ + "-" + "-".join(f"{k}{v}" for k, v in kwargs.items())


def _weighted_layers(model):
    return [(layer.name, [tuple(w.shape) for w in layer.weights])
            for layer in model.layers if layer.weights]


@pytest.mark.parametrize("pair", PAIRS, ids=[_id(p) for p in PAIRS])
@pytest.mark.parametrize("include_top", [True, False])
def test_matches_keras_applications(pair, include_top):
    ours_fn, ref_fn, kwargs = pair
    size = (96, 96, 3)
    kw = dict(weights=None, input_shape=size, include_top=include_top, **kwargs)
    if include_top:
        kw["classifier_activation"] = None
    ours, ref = ours_fn(**kw), ref_fn(**kw)
    # Same weighted layers, in the same order, with the same names and shapes.
    assert _weighted_layers(ours) == _weighted_layers(ref)
    # Every layer keras.applications names itself exists here under that name.
    ours_names = {layer.name for layer in ours.layers}
    ref_named = {layer.name for layer in ref.layers
                 if not any(layer.name.startswith(p) for p in _AUTO_PREFIXES)}
    assert ref_named <= ours_names, sorted(ref_named - ours_names)
    assert ours.name == ref.name

    harness.randomize(ref, seed=3)
    ours.set_weights(ref.get_weights())
    high = 255.0 if ours_fn in (kl.MobileNetV3Large, kl.MobileNetV3Small) else 1.0
    x = np.random.default_rng(0).uniform(-high if high == 1 else 0, high, (2, *size))
    x = x.astype("float32")
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(ref(x)), atol=1e-5, rtol=0)


# Names Keras generates for layers keras.applications leaves unnamed.
_AUTO_PREFIXES = ("re_lu", "activation", "rescaling", "flatten", "dropout", "multiply",
                  "global_average_pooling2d", "global_max_pooling2d", "input_layer",
                  "add", "tf.", "hard")


def test_v3_uses_registered_hard_activations():
    model = kl.MobileNetV3Large(weights=None)
    names = harness.layer_class_names(model)
    assert {"HardSwish", "HardSigmoid"} <= names
    assert not any("Lambda" in n for n in names)
    minimal = kl.MobileNetV3Small(weights=None, minimalistic=True)
    assert not {"HardSwish", "HardSigmoid"} & harness.layer_class_names(minimal)


def test_real_mobilenet_025_weights_classify_like_keras():
    path = shared_file(WEIGHTS / "mobilenet_1_0.25_224_keras.h5")
    x, y = sample_photos(224)
    x = mobilenet.preprocess_input(x)
    ours = kl.MobileNet(alpha=0.25, weights=str(path))
    ref = keras.applications.MobileNet(alpha=0.25, weights=str(path))
    p_ours = ours.predict(x, batch_size=50, verbose=0)
    p_ref = ref.predict(x, batch_size=50, verbose=0)
    top1_ours = float((p_ours.argmax(1) == y).mean())
    top1_ref = float((p_ref.argmax(1) == y).mean())
    print(f"MobileNet 0.25 top-1 on the 1000 sample photos: ours {top1_ours:.3f}, "
          f"keras.applications {top1_ref:.3f}")
    assert abs(top1_ours - top1_ref) <= 0.005
    assert top1_ours > 0.5, "the real weights are not wired correctly"
    np.testing.assert_allclose(p_ours, p_ref, atol=1e-5)
    # decode_predictions names the right class for photos the model gets right.
    right = np.flatnonzero(p_ours.argmax(1) == y)[:20]
    decoded = mobilenet.decode_predictions(p_ours[right], top=1)
    wnids = [row["filename"].split("_")[0] for row in _labels()]
    assert [d[0][0] for d in decoded] == [wnids[i] for i in right]


def _labels():
    import csv

    from conftest import SAMPLE

    with open(SAMPLE / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_preprocess_input_matches_keras():
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(mobilenet.preprocess_input(x.copy()),
                               keras.applications.mobilenet.preprocess_input(x.copy()))
    np.testing.assert_allclose(mobilenet_v2.preprocess_input(x.copy()),
                               keras.applications.mobilenet_v2.preprocess_input(x.copy()))
    assert mobilenet_v3.preprocess_input(x) is x


def test_input_tensor_and_default_shapes():
    inp = keras.Input((160, 160, 3))
    model = kl.MobileNetV2(weights=None, input_tensor=inp, include_top=False, pooling="avg")
    assert model.inputs[0] is inp or model.inputs[0].shape == inp.shape
    assert model.name == "mobilenetv2_1.00_160"
    assert kl.MobileNet(weights=None).input.shape == (None, 224, 224, 3)
    assert kl.MobileNet(weights=None, include_top=False).input.shape == (None, None, None, 3)
    assert kl.MobileNetV3Small(weights=None).input.shape == (None, None, None, 3)


def test_imagenet_argument_checks():
    with pytest.raises(ValueError, match="Received: classes=10"):
        kl.MobileNetV2(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="Received: alpha=0.6"):
        kl.MobileNet(weights="imagenet", alpha=0.6)
    with pytest.raises(ValueError, match="Received: depth_multiplier=2"):
        kl.MobileNet(weights="imagenet", depth_multiplier=2)
    with pytest.raises(ValueError, match="Received: alpha=0.75"):
        kl.MobileNetV3Small(weights="imagenet", alpha=0.75, minimalistic=True)
    with pytest.raises(ValueError, match="Received: classifier_activation='relu'"):
        kl.MobileNetV3Small(weights="imagenet", classifier_activation="relu")

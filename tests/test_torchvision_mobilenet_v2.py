"""torchvision's MobileNetV2 flavour: a `.pth` through `MobileNetV2(weights=path)` gives
torchvision's logits (issue #20, item 5)."""

import keras
import numpy as np
import pytest
from conftest import import_torchvision, sample_photos
from harness import torch_trained_like

import keras_lightnets as kl

SIZE = 64
# torchvision's ImageNet normalization on [0, 1] pixels.
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def _torch_input(torch, x):
    x = (x / 255.0 - np.array(TORCH_MEAN)) / np.array(TORCH_STD)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype("float32"))


@pytest.mark.torch
def test_mobilenet_v2_pth_gives_torchvision_logits(tmp_path):
    torch, models = import_torchvision()
    reference = models.mobilenet_v2(weights=None)
    photos, _ = sample_photos(SIZE, 24)
    fit, check = photos[:16], photos[16:]
    torch_trained_like(torch, reference, _torch_input(torch, fit))
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(reference.state_dict(), path)

    model = kl.MobileNetV2(weights=path, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    # torchvision at float64: the difference is then the Keras model's float32 rounding.
    with torch.no_grad():
        expected = reference.double()(_torch_input(torch, check).double()).numpy()
    got = np.asarray(model(check, training=False))
    assert np.std(expected) > 1.0, "degenerate reference logits"
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    print(f"max |diff| {np.abs(got - expected).max():.2e}, logit std {np.std(expected):.3f}")


def test_mobilenet_v2_torchvision_flavour_is_built_for_a_pth_file(tmp_path):
    torch, models = import_torchvision()
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(models.mobilenet_v2(weights=None).state_dict(), path)
    model = kl.MobileNetV2(weights=path, input_shape=(SIZE, SIZE, 3))
    norms = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    assert {(la.epsilon, la.momentum) for la in norms} == {(1e-5, 0.9)}
    assert model.layers[1].name == "rescaling"
    assert model.get_layer("dropout").rate == 0.2
    assert model.count_params() == kl.MobileNetV2(weights=None).count_params()
    raw = kl.MobileNetV2(weights=path, input_shape=(SIZE, SIZE, 3), include_preprocessing=False)
    assert "rescaling" not in [la.name for la in raw.layers]
    # A keras.applications-flavoured model refuses the file.
    with pytest.raises(ValueError, match="torchvision's, for its flavour of MobileNetV2"):
        kl.weights.load_file(kl.MobileNetV2(weights=None, input_shape=(SIZE, SIZE, 3)), path)

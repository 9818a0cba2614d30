"""torchvision's MobileNetV3 flavour: a `.pth` state dict of `mobilenet_v3_large/small`
loads through `weights=<path>` and the model's logits are torchvision's."""

import numpy as np
import pytest
from conftest import import_torchvision, sample_photos

import keras_lightnets as kl
from keras_lightnets.weights import convert, pth, sources

SIZE = 64
LOGIT_STD = 3.0
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def trained_like(torch, module, x, seed=0):
    """Batch norms: random scale and offset, their input's statistics on `x`; the last
    linear layer re-centred and scaled to logits of std `LOGIT_STD` (as harness.py)."""
    gen = np.random.default_rng(seed)

    def measure(layer, inputs):
        t = inputs[0].double()
        n = layer.num_features
        gamma = torch.from_numpy(gen.uniform(0.5, 1.5, n))
        layer.weight.copy_(gamma)
        layer.bias.copy_(gamma * torch.from_numpy(gen.uniform(1.0, 2.0, n)))
        layer.running_mean.copy_(t.mean((0, 2, 3)))
        layer.running_var.copy_(t.var((0, 2, 3), unbiased=False))

    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    hooks = [m.register_forward_pre_hook(measure) for m in norms]
    module.eval()
    with torch.no_grad():
        logits = module(x).double()
        for hook in hooks:
            hook.remove()
        fc = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
        mean = logits.mean(0)
        gain = LOGIT_STD / (logits - mean).std(unbiased=False)
        fc.weight.mul_(gain)
        fc.bias.copy_((fc.bias - mean) * gain)
    return module


@pytest.mark.torch
@pytest.mark.parametrize("factory", ["MobileNetV3Large", "MobileNetV3Small"])
def test_mobilenet_v3_matches_torchvision(factory, tmp_path):
    torch, models = import_torchvision()
    images, _ = sample_photos(SIZE, 8)
    x = torch.from_numpy(((images / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype("float32"))
    reference = getattr(models, "mobilenet_v3_" + factory[11:].lower())(weights=None)
    trained_like(torch, reference, x)
    path = tmp_path / f"{factory}.pth"
    torch.save(reference.state_dict(), path)
    with torch.no_grad():
        # torch's own float32 logits drift from these by up to ~1e-4.
        expected = reference.double()(x.double()).numpy()

    assert sources.flavour_for(factory, path) is sources.TORCHVISION.flavours[factory]
    model = getattr(kl, factory)(weights=str(path), input_shape=(SIZE, SIZE, 3),
                                 classifier_activation=None)
    state = pth.load_state_dict(path)
    used = convert.load_state(model, state, sources.TORCHVISION, factory)
    assert used == sorted(k for k in state if not k.endswith("num_batches_tracked"))
    got = np.asarray(model(images, training=False))
    assert np.std(expected) > 2, "degenerate reference logits"
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    print(f"{factory}: max |diff| {np.abs(got - expected).max():.1e}")

"""timm's own models as references: import, trained-like weights, `.safetensors` files,
inputs and logit comparisons shared by the timm parity tests."""

import copy

import keras
import numpy as np
import pytest
from conftest import import_torchvision, sample_photos
from harness import torch_trained_like as timm_trained_like

TOL = 1e-4


def import_timm():
    """torch and timm (timm imports torchvision: its stub first), or skip."""
    torch, _ = import_torchvision()
    timm = pytest.importorskip("timm", reason="pip install timm==1.0.31")
    return torch, timm


def timm_normalize(x, cfg):
    """timm's eval transform on [0, 255] RGB pixels: `/ 255`, the config's mean and std."""
    mean, std = (np.array(cfg[k], "float32") for k in ("mean", "std"))
    return ((x / 255.0 - mean) / std).astype("float32")


def to_torch(torch, x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def timm_input(torch, x, cfg):
    """NHWC [0, 255] pixels as the NCHW tensor timm's eval transform gives (`cfg`'s
    mean and std)."""
    return to_torch(torch, timm_normalize(x, cfg))


def timm_file(torch, module, path):
    """`module`'s state dict written as timm's hub `model.safetensors`; returns its path."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return str(path)


def timm_reference(name, size, tmp_path, batch=8):
    """`(module, file, pixels, logits)`: timm's `name` made trained-like on photos at `size`,
    its `.safetensors` file and its float64 logits on raw [0, 255] pixels."""
    torch, timm = import_timm()
    module = timm.create_model(name, pretrained=False)
    x, _ = sample_photos(size, batch)
    timm_trained_like(torch, module, timm_input(torch, x, module.pretrained_cfg))
    path = timm_file(torch, module, tmp_path / f"{name}.safetensors")
    return module, path, x, float64_logits(torch, module, x)


def assert_file_parity(torch, module, path, x, entry, cfg):
    """`entry` built from `module`'s timm file `path` gives its logits and features on raw
    pixels `x` (timm's eval transform with `cfg`'s mean and std) within `TOL` of the largest
    value, and loads every tensor of the file; returns the loaded keys."""
    from keras_lightnets import weights as wl
    from keras_lightnets.weights import sources

    ours = entry.build(weights=str(path), classifier_activation=None)
    headless = entry.build(weights=str(path), include_top=False)
    x_torch = timm_input(torch, x, cfg)
    with torch.no_grad():
        ref = module(x_torch).numpy()
        ref_features = module.forward_features(x_torch).numpy().transpose(0, 2, 3, 1)
    diff = float(np.abs(np.asarray(ours(x, training=False)) - ref).max())
    features = np.asarray(headless(x, training=False))
    print(f"\n{entry.name}: max |logit diff| {diff:.2e}, max |logit| {np.abs(ref).max():.2f}, "
          f"logit std {ref.std():.2f}")
    assert ref.std(0).mean() > 0.5 * ref.std(), "the logits follow the image"
    # Relative to the largest value, as `harness.FLOAT_REL`: with trained-like batch norms
    # timm's own float32 logits are off its float64 ones by about 1e-4 absolute.
    assert diff <= TOL * np.abs(ref).max()
    assert np.abs(features - ref_features).max() <= TOL * np.abs(ref_features).max()
    used = wl.load_state(ours, sources.TIMM.reader(path), sources.TIMM, entry.family)
    assert used == sorted(k for k in module.state_dict() if not k.endswith("num_batches_tracked"))
    return used


def float64_logits(torch, module, x):
    """`module`'s logits on raw pixels `x`, computed in float64 (then float32): the reference
    holds none of float32's rounding, so a comparison measures the Keras model's alone."""
    images = timm_input(torch, x.astype("float64"), module.pretrained_cfg)
    with torch.no_grad():
        return copy.deepcopy(module).double()(images.double()).float().numpy()


def float64_model(factory, **kwargs):
    """`factory(**kwargs)` built in float64: exact numerics show as float64 rounding."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        return factory(**kwargs)
    finally:
        keras.config.set_dtype_policy(policy)


def assert_logits(keras_logits, ref, what, exact=False):
    """float32 logits within `TOL` of the largest reference logit (float32 rounding through
    the depth of the model), float64 ones within `TOL / 10` absolute (`exact`)."""
    diff = float(np.abs(np.asarray(keras_logits, "float64") - ref).max())
    bound = TOL / 10 if exact else TOL * float(np.abs(ref).max())
    print(f"{what}: max |logit diff| {diff:.2e} (bound {bound:.1e}), logit std {ref.std():.2f}")
    assert ref.std() > 1.0, "the logits follow the input"
    assert diff < bound, what

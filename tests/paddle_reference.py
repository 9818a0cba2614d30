"""PaddleClas's own models as references: run in a subprocess, never next to TensorFlow.

    python tests/paddle_reference.py OUT_DIR [--size 64] [--batch 4] ARCH [ARCH ...]

For each PaddleClas architecture name (`MobileNetV3_large_x1_0`, `MobileNetV1_x0_25`,
`MobileNetV2_x1_5`, `ShuffleNetV2_swish`, ...) builds PaddleClas's model from the
installed `ppcls` backbone file, with random weights made trained-like (every batch
norm gets a random scale and offset and the statistics of its input on the batch;
the classifier is re-centred and scaled so the logits have std 3), and writes
`OUT_DIR/<arch>.pdparams` (`paddle.save` of its state dict) and `OUT_DIR/<arch>.npz`
with `images` (the raw 0-255 RGB NHWC float32 batch), `logits` (PaddleClas's
float32 logits on that batch after PaddleClas's normalization) and `logits64` (the
same model and batch in float64, the pixels normalized in float64: the float32 logits
drift from them by up to ~1e-4).

Importing paddle in a process that imported TensorFlow crashes: tests run this
through `paddle_ref.reference`.
"""

import argparse
import importlib.util
import os
import pathlib
import sys
import types

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
LOGIT_STD = 3.0
SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
# Backbone file (under ppcls/arch/backbone) of each architecture-name prefix.
FILES = {
    "MobileNetV3_": "legendary_models/mobilenet_v3.py",
    "MobileNetV1": "legendary_models/mobilenet_v1.py",
    "MobileNetV2": "model_zoo/mobilenet_v2.py",
    "ShuffleNetV2": "model_zoo/shufflenet_v2.py",
}


def _ppcls_root():
    spec = importlib.util.find_spec("paddleclas")
    if spec is None:
        sys.exit("paddleclas is not installed (pip install --no-deps paddleclas==2.6.0)")
    return pathlib.Path(spec.submodule_search_locations[0]) / "ppcls"


def _package(name, path=None):
    module = types.ModuleType(name)
    module.__path__ = [str(path)] if path else []
    sys.modules[name] = module
    return module


def load_backbone(relative):
    """The backbone module `ppcls/arch/backbone/<relative>`, without ppcls' __init__s
    (they import OpenCV and more): packages and `ppcls.utils.{logger,save_load}` stubbed."""
    root = _ppcls_root()
    backbone = root / "arch" / "backbone"
    for name, path in [("ppcls", root), ("ppcls.arch", root / "arch"),
                       ("ppcls.arch.backbone", backbone),
                       ("ppcls.arch.backbone.base", backbone / "base"),
                       ("ppcls.arch.backbone.legendary_models", backbone / "legendary_models"),
                       ("ppcls.arch.backbone.model_zoo", backbone / "model_zoo"),
                       ("ppcls.utils", None)]:
        if name not in sys.modules:
            _package(name, path)
    utils = sys.modules["ppcls.utils"]
    logger = types.ModuleType("ppcls.utils.logger")
    for level in ("info", "warning", "error", "debug"):
        setattr(logger, level, lambda *args, **kwargs: None)
    save_load = types.ModuleType("ppcls.utils.save_load")
    save_load.load_dygraph_pretrain = save_load.load_dygraph_pretrain_from_url = None
    sys.modules.update({"ppcls.utils.logger": logger, "ppcls.utils.save_load": save_load})
    utils.logger, utils.save_load = logger, save_load
    name = "ppcls.arch.backbone." + relative[:-3].replace("/", ".")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, backbone / relative)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def factory(arch):
    for prefix, relative in FILES.items():
        if arch.startswith(prefix):
            return getattr(load_backbone(relative), arch)
    sys.exit(f"No PaddleClas backbone file known for {arch!r}; known prefixes: {list(FILES)}")


def images(size, batch, seed=0):
    """`batch` sample photos resized to `size` (smooth random images without them)."""
    files = sorted((SAMPLE / "jpeg").glob("*.JPEG"))[:batch]
    if len(files) == batch:
        from PIL import Image

        return np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size),
                                                                        Image.BILINEAR))
                         for f in files]).astype("float32")
    coarse = np.random.default_rng(seed).uniform(0, 255, (batch, 8, 8, 3))
    return np.kron(coarse, np.ones((1, size // 8, size // 8, 1))).astype("float32")


def normalize(x, dtype="float32"):
    """PaddleClas's preprocessing after the resize: /255, ImageNet mean/std, NCHW."""
    x = x.astype(dtype)
    mean, std = MEAN.astype(dtype), STD.astype(dtype)
    return ((x / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(dtype)


def trained_like(paddle, model, x, seed=0):
    """Batch norms: random scale and offset, their input's statistics on `x`; the
    classifier re-centred and scaled to logits of std `LOGIT_STD` (as tests/harness.py)."""
    rng = np.random.default_rng(seed)
    norms = [m for m in model.sublayers() if isinstance(m, (paddle.nn.BatchNorm,
                                                            paddle.nn.BatchNorm2D))]

    def measure(layer, inputs):
        t = inputs[0].numpy()
        gamma = rng.uniform(0.5, 1.5, t.shape[1])
        layer.weight.set_value(gamma.astype("float32"))
        layer.bias.set_value((gamma * rng.uniform(1.0, 2.0, t.shape[1])).astype("float32"))
        layer._mean.set_value(t.mean(axis=(0, 2, 3)).astype("float32"))
        layer._variance.set_value(t.var(axis=(0, 2, 3)).astype("float32"))

    hooks = [m.register_forward_pre_hook(measure) for m in norms]
    model.eval()
    with paddle.no_grad():
        logits = model(paddle.to_tensor(x)).numpy()
    for hook in hooks:
        hook.remove()
    fc = [m for m in model.sublayers() if isinstance(m, paddle.nn.Linear)][-1]
    centred = logits - logits.mean(axis=0)
    gain = LOGIT_STD / centred.std()
    fc.weight.set_value(fc.weight.numpy() * gain)
    fc.bias.set_value((fc.bias.numpy() - logits.mean(axis=0)) * gain)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("archs", nargs="+")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args(argv)
    if "tensorflow" in sys.modules:
        sys.exit("Importing paddle after TensorFlow crashes: run this in its own process.")
    import paddle

    paddle.set_device("cpu")
    paddle.seed(0)
    os.makedirs(args.out_dir, exist_ok=True)
    raw = images(args.size, args.batch)
    x = normalize(raw)
    for arch in args.archs:
        with paddle.utils.unique_name.guard():
            model = factory(arch)()
        trained_like(paddle, model, x)
        out = pathlib.Path(args.out_dir)
        paddle.save(model.state_dict(), str(out / f"{arch}.pdparams"))
        with paddle.no_grad():
            logits = model(paddle.to_tensor(x)).numpy()
            model.to(dtype="float64")
            logits64 = model(paddle.to_tensor(normalize(raw, "float64"))).numpy()
        np.savez(out / f"{arch}.npz", images=raw, logits=logits, logits64=logits64)
        print(f"{arch}: logit std {logits.std():.3f}, float32 drift "
              f"{np.abs(logits - logits64).max():.1e}", flush=True)


if __name__ == "__main__":
    main()

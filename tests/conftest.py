"""Shared fixtures: paths to ../shared, the sample photos, seeded data."""

import csv
import ctypes
import functools
import gc
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow's oneDNN kernels otherwise draw from a pool of their own that
# never shrinks: a worker would keep every batch it ever predicted on.
os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAMPLE = SHARED / "data" / "imagenet-sample"
WEIGHTS = SHARED / "data" / "weights"
COMPLEXITY = SHARED / "reference" / "complexity.json"


def shared_file(path):
    """`path` under ../shared, or skip the test saying what is missing."""
    path = pathlib.Path(path)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (see ../shared/data/SOURCES.md)")
    return path


@functools.lru_cache(maxsize=4)
def _sample_photos(size, limit):
    from PIL import Image

    labels = shared_file(SAMPLE / "labels.csv")
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))[:limit]
    # Kept as uint8 (what PIL decodes): a quarter of the float32 size.
    images = np.empty((len(rows), size, size, 3), dtype="uint8")
    for i, row in enumerate(rows):
        with Image.open(SAMPLE / "jpeg" / row["filename"]) as img:
            images[i] = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))
    labels = np.array([int(r["class_index"]) for r in rows])
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def sample_photos(size=224, limit=1000):
    """The real ImageNet sample photos, resized straight to `size`: (x, y).

    x is a new float32 RGB array in [0, 255] (preprocess it in place).
    """
    images, labels = _sample_photos(size, limit)
    return images.astype("float32"), labels.copy()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def import_torchvision():
    """torch and torchvision.models for parity tests, or skip with a reason.

    torchvision 0.28's compiled ops do not match the CPU torch build; its model
    code does, once the meta-registrations module is stubbed out.
    """
    import sys
    import types

    torch = pytest.importorskip("torch", reason="torch is a dev dependency (pip install .[dev])")
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("stub"))
    models = pytest.importorskip("torchvision.models",
                                 reason="pip install --no-deps torchvision==0.28.0")
    torch.manual_seed(0)
    return torch, models


def randomize_torch_bn(module, seed=0):
    """Non-trivial batch-norm statistics on a torch module, in place."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.6 + 0.7)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return module.eval()


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _collect():
    gc.collect()
    try:  # glibc keeps freed arenas mapped; give them back
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _release_memory():
    """Drops what Keras, tf_keras and the allocator keep after a test module."""
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    if "tf_keras" in sys.modules:
        sys.modules["tf_keras"].backend.clear_session()
    _collect()


@pytest.fixture(scope="module", autouse=True)
def _module_memory():
    """Each test module leaves a worker as lean as it found it."""
    yield
    _release_memory()


# Conversions (tf2onnx, the TFLite converter) leave cyclic garbage behind; a test
# that grew the worker by more than this is followed by a collection.
_GROWTH_BYTES = 200 << 20


@pytest.fixture(autouse=True)
def _test_memory():
    before = _rss_bytes()
    yield
    if _rss_bytes() - before > _GROWTH_BYTES:
        _collect()


# `KL_TEST_RSS_LOG=path` records each test's resident memory after it ran, to find what
# holds memory in a worker.
_RSS_LOG = os.environ.get("KL_TEST_RSS_LOG")


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish(nodeid, location):
    if _RSS_LOG:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(_RSS_LOG, "a") as f:
            f.write(f"{worker}\t{_rss_bytes() >> 20}\t{nodeid}\n")

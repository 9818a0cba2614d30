"""PaddleClas reference files for parity tests, made once per test session.

Test modules call `request(*archs)` at import (collection) time; the first
`reference(arch)` runs `paddle_reference.py` in one subprocess for every
architecture requested so far, so the session pays Paddle's start-up once.
Tests skip when paddle or paddleclas is not installed.
"""

import atexit
import importlib.util
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

SCRIPT = pathlib.Path(__file__).with_name("paddle_reference.py")
SIZE = 64  # input rows and columns of every reference batch
BATCH = 8  # images per batch: the batch norms' statistics are measured on it
_requested = []
_made = {}  # arch -> directory holding its files


def request(*archs):
    """Adds `archs` to the next run; returns them (for `parametrize`)."""
    _requested.extend(a for a in archs if a not in _requested)
    return list(archs)


def _installed():
    # find_spec does not import: importing paddle after TensorFlow crashes.
    return all(importlib.util.find_spec(name) for name in ("paddle", "paddleclas"))


def reference(arch):
    """`(pdparams_path, images, logits, logits64)` of PaddleClas's `arch` (see
    paddle_reference.py), or skip without paddle."""
    if not _installed():
        pytest.skip("paddlepaddle and paddleclas are dev dependencies "
                    "(pip install paddlepaddle; pip install --no-deps paddleclas)")
    request(arch)
    if arch not in _made:
        pending = [a for a in _requested if a not in _made]
        out = tempfile.mkdtemp(prefix="paddle_ref_")
        atexit.register(shutil.rmtree, out, ignore_errors=True)
        run = subprocess.run([sys.executable, str(SCRIPT), out, "--size", str(SIZE),
                              "--batch", str(BATCH), *pending],
                             capture_output=True, text=True, timeout=900)
        if run.returncode:
            pytest.fail(f"paddle_reference.py failed ({run.returncode}):\n{run.stderr[-3000:]}")
        _made.update(dict.fromkeys(pending, pathlib.Path(out)))
    folder = _made[arch]
    with np.load(folder / f"{arch}.npz") as data:
        return folder / f"{arch}.pdparams", data["images"], data["logits"], data["logits64"]

"""The code base stays ruff clean and free of Lambda layers and tf.keras."""

import re
import shutil
import subprocess

import pytest
from conftest import ROOT


def test_ruff_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: `pip install .[dev]` installs it")
    result = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# The one line allowed to touch `tf.keras`: optimize resolves TensorFlow's lazy
# Keras attribute before importing TF-MOT, so that the import cannot switch it.
ALLOWED = {("keras_lightnets/optimize/pruning.py", 'getattr(tf.keras, "version", None)')}


def test_package_uses_no_lambda_and_no_tf_keras():
    pattern = re.compile(r"\bLambda\(|\btf\.keras\b")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / "keras_lightnets").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and not line.lstrip().startswith("#")
        and not any(str(path.relative_to(ROOT)) == f and line.strip().startswith(code)
                    for f, code in ALLOWED)
    ]
    assert not offenders, offenders

"""The example notebooks run top to bottom offline and reach what they claim.

Each notebook runs in a fresh kernel (nbclient) in examples/, forced onto the offline task
(`KL_EXAMPLES_OFFLINE=1`: the 1000 ImageNet sample photos of ../shared as dog vs. not dog,
MobileNet 0.25 with the real Keras ImageNet weights), writing its files and its executed copy
under tmp_path; the committed notebooks are left alone. The assertions read the `RESULT {...}`
line the last cell prints.
"""

import json
import os

import nbformat
import pytest
from conftest import ROOT, SAMPLE, WEIGHTS, shared_file
from nbclient import NotebookClient

EXAMPLES = ROOT / "examples"
NOTEBOOKS = ("transfer_learning", "prune_and_quantize")
# 118 of the 1000 photos are dogs; the validation split holds 30% of each class.
VALIDATION_IMAGES = 300
BASELINE = 265 / 300  # always "not dog"
# "Above the baseline by a clear margin": plain accuracy, and balanced accuracy (the mean of
# the recalls, 0.5 for the baseline) so that a model answering mostly "not dog" cannot pass.
MARGIN = 0.03
MIN_BALANCED = 0.75


def outputs(nb):
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


def result_of(nb):
    lines = [line for o in outputs(nb) if o.output_type == "stream" and o.name == "stdout"
             for line in o.text.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, f"expected one RESULT line, found {len(lines)}"
    return json.loads(lines[0][len("RESULT "):])


def images_in(nb):
    return sum("image/png" in o.get("data", {}) for o in outputs(nb))


def run_notebook(name, tmp_path, monkeypatch):
    """Executes examples/{name}.ipynb offline; returns its RESULT and the executed notebook."""
    shared_file(SAMPLE / "labels.csv")
    shared_file(WEIGHTS / "mobilenet_1_0.25_224_keras.h5")
    # The kernel inherits this environment: the tree under test first on its path (an
    # installed copy of the package must not win), the offline task, a scratch output dir.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("KL_EXAMPLES_OFFLINE", "1")
    monkeypatch.setenv("KL_EXAMPLES_OUTPUT", str(tmp_path / "output"))
    monkeypatch.setenv("KL_SHARED_DATA", str(SAMPLE.parent))
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    nb = nbformat.read(EXAMPLES / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3",
        # Native log lines (TensorFlow's C++ start-up messages) stay out of the outputs.
        extra_arguments=["--IPKernelApp.capture_fd_output=False"],
        resources={"metadata": {"path": str(EXAMPLES)}},
    )
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / f"{name}.ipynb")  # the executed copy, to look at
    result = result_of(nb)
    print(f"\n{name}: {json.dumps(result)}")
    return result, nb


def test_transfer_learning_notebook(tmp_path, monkeypatch):
    result, nb = run_notebook("transfer_learning", tmp_path, monkeypatch)
    assert result["offline"] is True
    assert result["validation_images"] == VALIDATION_IMAGES
    assert result["baseline"] == pytest.approx(BASELINE)
    assert result["val_accuracy"] >= BASELINE + MARGIN, result
    assert result["balanced_accuracy"] >= MIN_BALANCED, result
    # The float32 file makes the Keras model's predictions (one photo of slack); the int8 one
    # still detects dogs, in about a third of the bytes.
    tflite = result["tflite"]
    assert abs(tflite["float32"]["accuracy"] - result["val_accuracy"]) <= 1 / VALIDATION_IMAGES
    assert tflite["int8"]["accuracy"] >= BASELINE + MARGIN, result
    assert tflite["int8"]["balanced_accuracy"] >= MIN_BALANCED, result
    assert tflite["int8"]["bytes"] < 0.4 * tflite["float32"]["bytes"]
    assert images_in(nb) >= 2  # the augmented images and the learning curves


def test_prune_and_quantize_notebook(tmp_path, monkeypatch):
    result, nb = run_notebook("prune_and_quantize", tmp_path, monkeypatch)
    assert result["offline"] is True
    assert result["baseline"] == pytest.approx(BASELINE)
    steps = result["steps"]
    assert list(steps) == ["float", "pruned", "pruned + QAT", "int8 TFLite"]
    float_, pruned, qat, int8 = steps.values()
    assert float_["accuracy"] >= BASELINE + MARGIN and float_["balanced_accuracy"] >= MIN_BALANCED
    # Every Conv2D/Dense kernel half zeros after pruning, and still after QAT.
    assert pruned["min_kernel_sparsity"] >= 0.5 and qat["min_kernel_sparsity"] >= 0.5
    # The zeros do not shrink the float file, they make it compress.
    assert pruned["bytes"] == float_["bytes"]
    assert pruned["gzip_bytes"] < 0.75 * float_["gzip_bytes"]
    assert int8["bytes"] < 0.4 * float_["bytes"]
    assert int8["gzip_bytes"] < 0.3 * float_["gzip_bytes"]
    # The compressed model still finds most dogs without giving up the baseline's accuracy
    # (pruned and int8 runs land 2-5 points above it), and the int8 file keeps the QAT
    # model's accuracy.
    assert int8["accuracy"] > BASELINE, steps
    assert int8["balanced_accuracy"] >= MIN_BALANCED, steps
    assert abs(int8["accuracy"] - qat["accuracy"]) <= 0.02, steps
    tables = [o["data"]["text/markdown"] for o in outputs(nb)
              if "text/markdown" in o.get("data", {})]
    assert len(tables) == 1 and "| int8 TFLite |" in tables[0]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_hold_their_outputs(name):
    """The repository copies show a real offline run: numbers, tables and plots."""
    nb = nbformat.read(EXAMPLES / f"{name}.ipynb", as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "run every cell before committing"
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    assert result_of(nb)["offline"] is True
    if name == "transfer_learning":
        assert images_in(nb) >= 2
    else:
        assert any("text/markdown" in o.get("data", {}) for o in outputs(nb))

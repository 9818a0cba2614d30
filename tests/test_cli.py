"""The keras-lightnets command, end to end through subprocess."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLE, WEIGHTS, shared_file


def run_cli(*args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "keras_lightnets_cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )


def test_demo_runs_offline_with_random_weights():
    result = run_cli("demo", "--model", "mobilenet_v3_small_100")
    assert result.returncode == 0, result.stderr
    assert "params" in result.stdout and "2,554,968" in result.stdout
    assert "MACs" in result.stdout
    assert "Top-5" in result.stdout


def test_classify_with_real_weights():
    weights = shared_file(WEIGHTS / "mobilenet_1_0.25_224_keras.h5")
    photo = shared_file(SAMPLE / "jpeg" / "n01530575_brambling.JPEG")
    result = run_cli("classify", "mobilenet_v1_025", str(photo), "--weights", str(weights))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("Top-5")
    assert len(lines) == 6
    assert "n01530575" in result.stdout  # brambling is among the top 5


def test_info_and_list():
    result = run_cli("info", "mobilenet_v2_035")
    assert result.returncode == 0, result.stderr
    assert "1,691,208" in result.stdout
    result = run_cli("list", "--family", "MobileNetV3Small")
    assert result.returncode == 0, result.stderr
    assert "mobilenet_v3_small_minimal_100" in result.stdout


@pytest.mark.parametrize("args", [
    ("info", "no_such_model"),
    ("classify", "mobilenet_v1_025", "/no/such.jpg", "--weights", "none"),
    ("demo", "--weights", "/no/such/file.h5"),
    ("frobnicate",),
])
def test_user_errors_exit_2_without_traceback(args):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 or args == ("frobnicate",), lines
    assert lines[-1].startswith("keras-lightnets: error:"), lines

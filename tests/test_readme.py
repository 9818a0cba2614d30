"""README.md works as written: its Python snippets run, its commands exit 0 (or 2, one line).

Offline: `weights="imagenet"` is served from a `file://` mirror holding the real Keras
MobileNet 0.25 file from ../shared and torchvision-layout ShuffleNetV2 files written here from
torchvision's own model (random weights, trained-like batch norm, logits of std ~3). The names a
snippet leaves to the reader (`photos`, `train_ds`) are the only things defined for it.
"""

import os
import re
import runpy
import shutil
import subprocess
import sys

import numpy as np
import paddle_ref
import pytest
from conftest import ROOT, SAMPLE, WEIGHTS, import_torchvision, sample_photos, shared_file

README = (ROOT / "README.md").read_text(encoding="utf-8")
# A photo the real MobileNet 0.25 weights classify right with confidence.
PHOTO = "n01622779_great_grey_owl.JPEG"
# torchvision file name of each ShuffleNetV2 width the README loads.
SHUFFLENET_FILES = {"x1_0": "shufflenetv2_x1-5666bf0f80.pth",
                    "x1_5": "shufflenetv2_x1_5-3c479a10.pth"}


def sections():
    """`{heading: [python code, ...]}` of the README's ```python blocks."""
    found, heading = {}, None
    for match in re.finditer(r"^(#+ [^\n]*)$|^```python\n(.*?)^```", README, re.M | re.S):
        if match.group(1):
            heading = match.group(1).lstrip("# ").strip()
        else:
            found.setdefault(heading, []).append(match.group(2))
    return found


SSLD_FILE = "MobileNetV3_large_x1_0_ssld_pretrained.pdparams"
paddle_ref.request("MobileNetV3_large_x1_0")


def _torchvision_file(path, width):
    torch, models = import_torchvision()
    from conftest import randomize_torch_bn

    net = randomize_torch_bn(getattr(models, f"shufflenet_v2_{width}")())
    with torch.no_grad():
        net.fc.weight.mul_(3 / net(torch.rand(4, 3, 224, 224)).std())
    torch.save(net.state_dict(), path)


@pytest.fixture(scope="module")
def offline_weights(tmp_path_factory):
    """A `file://` mirror and an empty Keras cache; the working folder holds the named files."""
    keras_file = shared_file(WEIGHTS / "mobilenet_1_0.25_224_keras.h5")
    photo = shared_file(SAMPLE / "jpeg" / PHOTO)
    root = tmp_path_factory.mktemp("readme")
    mirror, work = root / "mirror", root / "work"
    mirror.mkdir()
    work.mkdir()
    shutil.copy(keras_file, mirror / "mobilenet_2_5_224_tf.h5")
    for width, name in SHUFFLENET_FILES.items():
        _torchvision_file(mirror / name, width)
    # PaddleClas's SSLD MobileNetV3 Large, as its own code writes that architecture.
    pdparams = paddle_ref.reference("MobileNetV3_large_x1_0")[0]
    shutil.copy(pdparams, mirror / SSLD_FILE)
    # The files the snippets and commands name in their working folder.
    shutil.copy(keras_file, work / "mobilenet_2_5_224_tf.h5")
    shutil.copy(mirror / SHUFFLENET_FILES["x1_0"], work / SHUFFLENET_FILES["x1_0"])
    shutil.copy(photo, work / "photo.jpg")
    (work / "photos").mkdir()
    for name in sorted(os.listdir(SAMPLE / "jpeg"))[:24]:
        shutil.copy(SAMPLE / "jpeg" / name, work / "photos" / name)
    return {"KERAS_HOME": str(root / "keras_home"),
            "KERAS_LIGHTNETS_WEIGHTS_MIRROR": mirror.as_uri(), "work": work}


@pytest.fixture
def readme_env(offline_weights, monkeypatch):
    from keras_lightnets.weights import manifest

    monkeypatch.setenv("KERAS_HOME", offline_weights["KERAS_HOME"])
    monkeypatch.setenv("KERAS_LIGHTNETS_WEIGHTS_MIRROR",
                       offline_weights["KERAS_LIGHTNETS_WEIGHTS_MIRROR"])
    monkeypatch.chdir(offline_weights["work"])
    # The files written here are not torchvision's: their names' hash prefixes do not apply.
    for entry in manifest.load_manifest()["entries"]:
        if entry["file"] in SHUFFLENET_FILES.values():
            monkeypatch.setitem(entry, "hash", None)
    return offline_weights


def _reader_inputs():
    """What the Prune and quantize snippet leaves to the reader: photos and train_ds."""
    import tensorflow as tf

    photos, labels = sample_photos(224, 16)
    train_ds = tf.data.Dataset.from_tensor_slices((photos[:8], labels[:8] % 10)).batch(4)
    return {"photos": np.array(photos), "train_ds": train_ds}


def run_snippets(*headings, namespace=None):
    namespace = {} if namespace is None else namespace
    blocks = sections()
    for heading in headings:
        assert blocks.get(heading), f"README has no python block under '{heading}'"
        for code in blocks[heading]:
            exec(compile(code, f"README.md ({heading})", "exec"), namespace)
    return namespace


def test_every_python_block_is_run_here():
    assert set(sections()) == {"Use", "Weights", "Export", "Prune and quantize"}


def test_use_weights_and_export_snippets(readme_env):
    ns = run_snippets("Use", "Weights", "Export", namespace=_reader_inputs())
    assert ns["model"].name.startswith("shufflenet") and len(ns["features"].outputs) == 3
    # The SSLD file came through the mirror, its first sha256 recorded next to the cached file.
    cache = os.path.join(readme_env["KERAS_HOME"], "models", SSLD_FILE)
    assert os.path.isfile(cache) and os.path.isfile(cache + ".sha256")
    assert ns["ssld"].get_layer("rescaling") is not None
    # The photo snippet classified the real photo with the real weights.
    top5 = ns["mobilenet"].decode_predictions(ns["preds"], top=5)[0]
    assert top5[0][1] == "great_grey_owl", top5
    for path in ("model.tflite", "model_int8.tflite", "model.onnx", "model_savedmodel"):
        assert os.path.exists(path), path


def test_prune_and_quantize_snippet(readme_env):
    ns = run_snippets("Use", namespace=_reader_inputs())
    ns = run_snippets("Prune and quantize", namespace=ns)
    assert os.path.getsize("model_int8.tflite") > 0 and os.path.getsize("model_qdq.onnx") > 0


# Commands: each README line that runs something is run here, or says where it runs.
COVERED_ELSEWHERE = {
    'pip install ".[all]" && keras-lightnets demo': ".ci/run runs it on a fresh machine",
    'pip install ".[all,dev]" && pip install --no-deps torchvision==0.28.0 timm==1.0.31 '
    'paddleclas==2.6.0 && '
    "python -m pytest -n 2 --dist worksteal": ".ci/run runs it on a fresh machine",
    "python -m pytest -m heavy": "the heavy subset itself",
    "python examples/distillation.py": "tests/test_distill.py runs its experiment",
    "python benchmarks/run.py": "tests/test_benchmarks.py runs it on a tiny variant",
    "python benchmarks/front.py": "tests/test_benchmarks.py runs it on a tiny variant",
    "python -m keras_lightnets.weights.manifest --update":
        "rewrites the manifest; tests/test_weights.py and test_cli.py check for drift",
    "python -m pytest": ".ci/run runs the suite",
    "pip install jupyterlab": "an install",
    "pip install tensorflow-datasets": "an install",
    "jupyter lab examples/": "interactive",
    "jupyter execute examples/transfer_learning.ipynb": "tests/test_notebooks.py runs both",
    "ruff check .": "tests/test_style.py runs it",
    "python tools/readme_table.py --write":
        "rewrites README.md's weights table; tests/test_readme_table.py checks for drift",
}
# One concrete call for each synopsis line of the Command line section.
SYNOPSIS = {
    "list": ["list", "--family", "ShuffleNetV2"],
    "info": ["info", "mobilenet_v3_small_100", "--summary"],
    "classify": ["classify", "mobilenet_v1_025", "photo.jpg"],
    "export": ["export", "mobilenet_v1_025", "--format", "tflite", "-o", "m.tflite"],
    "benchmark": ["benchmark", "mobilenet_v1_025", "--input-size", "96", "--runs", "3"],
    "demo": ["demo", "--model", "mobilenet_v1_025", "--image", "photo.jpg"],
}


def shell_blocks():
    """The text of the README's fenced blocks without a language, or marked bash."""
    blocks, current = [], None
    for line in README.splitlines():
        if line.startswith("```"):
            if current is None:
                current = [] if line.strip("`").strip() in ("", "bash") else False
            else:
                if current is not False:
                    blocks.append("\n".join(current))
                current = None
        elif isinstance(current, list):
            current.append(line)
    return blocks


def commands():
    """Command lines of the README: fenced shell lines and inline `python ...`-like spans."""
    lines = []
    for block in shell_blocks():
        for line in block.replace("\\\n", " ").splitlines():
            # Synopsis lines carry their description after two or more spaces.
            lines.append(re.split(r"\s{2,}", line.strip())[0].strip())
    for span in re.findall(r"`([^`\n]+)`", README):
        if re.match(r"(\w+=\w+ )*(python|keras-lightnets|jupyter|pip|ruff)\b", span):
            lines.append(span.strip())
    return sorted({line for line in lines if line})


def _synopsis(line):
    words = line.split()
    is_synopsis = any(w.isupper() or "[" in w or "|" in w for w in words[1:])
    return words[1] if words[0] == "keras-lightnets" and is_synopsis else None


def runnable():
    runs = []
    for line in commands():
        if line in COVERED_ELSEWHERE:
            continue
        sub = _synopsis(line)
        runs.append(["keras-lightnets", *SYNOPSIS[sub]] if sub else line.split())
    return runs


def test_every_command_is_run_or_covered():
    for line in commands():
        sub = _synopsis(line)
        assert line in COVERED_ELSEWHERE or sub is None or sub in SYNOPSIS, line


# What a command's output must show, by its first words.
EXPECTED_OUTPUT = {
    ("keras-lightnets", "classify"): "n01622779  great_grey_owl",  # real weights
    ("keras-lightnets", "demo"): "n01622779  great_grey_owl",
    ("keras-lightnets", "list"): "shufflenet_v2_150",
}


@pytest.mark.parametrize("argv", runnable(), ids=" ".join)
def test_readme_command(argv, readme_env, monkeypatch, capsys):
    argv = list(argv)
    while "=" in argv[0]:  # KERAS_BACKEND=jax python ...
        monkeypatch.setenv(*argv.pop(0).split("=", 1))
    if argv[0] == "keras-lightnets":
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        result = subprocess.run([sys.executable, "-m", "keras_lightnets_cli", *argv[1:]],
                                capture_output=True, text=True, timeout=900, env=env)
        code, out, err = result.returncode, result.stdout, result.stderr
    else:
        # Example scripts run in this process, so that the manifest patch applies.
        monkeypatch.setattr(sys, "argv", [str(ROOT / argv[1]), *argv[2:]])
        try:
            runpy.run_path(str(ROOT / argv[1]), run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
    if code == 2:  # a user error, e.g. no ImageNet TFRecords here
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
    else:
        assert code == 0, err[-3000:]
    assert EXPECTED_OUTPUT.get(tuple(argv[:2]), "") in out

"""keras_lightnets.training: recipes, the TFRecord pipeline, and distributed training.

The distributed runs are examples/train_imagenet.py in subprocesses (the
device count and the backend are fixed at import): two steps under
`MirroredStrategy` on two logical CPU devices, and two under the JAX backend
with `keras.distribution.DataParallel` on two CPU devices.
"""

import io
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import ROOT

from keras_lightnets import registry, training
from keras_lightnets.training import RECIPES

FAMILIES = sorted({e.family for e in registry.entries()})
DEFAULTS = [e for e in registry.entries() if e.default]
CLASSES = 5
# The model of each distributed run: MobileNetV2's recipe (RMSprop, warm-up, exponential decay,
# the weights' moving average swapped in to evaluate) under MirroredStrategy; MobileNet V1's
# (RMSprop, decay, no weight decay on depthwise kernels) under JAX.
RUNS = {"tensorflow": ("mobilenet_v2_035", "MirroredStrategy"),
        "jax": ("mobilenet_v1_025", "DataParallel")}


# Recipes ---------------------------------------------------------------------------------


def test_rows_name_registered_families():
    assert set(RECIPES) - {"default"} <= set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_builds_its_recipe(family):
    recipe = training.get_recipe(family)
    assert recipe is RECIPES.get(family, RECIPES["default"])
    optimizer = training.build_optimizer(recipe, steps_per_epoch=10, batch_size=256, epochs=3)
    assert type(optimizer).__name__.lower() == recipe.optimizer
    lr = float(optimizer.learning_rate)  # at step 0
    assert 0 < lr <= training.scaled_learning_rate(recipe, 256) * (1 + 1e-6)
    loss = training.build_loss(recipe)
    assert loss.get_config()["label_smoothing"] == recipe.label_smoothing
    assert recipe.source


def test_papers_optimizers_and_schedules():
    v1, v2 = RECIPES["MobileNet"], RECIPES["MobileNetV2"]
    assert v1.optimizer == "rmsprop"
    for recipe in (v2, RECIPES["MobileNetV3Small"], RECIPES["MobileNetV3Large"]):
        assert recipe.optimizer == "rmsprop" and recipe.schedule == "exponential"
        assert recipe.decay_rate < 1 and recipe.warmup_epochs > 0
    for name in ("ShuffleNetV1", "ShuffleNetV2"):
        recipe = RECIPES[name]
        assert (recipe.optimizer, recipe.schedule) == ("sgd", "linear")
        assert recipe.weight_decay > 0 and "depthwise_kernel" in recipe.no_decay
        assert recipe.label_smoothing > 0


def test_get_recipe_by_registry_name():
    assert training.get_recipe("mobilenet_v2_100") is RECIPES["MobileNetV2"]
    assert training.get_recipe("shufflenet_v1_g3_100") is RECIPES["ShuffleNetV1"]
    with pytest.raises(ValueError, match="Received: model='resnet50'"):
        training.get_recipe("resnet50")


def test_warmup_then_staircase_decay():
    recipe = RECIPES["MnasNet"]
    schedule = training.learning_rate_schedule(recipe, steps_per_epoch=10, batch_size=1024)
    peak = 0.256 * 1024 / 4096
    lr = [float(schedule(step)) for step in range(0, 120)]
    warmup = 50  # 5 epochs of 10 steps
    np.testing.assert_allclose(lr[:warmup], peak * np.arange(1, warmup + 1) / warmup, rtol=1e-5)
    assert lr[warmup] == pytest.approx(peak, rel=1e-6)
    assert lr[warmup + 23] == pytest.approx(peak, rel=1e-6)  # decays every 2.4 epochs
    assert lr[warmup + 24] == pytest.approx(peak * 0.97, rel=1e-6)
    restored = training.Warmup.from_config(schedule.get_config())
    assert float(restored(77)) == pytest.approx(lr[77], rel=1e-6)


def test_linear_decay_reaches_zero_and_serializes():
    recipe = RECIPES["ShuffleNetV2"]
    schedule = training.learning_rate_schedule(recipe, steps_per_epoch=4, batch_size=512,
                                               epochs=5)
    assert float(schedule(0)) == pytest.approx(0.25)
    assert float(schedule(10)) == pytest.approx(0.125)
    assert float(schedule(20)) == pytest.approx(0.0, abs=1e-9)
    optimizer = training.build_optimizer(recipe, steps_per_epoch=4, batch_size=512, epochs=5)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert restored.get_config()["momentum"] == 0.9
    assert float(restored.learning_rate) == pytest.approx(0.25)


@pytest.mark.parametrize("family", ["ShuffleNetV2", "MobileNetV3Small", "SqueezeNet"])
def test_weight_decay_skips_the_recipes_exemptions(family):
    recipe = RECIPES[family]
    entry = next(e for e in DEFAULTS if e.family == family)
    model = entry.build(weights=None, input_shape=(64, 64, 3), classes=CLASSES)
    paths = training.apply_weight_decay(model, recipe)
    assert paths, family
    for variable in model.trainable_weights:
        exempt = any(variable.path.endswith(s) for s in recipe.no_decay)
        assert (variable.path in paths) != exempt, variable.path
    if "depthwise_kernel" in recipe.no_decay:
        assert not any(p.endswith("depthwise_kernel") for p in paths)
    expected = sum(recipe.weight_decay / 2 * float(np.sum(np.square(v.numpy())))
                   for v in model.trainable_weights if v.path in paths)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-4)


# The TFRecord pipeline -------------------------------------------------------------------


def jpeg(color, size):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, tuple(int(c) for c in color)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """A tiny ImageNet-layout set: solid-colour JPEGs, 1-based labels, 2 train shards + 1 val."""
    folder = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    examples = [(rng.integers(0, 256, 3), (int(rng.integers(40, 90)), int(rng.integers(40, 90))),
                 1 + i % CLASSES) for i in range(20)]
    shards = {"train-00000-of-00002": examples[:8], "train-00001-of-00002": examples[8:16],
              "validation-00000-of-00001": examples[16:]}
    for shard, rows in shards.items():
        count = training.write_tfrecord(folder / shard, [(jpeg(c, s), lab) for c, s, lab in rows])
        assert count == len(rows)
    return folder, examples


def test_validation_pipeline_reads_every_record(records):
    folder, examples = records
    preprocess = registry.get_entry("mobilenet_v1_025").preprocess_input
    ds = training.imagenet_dataset(str(folder / "validation-*"), training=False, image_size=32,
                                   batch_size=3, classes=CLASSES, preprocess_input=preprocess)
    batches = list(ds.as_numpy_iterator())
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4, CLASSES)
    np.testing.assert_array_equal(labels.argmax(1), [lab - 1 for _, _, lab in examples[16:]])
    # A solid colour stays that colour through the crop, scaled to [-1, 1] (JPEG tolerance).
    colors = np.array([c for c, _, _ in examples[16:]]) / 127.5 - 1
    np.testing.assert_allclose(images.mean(axis=(1, 2)), colors, atol=0.05)


def test_training_pipeline_repeats_and_augments(records):
    folder, _ = records
    ds = training.imagenet_dataset([str(p) for p in sorted(folder.glob("train-*"))],
                                   training=True, image_size=48, batch_size=6, classes=CLASSES,
                                   seed=0)
    batches = list(ds.take(5).as_numpy_iterator())  # 30 images from 16 records: it repeats
    assert all(b[0].shape == (6, 48, 48, 3) and b[1].shape == (6, CLASSES) for b in batches)
    pixels = np.concatenate([b[0] for b in batches])
    assert pixels.min() >= 0 and pixels.max() <= 255
    np.testing.assert_allclose(np.concatenate([b[1] for b in batches]).sum(1), 1.0)


def test_pipeline_errors(records):
    folder, _ = records
    with pytest.raises(ValueError, match="Received: file_pattern="):
        training.imagenet_dataset(str(folder / "nothing-*"), training=True)
    with pytest.raises(ValueError, match="Received: min_crop_area=0"):
        training.imagenet_dataset(str(folder / "train-*"), training=True, min_crop_area=0)


@pytest.mark.parametrize("entry", DEFAULTS, ids=lambda e: e.name)
def test_affine_preprocessing_matches_each_family(entry):
    scale, offset = training.affine_preprocessing(entry.preprocess_input)
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    expected = np.asarray(entry.preprocess_input(x.copy()))
    np.testing.assert_allclose(x * scale + offset, expected, atol=1e-5)


def test_affine_preprocessing_rejects_non_affine():
    with pytest.raises(ValueError, match="Received: preprocess_input="):
        training.affine_preprocessing(np.sqrt)


# Strategies ------------------------------------------------------------------------------


def test_strategy_selection_in_process():
    default = training.select_strategy("default")
    assert (default.backend, default.num_replicas) == ("tensorflow", 1)
    with default.scope():
        assert keras.layers.Dense(2).name
    with pytest.raises(ValueError, match="Received: strategy='horovod'"):
        training.select_strategy("horovod")


@pytest.fixture(scope="module", autouse=True)
def launched_runs(request, records, tmp_path_factory):
    """Starts examples/train_imagenet.py (TF mirrored and JAX, 2 CPU devices each) right away.

    The runs go on in the background while the in-process tests of this file run.
    """
    if not any("two_steps" in item.name for item in request.session.items):
        yield None
        return
    folder, _ = records
    out = tmp_path_factory.mktemp("runs")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(ROOT / "examples" / "train_imagenet.py"),
               "--data-dir", str(folder), "--strategy", "mirrored", "--cpu-devices", "2",
               "--batch-size", "4", "--steps-per-epoch", "2", "--epochs", "1",
               "--validation-steps", "0", "--image-size", "32", "--classes", str(CLASSES)]
    procs = {
        backend: subprocess.Popen(command + ["--model", model, "--output", str(out / backend)],
                                  cwd=ROOT, env={**env, "KERAS_BACKEND": backend}, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for backend, (model, _) in RUNS.items()
    }
    yield procs, time.perf_counter()
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def distributed_runs(launched_runs):
    """The runs' JSON summaries, once both have finished."""
    procs, start = launched_runs
    logs = {backend: proc.communicate(timeout=900)[0] for backend, proc in procs.items()}
    print(f"\ndistributed runs: {time.perf_counter() - start:.1f} s since launch, in parallel")
    summaries = {}
    for backend, proc in procs.items():
        assert proc.returncode == 0, f"{backend} run failed:\n{logs[backend][-4000:]}"
        line = [ln for ln in logs[backend].splitlines() if ln.startswith("{")][-1]
        summaries[backend] = json.loads(line)
        print(backend, summaries[backend])
    return summaries


@pytest.mark.parametrize("backend", sorted(RUNS))
def test_two_steps_on_two_devices(distributed_runs, backend):
    summary = distributed_runs[backend]
    model_name, distribution = RUNS[backend]
    assert (summary["backend"], summary["model"]) == (backend, model_name)
    assert (summary["distribution"], summary["replicas"]) == (distribution, 2)
    assert summary["steps_per_epoch"] == 2
    assert summary["optimizer"] == "RMSprop"
    assert summary["decayed_variables"] > 0
    assert len(summary["loss"]) == 1 and np.isfinite(summary["loss"]).all()
    model = keras.models.load_model(summary["saved"], safe_mode=True)
    assert model.output.shape == (None, CLASSES)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
    assert np.isfinite(np.asarray(model(x, training=False))).all()


def test_train_imagenet_without_data_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_imagenet.py"), "--model",
         "mobilenet_v2_035", "--data-dir", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train-*" in lines[0], lines

"""keras_lightnets.distill.Distiller, and examples/distillation.py on the offline task."""

import importlib.util

import keras
import numpy as np
import pytest
from conftest import ROOT, WEIGHTS, sample_photos, shared_file

from keras_lightnets.distill import Distiller


def tiny(classes=3, name=None, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(x), name=name)


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def reference_loss(student_logits, teacher_logits, labels, temperature, alpha):
    """Hinton et al.'s loss, written out in numpy."""
    ce = -log_softmax(student_logits)[np.arange(len(labels)), labels].mean()
    log_p = log_softmax(teacher_logits / temperature)
    log_q = log_softmax(student_logits / temperature)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1).mean()
    return alpha * ce + (1 - alpha) * temperature**2 * kl


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (4.0, 0.1), (2.0, 0.0), (3.0, 1.0)])
def test_loss_is_hintons(temperature, alpha):
    student, teacher = tiny(name="student"), tiny(name="teacher", seed=1)
    distiller = Distiller(student, teacher, temperature=temperature, alpha=alpha)
    distiller.compile(optimizer="sgd")
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2])
    s, t = np.asarray(student(x)), np.asarray(teacher(x))
    got = float(distiller.compute_loss(x, y, distiller(x)))
    np.testing.assert_allclose(got, reference_loss(s, t, y, temperature, alpha), rtol=1e-5)


def test_regularization_losses_are_added():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L2(0.5))(inputs)
    student, teacher = keras.Model(inputs, outputs), tiny(seed=1)
    distiller = Distiller(student, teacher, temperature=2.0, alpha=0.3)
    distiller.compile(optimizer="sgd")
    x = np.ones((2, 4), "float32")
    y = np.array([0, 1])
    total = float(distiller.compute_loss(x, y, distiller(x)))
    penalty = 0.5 * float(np.sum(np.asarray(student.layers[1].kernel) ** 2))
    base = reference_loss(np.asarray(student(x)), np.asarray(teacher(x)), y, 2.0, 0.3)
    np.testing.assert_allclose(total, base + penalty, rtol=1e-5)


@pytest.mark.parametrize("kwargs,arg", [
    ({"temperature": 0}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"alpha": 1.5}, "alpha"),
    ({"alpha": -0.1}, "alpha"),
    ({"alpha": "half"}, "alpha"),
])
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=rf"Received: {arg}="):
        Distiller(tiny(), tiny(seed=1), **kwargs)


def test_bad_models():
    with pytest.raises(ValueError, match="Received: student="):
        Distiller(keras.layers.Dense(3), tiny())
    with pytest.raises(ValueError, match="Received: teacher="):
        Distiller(tiny(), "teacher.keras")
    with pytest.raises(ValueError, match="same classes.*Received: student_classes=3"):
        Distiller(tiny(3), tiny(5))
    distiller = Distiller(tiny(), tiny(seed=1))
    with pytest.raises(ValueError, match="Received: loss="):
        distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")


def test_fit_trains_the_student_only_and_saves_it_alone(tmp_path):
    student, teacher = tiny(name="student"), tiny(name="teacher", seed=1)
    teacher_before = [np.array(w) for w in teacher.get_weights()]
    student_before = [np.array(w) for w in student.get_weights()]
    distiller = Distiller(student, teacher, temperature=2.0, alpha=0.5)
    assert not teacher.trainable
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 3, 32)
    checkpoint = tmp_path / "checkpoint.keras"
    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(checkpoint)])
    assert {"loss", "distillation_loss", "accuracy"} <= set(history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]
    for before, after in zip(teacher_before, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    assert any(not np.array_equal(b, a)
               for b, a in zip(student_before, student.get_weights(), strict=True))
    assert set(distiller.evaluate(x, y, verbose=0, return_dict=True)) >= {
        "loss", "distillation_loss", "accuracy"}

    expected = np.asarray(student(x))
    np.testing.assert_allclose(np.asarray(distiller.predict(x, verbose=0)), expected, atol=1e-6)
    path = tmp_path / "student.keras"
    distiller.save(path)
    for saved in (path, checkpoint):
        loaded = keras.models.load_model(saved, safe_mode=True)
        assert loaded.name == "student"
        assert [w.shape for w in loaded.weights] == [w.shape for w in student.weights]
        np.testing.assert_allclose(np.asarray(loaded(x)), expected, atol=1e-6)

    distiller.save_weights(tmp_path / "student.weights.h5")
    fresh = tiny(name="student", seed=7)
    fresh.load_weights(tmp_path / "student.weights.h5")
    np.testing.assert_allclose(np.asarray(fresh(x)), expected, atol=1e-6)
    other = Distiller(tiny(name="student", seed=9), tiny(seed=1))
    other.load_weights(tmp_path / "student.weights.h5")
    np.testing.assert_allclose(np.asarray(other.student(x)), expected, atol=1e-6)


def test_fit_under_a_tf_distribute_strategy():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        distiller = Distiller(tiny(name="student"), tiny(name="teacher", seed=1))
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, 3, 16)
    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert np.isfinite(history.history["distillation_loss"]).all()


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_distilled_student_beats_labels_only():
    """examples/distillation.py: the distilled student against the same student on labels."""
    example = load_example("distillation")
    weights = shared_file(WEIGHTS / "mobilenet_1_0.25_224_keras.h5")
    images, class_index = sample_photos(example.STUDENT_SIZE, 1000)
    results, distiller = example.run(images, class_index, str(weights))
    print("\n" + example.report(results))
    print({arm: round(results[arm]["seconds"], 1) for arm in ("labels_only", "distilled")})
    teacher, labels, distilled = (results[k]["balanced_accuracy"]
                                  for k in ("teacher", "labels_only", "distilled"))
    assert teacher > 0.85, f"the teacher is not a dog detector (balanced accuracy {teacher:.3f})"
    assert distilled > labels, (
        f"distillation did not help: balanced accuracy {distilled:.3f} vs {labels:.3f} on labels "
        f"alone. With {results['split']['test_dogs']} dogs among the test photos a few photos "
        f"decide; the teacher's own score was {teacher:.3f}.\n" + example.report(results))
    assert isinstance(distiller, Distiller)

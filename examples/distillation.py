"""Distils a small dog detector from a larger one with `keras_lightnets.distill.Distiller`.

The offline task: the ImageNet sample photos (one per class, `../shared/data/imagenet-sample`)
as "dog vs. not dog" (ImageNet classes 151-268 are dogs, 12% of the photos).

- Teacher: MobileNet V1 0.25 with its ImageNet weights at 160 px, its 1000 logits merged into
  two (log-sum-exp over the dog classes and over the others), so it needs no training.
- Student: MobileNet V1 0.25 at 96 px (2.8x fewer multiply-adds) with a new two-class head
  (zeros), its backbone from the same ImageNet weights, blocks 1-11 frozen.

Two copies of the student train on the same 500 photos (and their mirror images) for the same
steps: one on the labels alone, one with the `Distiller` (labels plus the teacher's softened
logits). Both are scored on the other 500 photos; balanced accuracy (the mean of the recall on
dogs and on the rest) is the headline figure because dogs are few.

    python examples/distillation.py [--sample DIR] [--weights FILE] [--output student.keras]

Without `--output` the student is saved in a new temporary folder.
"""

import argparse
import pathlib
import sys
import tempfile
import time

import keras
import numpy as np
from keras import ops

import keras_lightnets as kl
from keras_lightnets.distill import Distiller

# The offline task's photo loader, next to this script.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _offline_data as offline  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
DOG_CLASSES = offline.DOG_CLASSES
STUDENT_SIZE = 96
TEACHER_SIZE = 160
# Student layers up to this one keep their ImageNet weights (blocks 1-11).
FROZEN_UNTIL = "conv_pw_11_relu"


class MergeLogits(keras.layers.Layer):
    """Two logits from ImageNet logits: log-sum-exp over the other classes, then over `members`.

    `softmax` of the result is (P(not member), P(member)) under the ImageNet softmax.
    """

    def __init__(self, members, classes=1000, **kwargs):
        super().__init__(**kwargs)
        self.mask = np.zeros(classes, dtype=bool)
        self.mask[list(members)] = True

    def call(self, logits):
        mask = ops.convert_to_tensor(self.mask)
        floor = ops.full_like(logits, -1e9)
        rest = ops.logsumexp(ops.where(mask, floor, logits), axis=-1)
        members = ops.logsumexp(ops.where(mask, logits, floor), axis=-1)
        return ops.stack([rest, members], axis=-1)


def teacher_model(weights):
    """The 160-px ImageNet MobileNet on 96-px inputs (upsampled), giving dog/not-dog logits."""
    backbone = kl.MobileNet(input_shape=(TEACHER_SIZE, TEACHER_SIZE, 3), alpha=0.25,
                            weights=None, classifier_activation=None)
    backbone.load_weights(weights)
    inputs = keras.Input((STUDENT_SIZE, STUDENT_SIZE, 3))
    x = keras.layers.Resizing(TEACHER_SIZE, TEACHER_SIZE, name="upsample")(inputs)
    outputs = MergeLogits(DOG_CLASSES, name="dog_logits")(backbone(x))
    return keras.Model(inputs, outputs, name="teacher"), backbone


def student_model(backbone):
    """The 96-px student: ImageNet backbone, zero two-class head, blocks 1-11 frozen."""
    student = kl.MobileNet(input_shape=(STUDENT_SIZE, STUDENT_SIZE, 3), alpha=0.25, weights=None,
                           classes=2, classifier_activation=None, name="dog_student")
    source = {layer.name: layer for layer in backbone.layers}
    trainable = False
    for layer in student.layers:
        if layer.name == "conv_preds":
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
        elif layer.weights:
            layer.set_weights(source[layer.name].get_weights())
        layer.trainable = trainable
        trainable = trainable or layer.name == FROZEN_UNTIL
    return student


def split(count, test_count=500, seed=0):
    """A fixed split: `(train, test)` index arrays."""
    order = np.random.default_rng(seed).permutation(count)
    return order[test_count:], order[:test_count]


def scores(model, images, labels):
    """Accuracy, balanced accuracy and ROC AUC of the dog logit margin."""
    logits = np.asarray(model.predict(images, batch_size=100, verbose=0))
    margin = logits[:, 1] - logits[:, 0]
    dog = labels == 1
    predicted = margin > 0
    auc = (margin[dog][:, None] > margin[~dog][None, :]).mean()
    auc += 0.5 * (margin[dog][:, None] == margin[~dog][None, :]).mean()
    return {
        "accuracy": float((predicted == dog).mean()),
        "balanced_accuracy": float(0.5 * (predicted[dog].mean() + (~predicted[~dog]).mean())),
        "auc": float(auc),
    }


def train(student, images, labels, teacher=None, temperature=2.0, alpha=0.2, epochs=5,
          batch_size=32, learning_rate=1e-3, seed=1):
    """Fits `student` on the labels, or distils into it when `teacher` is given."""
    keras.utils.set_random_seed(seed)
    images = np.concatenate([images, images[:, :, ::-1]])  # mirror images
    labels = np.concatenate([labels, labels])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if teacher is None:
        model = student
        model.compile(keras.optimizers.Adam(learning_rate), loss)
    else:
        model = Distiller(student, teacher, temperature=temperature, alpha=alpha)
        model.compile(keras.optimizers.Adam(learning_rate), loss)
    model.fit(images, labels, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    return model


def run(images, class_index, weights, temperature=2.0, alpha=0.2, epochs=5, seed=1):
    """The whole comparison on 96-px photos; returns the scores and the distiller.

    Args:
        images: `(n, 96, 96, 3)` RGB photos in `[0, 255]`.
        class_index: their ImageNet classes.
        weights: the MobileNet V1 0.25 ImageNet weights file.
    """
    x = kl.models.mobilenet.preprocess_input(np.array(images, dtype="float32"))
    y = np.isin(class_index, DOG_CLASSES).astype("int32")
    train_idx, test_idx = split(len(y))
    teacher, backbone = teacher_model(weights)
    results = {"teacher": scores(teacher, x[test_idx], y[test_idx]),
               "teacher_macs": kl.profile(backbone)["macs"]}
    distiller = None
    for arm in ("labels_only", "distilled"):
        start = time.perf_counter()
        student = student_model(backbone)
        model = train(student, x[train_idx], y[train_idx],
                      teacher=teacher if arm == "distilled" else None,
                      temperature=temperature, alpha=alpha, epochs=epochs, seed=seed)
        results[arm] = scores(student, x[test_idx], y[test_idx])
        results[arm]["seconds"] = time.perf_counter() - start
        distiller = model if arm == "distilled" else distiller
    results["student_macs"] = kl.profile(student)["macs"]
    results["split"] = {"train": len(train_idx), "test": len(test_idx),
                        "test_dogs": int(y[test_idx].sum())}
    return results, distiller


def report(results):
    lines = [f"{'':12} {'accuracy':>9} {'balanced':>9} {'AUC':>7}"]
    for arm in ("teacher", "labels_only", "distilled"):
        r = results[arm]
        lines.append(f"{arm:12} {r['accuracy']:9.3f} {r['balanced_accuracy']:9.3f} "
                     f"{r['auc']:7.3f}")
    lines.append(f"teacher {results['teacher_macs'] / 1e6:.1f}M MACs, student "
                 f"{results['student_macs'] / 1e6:.1f}M MACs; {results['split']}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=pathlib.Path, default=SHARED / "imagenet-sample")
    parser.add_argument("--weights", type=pathlib.Path,
                        default=SHARED / "weights" / "mobilenet_1_0.25_224_keras.h5")
    parser.add_argument("--output", type=pathlib.Path, default=None,
                        help="where to save the student (default: a new temporary folder)")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    for path in (args.sample, args.weights):
        if not path.exists():
            parser.error(f"not found: {path} (see ../shared/data/SOURCES.md)")
    output = args.output or pathlib.Path(tempfile.mkdtemp(prefix="distillation_")) / (
        "dog_student.keras")
    images, class_index = offline.load_photos(args.sample, STUDENT_SIZE)
    results, distiller = run(images, class_index, args.weights, args.temperature, args.alpha,
                             args.epochs)
    print(report(results))
    distiller.save(output)  # the student alone
    print(f"saved the distilled student to {output}")


if __name__ == "__main__":
    main()

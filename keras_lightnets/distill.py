"""Knowledge distillation (Hinton et al., 2015) as a Keras 3 `Model`.

```python
distiller = Distiller(student, teacher, temperature=4.0, alpha=0.1)
distiller.compile(optimizer="adam", metrics=["accuracy"])
distiller.fit(dataset, epochs=10)
distiller.save("student.keras")  # the student alone
```

Reference:
- [Distilling the Knowledge in a Neural Network](https://arxiv.org/abs/1503.02531)
"""

import numbers

import keras
from keras import ops

from keras_lightnets._utils import check, received


class Distiller(keras.Model):
    """Trains `student` on the labels and on `teacher`'s softened logits.

    The loss is
    `alpha * label_loss(y, s) + (1 - alpha) * T**2 * KL(softmax(t / T) || softmax(s / T))`
    plus the student's regularization losses, where `s` and `t` are the
    student's and the teacher's logits and `T` the temperature. The `T**2`
    keeps the gradients of the soft term on the scale of the label term as
    `T` changes (section 2 of the paper).

    Works with `fit`, `evaluate` and `predict` on every backend and under
    `tf.distribute` (build the models and the distiller inside the strategy's
    scope). `save`, `save_weights` and `load_weights` act on the student
    alone, so `keras.callbacks.ModelCheckpoint` writes plain student files.

    Args:
        student: the `keras.Model` to train; it must output logits
            (`classifier_activation=None`).
        teacher: a trained `keras.Model` giving logits over the same classes
            for the same inputs (wrap it with its own resizing or
            preprocessing when it needs them). It is frozen
            (`trainable=False`) and always runs in inference mode.
        temperature: softening temperature `T > 0`; 1 is the plain softmax.
        alpha: weight of the label loss, in `[0, 1]`; `1 - alpha` weighs
            the distillation loss (0 distils from the teacher alone).
        name: model name.
    """

    def __init__(self, student, teacher, temperature=4.0, alpha=0.1, name="distiller",
                 **kwargs):
        for arg, model in (("student", student), ("teacher", teacher)):
            check(isinstance(model, keras.Model), f"`{arg}` must be a `keras.Model`.",
                  **{arg: model})
        check(
            isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
            and temperature > 0,
            "`temperature` must be a positive number.", temperature=temperature,
        )
        check(
            isinstance(alpha, numbers.Real) and not isinstance(alpha, bool) and 0 <= alpha <= 1,
            "`alpha` must be a number in [0, 1].", alpha=alpha,
        )
        classes = [_classes(m) for m in (student, teacher)]
        check(
            None in classes or classes[0] == classes[1],
            f"The student and the teacher must give logits over the same classes; the "
            f"teacher gives {classes[1]}.", student_classes=classes[0],
        )
        super().__init__(name=name, **kwargs)
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.label_loss = None
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Configures training; `loss` is the label loss on the student's logits.

        Args:
            optimizer: as in `keras.Model.compile`.
            loss: a `keras.losses.Loss` instance; defaults to
                `SparseCategoricalCrossentropy(from_logits=True)` (use
                `CategoricalCrossentropy(from_logits=True, label_smoothing=...)`
                for one-hot labels).
            metrics: metrics of the student's predictions against the labels.
            **kwargs: the other arguments of `keras.Model.compile`.
        """
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if not isinstance(loss, keras.losses.Loss):
            raise ValueError(received(
                "`loss` must be a `keras.losses.Loss` instance computed on logits.", loss=loss))
        self.label_loss = loss
        super().compile(optimizer=optimizer, loss=None, metrics=metrics, **kwargs)

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        teacher_logits = ops.stop_gradient(self.teacher(x, training=False))
        soft = self.distillation_loss(teacher_logits, y_pred, sample_weight)
        self.distillation_loss_tracker.update_state(soft)
        total = ops.multiply(1.0 - self.alpha, soft)
        if self.alpha > 0 and y is not None:
            label = self.label_loss(y, ops.cast(y_pred, "float32"), sample_weight=sample_weight)
            total = ops.add(total, ops.multiply(self.alpha, label))
        for extra in self.losses:
            total = ops.add(total, ops.sum(ops.cast(extra, "float32")))
        return total

    def distillation_loss(self, teacher_logits, student_logits, sample_weight=None):
        """`T**2 * KL(softmax(t / T) || softmax(s / T))`, averaged over the batch."""
        t = ops.divide(ops.cast(teacher_logits, "float32"), self.temperature)
        s = ops.divide(ops.cast(student_logits, "float32"), self.temperature)
        log_p = ops.log_softmax(t, axis=-1)
        per_sample = ops.sum(ops.exp(log_p) * (log_p - ops.log_softmax(s, axis=-1)), axis=-1)
        if sample_weight is not None:
            weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            per_sample = ops.multiply(per_sample, weight)
        return ops.multiply(ops.mean(per_sample), self.temperature ** 2)

    # The student is the product: saving and loading act on it alone.
    def save(self, filepath, overwrite=True, **kwargs):
        """Saves the student (not the teacher) as `student.save` does."""
        return self.student.save(filepath, overwrite=overwrite, **kwargs)

    def save_weights(self, filepath, overwrite=True, **kwargs):
        """Saves the student's weights (not the teacher's)."""
        return self.student.save_weights(filepath, overwrite=overwrite, **kwargs)

    def load_weights(self, filepath, **kwargs):
        """Loads weights saved by `save_weights` into the student."""
        return self.student.load_weights(filepath, **kwargs)


def _classes(model):
    shape = model.outputs[0].shape if getattr(model, "outputs", None) else None
    return None if shape is None else shape[-1]

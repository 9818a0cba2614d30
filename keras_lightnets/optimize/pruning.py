"""Magnitude pruning with TF-MOT, on the tf_keras twin of a Keras 3 model."""

import math
import numbers

import numpy as np

from keras_lightnets._utils import check
from keras_lightnets.optimize import twin as twin_lib

SCHEDULES = ("polynomial", "constant")
# TF-MOT updates masks every `frequency` steps; the last must fall on `end_step`.
MAX_FREQUENCY = 100


def tfmot_module():
    """`tensorflow_model_optimization`, imported on first use without switching
    TensorFlow's Keras to tf_keras for the process (its import sets `TF_USE_LEGACY_KERAS=1`)."""
    import os
    import sys

    twin_lib.tf_keras_module()
    if "tensorflow_model_optimization" in sys.modules:
        return sys.modules["tensorflow_model_optimization"]
    import tensorflow as tf

    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    # TensorFlow resolves `tf.keras` on first access: resolve it to Keras 3 now, before
    # TF-MOT's import sets TF_USE_LEGACY_KERAS (the package itself never uses `tf.keras`).
    getattr(tf.keras, "version", None)
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as exc:  # an optional dependency
        raise ImportError(
            "keras_lightnets.optimize needs TF-MOT: pip install keras-lightnets[optimize]"
        ) from exc
    finally:
        if previous is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = previous
    return tfmot


def _check_step(name, value, allow_none=False):
    check((value is None and allow_none) or (
        isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0),
        f"`{name}` must be a non-negative integer{' or None' if allow_none else ''}.",
        **{name: value})


def frequency_for(span):
    """The largest mask-update interval up to 100 steps that divides `span`."""
    return max(d for d in range(1, min(MAX_FREQUENCY, max(span, 1)) + 1) if span % d == 0)


def prune(model, target_sparsity=0.5, begin_step=0, end_step=None, schedule="polynomial"):
    """Wraps a model's Conv2D and Dense layers for magnitude pruning (TF-MOT).

    On the model's tf_keras twin, every `Conv2D` and `Dense` is wrapped with
    `prune_low_magnitude` (depthwise kernels stay dense). Train it with `fit` and the
    returned callbacks, then `strip` it back to Keras 3 (example: the module docstring).

    Args:
        model: a Keras 3 functional model (a keras_lightnets model, or a backbone with
            your own head), or a tf_keras model.
        target_sparsity: fraction of each kernel's weights zero at `end_step`, in (0, 1).
        begin_step: training step at which pruning starts.
        end_step: training step at which `target_sparsity` is reached. `None` (default):
            the last step of the first `fit` call (`fit` must know its step count).
        schedule: `"polynomial"` (sparsity rises from 0 at `begin_step` to the target at
            `end_step`, TF-MOT's `PolynomialDecay`) or `"constant"` (the target from
            `begin_step` on, masks updated every step until `end_step`, if any).

    Returns:
        `(pruned_model, callbacks)`: the tf_keras model to compile and fit, and the
        callbacks to pass to `fit`.
    """
    check(isinstance(target_sparsity, numbers.Real) and not isinstance(target_sparsity, bool)
          and 0 < target_sparsity < 1, "`target_sparsity` must be a number in (0, 1).",
          target_sparsity=target_sparsity)
    _check_step("begin_step", begin_step)
    _check_step("end_step", end_step, allow_none=True)
    check(end_step is None or end_step > begin_step,
          f"`end_step` must be after `begin_step` ({begin_step}).", end_step=end_step)
    check(schedule in SCHEDULES, f"`schedule` must be one of {list(SCHEDULES)}.",
          schedule=schedule)
    tfmot = tfmot_module()
    sparsity = tfmot.sparsity.keras
    tf_keras = twin_lib.tf_keras_module()
    source = model if not twin_lib.is_tf_keras(model) else twin_lib.source_of(model)

    # end_step=None: a one-step placeholder for TF-MOT's checks until the callback settles it.
    end = begin_step + 1 if end_step is None else end_step
    span = end - begin_step
    if schedule == "polynomial":
        pruning_schedule = sparsity.PolynomialDecay(
            0.0, float(target_sparsity), begin_step, end, frequency=frequency_for(span))
    else:
        pruning_schedule = sparsity.ConstantSparsity(
            float(target_sparsity), begin_step, end_step=-1 if end_step is None else end_step,
            frequency=1 if end_step is None else frequency_for(span))
    # TF-MOT prunes a SeparableConv2D's pointwise kernel (depthwise kernels stay dense).
    prunable = (tf_keras.layers.Conv2D, tf_keras.layers.Dense, tf_keras.layers.SeparableConv2D)

    def wrap(layer):
        # Exact types: tf_keras' DepthwiseConv2D subclasses Conv2D.
        if type(layer) in prunable:
            return sparsity.prune_low_magnitude(layer, pruning_schedule=pruning_schedule)
        return layer

    pruned = _clone_with(model, wrap, tf_keras)
    if source is not None:
        twin_lib.remember_source(pruned, source)
    return pruned, [_callback_class(sparsity)(pruning_schedule, begin_step, schedule,
                                              settle_end=end_step is None)]


def _clone_with(model, transform, tf_keras):
    """A tf_keras model of fresh layers through `transform`, so training leaves `model` alone."""
    if not twin_lib.is_tf_keras(model):
        twin = twin_lib.to_tf_keras(model)
        return tf_keras.models.clone_model(twin, clone_function=transform)

    def fresh(layer):
        return transform(layer.__class__.from_config(layer.get_config()))

    from keras_lightnets.optimize import tf_keras_layers

    with tf_keras.utils.custom_object_scope(tf_keras_layers.custom_objects()):
        clone = tf_keras.models.clone_model(model, clone_function=fresh)
    return twin_lib.copy_weights(model, clone)


def _callback_class(sparsity):
    class UpdatePruningStep(sparsity.UpdatePruningStep):
        """TF-MOT's step callback; also settles `end_step=None` from `fit`'s step count."""

        def __init__(self, pruning_schedule, begin_step, kind, settle_end):
            super().__init__()
            self.pruning_schedule, self.begin_step = pruning_schedule, begin_step
            self.kind, self.settle_end = kind, settle_end

        def on_train_begin(self, logs=None):
            # Before the first training step is traced, so the traced schedule sees these.
            if self.settle_end:
                steps, epochs = self.params.get("steps"), self.params.get("epochs")
                check(steps, "`prune(end_step=None)` takes the end of pruning from `fit`, "
                      "which does not know the number of steps of this dataset; pass "
                      "`end_step` to `prune`, or `steps_per_epoch` to `fit`.", steps=steps)
                end = int(steps) * int(epochs)
                check(end > self.begin_step, f"Training has {end} steps, which end before "
                      "`begin_step`.", begin_step=self.begin_step)
                if self.kind == "polynomial":
                    self.pruning_schedule.end_step = end
                    self.pruning_schedule.frequency = frequency_for(end - self.begin_step)
                self.settle_end = False
            super().on_train_begin(logs)

    return UpdatePruningStep


def strip(model, like=None):
    """Removes the pruning wrappers; returns a sparse Keras 3 model.

    The weights go by layer name into a clone of the model `prune` was given, pruned ones
    exactly zero; once the schedule is over, every kernel holds at least its target
    fraction of zeros (ties at TF-MOT's threshold are broken here).

    Args:
        model: the tf_keras model returned by `prune`, after training.
        like: the Keras 3 model to clone; defaults to the one given to `prune` (required
            when `prune` was given a tf_keras model built without `build_tf_keras`).

    Returns:
        A Keras 3 model with the sparse weights.
    """
    check(twin_lib.is_tf_keras(model), "`model` must be the tf_keras model returned by "
          "`prune`.", model=type(model).__name__)
    like = like if like is not None else twin_lib.source_of(model)
    check(like is not None, "This tf_keras model does not come from a Keras 3 model `prune` "
          "saw; pass the Keras 3 model to copy the weights into as `like`.", like=like)
    kernels = {}
    for layer in model.layers:
        # PruneLowMagnitude wrappers; masking makes the zeros exact whatever the optimizer did.
        target = _reached_sparsity(layer)
        for weight, mask, _ in getattr(layer, "pruning_vars", ()):
            values = np.asarray(weight) * np.asarray(mask)
            # By weight name: a SeparableConv2D's pruned kernel is its second.
            kind = weight.name.split("/")[-1].split(":")[0]
            kernels[layer.layer.name, kind] = _at_least(values, target)
    # Weights move by name and wrappers are looked through.
    stripped = twin_lib.to_keras3(model, like=like)
    for layer in twin_lib.leaf_layers(stripped):
        for weight in layer.weights:
            if (layer.name, weight.name) in kernels:
                weight.assign(kernels[layer.name, weight.name])
    return stripped


def _reached_sparsity(layer):
    """The target sparsity of a pruning wrapper whose schedule is over, else None."""
    schedule = getattr(layer, "pruning_schedule", None)
    if schedule is None:
        return None
    step = int(layer.pruning_step.numpy())
    if hasattr(schedule, "final_sparsity"):  # PolynomialDecay
        return float(schedule.final_sparsity) if step >= schedule.end_step else None
    if hasattr(schedule, "target_sparsity"):  # ConstantSparsity
        # Masks update on steps begin + k * frequency; training steps count from 1.
        begin = schedule.begin_step
        first = begin if begin >= 1 else schedule.frequency
        return float(schedule.target_sparsity) if step >= first else None
    return None


def _at_least(values, sparsity):
    """`values` with its smallest-magnitude entries zeroed up to `sparsity`."""
    if sparsity is None:
        return values
    flat = values.reshape(-1).copy()
    missing = math.ceil(sparsity * flat.size - 1e-6) - int(np.sum(flat == 0))
    if missing > 0:
        alive = np.flatnonzero(flat)
        flat[alive[np.argsort(np.abs(flat[alive]), kind="stable")[:missing]]] = 0
    return flat.reshape(values.shape)


def sparsity_report(model):
    """Fraction of zero weights of every Conv2D and Dense kernel and SeparableConv2D
    pointwise kernel (not depthwise), by layer name, of a Keras 3 or tf_keras model,
    pruning and QAT wrappers included."""
    report = {}
    kernel_names = {"Conv2D": "kernel", "Dense": "kernel", "SeparableConv2D": "pointwise_kernel"}
    for layer in _outer_layers(model):
        inner = layer
        while getattr(inner, "layer", None) is not None:
            inner = inner.layer
        kind = kernel_names.get(type(inner).__name__)
        if kind is None:
            continue
        # A QAT wrapper owns its layer's kernel: look in the outer layer's weights.
        kernels = [w for w in layer.weights
                   if w.name.split("/")[-1].split(":")[0] == kind]
        report[inner.name] = float(np.mean(np.asarray(kernels[0]) == 0))
    return report


def _outer_layers(model):
    for layer in model.layers:
        if getattr(layer, "layers", None) is not None and hasattr(layer, "inputs"):
            yield from _outer_layers(layer)
        else:
            yield layer

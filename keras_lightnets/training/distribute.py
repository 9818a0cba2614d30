"""One switch for training on one device, several, several machines or a TPU.

`select_strategy(name)` maps `default | mirrored | multiworker | tpu` onto
`tf.distribute` with the TensorFlow backend and onto the Keras 3
distribution API (`keras.distribution.DataParallel`) with the JAX backend.
Build, compile and fit the model inside `Distribution.scope()`.
"""

import contextlib
import dataclasses
import os

import keras

from keras_lightnets.models.common import check, check_choice, check_positive

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")


@dataclasses.dataclass
class Distribution:
    """A selected strategy.

    Attributes:
        name: one of `STRATEGIES`.
        backend: the Keras backend it serves.
        num_replicas: data-parallel replicas; the global batch is split
            between them.
        strategy: the `tf.distribute.Strategy`, the
            `keras.distribution.Distribution`, or `None` (one device).
    """

    name: str
    backend: str
    num_replicas: int
    strategy: object = None

    def scope(self):
        """The context to build, compile and fit the model in."""
        if self.strategy is None:
            return contextlib.nullcontext()
        return self.strategy.scope()


def select_strategy(name="default", tpu=None):
    """The `Distribution` for `name` on the current Keras backend.

    TensorFlow: `default` is TensorFlow's default strategy, `mirrored` a
    `MirroredStrategy` over the local GPUs (or, without GPUs, every logical
    CPU device), `multiworker` a `MultiWorkerMirroredStrategy` configured by
    `TF_CONFIG`, `tpu` a `TPUStrategy` on the TPU named by `tpu`.
    JAX: `default` runs on one device; `mirrored` and `tpu` are
    `keras.distribution.DataParallel` over every local device (TPU cores on a
    TPU VM); `multiworker` first calls `keras.distribution.initialize()`
    (coordinator from the `KERAS_DISTRIBUTION_*` environment variables) and
    spans every process's devices. PyTorch: `default` only.

    Args:
        name: one of `"default"`, `"mirrored"`, `"multiworker"`, `"tpu"`.
        tpu: TensorFlow only: the TPU name or address for `"tpu"` (empty
            on a TPU VM).
    """
    check_choice("strategy", name, STRATEGIES)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow(name, tpu)
    if backend == "jax":
        return _jax(name)
    check(name == "default", f"The {backend} backend trains on one device here; "
          "`tf.distribute` needs the TensorFlow backend and the Keras distribution API "
          "the JAX backend.", strategy=name)
    return Distribution(name, backend, 1)


def _tensorflow(name, tpu):
    import tensorflow as tf

    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
    elif name == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    return Distribution(name, "tensorflow", strategy.num_replicas_in_sync, strategy)


def _jax(name):
    from keras import distribution

    if name == "default":
        return Distribution(name, "jax", 1)
    if name == "multiworker":
        distribution.initialize()
    devices = distribution.list_devices()
    return Distribution(name, "jax", len(devices), distribution.DataParallel(devices=devices))


def split_cpu(count):
    """Makes the CPU appear as `count` devices, to try data parallelism on one machine.

    TensorFlow: `count` logical CPU devices; call it before TensorFlow runs
    any op. JAX reads its device count at import: set
    `XLA_FLAGS=--xla_force_host_platform_device_count=N` before importing
    Keras; this checks it took effect.
    """
    check_positive("count", count, integer=True)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
        found = len(tf.config.list_logical_devices("CPU"))
    elif backend == "jax":
        import jax

        found = len(jax.devices("cpu"))
    else:
        found = 1
    check(found == count, f"Found {found} CPU devices. With JAX, set XLA_FLAGS="
          f"--xla_force_host_platform_device_count={count} before importing Keras "
          f"(XLA_FLAGS is {os.environ.get('XLA_FLAGS')!r}).", count=count)
    return found

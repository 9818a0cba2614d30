"""Each paper's ImageNet training recipe, as data, and what builds it.

A `Recipe` row holds the optimizer, the learning-rate schedule, weight decay,
label smoothing and augmentation of one family's paper; `build_optimizer`,
`build_loss` and `apply_weight_decay` turn it into Keras 3 objects on any
backend. Where a paper leaves a number out (or trained asynchronously, so its
learning rate does not carry over), the row takes it from the reference
training code named in `source`.
"""

import dataclasses

import keras
from keras import ops

from keras_lightnets._utils import check, received
from keras_lightnets.models.common import check_positive

PACKAGE = "keras_lightnets"
# Variable name endings exempt from weight decay: batch-norm scales and offsets; and also
# biases and depthwise kernels.
NO_DECAY_BN = ("gamma", "beta")
NO_DECAY_DEPTHWISE = ("gamma", "beta", "bias", "depthwise_kernel")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One training recipe.

    `learning_rate` is the peak rate at the global `batch_size`; the builders
    scale it linearly to the batch actually used (Goyal et al., 2017).
    `weight_decay` is an L2 penalty whose gradient is `weight_decay * w`, as
    in the TensorFlow and Caffe reference code; variables whose path ends
    with one of `no_decay` are exempt. `min_crop_area` is the smallest area
    fraction of the random crop in the ImageNet input pipeline.
    """

    optimizer: str  # "rmsprop" or "sgd"
    learning_rate: float
    batch_size: int
    epochs: int
    schedule: str  # "exponential" (staircase), "linear" (to 0) or "cosine" (to 0)
    decay_epochs: float = 1.0  # exponential: epochs between two decays
    decay_rate: float = 1.0  # exponential: factor per decay
    warmup_epochs: float = 0.0  # linear warm-up from 0 to `learning_rate`
    momentum: float = 0.9
    rho: float = 0.9  # RMSprop's decay of the squared-gradient average
    epsilon: float = 1e-3  # RMSprop's epsilon, inside the square root as in TF
    nesterov: bool = False
    weight_decay: float = 0.0
    no_decay: tuple = NO_DECAY_BN
    label_smoothing: float = 0.0
    ema: float = 0.0  # decay of the weights' moving average used for evaluation (0: none)
    min_crop_area: float = 0.08
    source: str = ""


# One row per family (registry family names); "default" serves families with no row.
RECIPES = {
    # Paper: RMSprop with asynchronous updates, "less regularization and data augmentation",
    # little or no weight decay on the depthwise filters. TF-slim's mobilenet_v1 code: weight
    # decay 4e-5 off the depthwise kernels, RMSprop epsilon 1.0, x0.94 every 2 epochs. TF Model
    # Garden's synchronous run: 0.008 per 128 images, label smoothing 0.1, 500 epochs. Crops of
    # at least 25% of the image are our reading of "less data augmentation".
    "MobileNet": Recipe(
        "rmsprop", 0.064, 1024, 500, "exponential", decay_epochs=2.0, decay_rate=0.94,
        epsilon=1.0, weight_decay=4e-5, no_decay=NO_DECAY_DEPTHWISE, label_smoothing=0.1,
        min_crop_area=0.25,
        source="arXiv:1704.04861 sec. 4; TF-slim mobilenet_v1; TF Model Garden",
    ),
    # Paper: RMSprop decay and momentum 0.9, weight decay 4e-5, learning rate 0.045 decayed by
    # 0.98 per epoch (16 asynchronous workers of 96). TF-slim's release: label smoothing 0.1,
    # weights' moving average 0.9999, no weight decay on depthwise kernels. TF Model Garden's
    # synchronous run: 0.008 per 128 images, 5 warm-up epochs, 500 epochs, epsilon 0.002.
    "MobileNetV2": Recipe(
        "rmsprop", 0.064, 1024, 500, "exponential", decay_epochs=1.0, decay_rate=0.98,
        warmup_epochs=5, epsilon=2e-3, weight_decay=4e-5, no_decay=NO_DECAY_DEPTHWISE,
        label_smoothing=0.1, ema=0.9999,
        source="arXiv:1801.04381 sec. 6.1; TF-slim mobilenet_v2; TF Model Garden",
    ),
    # Paper: RMSprop momentum 0.9, learning rate 0.1 at batch 4096 decayed by 0.01 every 3
    # epochs (x0.99), l2 weight decay 1e-5, dropout 0.2, weights' moving average 0.9999. TF Model
    # Garden's MobileNetV3Small run: 5 warm-up epochs, epsilon 0.002, label smoothing 0.1, 1000
    # epochs (used for Large too).
    "MobileNetV3Large": Recipe(
        "rmsprop", 0.1, 4096, 1000, "exponential", decay_epochs=3.0, decay_rate=0.99,
        warmup_epochs=5, epsilon=2e-3, weight_decay=1e-5, label_smoothing=0.1, ema=0.9999,
        source="arXiv:1905.02244 sec. 6.1; TF Model Garden imagenet_mobilenetv3",
    ),
    "MobileNetV3Small": Recipe(
        "rmsprop", 0.1, 4096, 1000, "exponential", decay_epochs=3.0, decay_rate=0.99,
        warmup_epochs=5, epsilon=2e-3, weight_decay=1e-5, label_smoothing=0.1, ema=0.9999,
        source="arXiv:1905.02244 sec. 6.1; TF Model Garden imagenet_mobilenetv3",
    ),
    # Paper: RMSprop decay and momentum 0.9, weight decay 1e-5, learning rate from 0 to 0.256
    # over 5 epochs then x0.97 every 2.4 epochs, batch 4096. TPU mnasnet_main: 350 epochs,
    # epsilon 1e-3, label smoothing 0.1, moving average 0.9999.
    "MnasNet": Recipe(
        "rmsprop", 0.256, 4096, 350, "exponential", decay_epochs=2.4, decay_rate=0.97,
        warmup_epochs=5, epsilon=1e-3, weight_decay=1e-5, label_smoothing=0.1, ema=0.9999,
        source="arXiv:1807.11626 sec. 4; tensorflow/tpu mnasnet_main",
    ),
    # Paper: SGD, weight decay 4e-5, learning rate decayed linearly from 0.5 to 0, batch 1024,
    # 3e5 iterations (240 epochs), "slightly less aggressive scale augmentation" (crops of at
    # least 25% here, our reading). Label smoothing 0.1 as in the authors' released code; no
    # weight decay on the depthwise kernels (few parameters, and decay hurts them, as MobileNet
    # notes), where that code decays every kernel.
    "ShuffleNetV1": Recipe(
        "sgd", 0.5, 1024, 240, "linear", weight_decay=4e-5, no_decay=NO_DECAY_DEPTHWISE,
        label_smoothing=0.1, min_crop_area=0.25,
        source="arXiv:1707.01083 sec. 4; megvii-model/ShuffleNet-Series",
    ),
    # Paper: the ShuffleNet V1 settings.
    "ShuffleNetV2": Recipe(
        "sgd", 0.5, 1024, 240, "linear", weight_decay=4e-5, no_decay=NO_DECAY_DEPTHWISE,
        label_smoothing=0.1, min_crop_area=0.25,
        source="arXiv:1807.11164 sec. 4; megvii-model/ShuffleNet-Series",
    ),
    # The released Caffe solver: SGD momentum 0.9, base_lr 0.04, "poly" power 1 (linear to 0),
    # weight decay 2e-4 on every parameter, batch 512, 170k iterations (68 epochs).
    "SqueezeNet": Recipe(
        "sgd", 0.04, 512, 68, "linear", weight_decay=2e-4, no_decay=(),
        source="arXiv:1602.07360; forresti/SqueezeNet solver.prototxt",
    ),
    # Families with no row of their own: a common modern baseline.
    "default": Recipe(
        "sgd", 0.4, 1024, 300, "cosine", warmup_epochs=5, nesterov=True, weight_decay=4e-5,
        no_decay=NO_DECAY_DEPTHWISE, label_smoothing=0.1,
        source="Goyal et al. 2017 (warm-up, linear scaling); cosine decay",
    ),
}


def get_recipe(model):
    """The `Recipe` of a family (`"MobileNetV2"`) or registry name (`"mobilenet_v2_100"`).

    Families without a row of their own get `RECIPES["default"]`.
    """
    from keras_lightnets import registry

    if model in RECIPES:
        return RECIPES[model]
    families = {e.family for e in registry.entries()}
    if model in families:
        return RECIPES["default"]
    check(model in registry.list_models(),
          "`model` must be a registered family or model name.", model=model)
    return get_recipe(registry.get_entry(model).family)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `schedule(0)`, then `schedule` (shifted to start there).

    Args:
        schedule: the learning-rate schedule after the warm-up.
        warmup_steps: length of the warm-up in steps.
    """

    def __init__(self, schedule, warmup_steps):
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        after = self.schedule(ops.maximum(step - self.warmup_steps, 0.0))
        peak = ops.cast(self.schedule(0), "float32")
        ramp = peak * (step + 1.0) / float(max(self.warmup_steps, 1))
        return ops.where(step < self.warmup_steps, ramp, ops.cast(after, "float32"))

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "warmup_steps": self.warmup_steps,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


def scaled_learning_rate(recipe, batch_size):
    """The recipe's peak learning rate for a global `batch_size` (linear scaling)."""
    check_positive("batch_size", batch_size, integer=True)
    return recipe.learning_rate * batch_size / recipe.batch_size


def learning_rate_schedule(recipe, steps_per_epoch, batch_size, epochs=None):
    """The recipe's schedule in optimizer steps, warm-up included.

    Args:
        recipe: a `Recipe`.
        steps_per_epoch: optimizer steps per epoch at `batch_size`.
        batch_size: global batch size (the learning rate scales with it).
        epochs: training length; defaults to `recipe.epochs`. Linear and
            cosine schedules reach 0 at its end.
    """
    check_positive("steps_per_epoch", steps_per_epoch, integer=True)
    epochs = recipe.epochs if epochs is None else epochs
    check_positive("epochs", epochs)
    peak = scaled_learning_rate(recipe, batch_size)
    warmup = int(round(recipe.warmup_epochs * steps_per_epoch))
    total = max(1, int(round(epochs * steps_per_epoch)) - warmup)
    schedules = keras.optimizers.schedules
    if recipe.schedule == "exponential":
        decay_steps = max(1, int(round(recipe.decay_epochs * steps_per_epoch)))
        schedule = schedules.ExponentialDecay(peak, decay_steps, recipe.decay_rate,
                                              staircase=True)
    elif recipe.schedule == "linear":
        schedule = schedules.PolynomialDecay(peak, total, end_learning_rate=0.0, power=1.0)
    elif recipe.schedule == "cosine":
        schedule = schedules.CosineDecay(peak, total)
    else:
        raise ValueError(received("Unknown learning-rate schedule; expected 'exponential', "
                                  "'linear' or 'cosine'.", schedule=recipe.schedule))
    return Warmup(schedule, warmup) if warmup else schedule


def build_optimizer(recipe, steps_per_epoch, batch_size, epochs=None):
    """The recipe's Keras optimizer, with its schedule and weights' moving average.

    Weight decay is not here: `apply_weight_decay` adds it to the model as
    an L2 penalty, as the reference code does.
    """
    lr = learning_rate_schedule(recipe, steps_per_epoch, batch_size, epochs)
    ema = {"use_ema": True, "ema_momentum": recipe.ema} if recipe.ema else {}
    if recipe.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(lr, rho=recipe.rho, momentum=recipe.momentum,
                                        epsilon=recipe.epsilon, **ema)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                                    **ema)
    raise ValueError(received("Unknown optimizer; expected 'rmsprop' or 'sgd'.",
                              optimizer=recipe.optimizer))


def build_loss(recipe):
    """Cross-entropy on logits and one-hot labels, with the recipe's label smoothing."""
    return keras.losses.CategoricalCrossentropy(from_logits=True,
                                                label_smoothing=recipe.label_smoothing)


def decayed_variables(model, recipe):
    """The trainable variables of `model` the recipe's weight decay applies to."""
    if not recipe.weight_decay:
        return []
    return [v for v in model.trainable_weights
            if not any(v.path.endswith(suffix) for suffix in recipe.no_decay)]


def apply_weight_decay(model, recipe):
    """Puts the recipe's L2 weight decay on `model`'s variables, in place.

    Each decayed variable gets an L2 regularizer with gradient
    `weight_decay * w`, so `model.losses` carries the penalty on every
    backend; the model's layers and saved files are unchanged.

    Returns:
        The paths of the decayed variables.
    """
    regularizer = keras.regularizers.L2(recipe.weight_decay / 2.0)
    variables = decayed_variables(model, recipe)
    for variable in variables:
        variable.regularizer = regularizer
    return [v.path for v in variables]

"""Training from scratch: paper recipes, the ImageNet pipeline, distribution.

```python
from keras_lightnets import registry, training

recipe = training.get_recipe("mobilenet_v2_100")
dist = training.select_strategy("mirrored")
train = training.imagenet_dataset("/data/imagenet/train-*", training=True,
                                  batch_size=recipe.batch_size, min_crop_area=recipe.min_crop_area,
                                  preprocess_input=registry.get_entry("mobilenet_v2_100").preprocess_input)
with dist.scope():
    model = registry.get_model("mobilenet_v2_100", weights=None, classifier_activation=None)
    training.apply_weight_decay(model, recipe)
    model.compile(training.build_optimizer(recipe, steps_per_epoch=1251, batch_size=1024),
                  training.build_loss(recipe), metrics=["categorical_accuracy"])
    model.fit(train, epochs=recipe.epochs, steps_per_epoch=1251)
```

`examples/train_imagenet.py` is this as a command.
"""

from keras_lightnets.training.data import (
    affine_preprocessing,
    imagenet_dataset,
    serialize_example,
    write_tfrecord,
)
from keras_lightnets.training.distribute import (
    STRATEGIES,
    Distribution,
    select_strategy,
    split_cpu,
)
from keras_lightnets.training.recipes import (
    RECIPES,
    Recipe,
    Warmup,
    apply_weight_decay,
    build_loss,
    build_optimizer,
    decayed_variables,
    get_recipe,
    learning_rate_schedule,
    scaled_learning_rate,
)

__all__ = [
    "RECIPES",
    "STRATEGIES",
    "Distribution",
    "Recipe",
    "Warmup",
    "affine_preprocessing",
    "apply_weight_decay",
    "build_loss",
    "build_optimizer",
    "decayed_variables",
    "get_recipe",
    "imagenet_dataset",
    "learning_rate_schedule",
    "scaled_learning_rate",
    "select_strategy",
    "serialize_example",
    "split_cpu",
    "write_tfrecord",
]

"""Trains a keras_lightnets model on ImageNet from scratch with its paper's recipe.

The data are TFRecord shards in the usual layout (`train-*`, `validation-*`;
JPEG under `image/encoded`, 1-based label under `image/class/label`).

    python examples/train_imagenet.py --model mobilenet_v2_100 --data-dir /data/imagenet \
        --strategy mirrored
    KERAS_BACKEND=jax python examples/train_imagenet.py --model shufflenet_v2_100 \
        --data-dir /data/imagenet --strategy mirrored        # Keras DataParallel
    python examples/train_imagenet.py ... --strategy multiworker   # each worker, TF_CONFIG set
    python examples/train_imagenet.py ... --strategy tpu --tpu my-tpu

A smoke run on a laptop: `--cpu-devices 2 --steps-per-epoch 2 --epochs 1`
splits the CPU into two devices, so `--strategy mirrored` has two replicas.
It prints one JSON line with what ran and its losses.
"""

import argparse
import json
import os
import pathlib
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="registry name, e.g. mobilenet_v2_100")
    parser.add_argument("--data-dir", required=True, type=pathlib.Path,
                        help="folder of train-* and validation-* TFRecord files")
    parser.add_argument("--strategy", default="default",
                        choices=("default", "mirrored", "multiworker", "tpu"))
    parser.add_argument("--tpu", default=None, help="TPU name or address (TensorFlow)")
    parser.add_argument("--batch-size", type=int, help="global batch (default: the recipe's)")
    parser.add_argument("--epochs", type=float, help="default: the recipe's")
    parser.add_argument("--steps-per-epoch", type=int,
                        help="default: --train-images // batch size")
    parser.add_argument("--train-images", type=int, default=1_281_167)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--label-offset", type=int, default=1,
                        help="subtracted from stored labels (1: label 0 is background)")
    parser.add_argument("--validation-steps", type=int, default=None,
                        help="default: one pass over validation-*; 0 skips validation")
    parser.add_argument("--output", type=pathlib.Path, default=pathlib.Path("runs"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu-devices", type=int, default=0,
                        help="split the CPU into this many devices (smoke tests)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not any(args.data_dir.glob("train-*")):
        print(f"train_imagenet.py: error: no TFRecord shards train-* in {args.data_dir} "
              "(see the layout at the top of this script)", file=sys.stderr)
        sys.exit(2)
    if args.cpu_devices:
        # JAX reads its device count when it is first imported, by Keras below.
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_"
                                   f"platform_device_count={args.cpu_devices}").strip()
    import keras

    from keras_lightnets import registry, training

    if args.cpu_devices:
        training.split_cpu(args.cpu_devices)
    keras.utils.set_random_seed(args.seed)
    entry = registry.get_entry(args.model)
    recipe = training.get_recipe(args.model)
    dist = training.select_strategy(args.strategy, tpu=args.tpu)
    batch_size = args.batch_size or recipe.batch_size
    steps = args.steps_per_epoch or max(1, args.train_images // batch_size)
    epochs = args.epochs or recipe.epochs

    def dataset(split, train):
        pattern = str(args.data_dir / f"{split}-*")
        return training.imagenet_dataset(
            pattern, training=train, image_size=args.image_size, batch_size=batch_size,
            classes=args.classes, label_offset=args.label_offset,
            preprocess_input=entry.preprocess_input, min_crop_area=recipe.min_crop_area,
            seed=args.seed,
        )

    train = dataset("train", True)
    has_validation = args.validation_steps != 0 and any(args.data_dir.glob("validation-*"))
    with dist.scope():
        model = entry.build(weights=None, input_shape=(args.image_size, args.image_size, 3),
                            classes=args.classes, classifier_activation=None)
        decayed = training.apply_weight_decay(model, recipe)
        model.compile(
            optimizer=training.build_optimizer(recipe, steps, batch_size, epochs),
            loss=training.build_loss(recipe),
            metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                     keras.metrics.TopKCategoricalAccuracy(5, name="top5")],
        )
        callbacks = [keras.callbacks.TerminateOnNaN()]
        if recipe.ema:
            # Evaluate and save the moving average of the weights, as the papers report.
            callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
        history = model.fit(
            train, epochs=max(1, round(epochs)), steps_per_epoch=steps, verbose=2,
            shuffle=False,  # the dataset shuffles
            validation_data=dataset("validation", False) if has_validation else None,
            validation_steps=args.validation_steps or None, callbacks=callbacks,
        )
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"{args.model}.keras"
    model.save(path)
    summary = {
        "model": args.model,
        "backend": keras.backend.backend(),
        "strategy": args.strategy,
        "distribution": type(dist.strategy).__name__ if dist.strategy else None,
        "replicas": dist.num_replicas,
        "batch_size": batch_size,
        "steps_per_epoch": steps,
        "optimizer": type(model.optimizer).__name__,
        "decayed_variables": len(decayed),
        "loss": [float(v) for v in history.history["loss"]],
        "saved": str(path),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

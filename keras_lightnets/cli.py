"""The `keras-lightnets` command.

User errors (bad arguments, unknown models, unreadable files) print one line
and exit with code 2; a failed export prints one line and exits with code 1;
neither prints a traceback.
"""

import argparse
import os
import sys

from keras_lightnets._utils import one_line

EXIT_FAILURE = 1
EXIT_USAGE = 2
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class UserError(Exception):
    """An error the user can fix; printed as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line."""

    def error(self, message):
        print(f"keras-lightnets: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _weights_arg(value):
    return None if value in (None, "none", "None") else value


def _format_int(n):
    return f"{n:,}"


def _entry(name):
    from keras_lightnets import registry

    try:
        return registry.get_entry(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _build(name, weights=None, default="none", **kwargs):
    """`(entry, model)` of `name` or `name.set`; `weights` None: the set, else `default`."""
    from keras_lightnets import registry

    try:
        entry, named = registry.split_name(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if named is not None and weights not in (None, named):
        raise UserError(f"The model name gives the weight set {named!r} and --weights another; "
                        f"pass one of them. Received: weights={weights!r}")
    weights = named or (default if weights is None else weights)
    try:
        return entry, entry.build(weights=_weights_arg(weights), **kwargs)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _print_profile(model, out):
    from keras_lightnets import profile

    p = profile(model)
    rows = [
        ("params", _format_int(p["params"])),
        ("trainable params", _format_int(p["trainable_params"])),
        ("MACs", f"{p['macs'] / 1e6:.1f} M at {p['input_size'][0]}x{p['input_size'][1]}"),
        ("peak activations", f"{p['peak_activation_bytes'] / 2**20:.2f} MiB (float32, batch 1)"),
        ("weights size", f"{p['size_bytes'] / 2**20:.2f} MiB"),
    ]
    for key, value in rows:
        print(f"  {key:<18} {value}", file=out)
    return p


def _print_layer_counts(model, out):
    import collections

    counts = collections.Counter(type(layer).__name__ for layer in model.layers)
    counts.pop("InputLayer", None)
    shown = ", ".join(f"{n} {name}" for name, n in counts.most_common())
    print(f"  {'layers':<18} {sum(counts.values())}: {shown}", file=out)


def _classify(entry, model, image, top, out):
    import numpy as np
    from PIL import Image

    from keras_lightnets import imagenet

    size = tuple(model.inputs[0].shape[1:3])
    if None in size:
        size = (224, 224)
    if not os.path.isfile(image):
        raise UserError(f"No image file at this path. Received: image={image!r}")
    try:
        batch = imagenet.load_image(image, size)
    except (OSError, Image.DecompressionBombError) as exc:
        raise UserError(f"Cannot read the image {image!r}: {exc}") from None
    preds = model.predict(entry.preprocess_input(batch), verbose=0)
    print(f"Top-{top} for {image}:", file=out)
    if preds.shape[-1] != 1000:
        best = np.argsort(-preds[0])[:top]
        for i in best:
            print(f"  class {int(i):>4}  {float(preds[0, i]):.4f}", file=out)
        return
    for wnid, name, score in imagenet.decode_predictions(preds, top=top)[0]:
        print(f"  {wnid}  {name:<28} {float(score):.4f}", file=out)


def cmd_list(args, out):
    from keras_lightnets import registry
    from keras_lightnets.weights import has_imagenet_weights

    if args.family is not None and args.family not in registry.families():
        raise UserError(f"Unknown family.{registry.suggest(args.family, registry.families())} "
                        f"Families: {', '.join(registry.families())}. "
                        f"Received: family={args.family!r}")
    table = registry.complexity_table()
    sets = "  weight sets" if args.weights else ""
    print(f"{'name':<34} {'family':<18} {'params':>12} {'MACs (M)':>9} {'ImageNet':>8}{sets}",
          file=out)
    for entry in registry.entries():
        if args.family and entry.family != args.family:
            continue
        stats = table[entry.name]
        imagenet = "yes" if has_imagenet_weights(entry.family, entry.variant) else "no"
        sets = f"  {','.join(entry.weight_sets) or '-'}" if args.weights else ""
        print(f"{entry.name:<34} {entry.family:<18} {stats['params']:>12,} "
              f"{stats['macs'] / 1e6:>9.1f} {imagenet:>8}{sets}", file=out)
    print(f"(params and MACs with the classifier, at {registry.PROFILE_SIZE}x"
          f"{registry.PROFILE_SIZE})", file=out)
    if args.weights:
        print("(weight sets: `--weights SET` of the other commands, `weights=SET` of the "
              "factories, `get_model(\"name.SET\")`)", file=out)


def cmd_info(args, out):
    entry, model = _build(args.name, weights=args.weights)
    print(f"{entry.name}: {entry.family} {entry.kwargs}", file=out)
    _print_profile(model, out)
    _print_layer_counts(model, out)
    if args.summary:
        model.summary(print_fn=lambda line, **kw: print(line, file=out))


def cmd_classify(args, out):
    entry, model = _build(args.name, weights=args.weights, default="imagenet")
    for image in args.images:
        _classify(entry, model, image, args.top, out)


def _cached_imagenet(entry):
    """Whether the variant's ImageNet file can be had offline (cache or mirror)."""
    from keras_lightnets.weights import MIRROR_ENV, download, manifest

    if not manifest.has_imagenet_weights(entry.family, entry.variant):
        return False
    found = manifest.find(entry.family, entry.variant, include_top=True, rows=224)
    return bool(os.environ.get(MIRROR_ENV)) or os.path.isfile(download.cached_path(found))


def _forward_ms(model):
    import time

    import numpy as np

    size = tuple(d or 224 for d in model.inputs[0].shape[1:3])
    batch = np.random.default_rng(0).uniform(0, 255, (1, *size, 3)).astype("float32")
    model(batch)  # the first call traces the graph
    times = []
    for _ in range(5):
        start = time.perf_counter()
        model(batch)
        times.append(time.perf_counter() - start)
    return 1000 * min(times), size


def cmd_demo(args, out):
    from keras_lightnets.weights import WeightsDownloadError

    entry = _entry(args.model)
    weights = args.weights
    note = None
    if weights == "auto":
        weights = "imagenet" if _cached_imagenet(entry) else "none"
        if weights == "none":
            note = ("no ImageNet file of this model in the Keras cache and no "
                    "KERAS_LIGHTNETS_WEIGHTS_MIRROR set, so the weights are random")
    try:
        entry, model = _build(args.model, weights=weights)
    except WeightsDownloadError as exc:
        if args.weights != "auto":
            raise
        weights, note = "none", f"the ImageNet file could not be fetched ({exc})"
        entry, model = _build(args.model, weights=weights)
    print(f"Built {entry.name} ({entry.family}, weights={weights}):", file=out)
    _print_profile(model, out)
    _print_layer_counts(model, out)
    ms, size = _forward_ms(model)
    print(f"  {'Keras forward':<18} {ms:.1f} ms (batch 1, {size[0]}x{size[1]}, this CPU)",
          file=out)
    if _weights_arg(weights) is None:
        print(f"Random weights ({note or 'as asked'}): a top-5 would mean nothing, so "
              "none is shown. With network access, `keras-lightnets demo --weights imagenet "
              "--image PHOTO` classifies a photo.", file=out)
    elif args.image is None:
        print("Pass --image PHOTO to classify a photo.", file=out)
    if args.image is not None and _weights_arg(weights) is not None:
        _classify(entry, model, args.image, 5, out)


def _batch_arg(value):
    if value == "dynamic":
        return "dynamic"
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer or 'dynamic'. Received: batch_size={value!r}")
    return n


def _positive_int(value):
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Received: {value!r}")
    return n


def _model_kwargs(args):
    size = getattr(args, "input_size", None)
    return {"input_shape": (size, size, 3)} if size else {}


def _input_domain(entry, model):
    from keras_lightnets import export

    if export.expects_raw_pixels(model):
        return "raw RGB pixels in [0, 255] (preprocessing is embedded)", None
    return (f"RGB pixels through {entry.module.__name__}.preprocess_input",
            entry.preprocess_input)


def _calibration_images(directory, size, limit, preprocess):
    """A callable yielding preprocessed calibration batches, and its length."""
    from keras_lightnets import imagenet

    files = sorted(f for f in os.listdir(directory) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise UserError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) in the calibration "
                        f"directory. Received: calibration_dir={directory!r}")
    files = files[:limit]

    def images():
        for name in files:
            try:
                batch = imagenet.load_image(os.path.join(directory, name), size)
            except OSError:
                continue  # not an image after all: calibrate on the others
            yield batch if preprocess is None else preprocess(batch)

    return images, len(files)


def cmd_export(args, out):
    if args.quantize and args.format != "tflite":
        raise UserError(f"--quantize applies to --format tflite only. "
                        f"Received: format={args.format!r}")
    if args.quantize == "int8" and not args.calibration_dir:
        raise UserError("--quantize int8 needs --calibration-dir DIR (a folder of images "
                        "to calibrate on). Received: calibration_dir=None")
    if args.calibration_dir and args.quantize != "int8":
        raise UserError(f"--calibration-dir applies to --quantize int8 only. "
                        f"Received: quantize={args.quantize!r}")
    if args.io_dtype and args.quantize != "int8":
        raise UserError(f"--io-dtype applies to --quantize int8 only. "
                        f"Received: quantize={args.quantize!r}")
    if args.input_layout and args.format != "onnx":
        raise UserError(f"--input-layout applies to --format onnx only. "
                        f"Received: format={args.format!r}")
    if args.calibration_dir and not os.path.isdir(args.calibration_dir):
        raise UserError(f"No directory at this path. "
                        f"Received: calibration_dir={args.calibration_dir!r}")
    entry, model = _build(args.name, weights=args.weights, default="imagenet",
                          **_model_kwargs(args))
    from keras_lightnets import export

    domain, preprocess = _input_domain(entry, model)
    batch = args.batch_size
    if batch is None:
        batch = 1 if args.format == "tflite" else "dynamic"
    batch = None if batch == "dynamic" else batch
    common = {"batch_size": batch, "verify": not args.no_verify}
    try:
        if args.format == "tflite":
            data, n = None, None
            if args.quantize == "int8":
                rows, cols = (d or 224 for d in model.inputs[0].shape[1:3])
                data, n = _calibration_images(args.calibration_dir, (rows, cols),
                                              args.calibration_limit, preprocess)
                print(f"Calibrating on {n} images from {args.calibration_dir}", file=out)
            report = export.to_tflite(
                model, args.output, quantization=args.quantize, representative_data=data,
                io_dtype=args.io_dtype, calibration_steps=n if data else None, **common)
        elif args.format == "onnx":
            report = export.to_onnx(model, args.output, opset=args.opset,
                                    input_layout=args.input_layout or "NHWC", **common)
        else:
            report = export.to_saved_model(model, args.output, **common)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(report.summary(), file=out)
    print(f"  expects {domain}", file=out)


def cmd_benchmark(args, out):
    import tempfile

    from keras_lightnets import export
    from keras_lightnets.export import _model, tflite

    entries = [_entry(name) for name in args.names]
    print(f"TFLite latency with ai-edge-litert (XNNPACK CPU, {args.threads} thread(s), "
          f"batch 1): median of {args.runs} runs after {args.warmup} warm-up runs; "
          "side by side with the reference models: benchmarks/run.py", file=out)
    header = f"{'name':<34} {'input':>9} {'float32 ms':>11} {'int8 ms':>9} " \
             f"{'float32 MiB':>12} {'int8 MiB':>9}"
    print(header, file=out)
    with tempfile.TemporaryDirectory() as tmp:
        for entry in entries:
            _, model = _build(entry.name, weights=args.weights, **_model_kwargs(args))
            shape = _model.input_shape(model, 1)
            # Latency does not depend on calibration quality: a few random
            # inputs in the model's domain calibrate the int8 file.
            calibration = _model.random_inputs(model, shape, 8)
            if _weights_arg(args.weights) is None:
                _trained_like(model, calibration)
            row = {}
            for kind, kwargs in (("float32", {}),
                                 ("int8", {"quantization": "int8",
                                           "representative_data": calibration})):
                path = os.path.join(tmp, f"{entry.name}_{kind}.tflite")
                report = export.to_tflite(model, path, verify=False, progress=False, **kwargs)
                timing = tflite.latency(path, runs=args.runs, warmup=args.warmup,
                                        num_threads=args.threads)
                row[kind] = (timing["median_ms"], report.size_bytes / 2**20)
            print(f"{entry.name:<34} {shape[1]:>4}x{shape[2]:<4} {row['float32'][0]:>11.2f} "
                  f"{row['int8'][0]:>9.2f} {row['float32'][1]:>12.2f} {row['int8'][1]:>9.2f}",
                  file=out)


def _trained_like(model, x, seed=0):
    """Batch norms with trained-like values (statistics measured on `x`) and layer scales
    of a trained model's size, in place.

    Freshly initialised weights give near-constant activations whose int8
    ADD/MUL ops XNNPACK refuses, so their int8 file would time slower than a
    trained model's; initial layer scales (1e-5) leave a float32 file off the
    model by float32 rounding alone. `benchmarks/` uses it too. Returns `model`.
    """
    import keras
    import numpy as np

    from keras_lightnets import layers as kl_layers

    rng = np.random.default_rng(seed)
    everything = list(model._flatten_layers())
    layers = [layer for layer in everything if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        gamma, beta, mean, variance = layer.get_weights()
        layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                           rng.normal(0.0, 0.5, beta.shape).astype("float32"), mean, variance])
    for layer in everything:
        if isinstance(layer, kl_layers.LayerScale):
            (gamma,) = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32")])
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    return model


def build_parser():
    parser = ArgumentParser(
        prog="keras-lightnets",
        description="Lightweight mobile CNNs for Keras 3: list, inspect, classify, export, "
                    "benchmark.",
    )
    from keras_lightnets import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered models with params, MACs and ImageNet weights")
    p.add_argument("--family", default=None, help="only this family (e.g. MobileNetV2)")
    p.add_argument("--weights", action="store_true",
                   help="also list each model's weight sets (imagenet, torchvision, ...)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="profile and layer summary of one model")
    p.add_argument("name", help="a registered name, or name.SET (a weight set)")
    p.add_argument("--weights", default=None,
                   help="none (default), imagenet, another weight set or a file path")
    p.add_argument("--summary", action="store_true", help="print the full layer table too")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("classify", help="top-k ImageNet classes of images")
    p.add_argument("name", help="a registered name, or name.SET (a weight set)")
    p.add_argument("images", nargs="+")
    p.add_argument("--weights", default=None,
                   help="imagenet (default), another weight set (`list --weights`), none "
                        "or a file path")
    p.add_argument("--top", type=_positive_int, default=5, help="classes shown (default 5)")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser(
        "export", help="export to TFLite, ONNX or SavedModel, verified against Keras",
        description="Export a registered model. TFLite files have batch 1 and builtin ops "
                    "only; int8 files are full-integer and need calibration images.")
    p.add_argument("name", help="a registered name, or name.SET (a weight set)")
    p.add_argument("--weights", default=None,
                   help="imagenet (default), another weight set, none or a path")
    p.add_argument("--format", required=True, choices=["tflite", "onnx", "saved_model"])
    p.add_argument("--quantize", choices=["float16", "dynamic", "int8"], default=None,
                   help="TFLite quantization (default: float32)")
    p.add_argument("--calibration-dir", default=None,
                   help="folder of images for int8 calibration")
    p.add_argument("--calibration-limit", type=_positive_int, default=200,
                   help="at most this many calibration images (default 200)")
    p.add_argument("--io-dtype", choices=["int8", "uint8"], default=None,
                   help="int8 input/output type (default int8)")
    p.add_argument("--input-size", type=_positive_int, default=None,
                   help="build the model for SIZE x SIZE inputs (default: its own, else 224)")
    p.add_argument("--batch-size", type=_batch_arg, default=None,
                   help="static batch or 'dynamic' (default: 1 for TFLite, dynamic otherwise)")
    p.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--input-layout", choices=["NHWC", "NCHW"], default=None,
                   help="ONNX input layout (default NHWC, the Keras model's)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip running the artifact and comparing it with Keras")
    p.add_argument("-o", "--output", required=True, help="file (or SavedModel directory)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("benchmark", help="TFLite float32 and int8 latency on this CPU")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--weights", default="none", help="none (default), imagenet or a path")
    p.add_argument("--input-size", type=_positive_int, default=None,
                   help="input SIZE x SIZE (default: the model's own, else 224)")
    p.add_argument("--runs", type=_positive_int, default=50)
    p.add_argument("--warmup", type=_positive_int, default=5)
    p.add_argument("--threads", type=_positive_int, default=1)
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("demo", help="build a model, print its profile, classify a photo")
    p.add_argument("--model", default="mobilenet_v3_small_100")
    p.add_argument("--weights", default="auto",
                   help="auto (default: imagenet when its file is in the Keras cache or a "
                        "mirror is set, else none), imagenet, none or a path")
    p.add_argument("--image", default=None, help="a photo to classify")
    p.set_defaults(func=cmd_demo)
    return parser


def _one_line(exc):
    return one_line(exc) or type(exc).__name__


def main(argv=None, out=None):
    from PIL import Image

    from keras_lightnets.export.verify import ExportError, ExportVerificationError

    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args, out)
    except ExportVerificationError as exc:
        text = _one_line(exc).replace("pass `verify=False`", "rerun with --no-verify")
        if "--no-verify" not in text:
            text += " Rerun with --no-verify to write it anyway."
        print(f"keras-lightnets: export failed: {text}", file=sys.stderr)
        return EXIT_FAILURE
    except ExportError as exc:
        print(f"keras-lightnets: export failed: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # `keras-lightnets list | head`: the reader left; not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (UserError, ValueError, OSError, Image.DecompressionBombError) as exc:
        # The package raises ValueError for what the user can fix, and
        # WeightsDownloadError (an OSError) for a file it could not fetch.
        print(f"keras-lightnets: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
